"""Work-unit sync: 20,000 members in one `PUT /api/v1/mobility/sync/{org_id}/members`,
through the whole request path of the mobility app (per-row checks, the registry's bulk
resolve endpoint called with service credentials, link upserts, events, audit), on a
throwaway embedded PostgreSQL with the real migrations. The registry and mobility apps run
in this process (the registry reached over an in-process transport), so the figure is the
services' own work, not loopback HTTP; the unit's JSON body is serialized before the clock
starts, as its client would before sending. Three passes: the first registers every person and
creates every link, the second finds all unchanged, the third (`full`, half the file)
ends half of the links. Prints rows/s per pass and writes `bench/results/mobility_sync.json`.

    python -m bench.mobility_sync [--rows 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import _rows
from common.auth import ALGORITHM
from common.db import create_engine, make_sessionmaker, plain_url
from common.events.consumer import catch_up
from services.mobility.app import create_app as create_mobility
from services.mobility.projections import registry_consumer
from services.mobility.settings import MobilitySettings
from services.registry import idnumber
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from tools import migrate, pg

BUDGET_S = 600


def pem_pair() -> tuple[Ed25519PrivateKey, str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return key, private, public


def token(key: Ed25519PrivateKey, role: str, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": f"bench-{role}",
        "role": role,
        "typ": "access",
        "iss": "lianxin-gateway",
        "aud": "lianxin",
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return jwt.encode(body, key, algorithm=ALGORITHM)


def person(n: int, community_code: str) -> dict[str, Any]:
    body = f"330402{date(1960 + n % 40, 1 + n % 12, 1 + n % 28):%Y%m%d}{n % 1000:03d}"
    body = f"{(330000 + n // 1000) % 1_000_000:06d}{body[6:]}"
    return {
        "external_id": f"HR-{n:06d}",
        "name": f"职工{n}",
        "id_number": body + idnumber.check_character(body),
        "phone": f"139{n:08d}",
        "residence_community_code": community_code,
        "address": f"{n % 200}幢",
    }


async def run(url: str, rows: int) -> list[dict[str, Any]]:
    if True:
        gateway_key, _, gateway_public = pem_pair()
        _, service_private, service_public = pem_pair()
        common = {
            "database_url": url,
            "jwt_public_key": gateway_public,
            "service_public_key": service_public,
            "service_private_key": service_private,
            "consumers_enabled": False,
            "max_upload_bytes": 200 * 1_048_576,
            "log_level": "WARNING",
        }
        engine = create_engine(url, pool_size=4, statement_timeout_ms=600_000)
        maker = make_sessionmaker(engine)
        registry = create_registry(RegistrySettings(**common), sessionmaker=maker)  # type: ignore[arg-type]
        mobility = create_mobility(MobilitySettings(**common), sessionmaker=maker)  # type: ignore[arg-type]
        mobility.state.registry_transport = httpx.ASGITransport(app=registry)
        admin = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=registry),
            base_url="http://registry",
            headers={"Authorization": f"Bearer {token(gateway_key, 'admin')}"},
        )
        async with admin:
            orgs: list[dict[str, Any]] = []
            for body in (
                {"code": "BENCH-CITY", "name": "市", "kind": "committee", "area_level": "city"},
                {"code": "BENCH-COM", "name": "社区", "kind": "branch", "area_level": "community"},
                {
                    "code": "BENCH-UNIT",
                    "name": "单位",
                    "kind": "committee",
                    "area_level": "work_unit",
                },
            ):
                parent = {"parent_id": orgs[0]["id"]} if orgs else {}
                r = await admin.post("/api/v1/registry/orgs", json={**body, **parent})
                r.raise_for_status()
                orgs.append(r.json())
        await catch_up(maker, registry_consumer())
        unit_id = orgs[2]["id"]
        key = token(gateway_key, "integration", org_id=unit_id, scopes=["sync"])
        members = [person(n, "BENCH-COM") for n in range(rows)]
        results = []
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=mobility),
            base_url="http://mobility",
            headers={"Authorization": f"Bearer {key}"},
            timeout=600,
        ) as unit:
            for name, mode, listed in (
                ("create", "delta", members),
                ("unchanged", "delta", members),
                ("full, half ended", "full", members[: rows // 2]),
            ):
                # The body as the unit's client sends it, serialized before the clock
                # starts: the figure is the services' handling of the call.
                body = json.dumps({"mode": mode, "members": listed}, ensure_ascii=False)
                started = time.perf_counter()
                r = await unit.put(
                    f"/api/v1/mobility/sync/{unit_id}/members",
                    content=body.encode(),
                    headers={"Content-Type": "application/json"},
                )
                seconds = time.perf_counter() - started
                if r.status_code != 200:
                    raise SystemExit(f"sync failed: {r.status_code} {r.text[:500]}")
                answer = r.json()
                result = {
                    "pass": name,
                    "rows": len(listed),
                    "seconds": round(seconds, 3),
                    "rows_per_s": round(len(listed) / seconds),
                    **{k: answer[k] for k in ("created", "updated", "unchanged", "ended")},
                    "errors": len(answer["errors"]),
                }
                results.append(result)
                print(
                    f"{name:>18}: {len(listed):>6} rows in {seconds:6.2f} s = "
                    f"{result['rows_per_s']:>7} rows/s  (created {answer['created']}, "
                    f"unchanged {answer['unchanged']}, ended {answer['ended']}, "
                    f"errors {len(answer['errors'])})",
                    flush=True,
                )
        await engine.dispose()
        results.append({"pass": "raw COPY", **await copy_baseline(url, members)})
        return results


async def copy_baseline(url: str, members: list[dict[str, Any]]) -> dict[str, Any]:
    """The floor: the same number of rows COPYed into a bare copy of `mobility.links`
    (no checks, no encryption, no indexes, no events)."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.execute(
            "CREATE TABLE public.bench_copy (id uuid, member_id uuid, workplace_org_id uuid, "
            "residence_org_id uuid, mode text, external_id text, name text, id_number text)"
        )
        records = [
            (
                uuid.uuid4(),
                uuid.uuid4(),
                uuid.uuid4(),
                uuid.uuid4(),
                "dual",
                m["external_id"],
                m["name"],
                m["id_number"],
            )
            for m in members
        ]
        started = time.perf_counter()
        await conn.copy_records_to_table("bench_copy", records=records, schema_name="public")
        seconds = time.perf_counter() - started
        await conn.execute("DROP TABLE public.bench_copy")
    finally:
        await conn.close()
    return {
        "rows": len(members),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(members) / seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mobility_sync")
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="lianxin-bench-sync-"))
    try:
        url = pg.start(data_dir).url
        migrate.upgrade_all(url)
        results = asyncio.run(run(url, args.rows))
    finally:
        pg.destroy(data_dir)
    by = {r["pass"]: r for r in results}
    copy = by["raw COPY"]["rows_per_s"]
    rows = [
        _rows.row(
            f"work-unit sync, {args.rows} new members in one call",
            by["create"]["rows_per_s"],
            "rows/s",
            baseline_name=f"raw COPY of {args.rows} rows",
            baseline_value=copy,
            target="value >= 10000",
        ),
        _rows.row(
            f"work-unit sync, {args.rows} unchanged",
            by["unchanged"]["rows_per_s"],
            "rows/s",
            baseline_name=f"raw COPY of {args.rows} rows",
            baseline_value=copy,
        ),
        _rows.row(
            f"work-unit sync, full, {args.rows // 2} ended",
            by["full, half ended"]["rows_per_s"],
            "rows/s",
            baseline_name=f"raw COPY of {args.rows} rows",
            baseline_value=copy,
        ),
    ]
    print(_rows.table([asdict(r) for r in rows]))
    _rows.write(
        "mobility_sync",
        {
            "python": sys.version.split()[0],
            "note": "registry and mobility apps in this process (in-process transport); "
            "rows/s end to end of one PUT",
            "passes": results,
        },
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
