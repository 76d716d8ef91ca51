"""The gateway's lifespan runs the fan-out consumer and the deliverer itself when
consumers are enabled: an event reaches the receiver with nobody driving it."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.events.helpers import eventually
from tests.gateway.conftest import ADMIN_PASSWORD, ADMIN_USER, FakeClock, ServiceRouter
from tests.registry.factories import build_tree, make_member
from tests.webhooks.conftest import PUBLIC_URL, Dns
from tests.webhooks.helpers import register
from tests.webhooks.receiver import Receiver


async def test_lifespan_delivers_in_the_background(
    gateway_settings: GatewaySettings,
    committed_db: async_sessionmaker[AsyncSession],
    upstream: ServiceRouter,
    clock: FakeClock,
    receiver: Receiver,
    dns: Dns,
) -> None:
    settings = gateway_settings.model_copy(
        update={
            "consumers_enabled": True,
            "events_poll_interval_s": 0.05,
            "webhook_poll_interval_s": 0.02,
        }
    )
    app = create_app(
        settings,
        transport=upstream,
        sessionmaker=committed_db,
        clock=clock,
        webhook_transport=httpx.ASGITransport(app=receiver),
        webhook_resolver=dns,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        assert len(app.state.webhooks.tasks) == 2
        token = await c.post(
            "/api/v1/auth/token", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD}
        )
        c.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        tree = await build_tree(c)
        await register(c, PUBLIC_URL, org_id=tree.community_a["id"], events=["member.registered"])
        member = await make_member(c, org_id=tree.community_a["id"])

        async def arrived() -> bool:
            return bool(receiver.accepted)

        await eventually(arrived, what="the delivery")
        assert receiver.accepted[0].json()["aggregate"]["id"] == member["id"]
    assert app.state.webhooks.tasks == []
