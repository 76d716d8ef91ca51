"""A real PostgreSQL for the whole run: a throwaway embedded server by default, or a fresh
database on the server at TEST_DATABASE_URL. Migrations run once; each test runs inside an
outer transaction that is rolled back, unless it asks for committed data."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from common.db import create_engine, make_sessionmaker
from tests.helpers import PUBLIC_PEM, SERVICE_PRIVATE_PEM, SERVICE_PUBLIC_PEM
from tests.pgutil import drop_database, fresh_database
from tools import migrate, pg


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    server = os.environ.get("TEST_DATABASE_URL")
    if server:
        url, name = fresh_database(server)
        migrate.upgrade_all(url)
        yield url
        drop_database(server, name)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="lianxin-test-pg-"))
    cluster = pg.start(data_dir)
    try:
        url, _ = fresh_database(cluster.url)
        migrate.upgrade_all(url)
        yield url
    finally:
        pg.destroy(data_dir)


@pytest.fixture(scope="session")
def server_url(database_url: str) -> str:
    return make_url(database_url).set(database="postgres").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A sessionmaker whose sessions join one outer transaction, rolled back after the test."""
    async with engine.connect() as conn:
        outer = await conn.begin()
        yield make_sessionmaker(conn, join_transaction_mode="create_savepoint")
        if outer.is_active:
            await outer.rollback()


COMMITTED_TABLES = {
    "registry": [
        "transfers",
        "member_merges",
        "members",
        "orgs",
        "member_identities",
        "org_codes",
        "upper_orgs",
        "idempotency_keys",
        "outbox",
        "consumer_cursors",
        "scheduled_jobs",
    ],
    "mobility": [
        "feedback",
        "links",
        "contacts",
        "mobile_cards",
        "transfers",
        "last_org_life",
        "members",
        "orgs",
        "consumer_cursors",
        "outbox",
        "idempotency_keys",
    ],
    "activities": [
        "members",
        "orgs",
        "consumer_cursors",
        "outbox",
        "idempotency_keys",
        "signups",
        "attendance",
        "training_attendance",
        "training_sessions",
        "pledge_items",
        "role_assignments",
        "program_adoptions",
        "talks",
        "service_hours",
        "help_requests",
        "activities",
        # (fund_allocations stay: the append-only fund_expenses refer to them)
    ],
    # (audit_log tables refuse TRUNCATE: they are append-only)
    "gateway": [
        "refresh_tokens",
        "api_keys",
        "users",
        "idempotency_keys",
        "webhook_attempts",
        "webhook_deliveries",
        "webhooks",
        "orgs",
        "consumer_cursors",
    ],
}


@pytest.fixture
async def committed_db(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Real commits on separate pooled connections (for races); tables emptied afterwards."""
    yield make_sessionmaker(engine)
    async with engine.begin() as conn:
        from sqlalchemy import text

        for schema, tables in COMMITTED_TABLES.items():
            names = ", ".join(f"{schema}.{t}" for t in tables)
            await conn.execute(text(f"TRUNCATE {names} CASCADE"))


@pytest.fixture(scope="session")
def settings_env(database_url: str) -> dict[str, object]:
    return {
        "database_url": database_url,
        "jwt_public_key": PUBLIC_PEM,
        "service_public_key": SERVICE_PUBLIC_PEM,
        "service_private_key": SERVICE_PRIVATE_PEM,
        "environment": "test",
    }
