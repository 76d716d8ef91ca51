"""The gateway's edge: security headers on every response (proxied, problems, its own
routes), CORS only for configured origins, and `/healthz` / `/readyz`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway import upstream_app
from tests.gateway.conftest import FakeClock, ServiceRouter

ECHO = "/api/v1/mobility/echo/headers"
ORIGIN = "https://portal.example.org"


@pytest.fixture
def service_apps(service_apps: dict[str, FastAPI]) -> dict[str, FastAPI]:
    return {
        **service_apps,
        "mobility": upstream_app.create_app(),
        "activities": upstream_app.create_app(),
    }


def assert_security_headers(r: httpx.Response, *, api: bool = True) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    assert len(r.headers.get_list("x-frame-options")) == 1
    if api:
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
        assert r.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in r.headers


class TestSecurityHeaders:
    @pytest.mark.parametrize(
        "path",
        [
            ECHO,  # proxied
            "/api/v1/registry/orgs",  # the service's 401 problem
            "/api/v1/nowhere/x",  # the gateway's own 404 problem
            "/api/v1/openapi.json",
        ],
    )
    async def test_on_api_responses(self, anon: httpx.AsyncClient, path: str) -> None:
        assert_security_headers(await anon.get(path))

    async def test_on_the_gateways_own_routes(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/healthz")
        assert_security_headers(r, api=False)
        assert r.headers["content-security-policy"].startswith("default-src 'none'")

    async def test_413_from_the_body_limit_has_them(self, anon: httpx.AsyncClient) -> None:
        r = await anon.post(ECHO, content=b"x" * (2 * 1_048_576))
        assert r.status_code == 413
        assert_security_headers(r)

    async def test_docs_keep_their_own_policy(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/docs")
        assert r.headers["x-frame-options"] == "DENY"
        assert "https://cdn.jsdelivr.net" in r.headers["content-security-policy"]
        assert len(r.headers.get_list("content-security-policy")) == 1


@pytest.fixture
async def configured(
    gateway_settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    upstream: ServiceRouter,
    clock: FakeClock,
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with an allowed origin and HSTS on."""
    settings = gateway_settings.model_copy(
        update={"cors_origins": [ORIGIN], "hsts_max_age_s": 31_536_000}
    )
    app = create_app(settings, transport=upstream, sessionmaker=db, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://gateway"
        ) as client,
    ):
        yield client


class TestHsts:
    async def test_sent_when_configured(self, configured: httpx.AsyncClient) -> None:
        r = await configured.get("/healthz")
        assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


class TestCors:
    async def test_no_origin_is_allowed_by_default(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get(ECHO, headers={"Origin": ORIGIN})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers

    async def test_configured_origin_gets_a_preflight(
        self, configured: httpx.AsyncClient, upstream: ServiceRouter
    ) -> None:
        r = await configured.options(
            "/api/v1/registry/orgs",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "idempotency-key" in r.headers["access-control-allow-headers"].lower()
        assert r.headers["x-content-type-options"] == "nosniff"
        assert not upstream.calls  # answered at the edge

    async def test_configured_origin_can_read_the_request_id(
        self, configured: httpx.AsyncClient
    ) -> None:
        r = await configured.get(ECHO, headers={"Origin": ORIGIN})
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()

    async def test_other_origins_are_not(self, configured: httpx.AsyncClient) -> None:
        r = await configured.get(ECHO, headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in r.headers


class TestHealth:
    async def test_healthz(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})

    async def test_readyz_when_everything_answers(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/readyz")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ok",
            "database": "up",
            "services": {"registry": "up", "mobility": "up", "activities": "up"},
        }
