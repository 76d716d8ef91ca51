# ruff: noqa: S608 - constant SQL text only: every value is a bind parameter
"""The city report (`GET /api/v1/reports/orgs/{id}?year=`) against the same aggregates run as
plain SQL in the same run, on the same database, for:

- the demo city (嘉兴市, `tools.demo`: loaded through the services' own code paths, a year
  of flows, links, organizational life, hours and funds);
- a generated province (`bench.province.generate`, COPY-loaded: 1,000,000 members by
  default, 4,000,000 with `--members 4000000` or `LIANXIN_BENCH_PROVINCE_MEMBERS=4000000`;
  `LIANXIN_BENCH_QUICK=1`: 200,000) — the report of its root (every member) and of one city.

The report goes through the gateway (admin token; registry, mobility and activities as
uvicorn processes, one worker each, as `make run` serves them), which reads each service's
statistics concurrently and composes them. The baseline is every aggregate those
statistics hold — orgs by kind and level, live members by category, relation, age band
and education band (GROUPING SETS), completed transfers in and out; mobility flows, cards
by current status, dual-management links; activities by type, attendance rates, talks,
verified hours, pledges, points, funds, training coverage and party workers by band —
written by hand as plain SQL and sent one after another on one asyncpg connection (no
HTTP, no auth, no JSON); reported beside it, the same statements by source on three
connections, the three concurrently (as the gateway reads them). All are timed warm (after
one untimed run): the median of the runs. The row's ratio is report / SQL on one
connection; the target: ≤ 1.5. A few totals of the report are checked against the SQL's.

    python -m bench.city_report [--members 1000000] [--runs 5]

Writes `bench/results/city_report.json`; every process it starts (and the embedded
PostgreSQL) is stopped by its pid; the databases are dropped."""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import _rows
from bench.province import _database, _drop, _keys, generate
from common.db import plain_url
from tools import migrate, pg
from tools.servers import FAST, UvicornProcess, serving_args

BUDGET_S = 1500  # the 1,000,000-member province takes ~5 minutes to generate
ADMIN_USER, ADMIN_PASSWORD = "bench-admin", "City-report-bench-2026"
DEMO_YEAR = 2003
PROVINCE_YEAR = 2026
SOURCES = ("registry", "mobility", "activities")
LOST_CONTACT_DAYS = 180  # mobility's default `lost_contact_days`
ORG_LIFE = (
    "branch_assembly",
    "branch_committee",
    "group_meeting",
    "party_lecture",
    "theme_day",
    "online_lesson",
    "salon",
    "training",
)

# --- the same aggregates as plain SQL -------------------------------------------------------
# $1: the org, $2: the year, $3: the age date (31 December of the year, or today).

_AGE_BAND = (
    "CASE WHEN {b} IS NULL THEN 'unknown' "
    "WHEN extract(year FROM age($3::date, {b})) <= 35 THEN 'le_35' "
    "WHEN extract(year FROM age($3::date, {b})) <= 45 THEN '36_45' "
    "WHEN extract(year FROM age($3::date, {b})) <= 60 THEN '46_60' ELSE 'gt_60' END"
)
_EDU_BAND = (
    "CASE WHEN {e} = 'junior_high_or_below' THEN 'junior_high_or_below' "
    "WHEN {e} = 'senior_high' THEN 'senior_high' "
    "WHEN {e} IN ('college', 'bachelor', 'postgraduate') THEN 'college_or_above' "
    "ELSE 'unknown' END"
)
_REG_UNDER = (
    "SELECT id FROM registry.orgs WHERE path <@ (SELECT path FROM registry.orgs WHERE id = $1)"
)
_MOB_UNDER = (
    "SELECT org_id FROM mobility.orgs "
    "WHERE path <@ (SELECT path FROM mobility.orgs WHERE org_id = $1)"
)
_ACT_UNDER = (
    "SELECT org_id FROM activities.orgs "
    "WHERE path <@ (SELECT path FROM activities.orgs WHERE org_id = $1)"
)
_WORKERS = (
    "SELECT DISTINCT member_id FROM activities.role_assignments "
    f"WHERE kind = 'party_worker' AND org_id IN ({_ACT_UNDER}) "
    "AND started_on <= $3::date AND (ended_on IS NULL OR ended_on >= $3::date)"
)

_TRANSFERS = (
    f"WITH u AS ({_REG_UNDER}) "
    "SELECT count(*) FILTER (WHERE to_org_id IN (SELECT id FROM u) "
    "AND (from_org_id IS NULL OR from_org_id NOT IN (SELECT id FROM u))), "
    "count(*) FILTER (WHERE from_org_id IN (SELECT id FROM u) "
    "AND (to_org_id IS NULL OR to_org_id NOT IN (SELECT id FROM u))) "
    "FROM registry.transfers "
    "WHERE status = 'completed' AND extract(year FROM completed_at) = $2"
)

