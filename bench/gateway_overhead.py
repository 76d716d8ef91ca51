"""What the gateway costs: the member card (`GET /members/{id}`) read straight from the
registry and through the gateway, with each of the gateway's upstream clients (its lean
HTTP/1.1 client, aiohttp, httpx's own), and through a bare aiohttp proxy
(`bench/_proxy_baseline.py`: the least a Python proxy does, the baseline of the gateway's
own CPU per request), and through a byte pipe (`bench/_byte_pipe.py`: the least any proxy
process does, nothing parsed — the reference for what the extra process costs by itself).

One run: a throwaway embedded PostgreSQL; the registry (uvicorn, 1 worker), the registry
with 2 workers, a bare FastAPI + asyncpg endpoint, the gateway (1 worker) and the bare
proxy as child processes on loopback, all up at once, seeded through the registry's API.
Figures compared with each other are measured in alternating turns (`--slices`) of a
fixed number of closed-loop clients, so that they see the same minutes of this shared
machine: the registry against the bare endpoint; the gateway pair (1+1 processes)
against the registry with two workers, at `--concurrency` clients and at `--saturate`
clients (enough to keep the two cores busy through the longer chain: each turn reports
the cores its processes kept busy), with the byte pipe in the same turns at `--saturate`;
the gateway against the bare proxy. Then the gateway
at a fixed arrival rate (open loop), and the other upstream clients. Requests/s, p50/p99,
CPU seconds per request of each process (psutil `cpu_times` before and after each turn,
the load generator's and PostgreSQL's included). Prints a table and writes JSON to
`bench/results/gateway_overhead.json`. Every process is stopped by its pid at the end.

    python -m bench.gateway_overhead [--duration 8] [--slices 8] [--concurrency 16]
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
from bench._generator import closed_loop, no_gc_pauses, read_ok
from common.auth import ALGORITHM
from services.registry.idnumber import check_character
from tools import migrate, pg
from tools.servers import UvicornProcess, serving_args

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "gateway_overhead.json"
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
    cores_busy: float = 0.0


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
            if await read_ok(session, url, headers):
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
        cores_busy=round(sum(cpu.values()) / elapsed, 2),
    )


@dataclass
class Setup:
    """One way of serving the read: its URLs and the processes whose CPU it spends."""

    target: str
    urls: list[str]
    token: str | None
    pids: dict[str, int]


def measure(
    setups: list[Setup],
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    slices: int,
) -> list[Measurement]:
    """Each setup loaded for `duration_s` in all, in `slices` turns taken in rotation: this
    machine's speed moves by a third within a minute, and figures compared with each
    other must see the same mix of it. CPU per request: each process's CPU time over the
    turns (the load generator's own included: it shares the cores) / successful requests."""
    for setup in setups:
        with no_gc_pauses():
            asyncio.run(
                closed_loop(setup.urls, setup.token, concurrency=concurrency, seconds=warmup_s)
            )
    latencies: dict[str, list[float]] = {s.target: [] for s in setups}
    errors = dict.fromkeys(latencies, 0)
    elapsed = dict.fromkeys(latencies, 0.0)
    cpu: dict[str, dict[str, float]] = {s.target: {} for s in setups}
    for _ in range(slices):
        for setup in setups:
            with no_gc_pauses():  # its collection before the turn, not in its CPU
                before = {k: cpu_seconds(pid) for k, pid in setup.pids.items()}
                client_before = time.process_time()
                lat, err, took = asyncio.run(
                    closed_loop(
                        setup.urls,
                        setup.token,
                        concurrency=concurrency,
                        seconds=duration_s / slices,
                    )
                )
                spent = cpu[setup.target]
                for k, pid in setup.pids.items():
                    spent[k] = spent.get(k, 0.0) + cpu_seconds(pid) - before[k]
                # This process's own (not its children's): the load generator.
                spent["client"] = spent.get("client", 0.0) + time.process_time() - client_before
            latencies[setup.target] += lat
            errors[setup.target] += err
            elapsed[setup.target] += took
    out = []
    for setup in setups:
        t = setup.target
        m = summarize(t, latencies[t], errors[t], elapsed[t], cpu[t])
        print(
            f"  {m.target} ({concurrency} clients): {m.rps} req/s, p50 {m.p50_ms} ms, "
            f"CPU {m.cpu_ms_per_req}, {m.cores_busy} cores busy",
            flush=True,
        )
        out.append(m)
    return out


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
    parser.add_argument("--slices", type=int, default=4 if quick else 8)
    parser.add_argument("--warmup", type=float, default=1.0 if quick else 2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--saturate", type=int, default=64, help="clients for throughput at saturation"
    )
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
        target: str,
        env: dict[str, str],
        *extra: str,
        ready: str = "/healthz",
        command: tuple[str, ...] | None = None,
    ) -> UvicornProcess:
        process = UvicornProcess(
            target,
            env=env,
            ready_path=ready,
            extra_args=(*serving_args(target), *extra),
            command=command,
        )
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
        print(f"reading {len(ids)} member cards ({path})", flush=True)

        def gateway_env(transport: str) -> dict[str, str]:
            return {
                **env,
                "LIANXIN_REGISTRY_URL": registry.url,
                "LIANXIN_UPSTREAM_TRANSPORT": transport,
                "LIANXIN_RATE_LIMIT_ENABLED": "false",
            }

        # Every way of serving the read runs at once (idle ones cost nothing): the
        # figures compared with each other are measured in turns, in the same minutes.
        baseline = start("bench._baseline_app:app", env)
        registry2 = start("services.registry.app:app", env, "--workers", "2", ready="/readyz")
        gateway = start("gateway.app:app", gateway_env(transports[0]))
        bare_proxy = start("bench._proxy_baseline:app", {**env, "LIANXIN_UPSTREAM": registry.url})
        pipe_command = (sys.executable, "-m", "bench._byte_pipe", "--upstream")
        pipe = start(
            "bench._byte_pipe",
            env,
            command=(*pipe_command, registry.url.removeprefix("http://")),
        )
        bare = Setup(
            "bare FastAPI + asyncpg (1 worker)",
            [f"{baseline.url}/members/{i}" for i in ids],
            None,
            {"app": baseline.pid, **db},
        )
        one = Setup(
            "registry (1 worker)",
            [registry.url + p for p in paths],
            token,
            {"registry": registry.pid, **db},
        )
        two = Setup(
            "registry (2 workers)",
            [registry2.url + p for p in paths],
            token,
            {"registry": registry2.pid, **db},
        )
        via = Setup(
            f"gateway ({transports[0]}) + registry",
            [gateway.url + p for p in paths],
            token,
            {"gateway": gateway.pid, "registry": registry.pid, **db},
        )
        piped = Setup(
            "byte pipe + registry",
            [pipe.url + p for p in paths],
            token,
            {"pipe": pipe.pid, "registry": registry.pid, **db},
        )
        proxy = Setup(
            "bare aiohttp proxy + registry",
            [bare_proxy.url + p for p in paths],
            token,
            {"proxy": bare_proxy.pid, "registry": registry.pid, **db},
        )
        opts = {"warmup_s": args.warmup, "duration_s": args.duration, "slices": args.slices}
        rows: list[Measurement] = []

        print("the registry's read against a bare endpoint", flush=True)
        bare_m, direct1 = measure([bare, one], concurrency=args.concurrency, **opts)
        rows += [bare_m, direct1]
        baseline.close()

        print("the gateway pair against the registry with two workers", flush=True)
        direct2, best = measure([two, via], concurrency=args.concurrency, **opts)
        rows += [direct2, best]
        sat = args.saturate
        # The pipe in the same turns: what the extra process costs at the least.
        direct2_sat, best_sat, pipe_sat = measure([two, via, piped], concurrency=sat, **opts)
        for m in (direct2_sat, best_sat, pipe_sat):
            m.target += f", {sat} clients"
        rows += [direct2_sat, best_sat, pipe_sat]
        registry2.close()
        pipe.close()

        print("the gateway's CPU against a bare aiohttp proxy's", flush=True)
        proxied, lean_cpu = measure([proxy, via], concurrency=args.concurrency, **opts)
        lean_cpu.target += ", CPU turn"
        rows += [proxied, lean_cpu]
        bare_proxy.close()

        urls = via.urls
        before = {"gateway": cpu_seconds(gateway.pid), "registry": cpu_seconds(registry.pid)}
        with no_gc_pauses():
            lat, errors, elapsed = asyncio.run(
                open_loop(urls, token, rate=args.rate, seconds=args.duration)
            )
        latency = summarize(
            f"gateway ({transports[0]}) at {args.rate:.0f}/s open loop",
            lat,
            errors,
            elapsed,
            {
                "gateway": cpu_seconds(gateway.pid) - before["gateway"],
                "registry": cpu_seconds(registry.pid) - before["registry"],
            },
        )
        print(f"  {latency.target}: p50 {latency.p50_ms}, p99 {latency.p99_ms}", flush=True)
        rows.append(latency)
        rss = {"gateway": rss_mb(gateway.pid), "registry": rss_mb(registry.pid)}
        gateway.close()

        others: dict[str, Measurement] = {}
        for transport in transports[1:]:
            other = start("gateway.app:app", gateway_env(transport))
            setup = Setup(
                f"gateway ({transport}) + registry",
                [other.url + p for p in paths],
                token,
                {"gateway": other.pid, "registry": registry.pid, **db},
            )
            (others[transport],) = measure([setup], concurrency=args.concurrency, **opts)
            rows.append(others[transport])
            other.close()
        print()
        print(table(rows))

        lean = transports[0]
        figures = [
            _rows.row(
                "registry member read (1 worker)",
                direct1.rps,
                "req/s",
                baseline_name="bare FastAPI+asyncpg PK read",
                baseline_value=bare_m.rps,
                target="ratio >= 0.5",
            ),
            _rows.row(
                f"member read via gateway ({lean}), 1+1 procs, {sat} clients",
                best_sat.rps,
                "req/s",
                baseline_name="registry direct, 2 workers",
                baseline_value=direct2_sat.rps,
                target="ratio >= 0.75",
                note=f"cores busy: {best_sat.cores_busy} via the gateway, "
                f"{direct2_sat.cores_busy} direct",
            ),
            _rows.row(
                f"member read via a byte pipe (reference), 1+1 procs, {sat} clients",
                pipe_sat.rps,
                "req/s",
                baseline_name="registry direct, 2 workers",
                baseline_value=direct2_sat.rps,
                note="the floor of any proxy process (bench/_byte_pipe.py), same turns; "
                f"pipe CPU per read {pipe_sat.cpu_ms_per_req['pipe']} ms",
            ),
            # When the cores are the limit, throughput goes as 1 / (CPU per read of every
            # process on them): the pair's ratio cannot pass direct/via.
            _rows.row(
                f"CPU per read, every process, via gateway, {sat} clients",
                round(sum(best_sat.cpu_ms_per_req.values()), 3),
                "ms",
                baseline_name="registry direct, 2 workers",
                baseline_value=round(sum(direct2_sat.cpu_ms_per_req.values()), 3),
                note="the ratio's bound when the cores are the limit: baseline / value",
            ),
            _rows.row(
                f"member read via gateway ({lean}), 1+1 procs, {args.concurrency} clients",
                best.rps,
                "req/s",
                baseline_name="registry direct, 2 workers",
                baseline_value=direct2.rps,
                note=f"cores busy: {best.cores_busy} via the gateway, {direct2.cores_busy} direct",
            ),
            _rows.row(
                "gateway CPU per proxied request",
                lean_cpu.cpu_ms_per_req["gateway"],
                "ms",
                baseline_name="bare aiohttp proxy CPU per request",
                baseline_value=proxied.cpu_ms_per_req["proxy"],
                target="value <= 0.3",
            ),
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
        for transport, m in others.items():
            figures.append(
                _rows.row(
                    f"gateway CPU per request, {transport} transport",
                    m.cpu_ms_per_req["gateway"],
                    "ms",
                    baseline_name=f"{lean} transport",
                    baseline_value=lean_cpu.cpu_ms_per_req["gateway"],
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
                "saturate": sat,
                "warmup_s": args.warmup,
                "duration_s": args.duration,
                "slices": args.slices,
                "load_avg_at_start": round(load_at_start, 2),
                "note": "load generator, apps and PostgreSQL share this machine; figures "
                "compared with each other were measured in alternating turns; CPU per "
                "request is each process's CPU time over the turns / successful requests",
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
