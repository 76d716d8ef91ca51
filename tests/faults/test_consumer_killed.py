"""A consumer killed (SIGKILL) in the middle of a batch resumes without loss or double
effect: the batch it was applying leaves nothing behind, its advisory lock goes with its
connection, and the next consumer applies every event's effect exactly once — the
projection matches the registry, and a non-idempotent counter (one row per application)
holds one row per event."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import create_engine, make_sessionmaker, plain_url
from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from tests.events.helpers import populate, projection, registry_view, rows
from tests.faults.consumer_child import EFFECTS
from tests.faults.helpers import eventually
from tests.helpers import client, mint
from tests.pgutil import drop_database, fresh_database
from tools import migrate

ROOT = Path(__file__).resolve().parents[2]
BATCH = 5
HANG_AT = 3  # batches 1 and 2 commit; batch 3 hangs halfway

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(scope="module")
def scratch_url(server_url: str) -> Iterator[str]:
    url, name = fresh_database(server_url)
    try:
        migrate.upgrade_all(url)
        yield url
    finally:
        drop_database(server_url, name)


@pytest.fixture
async def sessions(scratch_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(scratch_url, pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


class Child:
    """The consumer process; ended by its pid, always."""

    def __init__(self, dsn: str, marker: Path, hang_at: int) -> None:
        self.log = marker.with_suffix(".log")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "tests.faults.consumer_child",
                    dsn,
                    str(marker),
                    str(BATCH),
                    str(hang_at),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def end(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=20)


async def test_consumer_killed_mid_batch_resumes_without_loss_or_double_effect(
    scratch_url: str, sessions: Sessions, settings_env: dict[str, object], tmp_path: Path
) -> None:
    env = {**settings_env, "database_url": scratch_url, "consumers_enabled": False}
    settings = RegistrySettings(**env)  # type: ignore[arg-type]
    async with client(create_app(settings, sessionmaker=sessions), mint("admin")) as admin:
        await populate(admin, members=6)
    async with sessions() as session, session.begin():
        await session.execute(text(EFFECTS))
    outbox = [
        (str(r[0]), int(r[1]))
        for r in await rows(sessions, "SELECT event_id, id FROM registry.outbox ORDER BY id")
    ]
    assert len(outbox) > HANG_AT * BATCH
    dsn = plain_url(scratch_url)

    async def cursor() -> int:
        found = await rows(
            sessions,
            "SELECT id FROM mobility.consumer_cursors "
            "WHERE consumer = 'mobility.registry' AND source = 'registry'",
        )
        return int(found[0][0]) if found else 0

    async def effects() -> dict[str, int]:
        counted = await rows(
            sessions, "SELECT event_id::text, count(*) FROM public.fault_effects GROUP BY 1"
        )
        return {str(e): int(n) for e, n in counted}

    marker = tmp_path / "hung"
    first = Child(dsn, marker, HANG_AT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():  # the child writes it from inside the hung batch
            assert first.proc.poll() is None, first.output()
            assert time.monotonic() < deadline, f"the consumer never hung:\n{first.output()}"
            await asyncio.sleep(0.02)
        assert marker.read_text() == f"{BATCH // 2} of {BATCH}"
    finally:
        first.end(signal.SIGKILL)

    # What the killed consumer committed: whole batches and the cursor after them; of the
    # batch it was in, nothing.
    committed = (HANG_AT - 1) * BATCH
    assert await cursor() == outbox[committed - 1][1]
    assert await effects() == {e: 1 for e, _ in outbox[:committed]}

    second = Child(dsn, tmp_path / "never", 0)
    try:

        async def caught_up() -> bool:
            assert second.proc.poll() is None, second.output()
            return await cursor() == outbox[-1][1]

        await eventually(caught_up, timeout_s=60, what="the next consumer to catch up")
    finally:
        second.end(signal.SIGTERM)

    assert await effects() == {e: 1 for e, _ in outbox}
    assert await projection(sessions, "mobility") == await registry_view(sessions)
