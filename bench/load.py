"""A mixed workload through the gateway at a fixed arrival rate, and a soak that watches the
apps' memory.

    python -m bench.load [--rate 200] [--seconds 60]           # load: bench/results/load.json
    python -m bench.load --soak [--soak-minutes 10] [--rate 100]  # soak: results/load_soak.json

One run: a throwaway embedded PostgreSQL (or a fresh database on the server at
`DATABASE_URL`, dropped afterwards), migrated; registry, mobility, activities and the gateway
as uvicorn child processes on loopback. The data goes in through the bulk paths: an org tree
(a city, streets, communities) through the API, members through `POST /members/import` (csv),
and the run waits until mobility's and activities' read models hold every member; then a
few tracking cards and activities to read.

The workload is open-loop: request *i* is sent at `start + i / rate` whether or not the
earlier ones were answered (so a slow system meets more concurrent requests, as it would in
life), and its latency counts from that scheduled instant. 80% reads and 20% writes over
every service (weights in `OPERATIONS`): registry member cards and subtree lists; mobility
cards and links; activities, attendance and the talk count; the gateway's org report.
Every write carries an `Idempotency-Key`. Reported: requests sent and answered, achieved
throughput, p50/p99 per operation and overall, and errors by status and problem type
(`transport` when no answer came).

`--soak` runs the same workload for `--soak-minutes` and samples each app process's RSS
(psutil) every `--sample-s` seconds: start, end, max and the least-squares slope in MB/min
per service. The load generator, the apps and PostgreSQL share this machine: the figures
are what they are on it (the JSON names the CPU count). Every process started here is
stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import psutil
from sqlalchemy.engine import make_url

from bench import _rows
from bench.gateway_overhead import admin_token, keys
from bench.registry_bulk import HEADER, Org, cards
from common.db import plain_url
from services.registry.idnumber import check_character
from tools import migrate, pg
from tools.servers import FAST, UvicornProcess, serving_args

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "load.json"
SOAK_RESULTS = ROOT / "results" / "load_soak.json"
SERVICES = ("registry", "mobility", "activities")
B = "/api/v1"
MAX_IN_FLIGHT = 2000  # beyond this the generator counts a request as `dropped`
BUDGET_S = 600  # in the suite (`python -m bench`): the load run, not the soak

# (operation, weight, is_write). Reads 80, writes 20.
OPERATIONS: list[tuple[str, int, bool]] = [
    ("registry.member.get", 20, False),
    ("registry.members.list", 12, False),
    ("mobility.cards.list", 8, False),
    ("mobility.card.get", 6, False),
    ("mobility.links.list", 6, False),
    ("activities.list", 8, False),
    ("activities.attendance.get", 8, False),
    ("activities.talks.count", 8, False),
    ("reports.org", 4, False),
    ("registry.member.create", 5, True),
    ("mobility.card.create", 4, True),
    ("mobility.link.create", 3, True),
    ("activities.activity.create", 3, True),
    ("activities.attendance.put", 3, True),
    ("activities.talk.create", 2, True),
]


@dataclass
class Member:
    id: str
    org_id: str  # the org whose card it is (enrolled) or where it lives (residents)
    resident: bool


@dataclass
class World:
    """What the workload reads and writes; writes add to it as they succeed."""

    city: str
    communities: list[str]
    members: list[Member]
    by_org: dict[str, list[Member]]
    cards: list[str] = field(default_factory=list)
    activities: list[tuple[str, str]] = field(default_factory=list)  # (activity, org)
    next_card_member: int = 0
    next_link_member: int = 0
    created: int = 0


# --- the system ---------------------------------------------------------------------------


@dataclass
class System:
    server_url: str
    database_url: str
    gateway: UvicornProcess
    apps: dict[str, UvicornProcess]
    token: str


class Harness:
    """PostgreSQL (own or `DATABASE_URL`'s server), a fresh database, the four apps."""

    def __init__(self) -> None:
        self.data_dir: Path | None = None
        self.server_url = ""
        self.database_name = ""
        self.processes: list[UvicornProcess] = []

    def start(self) -> System:
        given = os.environ.get("DATABASE_URL")
        if given:
            self.server_url = plain_url(given)
        else:
            self.data_dir = Path(tempfile.mkdtemp(prefix="lianxin-bench-load-pg-"))
            self.server_url = pg.start(self.data_dir).url
        self.database_name = f"lianxin_load_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin_sql(self.server_url, f'CREATE DATABASE "{self.database_name}"'))
        url = make_url(self.server_url).set(database=self.database_name)
        database_url = url.render_as_string(hide_password=False)
        migrate.upgrade_all(database_url)
        private, private_pem, public_pem = keys()
        _, service_private, service_public = keys()
        env = {
            "DATABASE_URL": database_url,
            "LIANXIN_ENVIRONMENT": "test",
            "LIANXIN_JWT_PUBLIC_KEY": public_pem,
            "LIANXIN_SERVICE_PUBLIC_KEY": service_public,
            "LIANXIN_SERVICE_PRIVATE_KEY": service_private,
            "LIANXIN_LOG_LEVEL": "WARNING",
        }
        apps = {
            s: UvicornProcess(
                f"services.{s}.app:app", env=env, ready_path="/readyz", extra_args=FAST
            )
            for s in SERVICES
        }
        urls = {f"LIANXIN_{s.upper()}_URL": apps[s].url for s in SERVICES}
        for app in apps.values():
            app.env.update(urls)
        gateway = UvicornProcess(
            "gateway.app:app",
            env={
                **env,
                **urls,
                "LIANXIN_JWT_PRIVATE_KEY": private_pem,
                "LIANXIN_ADMIN_USER": "",
                "LIANXIN_ADMIN_PASSWORD": "",
                "LIANXIN_RATE_LIMIT_ENABLED": "false",
            },
            ready_path="/readyz",
            extra_args=serving_args("gateway.app:app"),
        )
        for process in (*apps.values(), gateway):
            self.processes.append(process)
            process.start(timeout_s=90)
        return System(self.server_url, database_url, gateway, apps, admin_token(private, 24 * 3600))

    def close(self) -> None:
        for process in reversed(self.processes):
            process.close()
        if self.database_name:
            try:
                asyncio.run(
                    _admin_sql(
                        self.server_url,
                        f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)',
                    )
                )
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"(could not drop {self.database_name}: {exc})", file=sys.stderr)
        if self.data_dir is not None:
            pg.destroy(self.data_dir)


