"""Scheduled jobs that run once per period however many replicas run them.

Every replica of a service runs the same background loop (`run_periodic`); each tick first
claims the job in `<schema>.scheduled_jobs` (`claim_tick`): one conditional upsert that
succeeds only when the last claimed tick is at least a period old. The row lock it takes
serializes replicas that try at the same moment, and the loser re-reads the row after the
winner commits and finds the period already claimed. The job then runs in the same
transaction as its claim: a tick that fails rolls its claim back and another replica (or
the next tick) does it. `runs` counts the ticks done, for operators and tests.

Two replicas therefore never both run a tick, and a replica that starts late does not run
one early either: the period is the system's, not each process's."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger("lianxin.schedule")

Job = Callable[[AsyncSession], Awaitable[object]]


def scheduled_jobs_table(metadata: MetaData, schema: str) -> Table:
    """`scheduled_jobs`: the last tick each periodic job of this schema claimed."""
    return Table(
        "scheduled_jobs",
        metadata,
        Column("name", String(100), primary_key=True),
        Column("last_run_at", DateTime(timezone=True), nullable=False),
        Column("runs", BigInteger, nullable=False, server_default="0"),
        schema=schema,
    )


async def claim_tick(session: AsyncSession, schema: str, name: str, *, every_s: float) -> bool:
    """Claims this period's tick of job `name` in the caller's transaction: True for the
    one caller per period that gets it (it must then do the work before committing)."""
    claimed = await session.execute(
        text(
            f"INSERT INTO {schema}.scheduled_jobs AS j (name, last_run_at, runs) "  # noqa: S608 - schema is a constant
            "VALUES (:name, clock_timestamp(), 1) "
            "ON CONFLICT (name) DO UPDATE SET last_run_at = clock_timestamp(), runs = j.runs + 1 "
            "WHERE j.last_run_at <= clock_timestamp() - make_interval(secs => :every) "
            "RETURNING j.runs"
        ),
        {"name": name, "every": every_s},
    )
    return claimed.first() is not None


async def run_tick(
    sessionmaker: async_sessionmaker[AsyncSession],
    schema: str,
    name: str,
    job: Job,
    *,
    every_s: float,
) -> bool:
    """One attempt: claim the tick and run `job` in the same transaction. Returns whether
    this process did the tick."""
    async with sessionmaker() as session, session.begin():
        if not await claim_tick(session, schema, name, every_s=every_s):
            return False
        await job(session)
        return True


async def run_periodic(
    sessionmaker: async_sessionmaker[AsyncSession],
    schema: str,
    name: str,
    job: Job,
    *,
    every_s: float,
    check_s: float | None = None,
) -> None:
    """Until cancelled: every `check_s` (default: a tenth of the period, at most a minute)
    try to claim the tick; the job runs once per `every_s` across all replicas."""
    check = check_s if check_s is not None else min(max(every_s / 10, 0.05), 60.0)
    while True:
        try:
            if await run_tick(sessionmaker, schema, name, job, every_s=every_s):
                log.info("scheduled job %s ran", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled job %s failed; another tick will retry", name)
        # A little jitter keeps replicas from knocking at the same instant every time.
        await asyncio.sleep(check * (0.9 + 0.2 * random.random()))  # noqa: S311 - not crypto
