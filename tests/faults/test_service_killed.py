"""A service killed mid-request: the registry dies (SIGKILL) while creates wait inside it.
The gateway answers every one of them, and every create that comes while the registry is
down, at once with a 503 problem; the dead process's half-done statements end by
themselves (no lock or `Idempotency-Key` stays held by a client that is gone); and the
client's retries with the same keys, once the registry is back, create exactly one record
each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import pytest

from common.db import plain_url
from tests.contract.system import System, running_system
from tests.faults.helpers import (
    Write,
    attempt,
    count,
    create_org,
    eventually,
    fetch_ids,
    login,
    member_write,
)

IN_FLIGHT = 6
FAST_S = 3.0  # what "at once" means here, on a shared machine
WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


@pytest.fixture(scope="module")
def system(server_url: str) -> Iterator[System]:
    with running_system(server_url) as running:
        yield running


async def test_killed_registry_answers_fast_and_retries_create_one_record_each(
    system: System,
) -> None:
    db = system.database_url
    registry = system.processes["registry"]
    c = await login(system.gateway_url)
    holder = await asyncpg.connect(plain_url(db))
    try:
        community = await create_org(c, await create_org(c))
        # Creates get stuck inside the registry: the members table is locked against writes.
        lock = holder.transaction()
        await lock.start()
        await holder.execute("LOCK TABLE registry.members IN EXCLUSIVE MODE")
        writes = [member_write(community) for _ in range(IN_FLIGHT)]
        in_flight = [asyncio.create_task(attempt(c, w)) for w in writes]

        async def all_waiting() -> bool:
            return await count(db, WAITING) >= IN_FLIGHT

        await eventually(all_waiting, timeout_s=20, what="the creates to wait on the lock")
        assert not any(t.done() for t in in_flight)

        killed_at = time.monotonic()
        registry.kill()
        answers = await asyncio.wait_for(asyncio.gather(*in_flight), 30)
        answered_in = time.monotonic() - killed_at
        assert all(a.status in (502, 503, 504) and a.problem for a in answers), answers
        assert answered_in < FAST_S, answered_in

        # While it is down, a new create is refused at once too.
        down = member_write(community)
        refused = await attempt(c, down)
        assert refused.status == 503 and refused.problem, refused
        assert refused.seconds < FAST_S
        writes.append(down)

        # The dead client's statements are cancelled by the server (the lock is still held):
        # nothing of theirs is left holding a row, a lock or an idempotency key.
        async def orphans_gone() -> bool:
            return await count(db, WAITING) == 0

        await eventually(orphans_gone, timeout_s=10, what="the orphaned statements to end")
        await lock.rollback()
        assert await count(db, "SELECT count(*) FROM registry.members") == 0
    finally:
        await holder.close()

    try:
        await asyncio.to_thread(registry.start, 60)

        # The client retries each create with its key until it is answered (the gateway's
        # circuit may still be open for a moment after the restart).
        async def retry(write: Write) -> None:
            async def created() -> bool:
                again = await attempt(c, write)
                assert again.status in (201, 503), again
                return again.status == 201

            await eventually(created, timeout_s=30, every_s=0.2, what=f"{write.key} created")

        for write in writes:
            await retry(write)
        ids = {w.attempts[-1].record_id for w in writes}
        assert len(ids) == len(writes)
        assert set(await fetch_ids(db, "SELECT id FROM registry.members")) == ids
        # And once more: the same answers, nothing new.
        for write in writes:
            again = await attempt(c, write)
            assert (again.status, again.record_id) == (201, write.attempts[-2].record_id)
        assert await count(db, "SELECT count(*) FROM registry.members") == len(writes)
    finally:
        await c.aclose()
