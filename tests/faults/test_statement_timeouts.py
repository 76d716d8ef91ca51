"""Statement timeouts bound every query: each app's own engine (built by its lifespan from
its settings, as in production) sets `statement_timeout`,
`idle_in_transaction_session_timeout` and `client_connection_check_interval` on every
connection it opens; and a real route whose statement waits past the bound answers a 503
problem soon after it, having written nothing. (Mapping SQLSTATE 57014 itself to 503 is
tests/common/test_app_frame.py's.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from common.db import plain_url
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.activities.app import create_app as create_activities
from services.activities.settings import ActivitiesSettings
from services.mobility.app import create_app as create_mobility
from services.mobility.settings import MobilitySettings
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from tests.faults.helpers import is_problem
from tests.helpers import PRIVATE_PEM, client, mint

APPS: dict[str, tuple[Callable[..., FastAPI], type[Any]]] = {
    "registry": (create_registry, RegistrySettings),
    "mobility": (create_mobility, MobilitySettings),
    "activities": (create_activities, ActivitiesSettings),
    "gateway": (create_gateway, GatewaySettings),
}


def build(name: str, settings_env: dict[str, object], **overrides: object) -> FastAPI:
    create, settings_class = APPS[name]
    extra: dict[str, object] = {"consumers_enabled": False, **overrides}
    if name == "gateway":
        extra.update(jwt_private_key=PRIVATE_PEM, rate_limit_enabled=False)
    return create(settings_class(**settings_env, **extra))


@pytest.mark.parametrize("name", list(APPS))
async def test_every_connection_of_each_app_is_bounded(
    name: str, settings_env: dict[str, object]
) -> None:
    app = build(name, settings_env, db_statement_timeout_ms=4321, db_pool_size=3)
    async with app.router.lifespan_context(app):
        # As many sessions at once as the pool opens connections: each of them.
        sessions = [app.state.sessionmaker() for _ in range(3)]
        try:
            for session in sessions:
                shown = [
                    await session.scalar(text(f"SHOW {setting}"))
                    for setting in (
                        "statement_timeout",
                        "idle_in_transaction_session_timeout",
                        "client_connection_check_interval",
                    )
                ]
                assert shown == ["4321ms", "1min", "1s"]
        finally:
            for session in sessions:
                await session.close()


async def test_a_route_waiting_past_the_bound_is_a_503_and_writes_nothing(
    settings_env: dict[str, object], database_url: str
) -> None:
    app = build("registry", settings_env, db_statement_timeout_ms=300)
    holder = await asyncpg.connect(plain_url(database_url))
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("LOCK TABLE registry.orgs IN EXCLUSIVE MODE")
        async with app.router.lifespan_context(app), client(app, mint("admin")) as c:
            t0 = time.monotonic()
            r = await c.post(
                "/api/v1/registry/orgs",
                json={"code": "SLOW-1", "name": "慢", "kind": "committee", "area_level": "city"},
                headers={"Idempotency-Key": "slow-1"},
            )
            took = time.monotonic() - t0
        assert r.status_code == 503 and is_problem(r), r.text
        assert r.json()["type"] == "urn:lianxin:problem:timeout"
        assert r.headers["retry-after"] == "1"
        assert took < 5, took
        await lock.rollback()
        assert (
            await holder.fetchval("SELECT count(*) FROM registry.orgs WHERE code = 'SLOW-1'") == 0
        )
        assert (
            await holder.fetchval(
                "SELECT count(*) FROM registry.idempotency_keys WHERE key = 'slow-1'"
            )
            == 0
        )
    finally:
        await holder.close()
