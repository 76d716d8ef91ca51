"""The gateway's in-process harness (tests/gateway/conftest.py), for the fuzzer's findings
pinned in test_fuzz_finds.py; the schemathesis run brings its own running system."""

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
    tree,
    upstream,
)
