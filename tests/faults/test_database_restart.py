"""PostgreSQL restarted under traffic: writes keep coming through the gateway to two
services while the server stops (fast: every session is terminated) and starts again.
The apps recover without being restarted, every acknowledged write is in the database, and
every write that failed is safe to retry with its `Idempotency-Key`: after retrying them all,
each key has exactly one record."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest
from fastapi import APIRouter

from common.app import create_service_app
from common.settings import BaseAppSettings
from tests.contract.system import System, running_system
from tests.faults.helpers import (
    B,
    Server,
    Write,
    activity_write,
    attempt,
    count,
    create_org,
    eventually,
    fetch_ids,
    is_problem,
    login,
    member_write,
    org_write,
    unhandled_errors,
)

RECOVERY_S = 30.0


@pytest.fixture(scope="module")
def system(own_server: Server) -> Iterator[System]:
    with running_system(
        own_server.url, service_env={"LIANXIN_EVENTS_POLL_INTERVAL_S": "0.2"}
    ) as running:
        yield running


async def test_restart_under_traffic_loses_nothing_and_retries_make_one_record_each(
    system: System, own_server: Server
) -> None:
    c = await login(system.gateway_url)
    try:
        await _restart_under_traffic(c, system, own_server)
    finally:
        await c.aclose()


async def _restart_under_traffic(c: httpx.AsyncClient, system: System, server: Server) -> None:
    db = system.database_url
    city = await create_org(c)
    community = await create_org(c, city)
    await eventually(
        lambda: count(
            db, "SELECT count(*) FROM activities.orgs WHERE org_id = $1", uuid.UUID(community)
        ),
        timeout_s=20,
        what="activities to know the community",
    )
    pids = {name: p.pid for name, p in system.processes.items()}

    writes: list[Write] = []
    done = asyncio.Event()

    async def writer(make: Callable[[], Write]) -> None:
        while not done.is_set():
            write = make()
            writes.append(write)
            started = time.monotonic()
            await attempt(c, write)
            # At most 50 creates a second per writer (a failure comes back at once).
            await asyncio.sleep(max(0.0, 0.02 - (time.monotonic() - started)))

    makers: list[Callable[[], Write]] = [
        *[lambda: member_write(community)] * 3,
        *[lambda: org_write(city)] * 2,
        *[lambda: activity_write(community)] * 3,
    ]
    tasks = [asyncio.create_task(writer(m)) for m in makers]
    try:
        await eventually(
            _acked_since(writes, 0, per_kind=5), timeout_s=30, what="writes before the restart"
        )
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        restarted_at, mark = time.monotonic(), len(writes)
        await eventually(
            _acked_since(writes, mark, per_kind=10),
            timeout_s=RECOVERY_S,
            what="every service to take writes again after the restart",
        )
        recovered_s = time.monotonic() - restarted_at
    finally:
        done.set()
        await asyncio.gather(*tasks)

    # The apps recovered by themselves: same processes, ready again.
    assert {n: p.pid for n, p in system.processes.items()} == pids
    for process in system.processes.values():
        assert process.proc is not None and process.proc.poll() is None

    async def ready() -> bool:
        return (await c.get("/readyz")).status_code == 200

    await eventually(ready, timeout_s=RECOVERY_S, what="the gateway's /readyz to answer 200")

    failed = [w for w in writes if w.acknowledged is None]
    statuses = Counter(a.status for w in failed for a in w.attempts)
    assert failed, "the restart interrupted no write: the test proved nothing"
    # A failure is an honest 503 (or 504) problem, never a 500 or a dropped connection.
    assert set(statuses) <= {503, 504}, f"{statuses}\n{unhandled_errors(system.processes)}"
    assert all(a.problem for w in failed for a in w.attempts)
    print(
        f"\n{len(writes)} writes, {len(failed)} failed during the restart {dict(statuses)}; "
        f"all services took writes again {recovered_s:.1f} s after the server was back"
    )

    # Every acknowledged write is in the database.
    tables = {
        "member": "SELECT id FROM registry.members",
        "org": "SELECT id FROM registry.orgs",
        "activity": "SELECT id FROM activities.activities",
    }
    stored = {kind: set(await fetch_ids(db, sql)) for kind, sql in tables.items()}
    stored["org"] -= {city, community}
    for w in writes:
        ack = w.acknowledged
        if ack is not None:
            assert ack.record_id in stored[w.kind], (w.kind, w.key)

    # Retrying every write with its key: the acknowledged ones answer with the same record,
    # the failed ones are created now.
    semaphore = asyncio.Semaphore(8)

    async def retry(write: Write) -> None:
        first = write.acknowledged
        async with semaphore:
            again = await attempt(c, write)
        assert again.status == 201, (write.kind, again)
        if first is not None:
            assert again.record_id == first.record_id

    await asyncio.gather(*(retry(w) for w in writes))

    # Exactly one record per key: none lost, none twice.
    stored = {kind: set(await fetch_ids(db, sql)) for kind, sql in tables.items()}
    stored["org"] -= {city, community}
    for kind in tables:
        mine = [w for w in writes if w.kind == kind]
        answered = {w.attempts[-1].record_id for w in mine}
        assert len(answered) == len(mine), kind
        assert stored[kind] == answered, kind

    # The consumers came back too: activities' read model holds every member.
    members = len(stored["member"])

    async def projected() -> bool:
        return await count(db, "SELECT count(*) FROM activities.members") == members

    await eventually(projected, timeout_s=60, what="activities' consumer to catch up")
    assert (await c.get(f"{B}/registry/members?org_id={community}&limit=1")).status_code == 200


async def test_an_unreachable_database_is_503_other_os_errors_stay_500(
    settings_env: dict[str, object],
) -> None:
    """Opening a connection fails with the socket's own error, which SQLAlchemy does not
    wrap: refused, reset, timed out or "Connect call failed" are 503 problems to retry; an
    OSError that is not about reaching a server stays a logged 500."""
    router = APIRouter()
    raised: dict[str, Exception] = {
        "refused": ConnectionRefusedError(111, "Connection refused"),
        "reset": ConnectionResetError(104, "Connection reset by peer"),
        "timeout": TimeoutError(),
        "every-address": OSError("Multiple exceptions: [Errno 111] Connect call failed"),
        "permission": PermissionError(13, "Permission denied"),
    }

    @router.get("/fail/{kind}", operation_id="fail")
    async def fail(kind: str) -> None:
        raise raised[kind]

    app = create_service_app(
        title="t",
        description="t",
        settings=BaseAppSettings(**settings_env),  # type: ignore[arg-type]
        routers=[router],
        prefix="/api/v1/t",
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for kind in raised:
            r = await c.get(f"/api/v1/t/fail/{kind}")
            expected = 500 if kind == "permission" else 503
            assert r.status_code == expected and is_problem(r), (kind, r.text)
            if expected == 503:
                assert r.headers["retry-after"] == "1"
                assert r.json()["type"] == "urn:lianxin:problem:unavailable"


def _acked_since(writes: list[Write], mark: int, *, per_kind: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        acked = Counter(w.kind for w in writes[mark:] if w.acknowledged is not None)
        return all(acked[k] >= per_kind for k in ("member", "org", "activity"))

    return check
