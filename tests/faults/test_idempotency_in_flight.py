"""An `Idempotency-Key` whose first request is still running answers 409 with
`Retry-After`; when that request's client dies mid-statement (an app killed, a network
cut), the server cancels the orphaned statement within about a second
(`client_connection_check_interval`, set by common/db.py) and the key is free for the
retry — it does not stay locked until the statement ends by itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import create_engine, make_sessionmaker
from common.errors import Conflict
from common.idempotency import run_idempotent
from services.registry.models import idempotency_keys
from tests.faults.helpers import eventually

CALLER = "faults-in-flight"


@pytest.fixture
async def app_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine made the way every app makes its own."""
    engine = create_engine(database_url, pool_size=2)
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.caller == CALLER))
        await engine.dispose()


async def test_key_in_flight_is_409_and_free_soon_after_its_client_dies(
    app_engine: AsyncEngine,
) -> None:
    sessions = make_sessionmaker(app_engine)
    key = uuid.uuid4().hex
    started = asyncio.Event()
    raw: Any = None

    async def first() -> None:
        nonlocal raw
        async with sessions() as session, session.begin():

            async def produce() -> tuple[int, Any]:
                nonlocal raw
                conn = await session.connection()
                raw = (await conn.get_raw_connection()).driver_connection
                started.set()
                await session.execute(text("SELECT pg_sleep(30)"))  # a statement in progress
                return 201, {"id": "never"}

            await run_idempotent(
                session,
                table=idempotency_keys,
                caller=CALLER,
                key=key,
                request_fingerprint="f",
                produce=produce,
            )

    async def retry() -> tuple[int, Any]:
        async with sessions() as session, session.begin():
            return await run_idempotent(
                session,
                table=idempotency_keys,
                caller=CALLER,
                key=key,
                request_fingerprint="f",
                produce=lambda: _created(),
            )

    task = asyncio.create_task(first())
    try:
        await asyncio.wait_for(started.wait(), 10)
        with pytest.raises(Conflict) as refused:
            await retry()
        assert refused.value.status == 409
        assert refused.value.headers == {"Retry-After": "1"}

        # The first request's client dies mid-statement: its socket closes, no goodbye.
        raw.terminate()
        died_at = time.monotonic()

        async def answered() -> tuple[int, Any] | None:
            try:
                return await retry()
            except Conflict:
                return None

        second = await eventually(answered, timeout_s=10, every_s=0.1, what="the key")
        assert second == (201, {"id": "second"})
        assert time.monotonic() - died_at < 5  # far sooner than the 30 s statement
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _created() -> tuple[int, Any]:
    return 201, {"id": "second"}
