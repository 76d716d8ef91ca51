"""Applies the registry's events written so far in this test's transaction (which no real
consumer can read before it commits) to the activities service's read model, in order.
Idempotent: the projection skips versions it holds already."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.outbox import Event
from services.activities.projections import registry_model
from services.registry.models import outbox as registry_outbox


async def project_registry(db: async_sessionmaker[AsyncSession]) -> None:
    async with db() as session:
        rows = (
            (await session.execute(select(registry_outbox).order_by(registry_outbox.c.id)))
            .mappings()
            .all()
        )
        for row in rows:
            await registry_model.apply(
                session,
                Event(
                    source="registry",
                    seq=row["id"],
                    txid=str(row["txid"]),
                    event_id=row["event_id"],
                    type=row["type"],
                    aggregate_type=row["aggregate_type"],
                    aggregate_id=row["aggregate_id"],
                    aggregate_version=row["aggregate_version"],
                    occurred_at=row["occurred_at"],
                    org_paths=tuple(row["org_paths"]),
                    payload=row["payload"],
                    shard_key=row["shard_key"],
                ),
            )
        await session.commit()
