"""`RegistryProjection.apply_batch` (runs of member events as one executemany, used by the
demo loader) ends in the same read model as applying each event on its own."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.consumer import catch_up
from tests.events.helpers import consumer, populate, projection, registry_view

Sessions = async_sessionmaker[AsyncSession]


class TestApplyBatch:
    async def test_bulk_apply_builds_what_one_by_one_builds(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        # Orgs, members, a move of a community after its members registered: org events
        # between runs of member events, and members changed twice.
        await populate(admin, members=6)
        await catch_up(committed_db, consumer("mobility", apply_batch=None))
        bulk = consumer("activities", batch_size=7)
        await catch_up(committed_db, bulk)
        one_by_one = await projection(committed_db, "mobility")
        assert await projection(committed_db, "activities") == one_by_one
        assert one_by_one == await registry_view(committed_db)
