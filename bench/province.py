"""A province on one machine: how the report, a subtree listing and a work-unit sync scale
from 100 thousand members to a province's 4 million (docs/scaling.md).

`generate(url, members=...)` writes a province-shaped dataset straight into a migrated
database by COPY — the org tree (province → 11 cities → counties → streets → communities,
about one org per 40 members: 100,000 orgs for 4 million), the members' registration cards
(ID numbers encrypted and hashed with the keys the apps are given, so a sync finds them),
and the mobility and activities read models of both (as their consumers would hold them).
Reusable by other benchmarks: it returns the ids a measurement needs.

`python -m bench.province` generates, for each size (default 100,000 and 4,000,000; scale
down with `--members`), a fresh database, starts registry, mobility, activities and the
gateway as uvicorn processes and measures through the gateway:
- the report of the province and of one city (`GET /reports/orgs/{id}?year=`);
- the province's member list: the first page and 20 pages deep (`GET /registry/members`);
- a work unit's sync of 1,000 in-service members (new persons, then the same list again).
It writes `bench/results/province.json` and prints a table. Every process it starts (and
the embedded PostgreSQL) is stopped by its pid; the databases are dropped."""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import io
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import make_url

from common.crypto import KeyRing, Lookup
from common.db import plain_url
from common.sharding import UNSHARDED, child_shard_key
from services.registry import idnumber
from services.registry.service.member_card import ID_NUMBER
from tools import migrate, pg
from tools.servers import UvicornProcess

RESULTS = Path(__file__).resolve().parent / "results"
CITIES = 11
COUNTIES_PER_CITY = 8
STREETS_PER_COUNTY = 13
MEMBERS_PER_COMMUNITY = 40
CHUNK = 20_000  # rows per COPY chunk
YEAR = 2026
ADMIN_USER, ADMIN_PASSWORD = "bench-admin", "Province-bench-2026"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
CATEGORIES = [  # (category, relation, share)
    ("retired", "enrolled", 0.45),
    ("community_staff", "enrolled", 0.05),
    ("new_economic_org", "enrolled", 0.1),
    ("laid_off", "enrolled", 0.05),
    ("migrant_worker", "enrolled", 0.1),
    ("rural_to_urban", "enrolled", 0.1),
    ("in_service_resident", "resident", 0.15),
]


@dataclass
class OrgRow:
    id: uuid.UUID
    seq: int
    code: str
    name: str
    kind: str
    area_level: str
    parent: OrgRow | None
    path: str


@dataclass
class Province:
    """What `generate` made: the ids and sizes a measurement needs."""

    root_id: uuid.UUID
    city_ids: list[uuid.UUID]
    work_unit_id: uuid.UUID
    community_codes: list[str]
    orgs: int
    members: int
    seconds: float
    next_serial: int = field(default=0)  # the first ID-number serial not used yet