async def _admin_sql(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(plain_url(server_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --- the data -----------------------------------------------------------------------------


def seed(system: System, *, members: int, streets: int, per_street: int) -> World:
    headers = {"Authorization": f"Bearer {system.token}"}
    with httpx.Client(
        base_url=system.gateway.url, headers=headers, timeout=300, trust_env=False
    ) as c:
        run = uuid.uuid4().hex[:6].upper()

        def org(code: str, name: str, kind: str, level: str, parent: str | None) -> str:
            body = {"code": code, "name": name, "kind": kind, "area_level": level}
            r = c.post(f"{B}/registry/orgs", json={**body, "parent_id": parent})
            if r.status_code != 201:
                raise RuntimeError(f"org {code}: {r.status_code} {r.text[:300]}")
            return str(r.json()["id"])

        city = org(f"LD{run}", "压测市委", "committee", "city", None)
        sheet_orgs: list[Org] = []
        community_ids: list[str] = []
        for s in range(streets):
            street = org(
                f"LD{run}-S{s}", f"第{s + 1}街道党工委", "working_committee", "street", city
            )
            for k in range(per_street):
                code = f"LD{run}-S{s}-C{k}"
                cid = org(code, f"第{s + 1}街道第{k + 1}社区", "branch", "community", street)
                community_ids.append(cid)
                sheet_orgs.append(
                    Org(
                        len(sheet_orgs), uuid.UUID(cid), code, code, "branch", "community", None, ""
                    )
                )
        rows = cards(sheet_orgs, members, random.Random(7))
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(HEADER)
        writer.writerows(rows)
        t0 = time.perf_counter()
        r = c.post(
            f"{B}/registry/members/import",
            files={"file": ("members.csv", out.getvalue().encode(), "text/csv")},
        )
        if r.status_code != 200 or r.json()["created"] != members:
            raise RuntimeError(f"import: {r.status_code} {r.text[:500]}")
        print(f"  imported {members} members in {time.perf_counter() - t0:.1f} s", flush=True)
    world_members = asyncio.run(_members(system.database_url))
    asyncio.run(_wait_projected(system.database_url, len(world_members)))
    by_org: dict[str, list[Member]] = defaultdict(list)
    for m in world_members:
        by_org[m.org_id].append(m)
    world = World(city, community_ids, world_members, dict(by_org))
    random.Random(11).shuffle(world.members)
    # Something to read from the start: a few cards and activities.
    with httpx.Client(
        base_url=system.gateway.url, headers=headers, timeout=60, trust_env=False
    ) as c:
        for _ in range(20):
            status, body = _sync(c, *card_request(world, random.Random()))
            if status == 201:
                world.cards.append(body["id"])
        for k in range(10):
            status, body = _sync(c, *activity_request(world, random.Random(k)))
            if status == 201:
                world.activities.append((body["id"], body["org_id"]))
    if not world.cards or not world.activities:
        raise RuntimeError("could not create the cards and activities to read")
    return world


def _sync(c: httpx.Client, method: str, path: str, body: Any, op: str) -> tuple[int, Any]:
    r = c.request(method, path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    if r.status_code >= 300:
        print(f"  ({op}: {r.status_code} {r.text[:200]})", flush=True)
    return r.status_code, r.json() if r.content else None


async def _members(database_url: str) -> list[Member]:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        rows = await conn.fetch(
            "SELECT id::text, coalesce(org_id, residence_org_id)::text AS org, "
            "org_id IS NULL AS resident FROM registry.members ORDER BY id"
        )
    finally:
        await conn.close()
    return [Member(r["id"], r["org"], r["resident"]) for r in rows]


async def _wait_projected(database_url: str, count: int, timeout_s: float = 300) -> None:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            have = [
                await conn.fetchval(f"SELECT count(*) FROM {s}.members")  # noqa: S608
                for s in ("mobility", "activities")
            ]
            if min(have) >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"read models hold {have} of {count} members")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


# --- the requests -------------------------------------------------------------------------

Request = tuple[str, str, Any, str]  # method, path, JSON body, operation


def id_number(n: int) -> str:
    born = date(1950, 1, 1) + timedelta(days=n // 1000)
    body = f"110101{born:%Y%m%d}{n % 1000:03d}"
    return body + check_character(body)


def card_request(world: World, rng: random.Random) -> Request:
    member = world.members[world.next_card_member % len(world.members)]
    world.next_card_member += 1
    body = {
        "member_id": member.id,
        "direction": "outflow",
        "place": "广东省深圳市宝安区",
        "left_on": str(date.today() - timedelta(days=rng.randint(1, 90))),
        "contact_phone": f"138{rng.randrange(10**8):08d}",
        "tracker": "王书记",
    }
    return "POST", f"{B}/mobility/mobile-members", body, "mobility.card.create"


def activity_request(world: World, rng: random.Random) -> Request:
    org = rng.choice(world.communities)
    starts = datetime.now(UTC).replace(microsecond=0) - timedelta(days=rng.randint(0, 30))
    body = {
        "org_id": org,
        "type": rng.choice(["theme_day", "party_lecture", "volunteer_service", "group_meeting"]),
        "title": "主题党日",
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(),
    }
    return "POST", f"{B}/activities/activities", body, "activities.activity.create"


def build(op: str, world: World, rng: random.Random) -> Request:
    member = rng.choice(world.members)
    community = rng.choice(world.communities)
    body: Any
    if op == "registry.member.get":
        return "GET", f"{B}/registry/members/{member.id}", None, op
    if op == "registry.members.list":
        org = world.city if rng.random() < 0.25 else community
        return "GET", f"{B}/registry/members?org_id={org}&limit=50", None, op
    if op == "mobility.cards.list":
        return "GET", f"{B}/mobility/mobile-members?org_id={community}&limit=50", None, op
    if op == "mobility.card.get":
        return "GET", f"{B}/mobility/mobile-members/{rng.choice(world.cards)}", None, op
    if op == "mobility.links.list":
        return "GET", f"{B}/mobility/links?residence_org_id={community}&limit=50", None, op
    if op == "activities.list":
        return "GET", f"{B}/activities/activities?org_id={community}&limit=50", None, op
    if op == "activities.attendance.get":
        activity, _ = rng.choice(world.activities)
        return "GET", f"{B}/activities/activities/{activity}/attendance", None, op
    if op == "activities.talks.count":
        return "GET", f"{B}/activities/talks/count?org_id={community}", None, op
    if op == "reports.org":
        return "GET", f"{B}/reports/orgs/{community}?year={date.today().year}", None, op
    if op == "registry.member.create":
        world.created += 1
        number = id_number(world.created)
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
        body = {
            "name": "李" + rng.choice("伟芳娜敏静丽强磊"),
            "gender": "male" if int(number[16]) % 2 else "female",
            "birth_date": born.isoformat(),
            "id_number": number,
            "phone": f"139{rng.randrange(10**8):08d}",
            "education": "senior_high",
            "membership": "full",
            "category": "retired",
            "org_id": community,
        }
        return "POST", f"{B}/registry/members", body, op
    if op == "mobility.card.create":
        return card_request(world, rng)
    if op == "mobility.link.create":
        target = world.members[-1 - (world.next_link_member % len(world.members))]
        world.next_link_member += 1
        body = {
            "member_id": target.id,
            "residence_org_id": community,
            "workplace_external": {"name": f"压测单位{world.next_link_member}"},
            "mode": "direct",
        }
        return "POST", f"{B}/mobility/links", body, op
    if op == "activities.activity.create":
        return activity_request(world, rng)
    if op == "activities.attendance.put":
        activity, org = rng.choice(world.activities)
        people = world.by_org.get(org, [])
        chosen = rng.sample(people, k=min(5, len(people)))
        body = [
            {"member_id": m.id, "status": rng.choice(["present", "absent", "excused"])}
            for m in chosen
        ]
        return "PUT", f"{B}/activities/activities/{activity}/attendance", body, op
    if op == "activities.talk.create":
        body = {
            "member_id": member.id,
            "held_on": str(date.today() - timedelta(days=rng.randint(0, 60))),
            "talker": "王书记",
            "topic": "谈心谈话",
            "notes": "思想稳定",
        }
        return "POST", f"{B}/activities/talks", body, op
    raise ValueError(op)


# --- the open-loop generator --------------------------------------------------------------


@dataclass
class Outcome:
    op: str
    status: int | None  # None: no answer (transport error or timeout)
    latency_s: float
    write: bool
    problem: str | None = None  # the problem type's last part, for an error answer


def _problem_slug(raw: bytes) -> str | None:
    try:
        kind = json.loads(raw).get("type")
    except (ValueError, AttributeError):
        return None
    return str(kind).rsplit(":", 1)[-1] if kind else None


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def generate(
    system: System,
    world: World,
    *,
    rate: float,
    seconds: float,
    seed_value: int = 1,
    on_tick: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Send requests at `rate` per second for `seconds`; returns the summary."""
    rng = random.Random(seed_value)
    names = [o[0] for o in OPERATIONS]
    weights = [o[1] for o in OPERATIONS]
    writes = {o[0] for o in OPERATIONS if o[2]}
    outcomes: list[Outcome] = []
    dropped = 0
    in_flight = 0
    max_in_flight = 0
    headers = {"Authorization": f"Bearer {system.token}"}
    connector = aiohttp.TCPConnector(limit=512, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    total = int(rate * seconds)
    async with aiohttp.ClientSession(
        base_url=system.gateway.url, connector=connector, timeout=timeout, headers=headers
    ) as session:
        loop = asyncio.get_running_loop()

        async def send(request: Request, scheduled: float) -> None:
            nonlocal in_flight
            method, path, body, op = request
            extra = {"Idempotency-Key": uuid.uuid4().hex} if op in writes else {}
            status: int | None = None
            payload: Any = None
            problem: str | None = None
            try:
                async with session.request(method, path, json=body, headers=extra) as r:
                    status = r.status
                    raw = await r.read()
                    if op in ("mobility.card.create", "activities.activity.create") and (
                        status == 201
                    ):
                        payload = json.loads(raw)
                    elif status >= 400:
                        problem = _problem_slug(raw)
            except (aiohttp.ClientError, TimeoutError):
                status = None
            finally:
                in_flight -= 1
            outcomes.append(Outcome(op, status, loop.time() - scheduled, op in writes, problem))
            if payload is not None:
                if op == "mobility.card.create":
                    world.cards.append(payload["id"])
                else:
                    world.activities.append((payload["id"], payload["org_id"]))

        tasks: set[asyncio.Task[None]] = set()
        start = loop.time()
        next_tick = start + 5
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if on_tick is not None and loop.time() >= next_tick:
                next_tick += 5
                await on_tick()
            op = rng.choices(names, weights)[0]
            if in_flight >= MAX_IN_FLIGHT:
                dropped += 1
                continue
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            task = asyncio.create_task(send(build(op, world, rng), scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent_for = loop.time() - start
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        elapsed = loop.time() - start
    return summarize(outcomes, rate, seconds, sent_for, elapsed, dropped, max_in_flight)


def summarize(
    outcomes: list[Outcome],
    rate: float,
    seconds: float,
    sent_for: float,
    elapsed: float,
    dropped: int,
    max_in_flight: int,
) -> dict[str, Any]:
    def stats(items: list[Outcome]) -> dict[str, Any]:
        ok = sorted(o.latency_s for o in items if o.status is not None and o.status < 400)
        every = sorted(o.latency_s for o in items)
        errors = Counter(
            "transport" if o.status is None else f"{o.status} {o.problem or ''}".strip()
            for o in items
            if o.status is None or o.status >= 400
        )
        return {
            "requests": len(items),
            "ok": len(ok),
            "p50_ms": round(percentile(every, 0.50) * 1000, 1),
            "p99_ms": round(percentile(every, 0.99) * 1000, 1),
            "errors": dict(sorted(errors.items())),
        }

    by_op: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_op[o.op].append(o)
    answered = [o for o in outcomes if o.status is not None]
    ok = [o for o in answered if o.status is not None and o.status < 400]
    return {
        "target_rate": rate,
        "seconds": seconds,
        "sent_for_s": round(sent_for, 2),
        "elapsed_s": round(elapsed, 2),
        "sent": len(outcomes) + dropped,
        "dropped_by_generator": dropped,
        "max_in_flight": max_in_flight,
        "answered": len(answered),
        "throughput_rps": round(len(answered) / elapsed, 1) if elapsed else 0.0,
        "ok_rps": round(len(ok) / elapsed, 1) if elapsed else 0.0,
        "write_share": round(sum(o.write for o in outcomes) / max(1, len(outcomes)), 3),
        # The rate was held: nothing dropped, 99% answered without error, p99 under 1 s.
        "sustained": dropped == 0
        and len(ok) >= 0.99 * len(outcomes)
        and percentile(sorted(o.latency_s for o in outcomes), 0.99) < 1.0,
        "overall": stats(outcomes),
        "reads": stats([o for o in outcomes if not o.write]),
        "writes": stats([o for o in outcomes if o.write]),
        "operations": {op: stats(items) for op, items in sorted(by_op.items())},
    }


# --- memory -------------------------------------------------------------------------------


class RssSampler:
    """Each app's RSS (MB) every `interval_s`, in a thread of its own (the generator's loop
    must not wait for it)."""

    def __init__(self, pids: dict[str, int], interval_s: float) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval_s = interval_s
        self.samples: dict[str, list[tuple[float, float]]] = {n: [] for n in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()
        self._cpu0 = {n: _cpu_s(p) for n, p in self.processes.items()}
        self._cpu1: dict[str, float] = {}
        self._t1 = self._t0

    def _run(self) -> None:
        while True:
            now = time.monotonic() - self._t0
            for name, proc in self.processes.items():
                with contextlib.suppress(psutil.Error):
                    self.samples[name].append((now, proc.memory_info().rss / 1_048_576))
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._cpu1 = {n: _cpu_s(p) for n, p in self.processes.items()}
        self._t1 = time.monotonic()

    def report(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name, points in self.samples.items():
            if not points:
                continue
            out[name] = {
                "samples": len(points),
                "start_mb": round(points[0][1], 1),
                "end_mb": round(points[-1][1], 1),
                "max_mb": round(max(p[1] for p in points), 1),
                "growth_mb": round(points[-1][1] - points[0][1], 1),
                "slope_mb_per_min": round(slope(points) * 60, 3),
                # Share of one CPU the process used over the run.
                "cpu_percent": round(
                    100
                    * (self._cpu1.get(name, 0.0) - self._cpu0[name])
                    / max(self._t1 - self._t0, 1e-9),
                    1,
                ),
            }
        return out


def _cpu_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y): units of y per unit of t."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(p[0] for p in points) / n
    mean_y = sum(p[1] for p in points) / n
    den = sum((p[0] - mean_t) ** 2 for p in points)
    if den == 0:
        return 0.0
    return sum((p[0] - mean_t) * (p[1] - mean_y) for p in points) / den


# --- reporting ----------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    head = f"{'operation':<30}{'requests':>9}{'ok':>8}{'p50 ms':>9}{'p99 ms':>10}  errors"
    lines = [head, "-" * len(head)]
    rows = [*result["operations"].items(), ("(reads)", result["reads"])]
    rows += [("(writes)", result["writes"]), ("(overall)", result["overall"])]
    for name, s in rows:
        errors = ", ".join(f"{k}: {v}" for k, v in s["errors"].items()) or "-"
        lines.append(
            f"{name:<30}{s['requests']:>9}{s['ok']:>8}{s['p50_ms']:>9.1f}{s['p99_ms']:>10.1f}"
            f"  {errors}"
        )
    lines.append(
        f"\ntarget {result['target_rate']} req/s for {result['seconds']} s: "
        f"{result['throughput_rps']} answered/s ({result['ok_rps']} ok/s), "
        f"max in flight {result['max_in_flight']}, dropped {result['dropped_by_generator']}"
        f" -> {'sustained' if result['sustained'] else 'NOT sustained (saturated)'}"
    )
    return "\n".join(lines)


def memory_table(memory: dict[str, dict[str, float]]) -> str:
    head = f"{'process':<12}{'start MB':>10}{'end MB':>10}{'max MB':>10}{'MB/min':>10}{'CPU %':>8}"
    lines = [head, "-" * len(head)]
    for name, m in memory.items():
        lines.append(
            f"{name:<12}{m['start_mb']:>10.1f}{m['end_mb']:>10.1f}{m['max_mb']:>10.1f}"
            f"{m['slope_mb_per_min']:>10.3f}{m['cpu_percent']:>8.1f}"
        )
    return "\n".join(lines)


def figures(
    result: dict[str, Any], memory: dict[str, dict[str, float]], *, soak: bool
) -> list[_rows.Row]:
    """The suite's rows: throughput against the rate asked for, latency (overall and per
    operation), errors, each app's peak RSS; and, for a soak (a slope over a minute of load
    says nothing), memory growth."""
    rate, overall = result["target_rate"], result["overall"]
    errors = overall["requests"] - overall["ok"]
    out = [
        _rows.row(
            f"mixed load ok req/s at {rate:g} req/s",
            result["ok_rps"],
            "req/s",
            baseline_name="target arrival rate",
            baseline_value=rate,
            target="ratio >= 0.99",
        ),
        _rows.row("mixed load p50", overall["p50_ms"], "ms", target="value <= 100"),
        _rows.row("mixed load p99", overall["p99_ms"], "ms", target="value <= 1000"),
        _rows.row(
            "mixed load errors",
            100 * errors / max(1, overall["requests"]),
            "%",
            target="value <= 1",
        ),
    ]
    # Each operation's latency (reported, not judged: the mix's own targets are above).
    for op, stats in result["operations"].items():
        out.append(
            _rows.row(
                f"mixed load: {op} p99",
                stats["p99_ms"],
                "ms",
                note=f"p50 {stats['p50_ms']} ms, {stats['requests']} requests",
            )
        )
    for name, m in memory.items():
        out.append(
            _rows.row(
                f"{name} RSS under mixed load (max)",
                m["max_mb"],
                "MB",
                target="value <= 200",
                note=f"{m['cpu_percent']}% of a CPU",
            )
        )
        if soak:
            out.append(_rows.row(f"{name} RSS growth", m["slope_mb_per_min"], "MB/min"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--rate", type=float, default=None, help="requests/s (load 200, soak 100)")
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds at the rate, unmeasured")
    parser.add_argument("--soak", action="store_true", help="long run sampling the apps' RSS")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling interval")
    parser.add_argument("--members", type=int, default=None, help="members imported")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if os.environ.get("LIANXIN_BENCH_QUICK") == "1" and not args.soak:
        args.seconds, args.warmup = min(args.seconds, 15.0), min(args.warmup, 2.0)
        args.members = args.members or 2000
    rate = args.rate or (100.0 if args.soak else 200.0)
    seconds = args.soak_minutes * 60 if args.soak else args.seconds
    # Each card and link write takes a member of its own: enough members for the run.
    writes_per_member_kind = rate * (seconds + args.warmup) * 4 / 100
    members = args.members or max(5000, int(writes_per_member_kind * 1.2))
    out = args.out or (SOAK_RESULTS if args.soak else RESULTS)

    harness = Harness()
    try:
        system = harness.start()
        print(f"seeding: {members} members", flush=True)
        world = seed(system, members=members, streets=4, per_street=10)
        if args.warmup > 0:
            asyncio.run(generate(system, world, rate=rate, seconds=args.warmup, seed_value=2))
        pids = {name: p.pid for name, p in system.apps.items()}
        pids["gateway"] = system.gateway.pid
        print(f"{'soak' if args.soak else 'load'}: {rate} req/s for {seconds:.0f} s", flush=True)
        with RssSampler(pids, args.sample_s) as sampler:
            result = asyncio.run(generate(system, world, rate=rate, seconds=seconds))
        memory = sampler.report()
        print()
        print(table(result))
        print()
        print(memory_table(memory))
        report: dict[str, Any] = {
            "mode": "soak" if args.soak else "load",
            "members": members,
            "communities": len(world.communities),
            "warmup_s": args.warmup,
            "mix": {name: weight for name, weight, _ in OPERATIONS},
            "note": "load generator, four apps and PostgreSQL share this machine; latency "
            "counts from each request's scheduled send time (open loop)",
            "result": result,
            "memory": memory,
        }
        name = "load_soak" if args.soak else "load"
        print(f"written: {_rows.write(name, report, figures(result, memory, soak=args.soak), out)}")
    finally:
        harness.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
