"""Bulk registry: how fast `POST /members/import` registers 100,000 members into a tree of
10,000 orgs, and how fast a subtree's members are listed afterwards.

One run: a throwaway embedded PostgreSQL with the migrations; 10,000 orgs written in bulk
(city → 10 counties → 100 streets and towns → 2,000 communities → 7,889 building party
groups; SQL, not the API: the figure here is the members'); 100,000 registration cards
generated as csv and xlsx (valid ID numbers and phones, 15% residents, a third in a building
group); the registry under uvicorn (1 worker, as `make run` serves it) as a child process.

- import: the csv (real run: every member created, with its event), the same csv again
  (every row `unchanged`), then — members emptied — the xlsx (real run). Rows/s of each
  request, end to end, and the server's peak RSS during it (`VmHWM`, reset before each).
- listing: `GET /members?org_id=<street>&limit=50` first pages and deep keyset pages (cursors
  collected by walking the street's pages), the same for a county, and a community's single
  page; a fixed number of concurrent clients for a fixed time: requests/s, p50/p99.

Prints a table and writes JSON to `bench/results/registry_bulk.json`. Every process is
stopped by its pid at the end, and the database removed.

    python -m bench.registry_bulk [--members 100000] [--duration 6] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from openpyxl import Workbook

from bench import _rows
from bench._generator import closed_loop, no_gc_pauses
from common.auth import ALGORITHM
from common.db import plain_url
from common.sharding import child_shard_key
from services.registry.idnumber import check_character
from tools import migrate, pg
from tools.servers import FAST, UvicornProcess

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "registry_bulk.json"
BUDGET_S = 900
MEMBERS = "/api/v1/registry/members"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

COUNTIES, PLACES_PER_COUNTY, COMMUNITIES_PER_PLACE, ORGS = 10, 10, 20, 10_000
HEADER = [
    "姓名",
    "性别",
    "出生日期",
    "身份证号",
    "民族",
    "电话",
    "学历",
    "入党日期",
    "党员类型",
    "类别",
    "所在组织代码",
    "居住社区代码",
    "楼道党小组代码",
    "住址",
    "工作单位",
    "特长",
]
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国建华志强海燕红梅玉兰德明"
EDUCATION = ["初中及以下"] * 73 + ["高中"] * 19 + ["大专", "本科"] * 4
ENROLLED = (
    ["离退休"] * 53
    + ["社区组织工作人员"] * 6
    + ["新经济组织从业人员"] * 8
    + ["下岗失业"] * 8
    + ["外来务工"] * 5
    + ["农转城"] * 5
)
SKILLS = ["书法", "水电维修", "理发", "法律咨询", "医疗保健", "文艺", "电脑", "调解"]


@dataclass
class Org:
    seq: int
    id: uuid.UUID
    code: str
    name: str
    kind: str
    area_level: str
    parent: Org | None
    path: str
    groups: list[Org] = field(default_factory=list)


@dataclass
class ImportRun:
    name: str
    rows: int
    bytes: int
    seconds: float
    rows_per_s: float
    created: int
    unchanged: int
    invalid: int
    server_peak_rss_mb: float | None
    server_rss_before_mb: float


@dataclass
class ListRun:
    target: str
    members_in_subtree: int
    pages: str
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


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


# --- the org tree -----------------------------------------------------------------------------


def org_tree() -> list[Org]:
    orgs: list[Org] = []

    def add(name: str, kind: str, level: str, parent: Org | None) -> Org:
        seq = len(orgs) + 1
        org = Org(
            seq=seq,
            id=uuid.uuid4(),
            code=f"B{seq:05d}",
            name=name,
            kind=kind,
            area_level=level,
            parent=parent,
            path=f"{parent.path}.{seq}" if parent else str(seq),
        )
        orgs.append(org)
        return org

    city = add("嘉兴市委", "committee", "city", None)
    communities: list[Org] = []
    for c in range(COUNTIES):
        county = add(f"第{c + 1}区委", "committee", "county", city)
        for p in range(PLACES_PER_COUNTY):
            street = p % 2 == 0
            place = add(
                f"{county.name}第{p + 1}{'街道党工委' if street else '镇党委'}",
                "working_committee" if street else "committee",
                "street" if street else "town",
                county,
            )
            for m in range(COMMUNITIES_PER_PLACE):
                kind = ("branch", "branch", "general_branch", "committee")[m % 4]
                communities.append(add(f"{place.name}第{m + 1}社区", kind, "community", place))
    n = 0
    while len(orgs) < ORGS:
        community = communities[n % len(communities)]
        group = add(
            f"{community.name}{len(community.groups) + 1}号楼党小组", "group", "building", community
        )
        community.groups.append(group)
        n += 1
    return orgs


async def load_orgs(url: str, orgs: list[Org]) -> None:
    keys: dict[uuid.UUID, uuid.UUID] = {}  # common/sharding.py's rule; parents come first
    for o in orgs:
        parent_key = keys[o.parent.id] if o.parent else None
        keys[o.id] = child_shard_key(o.id, parent_key, o.parent and o.parent.area_level)
    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.executemany(
            "INSERT INTO registry.orgs (id, seq, code, name, kind, area_level, parent_id, path, "
            "shard_key) VALUES ($1, $2, $3, $4, $5, $6, $7, CAST($8::text AS ltree), $9)",
            [
                (
                    o.id,
                    o.seq,
                    o.code,
                    o.name,
                    o.kind,
                    o.area_level,
                    o.parent and o.parent.id,
                    o.path,
                    keys[o.id],
                )
                for o in orgs
            ],
        )
        await conn.execute(
            "INSERT INTO registry.org_codes (code, org_id, shard_key) "
            "SELECT code, id, shard_key FROM registry.orgs"
        )
        await conn.execute(
            "INSERT INTO registry.upper_orgs (id, parent_id, path, code, name, kind, area_level) "
            "SELECT id, parent_id, path, code, name, kind, area_level FROM registry.orgs "
            "WHERE area_level = 'city'"
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('registry.orgs', 'seq'), $1)", len(orgs)
        )
        await conn.execute("ANALYZE registry.orgs")
    finally:
        await conn.close()


# --- the members' cards -------------------------------------------------------------------


def cards(orgs: list[Org], count: int, rng: random.Random) -> list[list[Any]]:
    communities = [o for o in orgs if o.area_level == "community"]
    serials: dict[date, int] = {}
    start, span = date(1930, 1, 1), (date(2000, 12, 31) - date(1930, 1, 1)).days
    today = date.today()
    rows: list[list[Any]] = []
    for i in range(count):
        community = communities[i % len(communities)]
        born = start + timedelta(days=rng.randrange(span))
        n = serials.get(born, 0)
        serials[born] = n + 1
        male = rng.random() < 0.5
        serial = (2 * n + (1 if male else 0)) % 1000
        body = f"330402{born:%Y%m%d}{serial:03d}"
        joined = born + timedelta(days=365 * rng.randint(19, 45))
        resident = rng.random() < 0.15
        group = (
            community.groups[i % len(community.groups)] if community.groups and i % 3 == 0 else None
        )
        rows.append(
            [
                rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.randint(1, 2))),
                "男" if male else "女",
                born.isoformat(),
                body + check_character(body),
                "汉族",
                f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}",
                rng.choice(EDUCATION),
                min(joined, today).isoformat(),
                "正式" if rng.random() < 0.97 else "预备",
                "在职党员" if resident else rng.choice(ENROLLED),
                "" if resident else community.code,
                community.code if resident else "",
                group.code if group and not resident else "",
                f"{community.name}{rng.randint(1, 30)}幢{rng.randint(1, 6)}0{rng.randint(1, 4)}室",
                "" if rng.random() < 0.6 else f"嘉兴第{rng.randint(1, 300)}厂",
                "、".join(rng.sample(SKILLS, k=rng.randint(0, 2))),
            ]
        )
    return rows


def csv_bytes(rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(HEADER)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


# --- measuring ----------------------------------------------------------------------------


class PeakRss:
    """The peak RSS of a process over a stretch: `VmHWM` after resetting it (clear_refs 5),
    else sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.exact = self._reset()
        if not self.exact:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _reset(self) -> bool:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def _sample(self) -> None:
        process = psutil.Process(self.pid)
        while not self._stop.wait(0.02):
            self.sampled = max(self.sampled, process.memory_info().rss)

    def peak_mb(self) -> float:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            return self.sampled / 1_048_576
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def run_import(
    c: httpx.Client, pid: int, name: str, filename: str, content: bytes, media: str
) -> ImportRun:
    before = psutil.Process(pid).memory_info().rss / 1_048_576
    peak = PeakRss(pid)
    t0 = time.perf_counter()
    r = c.post(f"{MEMBERS}/import", files={"file": (filename, content, media)})
    seconds = time.perf_counter() - t0
    peak_mb = peak.peak_mb()
    if r.status_code != 200:
        raise RuntimeError(f"{name}: {r.status_code} {r.text[:500]}")
    body = r.json()
    print(
        f"  {name}: {body['total']} rows in {seconds:.1f} s "
        f"({body['created']} created, {body['unchanged']} unchanged, {body['invalid']} invalid)",
        flush=True,
    )
    return ImportRun(
        name=name,
        rows=body["total"],
        bytes=len(content),
        seconds=round(seconds, 2),
        rows_per_s=round(body["total"] / seconds, 1),
        created=body["created"],
        unchanged=body["unchanged"],
        invalid=body["invalid"],
        server_peak_rss_mb=round(peak_mb, 1),
        server_rss_before_mb=round(before, 1),
    )


