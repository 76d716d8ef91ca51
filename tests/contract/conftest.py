"""The contract tests reuse the gateway's end-to-end harness (gateway and services
in-process on the test database)."""

from tests.gateway.conftest import (  # noqa: F401  (fixtures)
    admin_client,
    admin_token,
    anon,
    as_user,
    clock,
    gateway_app,
    gateway_settings,
    gw,
    login,
    make_user,
    registry_app,
    service_apps,
    tree,
    upstream,
)
