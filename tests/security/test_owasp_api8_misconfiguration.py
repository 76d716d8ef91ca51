"""OWASP API8:2023 Security Misconfiguration.

Every kind of answer the gateway gives — proxied, its own, and each kind of error (401,
403, 404, 405, 413, 422, 429, 500, 503) — carries the security headers and is a problem
without a stack trace; no app runs in debug; the launchers never send a `server` header
(the fuzzer checks the live answers for it too, `tests/fuzz/`); CORS answers only the
configured origins, errors included. `tests/gateway/test_proxy_headers.py` holds the
header and CORS basics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import FakeClock, ServiceRouter
from tests.security.owasp_world import AsUser, Gw
from tools import serve

SECRET_MESSAGE = "boom: the database password is hunter2"
ORIGIN = "https://portal.example.org"


def assert_hardened(r: httpx.Response) -> None:
    assert r.headers.get("x-content-type-options") == "nosniff", r.headers
    assert r.headers.get("x-frame-options") == "DENY", r.headers
    assert r.headers.get("referrer-policy") == "no-referrer", r.headers
    assert "content-security-policy" in r.headers, r.headers
    assert "server" not in r.headers and "x-powered-by" not in r.headers
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json", r.headers
        body = r.text
        for leak in ("Traceback", 'File "', SECRET_MESSAGE, "RuntimeError", "sqlalchemy"):
            assert leak not in body, body


def _boom() -> Any:
    raise RuntimeError(SECRET_MESSAGE)


@pytest.fixture
def gateway_app_with_a_bug(gateway_app: FastAPI) -> FastAPI:
    gateway_app.add_api_route("/boom", _boom, include_in_schema=False)
    return gateway_app


@pytest.fixture
def registry_with_a_bug(registry_app: FastAPI) -> FastAPI:
    registry_app.add_api_route("/api/v1/registry/boom", _boom, include_in_schema=False)
    return registry_app


class TestEveryKindOfAnswerIsHardened:
    async def test_success_and_client_errors(
        self, gw: Gw, admin_client: httpx.AsyncClient, as_user: AsUser, tree: Any
    ) -> None:
        viewer = await as_user("org_viewer", org_id=tree.community_a["id"])
        answers = {
            200: await admin_client.get("/api/v1/registry/orgs"),
            401: await gw().get("/api/v1/registry/members"),
            403: await viewer.post(
                "/api/v1/registry/orgs",
                json={
                    "code": "X-1",
                    "name": "x",
                    "kind": "group",
                    "area_level": "building",
                    "parent_id": tree.community_a["id"],
                },
            ),
            404: await admin_client.get("/api/v1/nowhere/at-all"),
            405: await gw().put("/healthz"),
            413: await admin_client.post(
                "/api/v1/registry/orgs",
                content=b"{" + b" " * (64 * 1024 * 1024) + b"}",
                headers={"content-type": "application/json"},
            ),
            422: await admin_client.get("/api/v1/registry/orgs", params={"limit": 100000}),
        }
        for status, r in answers.items():
            assert r.status_code == status, (status, r.text[:300])
            assert_hardened(r)

    async def test_an_unexpected_error_in_the_gateway(
        self, gateway_app_with_a_bug: FastAPI
    ) -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway_app_with_a_bug, raise_app_exceptions=False),
            base_url="http://gateway",
        ) as c:
            r = await c.get("/boom")
        assert r.status_code == 500
        assert_hardened(r)
        assert r.json()["type"] == "urn:lianxin:problem:internal"

    async def test_an_unexpected_error_in_a_service(self, registry_with_a_bug: FastAPI) -> None:
        """(The gateway passes a service's answer on as it is: `test_proxy.py`.)"""
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=registry_with_a_bug, raise_app_exceptions=False),
            base_url="http://registry",
        ) as c:
            r = await c.get("/api/v1/registry/boom")
        assert r.status_code == 500
        assert_hardened(r)

    async def test_a_service_that_is_down(
        self,
        gateway_settings: GatewaySettings,
        db: async_sessionmaker[AsyncSession],
        upstream: ServiceRouter,
        clock: FakeClock,
        admin_token: str,
    ) -> None:
        settings = gateway_settings.model_copy(update={"activities_url": "http://stopped"})
        app = create_app(settings, transport=upstream, sessionmaker=db, clock=clock)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://gw",
                headers={"Authorization": f"Bearer {admin_token}"},
            ) as c,
        ):
            r = await c.get("/api/v1/activities/activities")
        assert r.status_code in (502, 503), r.text
        assert_hardened(r)


@pytest.fixture
async def limited(
    gateway_settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    upstream: ServiceRouter,
    clock: FakeClock,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings.model_copy(
        update={"rate_limit_enabled": True, "rate_limit_burst": 2, "rate_limit_per_s": 0.01}
    )
    app = create_app(settings, transport=upstream, sessionmaker=db, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        yield c


async def test_a_429_is_hardened_and_says_when(limited: httpx.AsyncClient) -> None:
    answers = [await limited.get("/api/v1/registry/orgs") for _ in range(4)]
    r = answers[-1]
    assert r.status_code == 429, [a.status_code for a in answers]
    assert int(r.headers["retry-after"]) >= 1
    assert_hardened(r)


def test_no_app_runs_in_debug(gateway_app: FastAPI, service_apps: dict[str, FastAPI]) -> None:
    for app in (gateway_app, *service_apps.values()):
        assert app.debug is False


def test_services_hide_their_docs_from_the_public(gateway_app: FastAPI) -> None:
    """The gateway serves the one merged document; a service's own `/docs` stays inside."""
    paths = {getattr(r, "path", "") for r in gateway_app.routes}
    assert "/api/v1/registry/docs" not in paths


async def test_a_service_docs_page_is_not_forwarded(admin_client: httpx.AsyncClient) -> None:
    for service in ("registry", "mobility", "activities"):
        for tail in ("docs", "openapi.json", "audit-log"):
            r = await admin_client.get(f"/api/v1/{service}/{tail}")
            assert r.status_code == 404, (service, tail, r.status_code)


def test_the_production_launcher_sends_no_server_header(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: seen.update(kwargs))
    monkeypatch.delenv("LIANXIN_ENVIRONMENT", raising=False)
    assert serve.main(["registry"]) == 0
    assert seen["server_header"] is False
    assert seen["proxy_headers"] is False


class TestCors:
    @pytest.fixture
    async def configured(
        self,
        gateway_settings: GatewaySettings,
        db: async_sessionmaker[AsyncSession],
        upstream: ServiceRouter,
        clock: FakeClock,
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = gateway_settings.model_copy(update={"cors_origins": [ORIGIN]})
        app = create_app(settings, transport=upstream, sessionmaker=db, clock=clock)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
        ):
            yield c

    async def test_a_foreign_origin_gets_no_preflight(self, configured: httpx.AsyncClient) -> None:
        r = await configured.options(
            "/api/v1/registry/members",
            headers={
                "Origin": "https://evil.example.com",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-credentials" not in r.headers

    async def test_errors_answer_the_configured_origin_only(
        self, configured: httpx.AsyncClient
    ) -> None:
        mine = await configured.get("/api/v1/registry/members", headers={"Origin": ORIGIN})
        evil = await configured.get(
            "/api/v1/registry/members", headers={"Origin": "https://evil.example.com"}
        )
        assert mine.status_code == evil.status_code == 401
        assert mine.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-origin" not in evil.headers
        assert mine.headers.get("access-control-allow-origin") != "*"
