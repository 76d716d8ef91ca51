"""What the gateway costs: one read (`GET /members/{id}`, or `GET /orgs/{id}` while the
registry has no members API) measured directly against the registry and through the
gateway, with each of the gateway's upstream clients (its lean HTTP/1.1 client, aiohttp,
httpx's own), and through a bare aiohttp proxy (`bench/_proxy_baseline.py`: the least a
Python proxy does, the baseline of the gateway's own CPU per request).

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
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import httpx
import jwt
import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import _rows
from common.auth import ALGORITHM
from services.registry.idnumber import check_character
from tools import migrate, pg
from tools.servers import UvicornProcess

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "gateway_overhead.json"
FAST = ("--loop", "uvloop", "--http", "httptools")  # as `make run` serves the apps
BUDGET_S = 600


@dataclass
class Measurement:
    target: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_req: dict[str, float]


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


def seed(registry_url: str, token: str, members: int) -> tuple[str, list[str]]:
    """An org and `members` members in it, through the registry's API: the member ids."""
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
        ids = []
        for n in range(members):
            serial = (2 * n + 1) % 1000  # odd: male
            body = f"330402{1950 + n % 50}{1 + n % 12:02d}{1 + n % 28:02d}{serial:03d}"
            r = c.post(
                "/api/v1/registry/members",
                json={
                    "name": f"张{n}",
                    "gender": "male",
                    "birth_date": f"{1950 + n % 50}-{1 + n % 12:02d}-{1 + n % 28:02d}",
                    "id_number": body + check_character(body),
                    "phone": f"138{n:08d}",
                    "category": "retired",
                    "org_id": org_id,
                },
            )
            if r.status_code != 201:
                raise RuntimeError(f"seeding: {r.status_code} {r.text[:300]}")
            ids.append(r.json()["id"])
        return org_id, ids


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (uvicorn `--workers` forks them)."""
    process = psutil.Process(pid)
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return (
        float(sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]))
        / 2**20
    )


async def load(
    urls: list[str], token: str | None, *, concurrency: int, seconds: float
) -> tuple[list[float], int, float]:
    """`concurrency` clients reading `urls` (round robin) back to back for `seconds`:
    latencies (s), errors, elapsed."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + seconds

        async def client(k: int) -> None:
            nonlocal errors
            i = k
            while loop.time() < end:
                url = urls[i % len(urls)]
                i += concurrency
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

        await asyncio.gather(*(client(k) for k in range(concurrency)))
        return latencies, errors, loop.time() - start


