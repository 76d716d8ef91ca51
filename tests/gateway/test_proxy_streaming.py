"""The proxy over real sockets: bodies are streamed both ways (neither side waits for the
other's whole body), large bodies arrive intact, and the gateway's server stamps `date` and
`server` once. The gateway is served by uvicorn in the test's loop; the stand-in service
runs in a child process."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway import upstream_app
from tests.gateway.conftest import FakeClock
from tests.gateway.live import fake_service, serve
from tools.pg import free_port
from tools.servers import UvicornProcess

MB = 1024 * 1024
LIMIT = 16 * MB
STEP_LIMIT_S = 5.0


@pytest.fixture(scope="module")
def fake() -> Iterator[UvicornProcess]:
    with fake_service() as process:
        yield process


@pytest.fixture(params=["lean", "aiohttp", "httpx"])
def gateway_settings(
    request: pytest.FixtureRequest, gateway_settings: GatewaySettings, fake: UvicornProcess
) -> GatewaySettings:
    """Each test runs with each upstream client."""
    return gateway_settings.model_copy(
        update={
            "upstream_transport": request.param,
            "mobility_url": fake.url,
            "registry_url": f"http://127.0.0.1:{free_port()}",
            "activities_url": f"http://127.0.0.1:{free_port()}",
            "max_body_bytes": LIMIT,
            "upstream_max_connections": 2,
        }
    )


@pytest.fixture
async def gateway_url(
    gateway_settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    clock: FakeClock,
) -> AsyncIterator[str]:
    app: FastAPI = create_app(gateway_settings, sessionmaker=db, clock=clock)
    async with app.router.lifespan_context(app), serve(app) as url:
        yield url


@pytest.fixture
async def http(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30.0, trust_env=False) as c:
        yield c


class TestStreaming:
    async def test_response_streams_before_the_service_finishes(
        self, http: httpx.AsyncClient, fake: UvicornProcess
    ) -> None:
        """The service sends one chunk and waits to be released: a buffering gateway would
        never hand that chunk on."""
        token = uuid.uuid4().hex
        async with http.stream("GET", f"/api/v1/mobility/held/{token}") as r:
            assert r.status_code == 200
            chunks = r.aiter_raw()
            async with asyncio.timeout(STEP_LIMIT_S):
                first = await anext(chunks)
            assert first == b"first;"
            async with httpx.AsyncClient(base_url=fake.url, trust_env=False) as direct:
                assert (await direct.post(f"/api/v1/mobility/release/{token}")).status_code == 204
            async with asyncio.timeout(STEP_LIMIT_S):
                rest = b"".join([chunk async for chunk in chunks])
            assert rest == b"rest"

    async def test_request_streams_before_the_client_finishes(
        self, http: httpx.AsyncClient, fake: UvicornProcess
    ) -> None:
        """The client sends one chunk and holds the rest until the service has seen it: a
        gateway that read the whole body first would never forward that chunk."""
        token = uuid.uuid4().hex
        rest = 4 * MB

        async def body() -> AsyncIterator[bytes]:
            yield b"x" * 65536
            async with httpx.AsyncClient(base_url=fake.url, trust_env=False) as direct:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + STEP_LIMIT_S
                while not (await direct.get(f"/api/v1/mobility/seen/{token}")).json()[
                    "first_chunk"
                ]:
                    assert loop.time() < deadline, "the service never saw the first chunk"
                    await asyncio.sleep(0.02)  # polling the service, bounded by the deadline
            yield b"y" * rest

        r = await http.post(f"/api/v1/mobility/upload/{token}", content=body())
        assert r.status_code == 200, r.text
        assert r.json() == {"first_chunk": True, "bytes": 65536 + rest}

    async def test_large_body_both_ways(self, http: httpx.AsyncClient) -> None:
        size = 12 * MB
        payload = upstream_app.pattern(size)
        r = await http.put("/api/v1/mobility/echo/digest", content=payload)
        assert r.status_code == 200
        assert r.json() == {"bytes": size, "sha256": hashlib.sha256(payload).hexdigest()}

        digest, n = hashlib.sha256(), 0
        async with http.stream("GET", "/api/v1/mobility/blob", params={"size": size}) as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(size)
            async for chunk in r.aiter_raw():
                digest.update(chunk)
                n += len(chunk)
        assert (n, digest.hexdigest()) == (size, hashlib.sha256(payload).hexdigest())

    async def test_streamed_body_over_the_limit_is_413(self, http: httpx.AsyncClient) -> None:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(LIMIT // MB + 2):
                yield b"z" * MB

        r = await http.post("/api/v1/mobility/echo/digest", content=body())
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["instance"].endswith(r.headers["x-request-id"])

    async def test_clients_that_go_away_give_the_connection_back(
        self, http: httpx.AsyncClient
    ) -> None:
        """The gateway holds two upstream connections here; clients that leave in the
        middle of large downloads must not keep them."""
        for _ in range(5):
            async with asyncio.timeout(STEP_LIMIT_S):
                async with http.stream(
                    "GET", "/api/v1/mobility/blob", params={"size": 64 * MB}
                ) as r:
                    assert r.status_code == 200
                    await anext(r.aiter_raw())
        async with asyncio.timeout(STEP_LIMIT_S):
            r = await http.get("/api/v1/mobility/blob", params={"size": 10})
        assert r.status_code == 200


class TestStamps:
    async def test_one_date_and_one_server_header(self, http: httpx.AsyncClient) -> None:
        r = await http.get("/api/v1/mobility/connection-headers")
        assert r.status_code == 200
        assert len(r.headers.get_list("date")) == 1
        assert r.headers.get_list("server") == ["uvicorn"]
        assert "1970" not in r.headers["date"]
        assert "x-private-hop" not in r.headers
        assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]

    async def test_problem_from_the_gateway_has_one_of_each_too(
        self, http: httpx.AsyncClient
    ) -> None:
        r = await http.get("/api/v1/registry/orgs")  # not running: 503 problem
        assert r.status_code == 503
        assert len(r.headers.get_list("date")) == 1
        assert len(r.headers.get_list("server")) == 1
        assert r.json()["instance"].endswith(r.headers["x-request-id"])
