"""The frame every service shares: problem+json for every failure, request ids, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import create_service_app
from common.db import SessionDep
from common.settings import BaseAppSettings
from tests.helpers import client, mint


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


router = APIRouter()


@router.post("/echo", operation_id="echo")
async def echo(body: Echo) -> Echo:
    return body


@router.get("/boom", operation_id="boom")
async def boom() -> None:
    raise RuntimeError("internal detail that must not leak")


@pytest.fixture
def frame_app(db: async_sessionmaker[AsyncSession], settings_env: dict[str, object]) -> FastAPI:
    settings = BaseAppSettings(**settings_env, max_body_bytes=1000)  # type: ignore[arg-type]
    return create_service_app(
        title="t",
        description="t",
        settings=settings,
        routers=[router],
        prefix="/api/v1/t",
        sessionmaker=db,
    )


@pytest.fixture
async def c(frame_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(frame_app, mint("admin")) as cl:
        yield cl


class TestProblems:
    async def test_unexpected_error_is_problem_without_trace(self, frame_app: FastAPI) -> None:
        transport = httpx.ASGITransport(app=frame_app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as cl:
            r = await cl.get("/api/v1/t/boom", headers={"X-Request-ID": "req-1"})
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert "internal detail" not in r.text and "Traceback" not in r.text
        assert r.json()["instance"] == "urn:lianxin:request:req-1"

    async def test_malformed_json_is_422(self, c: httpx.AsyncClient) -> None:
        r = await c.post(
            "/api/v1/t/echo", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"

    async def test_wrong_type_and_unknown_field(self, c: httpx.AsyncClient) -> None:
        r = await c.post("/api/v1/t/echo", json={"n": "x", "extra": 1})
        assert r.status_code == 422
        assert {e["field"] for e in r.json()["errors"]} == {"n", "extra"}

    async def test_unknown_path_and_method_are_problems(self, c: httpx.AsyncClient) -> None:
        r = await c.get("/api/v1/t/nowhere")
        assert r.status_code == 404 and r.json()["status"] == 404
        r = await c.delete("/api/v1/t/echo")
        assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"


class TestRequestContext:
    async def test_request_id_echoed_or_made(self, c: httpx.AsyncClient) -> None:
        r = await c.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        r = await c.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert r.headers["x-request-id"] != "bad id with spaces"
        assert len(r.headers["x-request-id"]) == 32


class TestBodyLimit:
    async def test_declared_length_over_limit_is_413(self, c: httpx.AsyncClient) -> None:
        r = await c.post(
            "/api/v1/t/echo",
            content=b'{"n": 1}' + b" " * 2000,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"

    async def test_streamed_body_over_limit_is_413(self, c: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"n": 1'
            for _ in range(30):
                yield b" " * 100
            yield b"}"

        r = await c.post(
            "/api/v1/t/echo", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413


class TestReadiness:
    async def test_readyz_checks_the_database(self, c: httpx.AsyncClient) -> None:
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json()["database"] == "up"


class TestSettings:
    def test_production_refuses_development_keys(self) -> None:
        with pytest.raises(ValueError, match="development data keys"):
            BaseAppSettings(environment="production")


class TestForwardedFor:
    async def test_gateway_style_middleware_ignores_client_forwarded_for(self) -> None:
        from starlette.responses import PlainTextResponse

        from common.context import client_addr_var
        from common.middleware import RequestContextMiddleware

        async def show(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
            await PlainTextResponse(client_addr_var.get() or "")(scope, receive, send)  # type: ignore[arg-type]

        for trust, expected in ((True, "203.0.113.9"), (False, "127.0.0.1")):
            app = RequestContextMiddleware(show, trust_forwarded=trust)  # type: ignore[arg-type]
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await c.get("/", headers={"X-Forwarded-For": "203.0.113.9"})
            assert r.text == expected


class TestDatabaseErrors:
    """Input the database cannot store, and passing database conditions, are problems."""

    async def test_nul_character_is_422_and_statement_timeout_503(
        self, db: async_sessionmaker[AsyncSession], settings_env: dict[str, object]
    ) -> None:
        r2 = APIRouter()

        @r2.post("/store", operation_id="store")
        async def store(body: dict[str, str], session: SessionDep) -> dict[str, str]:
            await session.execute(text("SELECT CAST(:v AS text)"), {"v": body["v"]})
            return body

        @r2.get("/slow", operation_id="slow")
        async def slow(session: SessionDep) -> None:
            await session.execute(text("SET LOCAL statement_timeout = 50"))
            await session.execute(text("SELECT pg_sleep(2)"))

        app = create_service_app(
            title="t",
            description="t",
            settings=BaseAppSettings(**settings_env),  # type: ignore[arg-type]
            routers=[r2],
            prefix="/api/v1/t",
            sessionmaker=db,
        )
        async with client(app, mint("admin")) as c:
            r = await c.post("/api/v1/t/store", json={"v": "a\u0000b"})
            assert r.status_code == 422
            assert r.headers["content-type"] == "application/problem+json"
            r = await c.get("/api/v1/t/slow")
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
