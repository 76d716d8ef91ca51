"""Mobility tests: the registry and mobility apps on the test's connection, the registry's
calls routed in-process, and `sync_events()` applying the events both services wrote in this
(uncommitted) test transaction to each other's consumers, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.mobility.app import create_app as create_mobility
from services.mobility.settings import MobilitySettings
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from tests.helpers import client, mint
from tests.mobility.factories import EventPump
from tests.registry.factories import Tree, build_tree


@pytest.fixture
def registry_app(db: async_sessionmaker[AsyncSession], settings_env: dict[str, object]) -> FastAPI:
    return create_registry(RegistrySettings(**settings_env), sessionmaker=db)  # type: ignore[arg-type]


@pytest.fixture
def app(
    db: async_sessionmaker[AsyncSession], settings_env: dict[str, object], registry_app: FastAPI
) -> FastAPI:
    mobility = create_mobility(MobilitySettings(**settings_env), sessionmaker=db)  # type: ignore[arg-type]
    mobility.state.registry_transport = httpx.ASGITransport(app=registry_app)
    return mobility


@pytest.fixture
async def registry(registry_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(registry_app, mint("admin", username="root-admin")) as c:
        yield c


@pytest.fixture
def pump(db: async_sessionmaker[AsyncSession]) -> EventPump:
    return EventPump(db)


@pytest.fixture
async def tree(registry: httpx.AsyncClient, pump: EventPump) -> Tree:
    built = await build_tree(registry)
    await pump()
    return built


@pytest.fixture
def as_role(app: FastAPI) -> Callable[..., httpx.AsyncClient]:
    """`as_role("org_admin", org_id=...)` → a mobility client carrying such a token."""

    def make(role: str, **claims: object) -> httpx.AsyncClient:
        return client(app, mint(role, **claims))  # type: ignore[arg-type]

    return make


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, mint("admin", username="mobility-admin")) as c:
        yield c


Pump = Callable[[], Awaitable[None]]
