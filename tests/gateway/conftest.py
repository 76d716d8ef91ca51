"""The end-to-end harness: the gateway in-process, its upstream client routing the hosts
`http://registry`, `http://mobility` and `http://activities` to the services' ASGI apps (the
ones that exist; any other host refuses the connection, like a stopped service). The
gateway and every service share the `db` fixture's connection, so everything a test does
is rolled back; the upstream calls are serialised because of that shared connection.

Fixtures: `gateway_settings` (override it in a test module to change settings),
`clock` (move the gateway's time with `clock.advance(seconds=...)`), `service_apps`,
`gateway_app` (its lifespan running: upstream client, first admin), `gw(token=None,
**headers)` (a client factory), `anon`, `login(username, password)` (the token pair),
`admin_client` (the bootstrap admin), `make_user(role, ...)` (an account through the API:
`(username, password)`), `as_user(role, ...)` (a logged-in client), `tree` (orgs)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.settings import BaseAppSettings
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.helpers import PRIVATE_PEM, PUBLIC_PEM
from tests.registry.factories import Tree, build_tree

ADMIN_USER = "admin"
ADMIN_PASSWORD = "bootstrap-admin-2024"
SECURITY_ADMIN_USER = "security"
SECURITY_ADMIN_PASSWORD = "bootstrap-security-2024"
# Roles only a security admin grants (separate duties).
PRIVILEGED_ROLES = frozenset({"admin", "auditor", "security_admin"})
PASSWORD = "Correct-horse-42"  # meets the policy; use for test accounts

SERVICES = ("registry", "mobility", "activities")

_names = itertools.count(1)


class FakeClock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **kwargs: float) -> None:
        self.offset += timedelta(**kwargs)


class ServiceRouter(httpx.AsyncBaseTransport):
    """`http://<service>/...` → that service's ASGI app; unknown hosts: connection refused.
    Serialised, since every app in a test shares one database connection."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.apps = apps
        self._transports = {
            host: httpx.ASGITransport(app=app, client=("10.0.0.1", 40000))
            for host, app in apps.items()
        }
        self._lock = asyncio.Lock()
        self.calls: list[tuple[str, str, str]] = []  # (host, method, path) of every call
        self.requests: list[httpx.Request] = []  # what reached the services, headers and all

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        transport = self._transports.get(host)
        self.calls.append((host, request.method, request.url.path))
        self.requests.append(request)
        if transport is None:
            raise httpx.ConnectError(f"connection refused: {host}", request=request)
        async with self._lock:
            return await transport.handle_async_request(request)


def _settings_class(service: str) -> type[BaseAppSettings]:
    module = importlib.import_module(f"services.{service}.settings")
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, BaseAppSettings)
            and value is not BaseAppSettings
            and value.__module__ == module.__name__
        ):
            return value
    raise LookupError(f"no settings class in services.{service}.settings")


@pytest.fixture
def service_apps(
    db: async_sessionmaker[AsyncSession], settings_env: dict[str, object]
) -> dict[str, FastAPI]:
    """Every service that exists, bound to the test's database connection."""
    apps: dict[str, FastAPI] = {}
    for service in SERVICES:
        if importlib.util.find_spec(f"services.{service}.app") is None:
            continue
        module = importlib.import_module(f"services.{service}.app")
        settings = _settings_class(service)(**settings_env)  # type: ignore[arg-type]
        apps[service] = module.create_app(settings, sessionmaker=db)
    if "mobility" in apps and "registry" in apps:
        # Mobility calls the registry straight, not through the serialised router: the
        # outer request holds its lock while mobility waits for the registry.
        apps["mobility"].state.registry_transport = httpx.ASGITransport(app=apps["registry"])
    return apps


@pytest.fixture
def registry_app(service_apps: dict[str, FastAPI]) -> FastAPI:
    return service_apps["registry"]


@pytest.fixture
def upstream(service_apps: dict[str, FastAPI]) -> ServiceRouter:
    return ServiceRouter(service_apps)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gateway_settings(database_url: str) -> GatewaySettings:
    return GatewaySettings(
        database_url=database_url,
        environment="test",
        jwt_private_key=PRIVATE_PEM,
        jwt_public_key=PUBLIC_PEM,
        registry_url="http://registry",
        mobility_url="http://mobility",
        activities_url="http://activities",
        admin_user=ADMIN_USER,
        admin_password=ADMIN_PASSWORD,
        security_admin_user=SECURITY_ADMIN_USER,
        security_admin_password=SECURITY_ADMIN_PASSWORD,
        # Cheap hashes: tests log in a lot. Production keeps the RFC 9106 defaults.
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        # Every in-process client shares one address; rate-limit tests turn it back on.
        rate_limit_enabled=False,
        upstream_retries=0,
        # Background work (the webhook fan-out and deliverer) stays off: tests drive it.
        consumers_enabled=False,
    )