# (name, sql): every aggregate the report's three sources compute
PLAIN_SQL: list[tuple[str, str]] = [
    (
        "registry: orgs by kind and level",
        "SELECT kind, area_level, count(*) FROM registry.orgs "
        "WHERE path <@ (SELECT path FROM registry.orgs WHERE id = $1) GROUP BY 1, 2",
    ),
    (
        "registry: live members by category, relation, age, education",
        "SELECT category, relation, age_band, education_band, grouping(category), "
        "grouping(relation), grouping(age_band), grouping(education_band), count(*) FROM ("
        f"SELECT m.category, m.relation, {_AGE_BAND.format(b='m.birth_date')} AS age_band, "
        f"{_EDU_BAND.format(e='m.education')} AS education_band FROM registry.members m "
        f"WHERE (m.org_id IN ({_REG_UNDER}) OR m.residence_org_id IN ({_REG_UNDER})) "
        "AND m.status NOT IN ('transferred_out', 'deceased', 'removed') "
        "AND m.merged_into IS NULL) s "
        "GROUP BY GROUPING SETS ((category), (relation), (age_band), (education_band))",
    ),
    ("registry: transfers in and out", _TRANSFERS),
    (
        "mobility: flows",
        "SELECT direction, count(*) FROM mobility.mobile_cards "
        f"WHERE org_id IN ({_MOB_UNDER}) AND extract(year FROM left_on) = $2 GROUP BY 1",
    ),
    (
        "mobility: cards by current status",
        "SELECT CASE WHEN status = 'active' AND coalesce(last_contact_on, left_on) < "
        f"current_date - {LOST_CONTACT_DAYS} THEN 'lost_contact' ELSE status END, count(*) "
        f"FROM mobility.mobile_cards WHERE org_id IN ({_MOB_UNDER}) GROUP BY 1",
    ),
    (
        "mobility: dual-management links by community",
        "SELECT residence_org_id, count(*), count(*) FILTER (WHERE status = 'reported') "
        f"FROM mobility.links WHERE status <> 'ended' AND residence_org_id IN ({_MOB_UNDER}) "
        "GROUP BY 1 ORDER BY 1",
    ),
    (
        "activities: members",
        f"SELECT count(*) FROM activities.members WHERE org_id IN ({_ACT_UNDER}) "
        "AND status IN ('active', 'mobile') AND merged_into IS NULL",
    ),
    (
        "activities: by type",
        f"SELECT type, count(*) FROM activities.activities WHERE org_id IN ({_ACT_UNDER}) "
        "AND extract(year FROM starts_at) = $2 GROUP BY 1 ORDER BY 1",
    ),
    (
        "activities: attendance rate",
        "SELECT count(*) FILTER (WHERE t.status = 'present'), count(*) "
        "FROM activities.attendance t JOIN activities.activities a ON a.id = t.activity_id "
        f"WHERE a.org_id IN ({_ACT_UNDER}) AND extract(year FROM a.starts_at) = $2",
    ),
    (
        "activities: organizational life attendance rate",
        "SELECT count(*) FILTER (WHERE t.status = 'present'), count(*) "
        "FROM activities.attendance t JOIN activities.activities a ON a.id = t.activity_id "
        f"WHERE a.org_id IN ({_ACT_UNDER}) AND extract(year FROM a.starts_at) = $2 "
        f"AND a.type IN ({', '.join(repr(t) for t in ORG_LIFE)})",
    ),
    (
        "activities: talks",
        f"SELECT count(*) FROM activities.talks WHERE org_id IN ({_ACT_UNDER}) "
        "AND extract(year FROM held_on) = $2",
    ),
    (
        "activities: verified hours",
        "SELECT coalesce(sum(hours), 0), count(*) FROM activities.service_hours "
        f'WHERE org_id IN ({_ACT_UNDER}) AND verified AND extract(year FROM "on") = $2',
    ),
    (
        "activities: pledge items done",
        "SELECT count(*) FROM activities.pledge_items WHERE year = $2 AND program_id IN "
        "(SELECT id FROM activities.programs WHERE org_id IS NULL AND code = 'ten_ones') "
        f"AND member_id IN (SELECT member_id FROM activities.members "
        f"WHERE org_id IN ({_ACT_UNDER}))",
    ),
    (
        "activities: points awarded",
        "SELECT coalesce(sum(points), 0) FROM activities.points_ledger "
        f"WHERE org_id IN ({_ACT_UNDER}) AND year = $2 AND points > 0",
    ),
    (
        "activities: funds allocated",
        "SELECT coalesce(sum(amount), 0) FROM activities.fund_allocations "
        f"WHERE org_id IN ({_ACT_UNDER}) AND year = $2",
    ),
    (
        "activities: funds spent",
        "SELECT coalesce(sum(amount), 0) FROM activities.fund_expenses WHERE allocation_id IN "
        "(SELECT id FROM activities.fund_allocations "
        f"WHERE org_id IN ({_ACT_UNDER}) AND year = $2)",
    ),
    (
        "activities: party workers",
        f"SELECT count(*) FROM ({_WORKERS}) w",
    ),
    (
        "activities: party workers trained within three years",
        f"SELECT count(*) FROM ({_WORKERS}) w WHERE w.member_id IN ("
        "SELECT ta.member_id FROM activities.training_attendance ta "
        "JOIN activities.training_sessions s ON s.id = ta.session_id "
        "WHERE s.held_on > $3::date - interval '3 years' AND s.held_on <= $3::date)",
    ),
    (
        "activities: party workers by age and education band",
        f"SELECT {_AGE_BAND.format(b='m.birth_date')}, {_EDU_BAND.format(e='m.education')}, "
        f"count(*) FROM ({_WORKERS}) w "
        "LEFT JOIN activities.members m ON m.member_id = w.member_id GROUP BY 1, 2",
    ),
]


