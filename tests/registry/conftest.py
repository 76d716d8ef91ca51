from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from tests.helpers import client, mint
from tests.registry.factories import Tree, build_tree


@pytest.fixture
def registry_settings(settings_env: dict[str, object]) -> RegistrySettings:
    return RegistrySettings(**settings_env)  # type: ignore[arg-type]


@pytest.fixture
def app(db: async_sessionmaker[AsyncSession], registry_settings: RegistrySettings) -> FastAPI:
    return create_app(registry_settings, sessionmaker=db)


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, mint("admin", username="root-admin")) as c:
        yield c


@pytest.fixture
async def tree(admin: httpx.AsyncClient) -> Tree:
    return await build_tree(admin)


@pytest.fixture
def as_role(app: FastAPI) -> Callable[..., httpx.AsyncClient]:
    """`as_role("org_admin", org_id=...)` → a client carrying such a token."""

    def make(role: str, **claims: object) -> httpx.AsyncClient:
        return client(app, mint(role, **claims))  # type: ignore[arg-type]

    return make
