"""The apps' engine hands out only live connections: a pooled connection whose server
session ended (a restart, an administrator, a network cut) is checked as it is handed out
and replaced, so the request that gets it does not fail."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import text

from common.db import create_engine, plain_url


async def test_a_pooled_connection_whose_session_ended_is_replaced(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            first = await conn.scalar(text("SELECT pg_backend_pid()"))
        admin = await asyncpg.connect(plain_url(database_url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
            # Terminated: the backend is gone once the server says so.
            async with asyncio.timeout(10):
                while await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", first
                ):
                    await admin.execute("SELECT pg_sleep(0.01)")
        finally:
            await admin.close()
        async with engine.connect() as conn:
            second = await conn.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await engine.dispose()
