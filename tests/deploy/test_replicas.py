"""Every app is safe to run as several replicas: two processes of each service and two
gateways on one fresh database (`tests/contract/system.py` with `replicas=2`), gateway i
routing to replica i of each service, the gateways sharing rate limits through a Redis the
test starts itself.

The acceptance flows go through both gateways alternately (a token minted by one is used
on the other), and then the database shows what must hold with replicas:
- the first admin exists once;
- a per-user limit is one budget across both gateways (the allowed requests add up to the
  burst, and the rest are 429 with `Retry-After`);
- each consumer runs in exactly one process (one advisory-lock holder) and every read
  model holds each member once, with each event's effect once;
- each event reaches a webhook once, in one attempt, though both gateways deliver;
- each scheduled job runs once per period whichever replica claims it."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from common.db import plain_url
from tests.contract.system import ADMIN_PASSWORD, ADMIN_USER, System, running_system
from tests.gateway.test_ratelimit import redis_url  # noqa: F401  (fixture: a throwaway Redis)
from tests.registry.factories import id_number
from tests.webhooks.receiver import Receiver, serve

BURST = 30  # per caller, shared by both gateways; the flows below stay under it
SWEEP_S = 1.0  # period of the scheduled jobs in this test
SETTLE_S = 60.0
CONSUMERS = {
    "registry": ["registry.mobility"],
    "mobility": ["mobility.registry", "mobility.transfers", "mobility.org_life"],
    "activities": ["activities.registry"],
    "gateway": ["gateway.webhooks"],
}
JOBS = {"registry": "registry.transfer_expiry", "mobility": "mobility.lost_contacts"}
_serial = itertools.count(11)


@pytest.fixture(scope="module")
def started_at() -> float:
    """The wall-clock time before any process of the system starts."""
    return time.time()


@pytest.fixture(scope="module")
def system(server_url: str, redis_url: str, started_at: float) -> Iterator[System]:  # noqa: F811
    with running_system(
        server_url,
        replicas=2,
        service_env={
            "LIANXIN_EVENTS_POLL_INTERVAL_S": "0.2",
            "LIANXIN_LOST_CONTACT_SWEEP_S": str(SWEEP_S),
            "LIANXIN_TRANSFER_EXPIRY_SWEEP_S": str(SWEEP_S),
        },
        gateway_env={
            "REDIS_URL": redis_url,
            "LIANXIN_RATE_LIMIT_ENABLED": "true",
            "LIANXIN_RATE_LIMIT_PER_S": "0.001",  # nothing refills during the test
            "LIANXIN_RATE_LIMIT_BURST": str(BURST),
            "LIANXIN_EVENTS_POLL_INTERVAL_S": "0.2",
            "LIANXIN_WEBHOOK_POLL_INTERVAL_S": "0.2",
        },
    ) as running:
        yield running


@pytest.fixture
async def gateways(system: System) -> AsyncIterator[list[httpx.AsyncClient]]:
    clients = [
        httpx.AsyncClient(base_url=url, timeout=30.0, trust_env=False)
        for url in system.gateway_urls
    ]
    try:
        yield clients
    finally:
        for c in clients:
            await c.aclose()


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[Receiver, str]]:
    """A webhook receiver on a loopback socket (tests/webhooks/receiver.py)."""
    receiver = Receiver()
    async with serve(receiver) as url:
        yield receiver, url


@pytest.fixture
async def pg(system: System) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(plain_url(system.database_url))
    try:
        yield conn
    finally:
        await conn.close()


async def login(c: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    r = await c.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def new_id_number() -> str:
    """A new valid number of a man born 1980-05-17 (an odd serial is a man's)."""
    return id_number(date(1980, 5, 17), serial=2 * next(_serial) + 1)


async def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.text}"
    return r.json()


