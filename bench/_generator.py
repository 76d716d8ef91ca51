"""What the benchmarks' load generators share: the closed loop, and no pauses of their own."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator

import aiohttp


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """The generator's cyclic garbage collector off while it sends a bounded load (and
    once run before): a full collection of this process's heap stalled its event loop for
    ~100 ms every few runs, and the requests it then sent late — up to a fifth of a
    second's worth at 400 req/s — were counted as the system's latency (their latency
    counts from when they were due), or as a turn's lost throughput. Reference counting
    still frees what has no cycles; the collector runs again when the load ends."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def read_ok(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> bool:
    """One `GET`, its body read whole: whether the answer was a `200` (False: another
    status, or no answer — a failed connection, the session's timeout)."""
    try:
        async with session.get(url, headers=headers) as r:
            await r.read()
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def closed_loop(
    urls: list[str],
    token: str | None,
    *,
    concurrency: int,
    seconds: float,
    timeout_s: float = 10.0,
) -> tuple[list[float], int, float]:
    """`concurrency` clients reading `urls` (round robin) back to back for `seconds`, with
    the bearer `token` if one is given: the latencies (s) of the `200` answers, the count
    of the others and of failed requests, and the time it took."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
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
                if await read_ok(session, url, headers):
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(client(k) for k in range(concurrency)))
        return latencies, errors, loop.time() - start
