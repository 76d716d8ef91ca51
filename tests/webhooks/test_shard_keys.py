"""Webhook deliveries and every attempt carry their event's distribution key
(common/sharding.py): the one the producer wrote in its outbox, `UNSHARDED` for an event
written without one; through the fan-out, a replay of a time span and a delivery's replay."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.outbox import emit, source_outbox
from common.sharding import UNSHARDED
from tests.gateway.conftest import FakeClock
from tests.webhooks.conftest import PUBLIC_URL, RETRY_DELAYS
from tests.webhooks.helpers import HOOKS, register
from tests.webhooks.receiver import Receiver

Step = Callable[[], Awaitable[int]]
Sessions = async_sessionmaker[AsyncSession]


async def publish(db: Sessions, type: str, shard_key: uuid.UUID | None) -> uuid.UUID:
    """An event in the mobility outbox, committed; returns its id."""
    async with db() as s:
        event_id = await emit(
            s,
            source_outbox("mobility"),
            type=type,
            aggregate_type="mobile_card",
            aggregate_id=uuid.uuid4(),
            aggregate_version=1,
            payload={"card_id": str(uuid.uuid4())},
            shard_key=shard_key,
        )
        await s.commit()
    return event_id


async def keyed(db: Sessions, hook_id: str) -> tuple[dict[Any, Any], list[tuple[Any, ...]]]:
    """{event: the delivery's key} and (event, attempt, the attempt's key) of one webhook."""
    async with db() as s:
        found = await s.execute(
            text(
                "SELECT event_id, shard_key FROM gateway.webhook_deliveries "
                "WHERE webhook_id = CAST(:w AS uuid)"
            ),
            {"w": hook_id},
        )
        deliveries = {r[0]: r[1] for r in found}
        tried = await s.execute(
            text(
                "SELECT d.event_id, a.attempt, a.shard_key FROM gateway.webhook_attempts a "
                "JOIN gateway.webhook_deliveries d ON d.id = a.delivery_id "
                "WHERE d.webhook_id = CAST(:w AS uuid) ORDER BY d.event_id, a.attempt"
            ),
            {"w": hook_id},
        )
        return deliveries, [tuple(r) for r in tried]


class TestDeliveryKeys:
    async def test_deliveries_and_attempts_carry_the_events_key(
        self,
        admin_client: httpx.AsyncClient,
        db: Sessions,
        receiver: Receiver,
        clock: FakeClock,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        hook = await register(admin_client, PUBLIC_URL, events=["mobile.*"])
        county = uuid.uuid4()
        with_key = await publish(db, "mobile.registered", county)
        without = await publish(db, "mobile.returned", None)
        receiver.answers = [500, 500]  # both fail once, then succeed
        await fan_out_now()
        assert await deliver_now() == 2
        clock.advance(seconds=RETRY_DELAYS[0])
        assert await deliver_now() == 2

        deliveries, tried = await keyed(db, hook["id"])
        assert deliveries == {with_key: county, without: UNSHARDED}
        assert sorted(tried) == sorted(
            [(e, n, deliveries[e]) for e in (with_key, without) for n in (1, 2)]
        )

    async def test_replays_keep_the_events_key(
        self,
        admin_client: httpx.AsyncClient,
        db: Sessions,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        since = datetime.now(UTC) - timedelta(minutes=1)
        county = uuid.uuid4()
        with_key = await publish(db, "mobile.registered", county)
        without = await publish(db, "mobile.returned", None)
        await fan_out_now()
        # Registered after the events: only a replay schedules them, from the outboxes.
        hook = await register(admin_client, PUBLIC_URL, events=["mobile.*"])
        r = await admin_client.post(
            f"{HOOKS}/{hook['id']}/replay", params={"since": since.isoformat()}
        )
        assert r.status_code == 202 and r.json() == {"replayed": 2}
        while await deliver_now():
            pass
        deliveries, _ = await keyed(db, hook["id"])
        assert deliveries == {with_key: county, without: UNSHARDED}

        async with db() as s:
            delivery_id = await s.scalar(
                text("SELECT id FROM gateway.webhook_deliveries WHERE event_id = :e"),
                {"e": with_key},
            )
        r = await admin_client.post(f"{HOOKS}/{hook['id']}/deliveries/{delivery_id}/replay")
        assert r.status_code == 202 and r.json()["status"] == "pending"
        assert await deliver_now() == 1
        deliveries, tried = await keyed(db, hook["id"])
        assert deliveries == {with_key: county, without: UNSHARDED}
        assert {k for e, _, k in tried if e == with_key} == {county}
        assert len(receiver.accepted) == 3