async def settled(pg: asyncpg.Connection) -> None:
    """Bounded wait until every consumer's cursor reached the end of each source's outbox
    (events flow asynchronously between processes; this polls the database)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        behind = []
        for schema, names in CONSUMERS.items():
            rows = await pg.fetch(
                f"SELECT consumer, source, id FROM {schema}.consumer_cursors "  # noqa: S608
                "WHERE consumer = ANY($1::text[])",
                names,
            )
            for row in rows:
                end = await pg.fetchval(
                    f"SELECT coalesce(max(id), 0) FROM {row['source']}.outbox"  # noqa: S608
                )
                if row["id"] < end:
                    behind.append((row["consumer"], row["source"], row["id"], end))
        if not behind:
            return
        assert time.monotonic() < deadline, f"consumers still behind: {behind}"
        await asyncio.sleep(0.1)  # polling the database, bounded by the deadline


async def advisory_holders(pg: asyncpg.Connection, key: str) -> list[int]:
    """The backends holding the session advisory lock `key` (common/events/consumer.py)."""
    rows = await pg.fetch(
        """SELECT l.pid FROM pg_locks l,
                  (SELECT hashtextextended($1, 0) AS h) k
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.classid::bigint = (k.h >> 32) & 4294967295
             AND l.objid::bigint = k.h & 4294967295""",
        key,
    )
    return [r["pid"] for r in rows]


async def test_first_admin_created_once(pg: asyncpg.Connection, system: System) -> None:
    # Both gateways started on an empty database, each trying to create the first admin.
    assert len(system.gateway_urls) == 2
    rows = await pg.fetch("SELECT username FROM gateway.users WHERE role = 'admin'")
    assert [r["username"] for r in rows] == [ADMIN_USER]


async def test_flows_across_both_gateways(
    gateways: list[httpx.AsyncClient],
    pg: asyncpg.Connection,
    hooks: tuple[Receiver, str],
) -> None:
    one, two = gateways
    # A token minted by one gateway works on the other.
    admin = await login(one, ADMIN_USER, ADMIN_PASSWORD)
    assert (await two.get("/api/v1/auth/me", headers=admin)).json()["username"] == ADMIN_USER
    tag = uuid.uuid4().hex[:6]
    # Every event goes to a webhook too: both gateways fan out and deliver.
    receiver, hook_url = hooks
    await ok(
        await two.post("/api/v1/webhooks", headers=admin,
                       json={"url": f"{hook_url}/hook", "events": ["*"], "allow_private": True}),
        201,
    )  # fmt: skip

    def org(code: str, name: str, kind: str, level: str, parent: str | None) -> dict[str, Any]:
        return {"code": f"{code}-{tag}", "name": name, "kind": kind, "area_level": level,
                "parent_id": parent}  # fmt: skip

    city = await ok(
        await one.post("/api/v1/registry/orgs", headers=admin,
                       json=org("R-CITY", "副本市", "committee", "city", None)), 201
    )  # fmt: skip
    comm_a = await ok(
        await two.post("/api/v1/registry/orgs", headers=admin,
                       json=org("R-A", "甲社区", "branch", "community", city["id"])), 201
    )  # fmt: skip
    comm_b = await ok(
        await one.post("/api/v1/registry/orgs", headers=admin,
                       json=org("R-B", "乙社区", "branch", "community", city["id"])), 201
    )  # fmt: skip
    unit = await ok(
        await two.post("/api/v1/registry/orgs", headers=admin,
                       json=org("R-U", "某局党委", "committee", "work_unit", city["id"])), 201
    )  # fmt: skip

    # Registration cards, alternating gateways (and so registry replicas).
    members = []
    for n, c in enumerate((one, two, one)):
        body = {
            "name": f"副本党员{n}",
            "gender": "male",
            "birth_date": "1980-05-17",
            "id_number": new_id_number(),
            "category": "retired",
            "org_id": comm_a["id"],
        }
        members.append(await ok(await c.post("/api/v1/registry/members", headers=admin,
                                             json=body), 201))  # fmt: skip

    # A transfer: requested on one gateway, issued on the other, received on the first.
    moved = members[0]["id"]
    t = await ok(
        await two.post("/api/v1/registry/transfers", headers=admin,
                       json={"member_id": moved, "to_org_id": comm_b["id"], "reason": "迁居"}),
        201,
    )  # fmt: skip
    await ok(await one.post(f"/api/v1/registry/transfers/{t['id']}/issue", headers=admin,
                            json={"letter_no": f"副本〔2026〕{tag}号"}))  # fmt: skip
    done = await ok(await two.post(f"/api/v1/registry/transfers/{t['id']}/receive",
                                   headers=admin))  # fmt: skip
    assert done["status"] == "completed"

    # A mobile card on mobility: the registry's consumer turns the member `mobile` once.
    mobile = members[1]["id"]
    await settled(pg)  # mobility knows the member from the registry's events
    await ok(
        await one.post("/api/v1/mobility/mobile-members", headers=admin,
                       json={"member_id": mobile, "direction": "outflow", "place": "深圳",
                             "tracker": "王书记",
                             "left_on": str(date.today() - timedelta(days=3))}),
        201,
    )  # fmt: skip

    # A work unit's sync with its API key (issued through one gateway, used on the other).
    key = await ok(
        await one.post("/api/v1/auth/api-keys", headers=admin,
                       json={"name": "副本 人事", "org_id": unit["id"], "scopes": ["sync"]}),
        201,
    )  # fmt: skip
    rows = [
        {"external_id": f"E-{n}", "name": f"在职{n}", "id_number": new_id_number(),
         "residence_community_code": f"R-B-{tag}"}
        for n in range(3)
    ]  # fmt: skip
    synced = await ok(
        await two.put(f"/api/v1/mobility/sync/{unit['id']}/members",
                      headers={"X-API-Key": key["key"], "Idempotency-Key": f"sync-{tag}"},
                      json={"mode": "full", "members": rows})
    )  # fmt: skip
    assert synced["created"] == 3 and synced["errors"] == [], synced

    # An activity with attendance, once the activities read model has the members.
    await settled(pg)
    activity = await ok(
        await two.post("/api/v1/activities/activities", headers=admin,
                       json={"org_id": comm_a["id"], "type": "volunteer_service",
                             "title": "副本志愿服务", "starts_at": "2026-06-02T19:00:00+00:00",
                             "ends_at": "2026-06-02T21:00:00+00:00"}),
        201,
    )  # fmt: skip
    attendance = [
        {"member_id": members[1]["id"], "status": "present", "hours": "2"},
        {"member_id": members[2]["id"], "status": "absent"},
    ]
    await ok(await one.put(f"/api/v1/activities/activities/{activity['id']}/attendance",
                           headers=admin, json=attendance))  # fmt: skip

    # The report of the city, on either gateway, agrees with what was registered.
    await settled(pg)
    reports = [
        await ok(await c.get(f"/api/v1/reports/orgs/{city['id']}", headers=admin,
                             params={"year": 2026}))
        for c in (one, two)
    ]  # fmt: skip
    assert reports[0] == reports[1]
    registered = await pg.fetchval(
        # A subtree's members: their org or (residents) their residence org lies in it.
        "SELECT count(*) FROM registry.members m WHERE m.merged_into IS NULL AND EXISTS "
        "(SELECT FROM registry.orgs o WHERE o.id IN (m.org_id, m.residence_org_id) "
        "AND o.path <@ (SELECT path FROM registry.orgs WHERE id = $1))",
        uuid.UUID(city["id"]),
    )
    # The three cards and the three in-service members the sync registered.
    assert reports[0]["members"]["total"] == registered == len(members) + synced["created"]

    # Each event applied once per consumer group: one process runs each consumer ...
    for names in CONSUMERS.values():
        for name in names:
            holders = await advisory_holders(pg, f"lianxin.consumer:{name}")
            assert len(holders) == 1, (name, holders)
    # ... and every read model holds each member once, at the registry's version.
    for schema in ("mobility", "activities"):
        diff = await pg.fetch(
            f"""SELECT r.id, r.version, p.n, p.version AS seen
                FROM registry.members r
                LEFT JOIN (SELECT member_id, count(*) AS n, max(version) AS version
                           FROM {schema}.members GROUP BY member_id) p ON p.member_id = r.id
                WHERE p.n IS DISTINCT FROM 1 OR p.version IS DISTINCT FROM r.version"""  # noqa: S608
        )
        assert diff == [], (schema, diff)
    # The mobile card's event turned the member `mobile` once: one status change event.
    changes = await pg.fetch(
        "SELECT payload->>'status' AS status FROM registry.outbox "
        "WHERE type = 'member.status_changed' AND aggregate_id = $1",
        uuid.UUID(mobile),
    )
    assert [c["status"] for c in changes] == ["mobile"]
    # The transfer's completion reached mobility's read model once, at its last version.
    version = await pg.fetchval(
        "SELECT version FROM registry.transfers WHERE id = $1", uuid.UUID(t["id"])
    )
    seen = await pg.fetch(
        "SELECT status, version FROM mobility.transfers WHERE transfer_id = $1",
        uuid.UUID(t["id"]),
    )
    assert [(s["status"], s["version"]) for s in seen] == [("completed", version)]
    # Each event delivered to the webhook once, in one attempt, whichever gateway sent it.
    deadline = time.monotonic() + SETTLE_S
    while True:
        deliveries = await pg.fetch("SELECT status, attempts FROM gateway.webhook_deliveries")
        if deliveries and all(d["status"] == "delivered" for d in deliveries):
            break
        assert time.monotonic() < deadline, deliveries
        await asyncio.sleep(0.1)  # polling the database, bounded by the deadline
    assert {d["attempts"] for d in deliveries} == {1}
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == len(deliveries)


async def test_rate_limit_is_one_budget_across_gateways(
    gateways: list[httpx.AsyncClient],
) -> None:
    one, two = gateways
    admin = await login(two, ADMIN_USER, ADMIN_PASSWORD)
    tag = uuid.uuid4().hex[:6]
    org = await ok(
        await two.post("/api/v1/registry/orgs", headers=admin,
                       json={"code": f"R-LIM-{tag}", "name": "限流社区", "kind": "branch",
                             "area_level": "community"}),
        201,
    )  # fmt: skip
    name, password = f"limited-{tag}", "Replica-limit-2026"
    await ok(
        await one.post("/api/v1/auth/users", headers=admin,
                       json={"username": name, "password": password, "role": "org_viewer",
                             "org_id": org["id"]}),
        201,
    )  # fmt: skip
    user = await login(one, name, password)
    statuses: list[int] = []
    refusals: list[httpx.Response] = []
    for n in range(2 * BURST):
        r = await (one, two)[n % 2].get(f"/api/v1/registry/orgs/{org['id']}", headers=user)
        statuses.append(r.status_code)
        if r.status_code == 429:
            refusals.append(r)
    assert statuses.count(200) == BURST, statuses
    assert statuses.count(429) == BURST, statuses
    # The budget ran out once for both: everything after the burst is refused, on both.
    assert set(statuses[BURST:]) == {429}
    for r in refusals:
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_scheduled_jobs_run_once_per_period(
    pg: asyncpg.Connection, started_at: float
) -> None:
    # Both replicas of each service try to claim their jobs ten times a period; the claims
    # are spaced at least a period apart, so over the life of the system the count of
    # runs is bounded by its age in periods (two uncoordinated replicas would double it).
    await asyncio.sleep(3 * SWEEP_S)  # let several periods pass with both replicas trying
    for schema, job in JOBS.items():
        runs = await pg.fetchval(
            f"SELECT runs FROM {schema}.scheduled_jobs WHERE name = $1",  # noqa: S608
            job,
        )
        age = time.time() - started_at
        assert runs is not None, f"{job} never ran"
        assert 3 <= runs <= age / SWEEP_S + 1, (job, runs, age)