def province_tree(members: int) -> list[OrgRow]:
    """Province → cities → counties → streets → communities (one per ~40 members) and one
    work unit under the province (the sync's org)."""
    orgs: list[OrgRow] = []

    def add(name: str, kind: str, level: str, parent: OrgRow | None) -> OrgRow:
        seq = len(orgs) + 1
        path = f"{parent.path}.{seq}" if parent else str(seq)
        org = OrgRow(uuid.uuid4(), seq, f"PB-{seq}", name, kind, level, parent, path)
        orgs.append(org)
        return org

    # The registry has no province level: the root is a committee like a city's.
    root = add("示范省委", "committee", "city", None)
    add("示范省电力公司党委", "committee", "work_unit", root)
    streets: list[OrgRow] = []
    for c in range(CITIES):
        city = add(f"第{c + 1}市委", "committee", "city", root)
        for k in range(COUNTIES_PER_CITY):
            county = add(f"第{c + 1}市第{k + 1}区委", "committee", "county", city)
            for s in range(STREETS_PER_COUNTY):
                streets.append(
                    add(f"{county.name}第{s + 1}街道", "working_committee", "street", county)
                )
    communities = max(len(streets), members // MEMBERS_PER_COMMUNITY)
    for n in range(communities):
        street = streets[n % len(streets)]
        add(f"{street.name}第{n // len(streets) + 1}社区", "branch", "community", street)
    return orgs


def id_number_for(serial: int) -> str:
    """A valid, distinct GB 11643 number per serial (the serial's parity: the gender)."""
    birth = date(1945, 1, 1) + timedelta(days=serial // 1000)
    body = f"330402{birth:%Y%m%d}{serial % 1000:03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]
    return body + check


def _csv(rows: Iterator[list[Any]]) -> Iterator[bytes]:
    while True:
        buf = io.StringIO()
        writer = csv.writer(buf)
        n = 0
        for row in rows:
            writer.writerow(row)
            n += 1
            if n == CHUNK:
                break
        if n:
            yield buf.getvalue().encode()
        if n < CHUNK:
            return


async def _copy(
    conn: asyncpg.Connection, table: str, columns: list[str], rows: Iterator[list[Any]]
) -> None:
    schema, name = table.split(".")

    async def source() -> AsyncIterator[bytes]:
        for chunk in _csv(rows):
            yield chunk

    await conn.copy_to_table(
        name, schema_name=schema, columns=columns, source=source(), format="csv"
    )


async def _drop_indexes(conn: asyncpg.Connection, table: str) -> list[str]:
    """Drops `table`'s indexes that back no constraint (a bulk insert then writes the heap
    only); returns their definitions, to build them again after."""
    rows = await conn.fetch(
        """SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
           FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid
           WHERE i.indrelid = $1::regclass AND c.oid IS NULL""",
        table,
    )
    for r in rows:
        await conn.execute(f"DROP INDEX {r['name']}")
    return [str(r["def"]) for r in rows]


def _hex(b: bytes) -> str:
    return "\\x" + b.hex()


async def generate(
    url: str,
    *,
    members: int,
    data_keys: str,
    lookup_key: str,
    seed: int = 2026,
    progress: Callable[[str], None] = print,
) -> Province:
    """Writes a province of `members` members into the migrated database at `url` by COPY
    (registry orgs and members; mobility's and activities' read models of both)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    ring, lookup = KeyRing(data_keys), Lookup(lookup_key)
    orgs = province_tree(members)
    communities = [o for o in orgs if o.area_level == "community"]
    weights = [w for _, _, w in CATEGORIES]
    now = "2026-01-01 00:00:00+00"
    conn = await asyncpg.connect(plain_url(url))
    try:
        org_cols = [
            "id",
            "shard_key",
            "seq",
            "code",
            "name",
            "kind",
            "area_level",
            "parent_id",
            "path",
        ]
        keys: dict[uuid.UUID, uuid.UUID] = {}  # common/sharding.py's rule; parents come first
        for o in orgs:
            parent_key = keys[o.parent.id] if o.parent else None
            parent_level = o.parent.area_level if o.parent else None
            keys[o.id] = child_shard_key(o.id, parent_key, parent_level)
        await _copy(
            conn,
            "registry.orgs",
            org_cols,
            (
                [
                    o.id,
                    keys[o.id],
                    o.seq,
                    o.code,
                    o.name,
                    o.kind,
                    o.area_level,
                    o.parent and o.parent.id,
                    o.path,
                ]
                for o in orgs
            ),
        )
        await _copy(
            conn,
            "registry.org_codes",
            ["code", "org_id", "shard_key"],
            ([o.code, o.id, keys[o.id]] for o in orgs),
        )
        await conn.execute(
            "INSERT INTO registry.upper_orgs (id, parent_id, path, code, name, kind, area_level) "
            "SELECT id, parent_id, path, code, name, kind, area_level FROM registry.orgs "
            "WHERE area_level = 'city'"
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('registry.orgs', 'seq'), $1)", len(orgs)
        )
        projected = ["org_id", "parent_id", "path", "code", "name", "kind", "area_level"]
        for schema in ("mobility", "activities"):
            await _copy(
                conn,
                f"{schema}.orgs",
                [*projected, "shard_key", "version", "updated_at"],
                (
                    [
                        o.id,
                        o.parent and o.parent.id,
                        o.path,
                        o.code,
                        o.name,
                        o.kind,
                        o.area_level,
                        keys[o.id],
                        1,
                        now,
                    ]
                    for o in orgs
                ),
            )
        progress(f"{len(orgs):,} orgs in {time.perf_counter() - started:.1f} s")

        # Members: generated once into a temporary table, copied on to the three schemas.
        await conn.execute(
            """CREATE TEMP TABLE gen_members (
                id uuid, name text, gender text, birth_date date, cipher bytea, hash bytea,
                masked text, education text, category text, relation text, status text,
                org_id uuid, org_path text, residence_org_id uuid, residence_path text)"""
        )

        def member_rows() -> Iterator[list[Any]]:
            educations = ["junior_high_or_below", "senior_high", "college", "bachelor"]
            for serial in range(members):
                number = id_number_for(serial)
                community = communities[serial % len(communities)]
                category, relation, _ = rng.choices(CATEGORIES, weights)[0]
                resident = relation == "resident"
                yield [
                    uuid.uuid4(),
                    rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
                    "male" if serial % 2 else "female",
                    date(1945, 1, 1) + timedelta(days=serial // 1000),
                    _hex(ring.encrypt(number, purpose=ID_NUMBER)),
                    _hex(lookup.digest(number, purpose=ID_NUMBER)),
                    idnumber.mask(number),
                    rng.choice(educations),
                    category,
                    relation,
                    "mobile" if rng.random() < 0.03 else "active",
                    None if resident else community.id,
                    None if resident else community.path,
                    community.id if resident else None,
                    community.path if resident else None,
                ]
                if serial and serial % 500_000 == 0:
                    progress(f"  {serial:,} members made ({time.perf_counter() - started:.0f} s)")

        gen_cols = [
            "id",
            "name",
            "gender",
            "birth_date",
            "cipher",
            "hash",
            "masked",
            "education",
            "category",
            "relation",
            "status",
            "org_id",
            "org_path",
            "residence_org_id",
            "residence_path",
        ]
        await _copy(conn, "pg_temp.gen_members", gen_cols, member_rows())
        progress(f"{members:,} members made in {time.perf_counter() - started:.1f} s")
        rebuild = []
        for table in ("registry.members", "mobility.members", "activities.members"):
            rebuild += await _drop_indexes(conn, table)
        await conn.execute(
            """INSERT INTO registry.members (id, shard_key, name, gender, birth_date,
                   id_number_cipher, id_number_hash, id_number_masked, education, membership,
                   category, relation, status, org_id, residence_org_id, joined_on)
               SELECT g.id, coalesce(o.shard_key, r.shard_key, $1), g.name, g.gender,
                      g.birth_date, g.cipher, g.hash, g.masked, g.education, 'full',
                      g.category, g.relation, g.status, g.org_id, g.residence_org_id,
                      g.birth_date + interval '30 years'
               FROM gen_members g
               LEFT JOIN registry.orgs o ON o.id = g.org_id
               LEFT JOIN registry.orgs r ON r.id = g.residence_org_id""",
            UNSHARDED,
        )
        await conn.execute(
            """INSERT INTO registry.member_identities (id_number_hash, member_id, shard_key)
               SELECT id_number_hash, id, shard_key FROM registry.members
               WHERE id_number_hash IS NOT NULL"""
        )
        progress(f"registry.members written ({time.perf_counter() - started:.1f} s)")
        await conn.execute(
            """INSERT INTO mobility.members (member_id, name, birth_date, status, category,
                   relation, org_id, org_path, residence_org_id, residence_path, shard_key,
                   version, updated_at)
               SELECT g.id, g.name, g.birth_date, g.status, g.category, g.relation, g.org_id,
                      g.org_path::ltree, g.residence_org_id, g.residence_path::ltree,
                      m.shard_key, 1, now()
               FROM gen_members g JOIN registry.members m ON m.id = g.id"""
        )
        await conn.execute(
            """INSERT INTO activities.members (member_id, name, birth_date, education, status,
                   category, relation, org_id, org_path, residence_org_id, residence_path,
                   shard_key, version, updated_at)
               SELECT g.id, g.name, g.birth_date, g.education, g.status, g.category,
                      g.relation, g.org_id, g.org_path::ltree, g.residence_org_id,
                      g.residence_path::ltree, m.shard_key, 1, now()
               FROM gen_members g JOIN registry.members m ON m.id = g.id"""
        )
        await conn.execute("DROP TABLE gen_members")
        for definition in rebuild:
            await conn.execute(definition)
        progress(f"indexes built again ({time.perf_counter() - started:.1f} s)")
        for table in (
            "registry.orgs",
            "registry.members",
            "mobility.orgs",
            "mobility.members",
            "activities.orgs",
            "activities.members",
        ):
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()
    seconds = time.perf_counter() - started
    progress(f"province of {members:,} members ready in {seconds:.1f} s")
    root = orgs[0]
    return Province(
        root_id=root.id,
        city_ids=[o.id for o in orgs if o.area_level == "city" and o.parent is root],
        work_unit_id=next(o.id for o in orgs if o.area_level == "work_unit"),
        community_codes=[o.code for o in communities],
        orgs=len(orgs),
        members=members,
        seconds=seconds,
        next_serial=members,
    )


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Timing:
    name: str
    members: int
    runs: int
    first_ms: float
    median_ms: float
    max_ms: float
    note: str = ""


def timed(
    name: str, members: int, call: Callable[[], httpx.Response], runs: int = 5, note: str = ""
) -> Timing:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = call()
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code < 300, f"{name}: {r.status_code} {r.text[:300]}"
    return Timing(
        name,
        members,
        runs,
        round(times[0], 1),
        round(statistics.median(times), 1),
        round(max(times), 1),
        note,
    )


def measure(gateway: str, province: Province, *, sync_rows: int) -> list[Timing]:
    n = province.members
    with (
        httpx.Client(base_url=gateway, timeout=600, trust_env=False) as c,
        httpx.Client(base_url=gateway, timeout=600, trust_env=False) as unit,
    ):
        r = c.post("/api/v1/auth/token", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
        r.raise_for_status()
        c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        root, city = province.root_id, province.city_ids[0]
        out = [
            timed(
                "report: province",
                n,
                lambda: c.get(f"/api/v1/reports/orgs/{root}", params={"year": YEAR}),
                runs=3,
            ),
            timed(
                "report: one city",
                n,
                lambda: c.get(f"/api/v1/reports/orgs/{city}", params={"year": YEAR}),
                runs=3,
            ),
            timed(
                "list: province, first page of 50",
                n,
                lambda: c.get(
                    "/api/v1/registry/members", params={"org_id": str(root), "limit": 50}
                ),
            ),
        ]
        cursor = None
        for _ in range(20):
            page = c.get(
                "/api/v1/registry/members",
                params={"org_id": str(root), "limit": 50, **({"cursor": cursor} if cursor else {})},
            ).json()
            cursor = page["next_cursor"]
        deep = cursor
        out.append(
            timed(
                "list: province, page 21 (cursor)",
                n,
                lambda: c.get(
                    "/api/v1/registry/members",
                    params={"org_id": str(root), "limit": 50, "cursor": deep},
                ),
            )
        )
        out.append(
            timed(
                "list: province, filtered (category=retired), first page",
                n,
                lambda: c.get(
                    "/api/v1/registry/members",
                    params={"org_id": str(root), "limit": 50, "category": "retired"},
                ),
            )
        )
        key = c.post(
            "/api/v1/auth/api-keys",
            json={"name": "bench sync", "org_id": str(province.work_unit_id), "scopes": ["sync"]},
        ).json()["key"]
        rng = random.Random(7)
        rows = [
            {
                "external_id": f"E-{i}",
                "name": f"在职{i}",
                "id_number": id_number_for(province.next_serial + i),
                "residence_community_code": rng.choice(province.community_codes),
            }
            for i in range(sync_rows)
        ]
        url = f"/api/v1/mobility/sync/{province.work_unit_id}/members"
        body = {"mode": "full", "members": rows}
        first = timed(
            f"sync: {sync_rows:,} new in-service members",
            n,
            lambda: unit.put(url, json=body, headers={"X-API-Key": key}),
            runs=1,
        )
        again = timed(
            f"sync: the same {sync_rows:,} again (unchanged)",
            n,
            lambda: unit.put(url, json=body, headers={"X-API-Key": key}),
            runs=3,
        )
        # And a sync of persons already registered (found by ID number among all members).
        known = [
            {
                "external_id": f"K-{i}",
                "name": f"已登记{i}",
                "id_number": id_number_for(i * 37 % n),
                "residence_community_code": rng.choice(province.community_codes),
            }
            for i in range(sync_rows)
        ]
        found = timed(
            f"sync: {sync_rows:,} members already registered",
            n,
            lambda: unit.put(
                url, json={"mode": "delta", "members": known}, headers={"X-API-Key": key}
            ),
            runs=1,
        )
        out += [first, again, found]
    return out


def _keys() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _database(server_url: str) -> tuple[str, str]:
    name = f"lianxin_province_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(plain_url(server_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return make_url(plain_url(server_url)).set(database=name).render_as_string(False), name


def _drop(server_url: str, name: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(plain_url(server_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def run_size(server_url: str, members: int, *, sync_rows: int) -> tuple[Province, list[Timing]]:
    url, name = _database(server_url)
    processes: list[UvicornProcess] = []
    try:
        migrate.upgrade_all(url)
        data_keys = "p1:" + base64.b64encode(os.urandom(32)).decode()
        lookup_key = base64.b64encode(os.urandom(32)).decode()
        province = asyncio.run(
            generate(url, members=members, data_keys=data_keys, lookup_key=lookup_key)
        )
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
        }
        services = {
            s: UvicornProcess(f"services.{s}.app:app", env=dict(env), ready_path="/readyz")
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
                "LIANXIN_AUDIT_SOURCE_TIMEOUT_S": "600",
            },
            ready_path="/readyz",
        )
        processes = [*services.values(), gateway]
        for p in processes:
            p.start(timeout_s=120)
        return province, measure(gateway.url, province, sync_rows=sync_rows)
    finally:
        for p in reversed(processes):
            p.close()
        _drop(server_url, name)


def table(timings: list[Timing]) -> str:
    sizes = sorted({t.members for t in timings})
    names = list(dict.fromkeys(t.name for t in timings))
    head = "| what | " + " | ".join(f"{s:,} members (median ms)" for s in sizes) + " | ratio |"
    lines = [head, "|---|" + "---|" * (len(sizes) + 1)]
    for name in names:
        by = {t.members: t.median_ms for t in timings if t.name == name}
        ratio = by[sizes[-1]] / by[sizes[0]] if len(sizes) > 1 and by.get(sizes[0]) else None
        cells = " | ".join(f"{by[s]:,.1f}" if s in by else "—" for s in sizes)
        lines.append(f"| {name} | {cells} | {'' if ratio is None else f'{ratio:.1f}×'} |")
    return "\n".join(lines)


def write(out: Path, generated: list[dict[str, Any]], timings: list[Timing]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0]},
        "generated": generated,
        "timings": [asdict(t) for t in timings],
    }
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.province")
    parser.add_argument(
        "--members",
        type=int,
        nargs="+",
        default=[100_000, 4_000_000],
        help="province sizes to measure (the first is the baseline)",
    )
    parser.add_argument("--sync-rows", type=int, default=1_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "province.json")
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    server = os.environ.get("DATABASE_URL")
    data_dir: Path | None = None
    if server is None:
        data_dir = Path(tempfile.mkdtemp(prefix="lianxin-province-pg-"))
        server = pg.start(data_dir).url
    timings: list[Timing] = []
    generated: list[dict[str, Any]] = []
    try:
        for members in args.members:
            province, measured = run_size(server, members, sync_rows=args.sync_rows)
            generated.append(
                {
                    "members": members,
                    "orgs": province.orgs,
                    "generate_s": round(province.seconds, 1),
                }
            )
            timings += measured
            print(table(timings), flush=True)
            write(args.out, generated, timings)  # after each size: a long run keeps its part
    finally:
        if data_dir is not None:
            pg.destroy(data_dir)
    print(f"written {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