async def open_loop(
    urls: list[str], token: str, *, rate: float, seconds: float
) -> tuple[list[float], int, float]:
    """Requests started on a fixed schedule (`rate` per second), whatever the earlier ones
    are doing; each latency counts from its scheduled start (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(url: str, due: float) -> None:
            nonlocal errors
            try:
                async with session.get(url, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - due)
            else:
                errors += 1

        started = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(urls[i % len(urls)], due)))
        await asyncio.gather(*tasks)
        return latencies, errors, time.perf_counter() - started


def summarize(
    target: str,
    latencies: list[float],
    errors: int,
    elapsed: float,
    cpu: dict[str, float],
) -> Measurement:
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
        cpu_ms_per_req={k: round(v / n * 1000, 3) for k, v in cpu.items()},
    )


def measure(
    target: str,
    urls: list[str],
    token: str | None,
    pids: dict[str, int],
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> Measurement:
    asyncio.run(load(urls, token, concurrency=concurrency, seconds=warmup_s))
    before = {k: cpu_seconds(pid) for k, pid in pids.items()}
    client_before = time.process_time()
    latencies, errors, elapsed = asyncio.run(
        load(urls, token, concurrency=concurrency, seconds=duration_s)
    )
    cpu = {k: cpu_seconds(pid) - before[k] for k, pid in pids.items()}
    # The load generator's own (this process, not its children) shares the same cores.
    cpu["client"] = time.process_time() - client_before
    m = summarize(target, latencies, errors, elapsed, cpu)
    print(f"  {m.target}: {m.rps} req/s, p50 {m.p50_ms} ms, CPU {m.cpu_ms_per_req}", flush=True)
    return m


def table(rows: list[Measurement]) -> str:
    head = f"{'target':<36}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'err':>5}  CPU ms/req"
    lines = [head, "-" * len(head)]
    for m in rows:
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in m.cpu_ms_per_req.items())
        lines.append(
            f"{m.target:<36}{m.rps:>9.1f}{m.p50_ms:>9.2f}{m.p99_ms:>9.2f}{m.errors:>5}  {cpu}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    quick = os.environ.get("LIANXIN_BENCH_QUICK") == "1"
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_overhead")
    parser.add_argument("--duration", type=float, default=4.0 if quick else 8.0)
    parser.add_argument("--warmup", type=float, default=1.0 if quick else 2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--rate", type=float, default=400.0, help="open-loop requests/s")
    parser.add_argument("--transports", default="lean,aiohttp,httpx")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    load_at_start = os.getloadavg()[0]

    data_dir = Path(tempfile.mkdtemp(prefix="lianxin-bench-pg-"))
    processes: list[UvicornProcess] = []

    def start(
        target: str, env: dict[str, str], *extra: str, ready: str = "/healthz"
    ) -> UvicornProcess:
        process = UvicornProcess(target, env=env, ready_path=ready, extra_args=(*FAST, *extra))
        processes.append(process)
        return process.start()

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
            "LIANXIN_CONSUMERS_ENABLED": "false",
        }
        db = {"postgres": cluster.pid} if cluster.pid is not None else {}
        registry = start("services.registry.app:app", env, ready="/readyz")
        _, ids = seed(registry.url, token, args.members)
        path = "/api/v1/registry/members/{id}"
        paths = [path.format(id=i) for i in ids]
        print(
            f"reading {len(ids)} member cards ({path}), {args.concurrency} concurrent clients",
            flush=True,
        )
        opts = {
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
        }
        rows: list[Measurement] = []

        baseline = start("bench._baseline_app:app", env)
        rows.append(
            measure(
                "bare FastAPI + asyncpg (1 worker)",
                [f"{baseline.url}/members/{i}" for i in ids],
                None,
                {"app": baseline.pid, **db},
                **opts,
            )
        )
        baseline.close()
        direct1 = measure(
            "registry (1 worker)",
            [registry.url + p for p in paths],
            token,
            {"registry": registry.pid, **db},
            **opts,
        )
        rows.append(direct1)
        registry.close()
        registry2 = start("services.registry.app:app", env, "--workers", "2", ready="/readyz")
        direct2 = measure(
            "registry (2 workers)",
            [registry2.url + p for p in paths],
            token,
            {"registry": registry2.pid, **db},
            **opts,
        )
        rows.append(direct2)
        registry2.close()

        registry = start("services.registry.app:app", env, ready="/readyz")
        bare_proxy = start("bench._proxy_baseline:app", {**env, "LIANXIN_UPSTREAM": registry.url})
        proxied = measure(
            "bare aiohttp proxy + registry",
            [bare_proxy.url + p for p in paths],
            token,
            {"proxy": bare_proxy.pid, "registry": registry.pid, **db},
            **opts,
        )
        rows.append(proxied)
        bare_proxy.close()
        gateways: dict[str, Measurement] = {}
        latency: Measurement | None = None
        rss: dict[str, float] = {}
        for transport in transports:
            gateway = start(
                "gateway.app:app",
                {
                    **env,
                    "LIANXIN_REGISTRY_URL": registry.url,
                    "LIANXIN_UPSTREAM_TRANSPORT": transport,
                    "LIANXIN_RATE_LIMIT_ENABLED": "false",
                },
            )
            urls = [gateway.url + p for p in paths]
            m = measure(
                f"gateway ({transport}) + registry",
                urls,
                token,
                {"gateway": gateway.pid, "registry": registry.pid, **db},
                **opts,
            )
            gateways[transport] = m
            rows.append(m)
            if transport == transports[0]:
                before = {
                    "gateway": cpu_seconds(gateway.pid),
                    "registry": cpu_seconds(registry.pid),
                }
                lat, errors, elapsed = asyncio.run(
                    open_loop(urls, token, rate=args.rate, seconds=args.duration)
                )
                cpu = {
                    "gateway": cpu_seconds(gateway.pid) - before["gateway"],
                    "registry": cpu_seconds(registry.pid) - before["registry"],
                }
                latency = summarize(
                    f"gateway ({transport}) at {args.rate:.0f}/s open loop",
                    lat,
                    errors,
                    elapsed,
                    cpu,
                )
                print(f"  {latency.target}: p50 {latency.p50_ms}, p99 {latency.p99_ms}")
                rows.append(latency)
                rss = {"gateway": rss_mb(gateway.pid), "registry": rss_mb(registry.pid)}
            gateway.close()
        print()
        print(table(rows))

        best = gateways[transports[0]]
        figures = [
            _rows.row(
                "registry member read (1 worker)",
                direct1.rps,
                "req/s",
                baseline_name="bare FastAPI+asyncpg PK read",
                baseline_value=rows[0].rps,
                target="ratio >= 0.5",
            ),
            _rows.row(
                f"member read via gateway ({transports[0]}), 1+1 procs",
                best.rps,
                "req/s",
                baseline_name="registry direct, 2 workers",
                baseline_value=direct2.rps,
                target="ratio >= 0.75",
            ),
            # The 1+1 pair has one registry process: its ratio cannot pass this one's,
            # however little the gateway costs.
            _rows.row(
                "ceiling of that ratio: registry 1 worker",
                direct1.rps,
                "req/s",
                baseline_name="registry direct, 2 workers",
                baseline_value=direct2.rps,
                note="the 1+1 pair serves through one registry process",
            ),
            _rows.row(
                "gateway CPU per proxied request",
                best.cpu_ms_per_req["gateway"],
                "ms",
                baseline_name="bare aiohttp proxy CPU per request",
                baseline_value=proxied.cpu_ms_per_req["proxy"],
                target="value <= 0.3",
            ),
        ]
        if latency is not None:
            figures += [
                _rows.row(
                    f"member read via gateway @{args.rate:.0f}/s p50",
                    latency.p50_ms,
                    "ms",
                    baseline_name="registry direct p50 (closed)",
                    baseline_value=direct1.p50_ms,
                    target="value <= 5",
                ),
                _rows.row(
                    f"member read via gateway @{args.rate:.0f}/s p99",
                    latency.p99_ms,
                    "ms",
                    target="value <= 12",
                    note=f"{latency.requests} requests, {latency.errors} errors",
                ),
            ]
        for transport, m in gateways.items():
            if transport != transports[0]:
                figures.append(
                    _rows.row(
                        f"gateway CPU per request, {transport} transport",
                        m.cpu_ms_per_req["gateway"],
                        "ms",
                        baseline_name=f"{transports[0]} transport",
                        baseline_value=best.cpu_ms_per_req["gateway"],
                    )
                )
        for app, mb in rss.items():
            figures.append(_rows.row(f"{app} RSS after the runs", mb, "MB", target="value <= 200"))
        print()
        print(_rows.table([asdict(f) for f in figures]))
        written = _rows.write(
            "gateway_overhead",
            {
                "path": path,
                "members_read": len(ids),
                "concurrency": args.concurrency,
                "warmup_s": args.warmup,
                "duration_s": args.duration,
                "load_avg_at_start": round(load_at_start, 2),
                "note": "load generator, apps and PostgreSQL share this machine; CPU per "
                "request is each process's CPU time over the run / successful requests",
                "results": [asdict(m) for m in rows],
            },
            figures,
            out=args.out,
        )
        print(f"written: {written}")
    finally:
        for process in processes:
            process.close()
        pg.destroy(data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
