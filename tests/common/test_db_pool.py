"""The apps' engine hands out only live connections: a pooled connection whose server
session ended (a restart, an administrator, a network cut) is checked as it is handed out
and replaced, so the request that gets it does not fail."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import app_engine, create_engine, plain_url
from common.settings import BaseAppSettings


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


async def test_an_apps_engine_keeps_what_a_burst_opened_and_opens_no_more(
    database_url: str,
) -> None:
    """A server's engine has no overflow: the sessions a burst opened serve the next burst
    (no server process started again, no type introspection again), and a request beyond
    `db_pool_size` waits for one of them instead of opening another."""
    engine = app_engine(
        BaseAppSettings(database_url=database_url, db_pool_size=3), application_name="pool-test"
    )
    held: list[AsyncConnection] = []

    async def checkout() -> AsyncConnection:
        conn = await engine.connect()
        held.append(conn)
        return conn

    async def pid(conn: AsyncConnection) -> int:
        return int(await conn.scalar(text("SELECT pg_backend_pid()")))

    async def give_back(conn: AsyncConnection) -> None:
        held.remove(conn)
        await conn.close()

    try:
        first = [await checkout() for _ in range(3)]
        pids = {await pid(conn) for conn in first}
        assert len(pids) == 3
        for conn in first:
            await give_back(conn)
        burst = [await checkout() for _ in range(3)]
        assert {await pid(conn) for conn in burst} == pids
        fourth = asyncio.create_task(checkout())
        done, _ = await asyncio.wait({fourth}, timeout=0.5)
        assert not done, "a fourth connection was opened beyond db_pool_size"
        await give_back(burst[0])
        async with asyncio.timeout(10):
            assert await pid(await fourth) in pids
    finally:
        for conn in held:
            await conn.close()
        await engine.dispose()