def walk_pages(c: httpx.Client, org_id: uuid.UUID) -> tuple[list[str | None], int]:
    """Every page's cursor of an org's subtree listing (None: the first page), and the count."""
    cursors: list[str | None] = [None]
    total = 0
    while True:
        params: dict[str, Any] = {"org_id": str(org_id), "limit": 50}
        if cursors[-1] is not None:
            params["cursor"] = cursors[-1]
        page = c.get(MEMBERS, params=params).json()
        total += len(page["items"])
        if page["next_cursor"] is None:
            return cursors, total
        cursors.append(page["next_cursor"])


def timed_load(
    base: str,
    token: str,
    urls: list[str],
    *,
    concurrency: int,
    seconds: float,
    warmup_s: float = 1.0,
) -> tuple[list[float], int, float]:
    """`bench._generator.closed_loop` over `urls` (relative to `base`) for `warmup_s`, then
    measured for `seconds`, each without the generator's collector pauses: the measured
    run's latencies, errors and elapsed time."""
    full = [base + url for url in urls]

    def run(s: float) -> tuple[list[float], int, float]:
        with no_gc_pauses():
            return asyncio.run(
                closed_loop(full, token or None, concurrency=concurrency, seconds=s, timeout_s=30.0)
            )

    run(warmup_s)
    return run(seconds)


