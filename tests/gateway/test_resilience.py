"""A service that dies, hangs or comes back, over real sockets: the registry runs under
uvicorn in a child process (killed and restarted by pid), the stand-in service plays
mobility in another, and the gateway (in the test's process, its real upstream client)
must answer 503 at once while the registry's circuit is open, keep serving mobility, give
504 on a hung answer, retry only idempotent methods, and heal without a restart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.errors import ServiceUnavailable
from gateway.app import create_app
from gateway.breaker import CircuitBreaker, CircuitOpen, CircuitState
from gateway.proxy import AiohttpSender, HttpxSender, Proxy, Reply, Sender, Upstream
from gateway.settings import GatewaySettings
from gateway.upstream_http import LeanSender
from tests.gateway.conftest import FakeClock
from tests.gateway.live import fake_service, poll, registry_service
from tests.helpers import PUBLIC_PEM, mint
from tools.pg import free_port
from tools.servers import UvicornProcess

ORGS = "/api/v1/registry/orgs"
ECHO = "/api/v1/mobility/echo/headers"
THRESHOLD = 3
COOL_DOWN_S = 0.5
HEAL_LIMIT_S = 15.0


@pytest.fixture(scope="module")
def registry_process(database_url: str) -> Iterator[UvicornProcess]:
    with registry_service(database_url, PUBLIC_PEM) as process:
        yield process


@pytest.fixture
def registry(registry_process: UvicornProcess) -> UvicornProcess:
    """The registry, running at the start of each test (a failed test may have left it
    stopped)."""
    return registry_process.start()


@pytest.fixture(scope="module")
def fake() -> Iterator[UvicornProcess]:
    with fake_service() as process:
        yield process


@pytest.fixture(scope="module")
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture(params=["lean", "aiohttp", "httpx"])
def gateway_settings(
    request: pytest.FixtureRequest,
    gateway_settings: GatewaySettings,
    registry: UvicornProcess,
    fake: UvicornProcess,
    dead_url: str,
) -> GatewaySettings:
    """Each test runs with each upstream client, over loopback sockets."""
    return gateway_settings.model_copy(
        update={
            "upstream_transport": request.param,
            "registry_url": registry.url,
            "mobility_url": fake.url,
            "activities_url": dead_url,
            "upstream_retries": 2,
            "upstream_connect_timeout_s": 0.5,
            "upstream_read_timeouts": {"mobility": 0.5},
            "breaker_threshold": THRESHOLD,
            "breaker_reset_s": COOL_DOWN_S,
        }
    )


class CountingSender:
    """The proxy's real upstream client, counting the attempts that reach the network."""

    def __init__(self) -> None:
        self.inner: Sender | None = None
        self.attempts: list[tuple[str, str]] = []

    async def send(
        self,
        method: str,
        upstream: Upstream,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Any,
    ) -> Reply:
        assert self.inner is not None
        self.attempts.append((method, target.decode().partition("?")[0]))
        return await self.inner.send(method, upstream, target, headers, body)


@pytest.fixture
def transport() -> CountingSender:
    return CountingSender()


@pytest.fixture
async def gateway_app(
    gateway_settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    transport: CountingSender,
) -> AsyncIterator[FastAPI]:
    """The gateway with its real upstream client (the lean one, aiohttp's session called
    directly, or httpx's own pool), over loopback sockets."""
    app = create_app(gateway_settings, sessionmaker=db, clock=clock)
    async with app.router.lifespan_context(app):
        proxy: Proxy = app.state.proxy
        expected = {"lean": LeanSender, "aiohttp": AiohttpSender, "httpx": HttpxSender}
        assert isinstance(proxy.sender, expected[gateway_settings.upstream_transport])
        transport.inner, proxy.sender = proxy.sender, transport
        yield app