def age_date(year: int) -> date:
    return min(date(year, 12, 31), date.today())


async def plain_sql(
    conns: list[asyncpg.Connection], org_id: uuid.UUID, year: int
) -> dict[str, Any]:
    """Every aggregate: with one connection one statement after another; with three, each
    source's statements on its own connection, the three sources concurrently (as the
    gateway reads them)."""
    params = (org_id, year, age_date(year))
    out: dict[str, Any] = {}

    async def run(conn: asyncpg.Connection, source: str | None) -> None:
        for name, sql, used in _BOUND:
            if source is None or name.startswith(source):
                out[name] = await conn.fetch(sql, *(params[i] for i in used))

    if len(conns) == 1:
        await run(conns[0], None)
    else:
        await asyncio.gather(*(run(c, s) for c, s in zip(conns, SOURCES, strict=True)))
    return out


def _bind(sql: str) -> tuple[str, list[int]]:
    """`sql` with only the parameters it uses, numbered from $1, and their indexes."""
    used = [i for i in range(3) if f"${i + 1}" in sql]
    for new, i in enumerate(used, start=1):
        sql = sql.replace(f"${i + 1}", f"$%{new}")
    return sql.replace("$%", "$"), used


_BOUND = [(name, *_bind(sql)) for name, sql in PLAIN_SQL]


def sql_totals(result: dict[str, Any]) -> dict[str, int]:
    orgs = sum(int(r[2]) for r in result["registry: orgs by kind and level"])
    members = sum(
        int(r[8])
        for r in result["registry: live members by category, relation, age, education"]
        if r[5] == 0  # the relation set
    )
    activities = sum(int(r[1]) for r in result["activities: by type"])
    links = sum(int(r[1]) for r in result["mobility: dual-management links by community"])
    return {"orgs": orgs, "members": members, "activities": activities, "links": links}


def report_totals(report: dict[str, Any]) -> dict[str, int]:
    return {
        "orgs": report["orgs"]["total"],
        "members": report["members"]["total"],
        "activities": report["activities"]["total"],
        "links": report["dual_management"]["links"],
    }


# --- the apps ---------------------------------------------------------------------------------


@dataclass
class Timing:
    dataset: str
    target: str
    members: int
    year: int
    runs: int
    report_ms: list[float]
    sql_ms: list[float]
    sql_by_source_ms: list[float]
    report_median_ms: float
    sql_median_ms: float
    sql_by_source_median_ms: float
    ratio: float
    ratio_by_source: float
    totals: dict[str, int]


