"""Webhooks end to end under real commits: the gateway and the services in-process on the
`committed_db` sessions (every request commits, so the outboxes hold committed events the
fan-out consumer can read; tables are emptied after each test). Background work is off:
tests run the fan-out (`fan_out_now`) and the deliverer (`deliver_now`) step by step, with
the gateway's clock (`clock.advance`) deciding when a retry is due.

Deliveries go to `receiver` (an in-process ASGI app) whatever the URL says; host names
resolve through `dns` (a table the test fills; unknown names fail like NXDOMAIN)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.consumer import catch_up
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.webhooks.fanout import existing_sources, webhook_consumer
from tests.gateway.conftest import (  # noqa: F401 - fixtures reused here
    ADMIN_PASSWORD,
    ADMIN_USER,
    SECURITY_ADMIN_PASSWORD,
    SECURITY_ADMIN_USER,
    FakeClock,
    ServiceRouter,
    admin_client,
    admin_token,
    anon,
    as_user,
    clock,
    gw,
    login,
    make_user,
    service_apps,
    tree,
    upstream,
)
from tests.helpers import PRIVATE_PEM, PUBLIC_PEM
from tests.webhooks.receiver import Receiver

Sessions = async_sessionmaker[AsyncSession]
HOOKS = "/api/v1/webhooks"
PUBLIC_HOST = "hooks.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/lianxin"
RETRY_DELAYS = [5.0, 30.0, 120.0]  # 4 attempts, then dead


class Dns:
    """Host name → addresses; unknown names do not resolve."""

    def __init__(self) -> None:
        self.table: dict[str, list[str]] = {
            PUBLIC_HOST: ["93.184.215.14"],
            "localhost": ["127.0.0.1", "::1"],
        }
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        try:
            return list(self.table[host])
        except KeyError:
            raise OSError(f"no such host: {host}") from None


@pytest.fixture
def db(committed_db: Sessions) -> Sessions:
    """Everything this package does commits (the fan-out reads committed events only)."""
    return committed_db


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
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        rate_limit_enabled=False,
        upstream_retries=0,
        consumers_enabled=False,
        webhook_retry_delays_s=RETRY_DELAYS,
    )


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def dns() -> Dns:
    return Dns()


@pytest.fixture
async def gateway_app(
    gateway_settings: GatewaySettings,
    db: Sessions,
    upstream: ServiceRouter,  # noqa: F811 - the fixture imported above
    clock: FakeClock,  # noqa: F811
    receiver: Receiver,
    dns: Dns,
) -> AsyncIterator[FastAPI]:
    app = create_app(
        gateway_settings,
        transport=upstream,
        sessionmaker=db,
        clock=clock,
        webhook_transport=httpx.ASGITransport(app=receiver),
        webhook_resolver=dns,
    )
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def fan_out_now(gateway_app: FastAPI, db: Sessions) -> Callable[[], Any]:
    """Runs the `gateway.webhooks` consumer over every committed event; returns how many."""

    async def run() -> int:
        async with db() as session:
            sources = await existing_sources(session)
        return (await catch_up(db, webhook_consumer(sources))).applied

    return run


@pytest.fixture
def deliver_now(gateway_app: FastAPI) -> Callable[[], Any]:
    """One pass of the deliverer at the gateway clock's time; returns attempts made."""

    async def run() -> int:
        return int(await gateway_app.state.webhooks.deliverer.run_once())

    return run
