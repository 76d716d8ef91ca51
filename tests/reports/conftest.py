"""Reports run through the gateway's end-to-end harness (tests/gateway/conftest.py)."""

from tests.gateway.conftest import (  # noqa: F401
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
    service_apps,
    upstream,
)
