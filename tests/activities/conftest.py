from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.activities.app import create_app
from services.activities.settings import ActivitiesSettings
from tests.activities.factories import World, build_world
from tests.helpers import client, mint


@pytest.fixture
def activities_settings(settings_env: dict[str, object]) -> ActivitiesSettings:
    return ActivitiesSettings(**settings_env)  # type: ignore[arg-type]


@pytest.fixture
def app(db: async_sessionmaker[AsyncSession], activities_settings: ActivitiesSettings) -> FastAPI:
    return create_app(activities_settings, sessionmaker=db)


@pytest.fixture
async def world(db: async_sessionmaker[AsyncSession]) -> World:
    return await build_world(db)


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, mint("admin", username="root-admin")) as c:
        yield c


@pytest.fixture
def as_role(app: FastAPI) -> Callable[..., httpx.AsyncClient]:
    """`as_role("org_admin", org_id=...)` → a client carrying such a token."""

    def make(role: str, **claims: object) -> httpx.AsyncClient:
        return client(app, mint(role, **claims))  # type: ignore[arg-type]

    return make


@pytest.fixture
async def committed(
    committed_db: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """`committed_db`, and afterwards the append-only rows its commits left (this service's
    audit trail and ledgers) removed, with the triggers bypassed for this cleanup only, so
    other tests see a trail of their own."""
    yield committed_db
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text("DELETE FROM activities.audit_log"))
        await conn.execute(text("DELETE FROM activities.fund_expenses"))
        await conn.execute(text("DELETE FROM activities.points_ledger"))
        await conn.execute(text("DELETE FROM activities.fund_allocations"))