@pytest.fixture
def admin(gw: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return gw(mint("admin"))


def breaker_of(app: FastAPI, service: str) -> CircuitBreaker:
    proxy: Proxy = app.state.proxy
    return proxy.upstreams[service].breaker


class TestServiceDown:
    async def test_dead_service_fails_fast_others_answer_and_it_heals(
        self,
        gateway_app: FastAPI,
        admin: httpx.AsyncClient,
        registry: UvicornProcess,
    ) -> None:
        assert (await admin.get(ORGS)).status_code == 200
        breaker = breaker_of(gateway_app, "registry")

        registry.kill()
        started = time.monotonic()
        first = await admin.get(ORGS)  # refused on loopback: fails at once, retried twice
        first_s = time.monotonic() - started
        assert first.status_code == 503
        assert first.headers["content-type"] == "application/problem+json"
        assert first_s < 1.0
        for _ in range(THRESHOLD):
            if breaker.state is CircuitState.open:
                break
            assert (await admin.get(ORGS)).status_code == 503
        assert breaker.state is CircuitState.open

        started = time.monotonic()
        r = await admin.get(ORGS)
        elapsed = time.monotonic() - started
        assert r.status_code == 503
        assert elapsed < 0.1, f"{elapsed:.3f} s with the circuit open"
        problem = r.json()
        assert problem["type"] == "urn:lianxin:problem:unavailable"
        assert problem["instance"].endswith(r.headers["x-request-id"])
        assert int(r.headers["retry-after"]) >= 1

        # The other service is untouched.
        assert (await admin.get(ECHO)).status_code == 200

        registry.start()
        healed = await poll(admin, ORGS, until=200, limit_s=HEAL_LIMIT_S)
        assert healed.status_code == 200, healed.text
        assert breaker.state is CircuitState.closed

    async def test_open_circuit_makes_no_connect_attempt(
        self,
        gateway_app: FastAPI,
        admin: httpx.AsyncClient,
        transport: CountingSender,
    ) -> None:
        breaker = breaker_of(gateway_app, "activities")
        while breaker.state is not CircuitState.open:
            assert (await admin.get("/api/v1/activities/activities")).status_code == 503
        before = len(transport.attempts)
        r = await admin.get("/api/v1/activities/activities")
        assert r.status_code == 503
        assert len(transport.attempts) == before

    async def test_readiness_names_the_service_that_is_down(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {
            "status": "unavailable",
            "database": "up",
            "services": {"registry": "up", "mobility": "up", "activities": "down"},
        }


class TestTimeouts:
    async def test_hung_answer_is_504_and_does_not_open_the_circuit(
        self, gateway_app: FastAPI, anon: httpx.AsyncClient
    ) -> None:
        started = time.monotonic()
        r = await anon.get("/api/v1/mobility/slow", params={"seconds": 5})
        elapsed = time.monotonic() - started
        assert r.status_code == 504
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:lianxin:problem:upstream-timeout"
        assert elapsed < 2.0
        assert breaker_of(gateway_app, "mobility").state is CircuitState.closed
        assert (await anon.get("/api/v1/mobility/slow", params={"seconds": 0})).status_code == 200


class TestRetries:
    @pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
    async def test_idempotent_requests_retry_refused_connections(
        self, anon: httpx.AsyncClient, transport: CountingSender, method: str
    ) -> None:
        r = await anon.request(method, "/api/v1/activities/activities/1")
        assert r.status_code == 503
        assert transport.attempts == [(method, "/api/v1/activities/activities/1")] * 3

    @pytest.mark.parametrize("method", ["POST", "PATCH"])
    async def test_post_and_patch_are_sent_once(
        self, anon: httpx.AsyncClient, transport: CountingSender, method: str
    ) -> None:
        r = await anon.request(method, "/api/v1/activities/activities", json={"title": "t"})
        assert r.status_code == 503
        assert transport.attempts == [(method, "/api/v1/activities/activities")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestCircuitBreaker:
    def make(self) -> tuple[CircuitBreaker, Clock]:
        clock = Clock()
        return CircuitBreaker("svc", threshold=3, reset_after_s=5.0, clock=clock), clock

    def test_opens_after_consecutive_failures_only(self) -> None:
        breaker, _ = self.make()
        breaker.failure()
        breaker.failure()
        breaker.success()
        breaker.failure()
        breaker.failure()
        assert breaker.state is CircuitState.closed
        breaker.failure()
        assert breaker.state is CircuitState.open
        with pytest.raises(CircuitOpen) as caught:
            breaker.acquire()
        assert isinstance(caught.value, ServiceUnavailable)
        assert caught.value.headers["Retry-After"] == "5"

    def test_one_probe_after_the_cool_down(self) -> None:
        breaker, clock = self.make()
        for _ in range(3):
            breaker.failure()
        clock.now += 5.0
        assert breaker.state is CircuitState.half_open
        assert breaker.acquire() is True  # the probe
        with pytest.raises(CircuitOpen):
            breaker.acquire()  # everyone else waits for its outcome
        breaker.success()
        assert breaker.state is CircuitState.closed
        assert breaker.acquire() is False

    def test_failed_probe_opens_again_for_a_full_cool_down(self) -> None:
        breaker, clock = self.make()
        for _ in range(3):
            breaker.failure()
        clock.now += 5.0
        assert breaker.acquire() is True
        breaker.failure()
        assert breaker.state is CircuitState.open
        clock.now += 4.9
        with pytest.raises(CircuitOpen):
            breaker.acquire()
        clock.now += 0.1
        assert breaker.acquire() is True

    def test_a_probe_that_tells_nothing_lets_the_next_request_probe(self) -> None:
        breaker, clock = self.make()
        for _ in range(3):
            breaker.failure()
        clock.now += 5.0
        probe = breaker.acquire()
        breaker.release(probe)
        assert breaker.acquire() is True
