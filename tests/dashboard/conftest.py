"""The dashboard's route tests reuse the gateway's in-process harness."""

from tests.gateway.conftest import (  # noqa: F401  (fixtures)
    anon,
    clock,
    gateway_app,
    gateway_settings,
    gw,
    registry_app,
    service_apps,
    upstream,
)
