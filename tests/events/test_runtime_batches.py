"""The registry projections' consumers apply each batch they read in one call
(`RegistryProjection.apply_batch`), over the outbox and over NATS, and a service running
them ends in the same read model as the registry's own tables."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.runtime import EventRuntime
from services.mobility import consumers as mobility_consumers
from tests.events.helpers import (
    consumer,
    eventually,
    model,
    populate,
    projection,
    registry_view,
)

Sessions = async_sessionmaker[AsyncSession]


class TestRunningConsumers:
    async def test_a_running_service_projects_every_registration(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str
    ) -> None:
        runtime = EventRuntime(
            sessionmaker=committed_db, dsn=dsn, consumers=[consumer("mobility", batch_size=3)]
        )
        runtime.start()
        try:
            # Orgs, enrolled and resident members, a community moved after its members
            # registered: member runs between org events, read three at a time.
            await populate(admin, members=5)

            async def caught_up() -> bool:
                return await projection(committed_db, "mobility") == await registry_view(
                    committed_db
                )

            await eventually(caught_up, what="the running consumer to catch up")
        finally:
            await runtime.stop()

    def test_the_projection_consumers_apply_whole_batches(self) -> None:
        for schema in ("mobility", "activities"):
            assert consumer(schema).apply_batch == model(schema).apply_batch

    def test_the_other_consumers_apply_event_by_event(self) -> None:
        for plain in mobility_consumers.consumers()[1:]:
            assert plain.apply_batch is None