@pytest.fixture
async def gateway_app(
    gateway_settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    upstream: ServiceRouter,
    clock: FakeClock,
) -> AsyncIterator[FastAPI]:
    app = create_app(gateway_settings, transport=upstream, sessionmaker=db, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def gw(gateway_app: FastAPI) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """`gw(token=None, **headers)`: a client of the gateway, closed after the test."""
    opened: list[httpx.AsyncClient] = []

    def make(token: str | None = None, **headers: str) -> httpx.AsyncClient:
        h = {k.replace("_", "-"): v for k, v in headers.items()}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway_app, client=("203.0.113.7", 51000)),
            base_url="http://gateway",
            headers=h,
        )
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.aclose()


@pytest.fixture
def anon(gw: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return gw()


@pytest.fixture
def login(anon: httpx.AsyncClient) -> Callable[[str, str], Awaitable[dict[str, Any]]]:
    """`await login(username, password)` → `{access_token, refresh_token, ...}`."""

    async def do(username: str, password: str) -> dict[str, Any]:
        r = await anon.post("/api/v1/auth/token", data={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return dict(r.json())

    return do


@pytest.fixture
async def admin_token(login: Callable[[str, str], Awaitable[dict[str, Any]]]) -> str:
    return str((await login(ADMIN_USER, ADMIN_PASSWORD))["access_token"])


@pytest.fixture
def admin_client(gw: Callable[..., httpx.AsyncClient], admin_token: str) -> httpx.AsyncClient:
    return gw(admin_token)


@pytest.fixture
async def security_client(
    gw: Callable[..., httpx.AsyncClient],
    login: Callable[[str, str], Awaitable[dict[str, Any]]],
) -> httpx.AsyncClient:
    """The bootstrap security admin (accounts, roles and API keys)."""
    return gw((await login(SECURITY_ADMIN_USER, SECURITY_ADMIN_PASSWORD))["access_token"])


@pytest.fixture
def make_user(
    admin_client: httpx.AsyncClient,
    gw: Callable[..., httpx.AsyncClient],
    login: Callable[[str, str], Awaitable[dict[str, Any]]],
) -> Callable[..., Awaitable[tuple[str, str]]]:
    """`await make_user("org_admin", org_id=...)` → `(username, password)`, created by the
    bootstrap admin — or, for the roles only they grant (admin, auditor, security_admin),
    the bootstrap security admin — or by `by=<client>`."""

    async def do(
        role: str,
        *,
        org_id: str | None = None,
        member_id: str | None = None,
        username: str | None = None,
        password: str = PASSWORD,
        by: httpx.AsyncClient | None = None,
    ) -> tuple[str, str]:
        name = username or f"{role.replace('_', '-')}-{next(_names)}"
        body: dict[str, Any] = {"username": name, "password": password, "role": role}
        if org_id is not None:
            body["org_id"] = org_id
        if member_id is not None:
            body["member_id"] = member_id
        creator = by or admin_client
        if by is None and role in PRIVILEGED_ROLES:
            pair = await login(SECURITY_ADMIN_USER, SECURITY_ADMIN_PASSWORD)
            creator = gw(pair["access_token"])
        r = await creator.post("/api/v1/auth/users", json=body)
        assert r.status_code == 201, r.text
        return name, password

    return do


@pytest.fixture
def as_user(
    make_user: Callable[..., Awaitable[tuple[str, str]]],
    login: Callable[[str, str], Awaitable[dict[str, Any]]],
    gw: Callable[..., httpx.AsyncClient],
) -> Callable[..., Awaitable[httpx.AsyncClient]]:
    """`await as_user("org_viewer", org_id=...)` → a client logged in as a new account."""

    async def do(role: str, **kwargs: Any) -> httpx.AsyncClient:
        username, password = await make_user(role, **kwargs)
        pair = await login(username, password)
        return gw(pair["access_token"])

    return do


@pytest.fixture
async def tree(admin_client: httpx.AsyncClient) -> Tree:
    """city → street → communities A (with a building group) and B, through the gateway."""
    return await build_tree(admin_client)
