"""The mobility service's read model of the registry (tables `mobility.orgs` and
`mobility.members`), kept by the consumer `mobility.registry` from the registry's events.

    python -m services.mobility.projections rebuild

empties the read model and replays the registry's stream from its start: here and now when
no running mobility service holds the consumer, otherwise by that service's own consumer.

The same consumer keeps the distribution key of the member's own rows equal to the
projection's (`service/keys.py`): after each event (or batch), in its transaction."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import create_engine, make_sessionmaker, plain_url
from common.events.consumer import Consumer
from common.events.outbox import Event
from common.events.projection import MEMBER_EVENTS, ORG_EVENTS, RegistryProjection
from common.events.runtime import rebuild
from services.mobility.models import consumer_cursors, members, orgs
from services.mobility.service.keys import rekey
from services.mobility.settings import MobilitySettings


class MobilityRegistry(RegistryProjection):
    """The registry's read model, then the re-keying of the member rows it moved: of the
    members the events name, and of the members under an org whose key changed (moved to
    another county)."""

    async def apply(self, session: AsyncSession, event: Event) -> None:
        before = await self._org_key(session, event)
        await super().apply(session, event)
        if event.type in MEMBER_EVENTS:
            await rekey(session, member_ids=[event.aggregate_id])
        elif before is not None:
            org = (
                await session.execute(
                    select(orgs.c.shard_key, orgs.c.path).where(orgs.c.org_id == event.aggregate_id)
                )
            ).one()
            if org.shard_key != before:
                await rekey(session, under=str(org.path))

    async def apply_batch(self, session: AsyncSession, events: list[Event]) -> None:
        """The base applies the org events of a batch one by one through `apply` (above);
        the members' runs in bulk, re-keyed here in one statement."""
        await super().apply_batch(session, events)
        member_ids = {e.aggregate_id for e in events if e.type in MEMBER_EVENTS}
        if member_ids:
            await rekey(session, member_ids=member_ids)

    async def _org_key(self, session: AsyncSession, event: Event) -> uuid.UUID | None:
        """The projected key of the org an org event is about, before it applies."""
        if event.type not in ORG_EVENTS:
            return None
        return await session.scalar(
            select(orgs.c.shard_key).where(orgs.c.org_id == event.aggregate_id)
        )


registry_model = MobilityRegistry(orgs=orgs, members=members)


def registry_consumer() -> Consumer:
    return Consumer(
        name="mobility.registry",
        sources=("registry",),
        cursors=consumer_cursors,
        apply=registry_model.apply,
        # A run of member events as one statement: event by event, the projection fell
        # behind 200 registry writes/s (p99 lag 8.5 s on the 2-core machine).
        apply_batch=registry_model.apply_batch,
    )


async def _rebuild(settings: MobilitySettings) -> int | None:
    engine = create_engine(settings.database_url, pool_size=2, application_name="mobility-rebuild")
    try:
        return await rebuild(
            make_sessionmaker(engine),
            registry_consumer(),
            reset=registry_model.reset,
            dsn=plain_url(settings.database_url),
            nats_url=settings.nats_url,
        )
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.mobility.projections")
    parser.add_argument("action", choices=["rebuild"])
    parser.parse_args(argv)
    applied = asyncio.run(_rebuild(MobilitySettings()))
    if applied is None:
        print("read model emptied; the running mobility service is replaying the stream")
    else:
        print(f"read model rebuilt from the start of the stream: {applied} events applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