def start_apps(url: str, data_keys: str, lookup_key: str) -> list[UvicornProcess]:
    jwt_private, jwt_public = _keys()
    service_private, service_public = _keys()
    env = {
        "DATABASE_URL": url,
        "LIANXIN_ENVIRONMENT": "test",
        "LIANXIN_LOG_LEVEL": "WARNING",
        "LIANXIN_DATA_KEYS": data_keys,
        "LIANXIN_LOOKUP_KEY": lookup_key,
        "LIANXIN_JWT_PUBLIC_KEY": jwt_public,
        "LIANXIN_SERVICE_PUBLIC_KEY": service_public,
        "LIANXIN_SERVICE_PRIVATE_KEY": service_private,
        "LIANXIN_DB_STATEMENT_TIMEOUT_MS": "600000",
        "LIANXIN_CONSUMERS_ENABLED": "false",  # nothing to consume: the data is loaded
    }
    services = {
        s: UvicornProcess(
            f"services.{s}.app:app", env=dict(env), ready_path="/readyz", extra_args=FAST
        )
        for s in ("registry", "mobility", "activities")
    }
    urls = {f"LIANXIN_{s.upper()}_URL": p.url for s, p in services.items()}
    for p in services.values():
        p.env.update(urls)
    gateway = UvicornProcess(
        "gateway.app:app",
        env={
            **env,
            **urls,
            "LIANXIN_JWT_PRIVATE_KEY": jwt_private,
            "LIANXIN_ADMIN_USER": ADMIN_USER,
            "LIANXIN_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "LIANXIN_RATE_LIMIT_ENABLED": "false",
            "LIANXIN_UPSTREAM_TIMEOUT_S": "600",
        },
        ready_path="/readyz",
        extra_args=serving_args("gateway.app:app"),
    )
    processes = [*services.values(), gateway]
    started: list[UvicornProcess] = []
    try:
        for p in processes:
            started.append(p)
            p.start(timeout_s=120)
    except BaseException:
        for p in reversed(started):
            p.close()
        raise
    return processes


