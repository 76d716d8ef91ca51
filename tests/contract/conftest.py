"""The contract tests reuse the gateway's end-to-end harness (gateway and services
in-process on the test database); the guides and the generated clients share one real
running system (`system`, below)."""

from collections.abc import Iterator

import pytest

from tests.contract.system import System, running_system
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


@pytest.fixture(scope="package")
def system(server_url: str) -> Iterator[System]:
    """Registry, mobility, activities and the gateway as processes on a fresh database,
    started once for the contract tests that need it; each user keeps to its own org
    codes and ID numbers."""
    with running_system(server_url) as running:
        yield running
