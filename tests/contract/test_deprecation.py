"""Deprecated routes announce themselves: `Deprecation` on every response (RFC 9745), and
`Sunset` (RFC 8594) when the route names its removal date — in a service, and through the
gateway. No real route is deprecated yet, so a stand-in service shows the mechanism."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import create_service_app
from common.settings import BaseAppSettings
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import FakeClock, ServiceRouter

PREFIX = "/api/v1/mobility"
router = APIRouter()


@router.get("/old-things", deprecated=True, summary="Old things")
async def old_things() -> dict[str, str]:
    return {"use": "/new-things"}


@router.get(
    "/retiring-things",
    deprecated=True,
    summary="Retiring things",
    openapi_extra={"x-deprecated-at": "2026-01-01T00:00:00Z", "x-sunset": "2027-06-30"},
)
async def retiring_things() -> dict[str, str]:
    return {"use": "/new-things"}


@router.get("/retiring-things/{n}", deprecated=True, openapi_extra={"x-sunset": "2027-06-30"})
async def retiring_thing(n: int) -> dict[str, int]:
    if n > 1:
        raise HTTPException(404, "no such thing")
    return {"n": n}


@router.get("/new-things", summary="New things")
async def new_things() -> dict[str, str]:
    return {}


@pytest.fixture
def stand_in(settings_env: dict[str, object]) -> FastAPI:
    return create_service_app(
        title="stand-in",
        description="A service with deprecated routes.",
        settings=BaseAppSettings(**settings_env),  # type: ignore[arg-type]
        routers=[router],
        prefix=PREFIX,
    )


@pytest.fixture
async def direct(stand_in: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=stand_in)
    async with httpx.AsyncClient(transport=transport, base_url="http://mobility") as client:
        yield client


@pytest.fixture
async def through_gateway(
    stand_in: FastAPI,
    gateway_settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    clock: FakeClock,
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        gateway_settings,
        transport=ServiceRouter({"mobility": stand_in}),
        sessionmaker=db,
        clock=clock,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield client


SUNSET = "Wed, 30 Jun 2027 00:00:00 GMT"


class TestInTheService:
    async def test_a_deprecated_route_says_so(self, direct: httpx.AsyncClient) -> None:
        r = await direct.get(f"{PREFIX}/old-things")
        assert r.status_code == 200
        assert r.headers["deprecation"] == "true"
        assert "sunset" not in r.headers

    async def test_with_its_dates(self, direct: httpx.AsyncClient) -> None:
        r = await direct.get(f"{PREFIX}/retiring-things")
        assert r.status_code == 200
        since = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
        assert r.headers["deprecation"] == f"@{since}"
        assert r.headers["sunset"] == SUNSET

    async def test_errors_of_a_deprecated_route_say_so_too(self, direct: httpx.AsyncClient) -> None:
        for path in ("/retiring-things/7", "/retiring-things/x"):  # 404 and 422
            r = await direct.get(PREFIX + path)
            assert r.status_code in (404, 422)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["deprecation"] == "true"
            assert r.headers["sunset"] == SUNSET

    async def test_other_routes_do_not(self, direct: httpx.AsyncClient) -> None:
        for path in (f"{PREFIX}/new-things", f"{PREFIX}/nowhere", "/healthz"):
            r = await direct.get(path)
            assert "deprecation" not in r.headers, path
            assert "sunset" not in r.headers, path

    def test_the_document_marks_it(self, stand_in: FastAPI) -> None:
        op = stand_in.openapi()["paths"][f"{PREFIX}/retiring-things"]["get"]
        assert op["deprecated"] is True
        assert op["x-sunset"] == "2027-06-30"


class TestThroughTheGateway:
    async def test_the_headers_reach_the_client(
        self, through_gateway: httpx.AsyncClient, admin_token: str
    ) -> None:
        r = await through_gateway.get(
            f"{PREFIX}/retiring-things", headers={"Authorization": f"Bearer {admin_token}"}
        )
        assert r.status_code == 200, r.text
        assert r.headers["sunset"] == SUNSET
        assert r.headers["deprecation"].startswith("@")
        r = await through_gateway.get(
            f"{PREFIX}/new-things", headers={"Authorization": f"Bearer {admin_token}"}
        )
        assert r.status_code == 200
        assert "deprecation" not in r.headers

    async def test_the_gateways_own_deprecated_routes(self) -> None:
        from common.middleware import DeprecationMiddleware

        app = FastAPI()
        app.add_middleware(DeprecationMiddleware)
        app.include_router(router)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as client:
            r = await client.get("/retiring-things")
        assert r.headers["sunset"] == SUNSET