def measure(
    gateway_url: str,
    db_url: str,
    *,
    dataset: str,
    target: str,
    org_id: uuid.UUID,
    members: int,
    year: int,
    runs: int,
) -> Timing:
    """Warm (one untimed run each), then the report, the plain SQL on one connection and
    by source on three, in turn, `runs` times."""
    report_ms: list[float] = []
    sql_ms: list[float] = []
    by_source_ms: list[float] = []

    async def go() -> dict[str, Any]:
        conns = [await asyncpg.connect(plain_url(db_url)) for _ in SOURCES]
        try:
            async with httpx.AsyncClient(base_url=gateway_url, timeout=600, trust_env=False) as c:
                r = await c.post(
                    "/api/v1/auth/token",
                    data={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
                )
                r.raise_for_status()
                c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
                path = f"/api/v1/reports/orgs/{org_id}"

                async def report() -> dict[str, Any]:
                    response = await c.get(path, params={"year": year})
                    assert response.status_code == 200, response.text[:500]
                    body: dict[str, Any] = response.json()
                    assert not body["incomplete"], body["incomplete"]
                    return body

                body = await report()
                result = await plain_sql(conns[:1], org_id, year)
                await plain_sql(conns, org_id, year)
                for _ in range(runs):
                    t0 = time.perf_counter()
                    await report()
                    report_ms.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    await plain_sql(conns[:1], org_id, year)
                    sql_ms.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    await plain_sql(conns, org_id, year)
                    by_source_ms.append((time.perf_counter() - t0) * 1000)
                mine, theirs = sql_totals(result), report_totals(body)
                if mine != theirs:
                    raise AssertionError(f"{dataset}: report {theirs} != plain SQL {mine}")
                return theirs
        finally:
            for conn in conns:
                await conn.close()

    totals = asyncio.run(go())
    rep, sql = statistics.median(report_ms), statistics.median(sql_ms)
    by_source = statistics.median(by_source_ms)
    timing = Timing(
        dataset=dataset,
        target=target,
        members=members,
        year=year,
        runs=runs,
        report_ms=[round(x, 1) for x in report_ms],
        sql_ms=[round(x, 1) for x in sql_ms],
        sql_by_source_ms=[round(x, 1) for x in by_source_ms],
        report_median_ms=round(rep, 1),
        sql_median_ms=round(sql, 1),
        sql_by_source_median_ms=round(by_source, 1),
        ratio=round(rep / sql, 3),
        ratio_by_source=round(rep / by_source, 3),
        totals=totals,
    )
    print(
        f"  {dataset}, {target}: report {timing.report_median_ms} ms, plain SQL "
        f"{timing.sql_median_ms} ms (×{timing.ratio}), by source concurrently "
        f"{timing.sql_by_source_median_ms} ms (×{timing.ratio_by_source}); "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return timing


# --- the two datasets ---------------------------------------------------------------------


def _crypto_keys() -> tuple[str, str]:
    return (
        "c1:" + base64.b64encode(os.urandom(32)).decode(),
        base64.b64encode(os.urandom(32)).decode(),
    )


def run_demo(server: str, runs: int, loads: dict[str, float]) -> list[Timing]:
    """The demo city's report timings; `loads["demo"]`: how long loading it took (what
    `make run` does on its first start)."""
    from tools.demo.load import load

    url, name = _database(server)
    processes: list[UvicornProcess] = []
    data_keys, lookup_key = _crypto_keys()
    saved = {k: os.environ.get(k) for k in ("LIANXIN_DATA_KEYS", "LIANXIN_LOOKUP_KEY")}
    try:
        migrate.upgrade_all(url)
        os.environ["LIANXIN_DATA_KEYS"], os.environ["LIANXIN_LOOKUP_KEY"] = data_keys, lookup_key
        t0 = time.perf_counter()
        loaded = asyncio.run(load(url, seed=2004, year=DEMO_YEAR))
        assert loaded is not None
        loads["demo"] = time.perf_counter() - t0
        print(f"demo city loaded in {loads['demo']:.0f} s", flush=True)
        members = len(loaded.member_ids)
        processes = start_apps(url, data_keys, lookup_key)
        return [
            measure(
                processes[-1].url,
                url,
                dataset="demo city",
                target="the city",
                org_id=loaded.city_id,
                members=members,
                year=DEMO_YEAR,
                runs=runs,
            )
        ]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for p in reversed(processes):
            p.close()
        _drop(server, name)


def run_province(server: str, members: int, runs: int) -> list[Timing]:
    url, name = _database(server)
    processes: list[UvicornProcess] = []
    data_keys, lookup_key = _crypto_keys()
    try:
        migrate.upgrade_all(url)
        province = asyncio.run(
            generate(url, members=members, data_keys=data_keys, lookup_key=lookup_key)
        )
        processes = start_apps(url, data_keys, lookup_key)
        label = f"province of {members:,}"
        return [
            measure(
                processes[-1].url,
                url,
                dataset=label,
                target=target,
                org_id=org_id,
                members=members,
                year=PROVINCE_YEAR,
                runs=runs,
            )
            for target, org_id in (
                ("its root", province.root_id),
                ("one city", province.city_ids[0]),
            )
        ]
    finally:
        for p in reversed(processes):
            p.close()
        _drop(server, name)


def figures(timings: list[Timing]) -> list[_rows.Row]:
    return [
        _rows.row(
            f"report: {t.dataset}, {t.target}",
            t.report_median_ms,
            "ms",
            baseline_name="same aggregates, plain SQL",
            baseline_value=t.sql_median_ms,
            target="ratio <= 1.5",
            note=f"{t.members:,} members, median of {t.runs}; the SQL by source on 3 "
            f"connections concurrently: {t.sql_by_source_median_ms} ms (×{t.ratio_by_source})",
        )
        for t in timings
    ]


def main(argv: list[str] | None = None) -> int:
    quick = os.environ.get("LIANXIN_BENCH_QUICK") == "1"
    default_members = int(
        os.environ.get("LIANXIN_BENCH_PROVINCE_MEMBERS", 200_000 if quick else 1_000_000)
    )
    parser = argparse.ArgumentParser(prog="python -m bench.city_report")
    parser.add_argument("--members", type=int, default=default_members, help="province size")
    parser.add_argument("--runs", type=int, default=3 if quick else 5)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-province", action="store_true")
    parser.add_argument("--out", type=Path, default=_rows.RESULTS / "city_report.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    print(f"load average at start: {load_at_start:.2f} on {os.cpu_count()} CPUs", flush=True)
    server = os.environ.get("DATABASE_URL")
    data_dir: Path | None = None
    timings: list[Timing] = []
    loads: dict[str, float] = {}
    try:
        if server is None:
            data_dir = Path(tempfile.mkdtemp(prefix="lianxin-city-report-pg-"))
            server = pg.start(data_dir).url
        if not args.skip_demo:
            timings += run_demo(server, args.runs, loads)
        if not args.skip_province:
            timings += run_province(server, args.members, args.runs)
    finally:
        if data_dir is not None:
            pg.destroy(data_dir)
    rows = figures(timings)
    if "demo" in loads:
        # The demo city is what `make run` loads on its first start (issue 7: under a minute).
        rows.append(_rows.row("demo city load", loads["demo"], "s", target="value <= 60"))
    report = {
        "load_avg_at_start": round(load_at_start, 2),
        "note": "report through the gateway (3 services read concurrently); plain SQL: the "
        "same aggregates one after another on one connection; medians of warm runs",
        "timings": [asdict(t) for t in timings],
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(_rows.table([asdict(r) for r in rows]))
    path = _rows.write("city_report", report, rows, out=args.out)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