def run_listing(
    base: str,
    token: str,
    target: str,
    org_id: uuid.UUID,
    cursors: list[str | None],
    members: int,
    *,
    deep: bool,
    concurrency: int,
    seconds: float,
) -> ListRun:
    chosen = cursors[len(cursors) // 2 :] if deep else [None]
    urls = []
    for cursor in chosen:
        url = f"{MEMBERS}?org_id={org_id}&limit=50"
        urls.append(url if cursor is None else f"{url}&cursor={cursor}")
    latencies, errors, elapsed = timed_load(
        base, token, urls, concurrency=concurrency, seconds=seconds
    )
    ordered = sorted(latencies)
    n = len(ordered)
    if n == 0:
        raise RuntimeError(f"{target}: no successful request ({errors} errors)")
    pages = f"{len(cursors) // 2 + 1}-{len(cursors)} of {len(cursors)}" if deep else "1"
    return ListRun(
        target=target,
        members_in_subtree=members,
        pages=pages,
        requests=n,
        errors=errors,
        rps=round(n / elapsed, 1),
        p50_ms=round(statistics.median(ordered) * 1000, 2),
        p99_ms=round(ordered[min(n - 1, int(n * 0.99))] * 1000, 2),
    )


def run_listing_at(
    base: str, path: str, target: str, members: int, *, concurrency: int, seconds: float
) -> ListRun:
    """A fixed URL (no token) for `seconds`: the baseline endpoint."""
    latencies, errors, elapsed = timed_load(
        base, "", [path], concurrency=concurrency, seconds=seconds
    )
    ordered = sorted(latencies)
    n = len(ordered)
    if n == 0:
        raise RuntimeError(f"{target}: no successful request ({errors} errors)")
    return ListRun(
        target=target,
        members_in_subtree=members,
        pages="1",
        requests=n,
        errors=errors,
        rps=round(n / elapsed, 1),
        p50_ms=round(statistics.median(ordered) * 1000, 2),
        p99_ms=round(ordered[min(n - 1, int(n * 0.99))] * 1000, 2),
    )


def tables(imports: list[ImportRun], listings: list[ListRun]) -> str:
    head = f"{'import':<28}{'rows':>8}{'MB':>7}{'s':>8}{'rows/s':>9}{'peak RSS MB':>13}"
    lines = [head, "-" * len(head)]
    for i in imports:
        peak = "-" if i.server_peak_rss_mb is None else f"{i.server_peak_rss_mb:.0f}"
        lines.append(
            f"{i.name:<28}{i.rows:>8}{i.bytes / 1_048_576:>7.1f}{i.seconds:>8.1f}"
            f"{i.rows_per_s:>9.0f}{peak:>13}"
        )
    head = (
        f"{'listing (limit=50)':<28}{'members':>8}{'pages':>14}"
        f"{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    )
    lines += ["", head, "-" * len(head)]
    for r in listings:
        lines.append(
            f"{r.target:<28}{r.members_in_subtree:>8}{r.pages:>14}{r.rps:>9.1f}"
            f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.registry_bulk")
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per listing target")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--many", type=int, default=64, help="clients for the p99 run")
    parser.add_argument("--seed", type=int, default=2004)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    print(f"load average at start: {load_at_start:.2f} on {os.cpu_count()} CPUs", flush=True)

    data_dir = Path(tempfile.mkdtemp(prefix="lianxin-bench-pg-"))
    registry: UvicornProcess | None = None
    try:
        cluster = pg.start(data_dir)
        migrate.upgrade_all(cluster.url)
        orgs = org_tree()
        t0 = time.perf_counter()
        asyncio.run(load_orgs(cluster.url, orgs))
        print(f"{len(orgs)} orgs written in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        rows = cards(orgs, args.members, random.Random(args.seed))
        csv_file = csv_bytes(rows)
        xlsx_file = xlsx_bytes(rows)
        del rows
        print(
            f"{args.members} cards: csv {len(csv_file) / 1_048_576:.1f} MB, xlsx "
            f"{len(xlsx_file) / 1_048_576:.1f} MB, made in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        private, public_pem = keys()
        token = admin_token(private)
        env = {
            "DATABASE_URL": cluster.url,
            "LIANXIN_JWT_PUBLIC_KEY": public_pem,
            "LIANXIN_LOG_LEVEL": "WARNING",
            "LIANXIN_CONSUMERS_ENABLED": "false",
        }
        registry = UvicornProcess(
            "services.registry.app:app", env=env, ready_path="/readyz", extra_args=FAST
        )
        registry.start()
        pid = registry.pid
        headers = {"Authorization": f"Bearer {token}"}
        imports: list[ImportRun] = []
        with httpx.Client(
            base_url=registry.url, headers=headers, timeout=600, trust_env=False
        ) as c:
            print("importing", flush=True)
            imports.append(run_import(c, pid, "csv, new members", "m.csv", csv_file, "text/csv"))
            imports.append(
                run_import(c, pid, "csv again (unchanged)", "m.csv", csv_file, "text/csv")
            )

            async def empty() -> None:
                conn = await asyncpg.connect(plain_url(cluster.url))
                try:
                    await conn.execute(
                        "TRUNCATE registry.members, registry.member_identities, registry.outbox "
                        "CASCADE"
                    )
                finally:
                    await conn.close()

            asyncio.run(empty())
            imports.append(run_import(c, pid, "xlsx, new members", "m.xlsx", xlsx_file, XLSX))
            del csv_file, xlsx_file

            street = next(o for o in orgs if o.area_level == "street")
            community = next(o for o in orgs if o.parent is street)
            county = street.parent
            assert county is not None
            print("listing", flush=True)
            listings: list[ListRun] = []
            targets = (("street", street, 2), ("county", county, 2), ("community", community, 1))
            for label, org, kinds in targets:
                cursors, members = walk_pages(c, org.id)
                for deep in (False, True)[:kinds]:
                    run = run_listing(
                        registry.url,
                        token,
                        f"{label} {org.code} {'deep' if deep else 'first'}",
                        org.id,
                        cursors,
                        members,
                        deep=deep,
                        concurrency=args.concurrency,
                        seconds=args.duration,
                    )
                    print(f"  {run.target}: {run.rps} req/s, p50 {run.p50_ms} ms", flush=True)
                    listings.append(run)
            # The same first page of the county through the bare keyset endpoint, and the
            # registry's under many clients.
            county_cursors, county_members = walk_pages(c, county.id)
            baseline_app = UvicornProcess("bench._baseline_app:app", env=env, extra_args=FAST)
            try:
                baseline_app.start()
                raw = run_listing_at(
                    baseline_app.url,
                    f"/orgs/{county.id}/members?limit=50",
                    f"raw keyset, county {county.code} first",
                    county_members,
                    concurrency=args.concurrency,
                    seconds=args.duration,
                )
            finally:
                baseline_app.close()
            print(f"  {raw.target}: {raw.rps} req/s, p50 {raw.p50_ms} ms", flush=True)
            many = run_listing(
                registry.url,
                token,
                f"county {county.code} first, {args.many} clients",
                county.id,
                county_cursors,
                county_members,
                deep=False,
                concurrency=args.many,
                seconds=args.duration,
            )
            print(f"  {many.target}: p99 {many.p99_ms} ms", flush=True)
            listings += [raw, many]
        print()
        print(tables(imports, listings))
        by_name = {i.name: i for i in imports}
        county_first = next(
            r for r in listings if r.target.startswith("county") and "first" in r.target
        )
        xlsx = by_name["xlsx, new members"]
        figures = [
            _rows.row(
                f"card import, {xlsx.rows} xlsx rows",
                xlsx.rows_per_s,
                "rows/s",
                baseline_name="csv, same rows",
                baseline_value=by_name["csv, new members"].rows_per_s,
            ),
            _rows.row(
                "card import xlsx: registry peak RSS",
                xlsx.server_peak_rss_mb or 0.0,
                "MB",
                baseline_name="RSS before",
                baseline_value=xlsx.server_rss_before_mb,
                target="value <= 300",
            ),
            _rows.row(
                f"subtree page of 50 ({county_first.members_in_subtree} members)",
                county_first.rps,
                "req/s",
                baseline_name="raw keyset endpoint (bare)",
                baseline_value=raw.rps,
                target="ratio >= 0.5",
            ),
            _rows.row(
                f"subtree page of 50, p99 at {args.many} clients",
                many.p99_ms,
                "ms",
                note=f"{many.rps} req/s",
            ),
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {
            "bench": "registry_bulk",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "orgs": len(orgs),
            "members": args.members,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_avg_at_start": round(load_at_start, 2),
            },
            "note": "one uvicorn worker; client, registry and PostgreSQL share this machine; "
            "import rows/s end to end (upload, parse, checks, encryption, insert, events, "
            "commit); peak RSS is the registry process's during that request",
            "imports": [asdict(i) for i in imports],
            "listings": [asdict(r) for r in listings],
            "total_s": round(time.perf_counter() - started, 1),
        }
        print(_rows.table([asdict(f) for f in figures]))
        _rows.write("registry_bulk", report, figures, out=args.out)
        print(f"\nwritten: {args.out} ({report['total_s']} s in all)")
    finally:
        if registry is not None:
            registry.close()
        pg.destroy(data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
