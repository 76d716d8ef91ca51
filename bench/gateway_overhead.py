"""What the gateway costs: one read (`GET /members/{id}`, or `GET /orgs/{id}` while the
registry has no members API) measured directly against the registry and through the
gateway, with each of the gateway's upstream transports (httpx-aiohttp, httpx's own).

One run: a throwaway embedded PostgreSQL, the registry (uvicorn, 1 worker) and the gateway
(1 worker) as child processes on loopback, seeded through the registry's API. For each
target: a warm-up, then a fixed number of concurrent clients for a fixed time; requests/s,
p50/p99 latency, and CPU seconds per request of the gateway and the registry (psutil
`cpu_times` of their pids, before and after). Prints a table and writes JSON to
`bench/results/gateway_overhead.json`. Every process is stopped by its pid at the end.

    python -m bench.gateway_overhead [--duration 8] [--warmup 2] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.auth import ALGORITHM
from tools import migrate, pg
from tools.servers import UvicornProcess

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "gateway_overhead.json"
FAST = ("--loop", "uvloop", "--http", "httptools")  # as `make run` serves the apps


@dataclass
class Measurement:
    target: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    gateway_cpu_ms_per_req: float | None
    registry_cpu_ms_per_req: float


def keys() -> tuple[Ed25519PrivateKey, str, str]:
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, private_pem, public_pem


def admin_token(private: Ed25519PrivateKey, ttl_s: int = 3600) -> str:
    now = int(time.time())
    claims = {
        "sub": "bench-admin",
        "role": "admin",
        "typ": "access",
        "iss": "lianxin-gateway",
        "aud": "lianxin",
        "iat": now,
        "exp": now + ttl_s,
        "username": "bench-admin",
    }
    return jwt.encode(claims, private, algorithm=ALGORITHM)


def seed(registry_url: str, token: str) -> str:
    """One org, and a member in it when the registry has members: the path to read."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=registry_url, headers=headers, timeout=30, trust_env=False) as c:
        r = c.post(
            "/api/v1/registry/orgs",
            json={
                "code": f"BENCH-{uuid.uuid4().hex[:8]}",
                "name": "基准测试社区党支部",
                "kind": "branch",
                "area_level": "community",
                "parent_id": None,
            },
        )
        r.raise_for_status()
        org_id = r.json()["id"]
        paths = c.get("/api/v1/registry/openapi.json").json()["paths"]
        if "/api/v1/registry/members/{member_id}" in paths:
            r = c.post(
                "/api/v1/registry/members",
                json={
                    "name": "张三",
                    "gender": "male",
                    "birth_date": "1970-01-01",
                    "category": "retired",
                    "org_id": org_id,
                },
            )
            if r.status_code == 201:
                return f"/api/v1/registry/members/{r.json()['id']}"
            print(f"(member not created: {r.status_code}; reading the org)", flush=True)
        return f"/api/v1/registry/orgs/{org_id}"


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def load(
    url: str, token: str, *, concurrency: int, seconds: float
) -> tuple[list[float], int, float]:
    """`concurrency` clients reading `url` back to back for `seconds`: latencies (s),
    errors, elapsed."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + seconds

        async def client() -> None:
            nonlocal errors
            while loop.time() < end:
                t0 = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, errors, loop.time() - start


def measure(
    target: str,
    url: str,
    token: str,
    *,
    registry_pid: int,
    gateway_pid: int | None,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> Measurement:
    asyncio.run(load(url, token, concurrency=concurrency, seconds=warmup_s))
    reg0 = cpu_seconds(registry_pid)
    gw0 = cpu_seconds(gateway_pid) if gateway_pid else 0.0
    latencies, errors, elapsed = asyncio.run(
        load(url, token, concurrency=concurrency, seconds=duration_s)
    )
    reg1 = cpu_seconds(registry_pid)
    gw1 = cpu_seconds(gateway_pid) if gateway_pid else 0.0
    n = len(latencies)
    if n == 0:
        raise RuntimeError(f"{target}: no successful request ({errors} errors)")
    ordered = sorted(latencies)
    return Measurement(
        target=target,
        requests=n,
        errors=errors,
        seconds=round(elapsed, 2),
        rps=round(n / elapsed, 1),
        p50_ms=round(statistics.median(ordered) * 1000, 2),
        p99_ms=round(ordered[min(n - 1, int(n * 0.99))] * 1000, 2),
        gateway_cpu_ms_per_req=round((gw1 - gw0) / n * 1000, 3) if gateway_pid else None,
        registry_cpu_ms_per_req=round((reg1 - reg0) / n * 1000, 3),
    )


def table(rows: list[Measurement], direct: Measurement) -> str:
    head = (
        f"{'target':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'err':>5}"
        f"{'rps ratio':>11}{'p50 +ms':>9}{'gw CPU ms/req':>15}{'reg CPU ms/req':>16}"
    )
    lines = [head, "-" * len(head)]
    for m in rows:
        ratio = direct.rps / m.rps
        gw_cpu = "-" if m.gateway_cpu_ms_per_req is None else f"{m.gateway_cpu_ms_per_req:.3f}"
        lines.append(
            f"{m.target:<24}{m.rps:>9.1f}{m.p50_ms:>9.2f}{m.p99_ms:>9.2f}{m.errors:>5}"
            f"{ratio:>10.2f}x{m.p50_ms - direct.p50_ms:>9.2f}{gw_cpu:>15}"
            f"{m.registry_cpu_ms_per_req:>16.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_overhead")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--transports", default="aiohttp,httpx")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]

    data_dir = Path(tempfile.mkdtemp(prefix="lianxin-bench-pg-"))
    processes: list[UvicornProcess] = []
    try:
        cluster = pg.start(data_dir)
        migrate.upgrade_all(cluster.url)
        private, private_pem, public_pem = keys()
        token = admin_token(private)
        env = {
            "DATABASE_URL": cluster.url,
            "LIANXIN_JWT_PUBLIC_KEY": public_pem,
            "LIANXIN_JWT_PRIVATE_KEY": private_pem,
            "LIANXIN_LOG_LEVEL": "WARNING",
            "LIANXIN_ADMIN_USER": "",
            "LIANXIN_ADMIN_PASSWORD": "",
        }
        registry = UvicornProcess(
            "services.registry.app:app", env=env, ready_path="/readyz", extra_args=FAST
        )
        processes.append(registry)
        registry.start()
        path = seed(registry.url, token)
        print(f"reading {path} with {args.concurrency} concurrent clients", flush=True)

        def run(target: str, url: str, gateway_pid: int | None) -> Measurement:
            return measure(
                target,
                url,
                token,
                registry_pid=registry.pid,
                gateway_pid=gateway_pid,
                concurrency=args.concurrency,
                warmup_s=args.warmup,
                duration_s=args.duration,
            )

        direct = run("registry (direct)", registry.url + path, None)
        rows = [direct]
        for transport in transports:
            gateway = UvicornProcess(
                "gateway.app:app",
                env={
                    **env,
                    "LIANXIN_REGISTRY_URL": registry.url,
                    "LIANXIN_UPSTREAM_TRANSPORT": transport,
                    "LIANXIN_RATE_LIMIT_ENABLED": "false",
                },
                extra_args=FAST,
            )
            processes.append(gateway)
            gateway.start()
            rows.append(run(f"gateway ({transport})", gateway.url + path, gateway.pid))
            gateway.close()
        print()
        print(table(rows, direct))
        best = min(rows[1:], key=lambda m: m.gateway_cpu_ms_per_req or 0.0)
        print(
            f"\ngateway overhead ({best.target}): throughput x{direct.rps / best.rps:.2f} "
            f"lower, p50 +{best.p50_ms - direct.p50_ms:.2f} ms, "
            f"{best.gateway_cpu_ms_per_req:.3f} ms gateway CPU per proxied request"
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {
            "bench": "gateway_overhead",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "path": path.replace(path.rsplit("/", 1)[-1], "{id}"),
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "note": "load generator, registry, gateway and PostgreSQL share this machine",
            "results": [asdict(m) for m in rows],
            "overhead": {
                m.target: {
                    "rps_ratio": round(direct.rps / m.rps, 3),
                    "p50_added_ms": round(m.p50_ms - direct.p50_ms, 2),
                    "p99_added_ms": round(m.p99_ms - direct.p99_ms, 2),
                    "gateway_cpu_ms_per_req": m.gateway_cpu_ms_per_req,
                }
                for m in rows[1:]
            },
        }
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"written: {args.out}")
    finally:
        for process in processes:
            process.close()
        pg.destroy(data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
