"""Scheduled jobs (common/schedule.py): one claim per period whoever asks, at the same
moment or later; a failed tick gives its claim back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.schedule import claim_tick, run_tick

SCHEMA = "registry"
Sessions = async_sessionmaker[AsyncSession]


async def runs(db: Sessions, name: str) -> int | None:
    async with db() as s:
        value = await s.scalar(
            text("SELECT runs FROM registry.scheduled_jobs WHERE name = :n"), {"n": name}
        )
    return None if value is None else int(value)


async def test_replicas_claiming_at_once_get_one_tick(committed_db: Sessions) -> None:
    done: list[int] = []

    def job(n: int) -> Callable[[AsyncSession], Awaitable[None]]:
        async def work(session: AsyncSession) -> None:
            await asyncio.sleep(0.05)  # hold the claim while the others knock
            done.append(n)

        return work

    results = await asyncio.gather(
        *(run_tick(committed_db, SCHEMA, "t.race", job(n), every_s=3600) for n in range(4))
    )
    assert sorted(results) == [False, False, False, True]
    assert len(done) == 1
    assert await runs(committed_db, "t.race") == 1
    # Later within the period: still nobody.
    assert not await run_tick(committed_db, SCHEMA, "t.race", job(9), every_s=3600)
    assert done == [results.index(True)]


async def test_the_next_period_is_claimed_again(committed_db: Sessions) -> None:
    async with committed_db() as s, s.begin():
        assert await claim_tick(s, SCHEMA, "t.period", every_s=3600)
        # Pretend the tick was an hour and a second ago.
        await s.execute(
            text(
                "UPDATE registry.scheduled_jobs SET last_run_at = now() - interval '3601 s' "
                "WHERE name = 't.period'"
            )
        )
    async with committed_db() as s, s.begin():
        assert await claim_tick(s, SCHEMA, "t.period", every_s=3600)
    async with committed_db() as s, s.begin():
        assert not await claim_tick(s, SCHEMA, "t.period", every_s=3600)
    assert await runs(committed_db, "t.period") == 2


async def test_a_failed_tick_leaves_it_to_the_next_try(committed_db: Sessions) -> None:
    async def broken(session: AsyncSession) -> None:
        raise RuntimeError("the job failed")

    async def fine(session: AsyncSession) -> None:
        return None

    with pytest.raises(RuntimeError):
        await run_tick(committed_db, SCHEMA, "t.fail", broken, every_s=3600)
    assert await runs(committed_db, "t.fail") is None
    assert await run_tick(committed_db, SCHEMA, "t.fail", fine, every_s=3600)
    assert await runs(committed_db, "t.fail") == 1
