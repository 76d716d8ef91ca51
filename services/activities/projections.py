"""The activities service's read model of the registry (tables `activities.orgs` and
`activities.members`), kept by the consumer `activities.registry` from the registry's events;
the same transaction moves this service's rows to the new distribution key of a member or an
org's subtree when an event changes it (`ActivitiesRegistryModel`).

    python -m services.activities.projections rebuild

empties the read model and replays the registry's stream from its start: here and now when
no running activities service holds the consumer, otherwise by that service's own consumer."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import create_engine, make_sessionmaker, plain_url
from common.events.consumer import Consumer
from common.events.outbox import Event
from common.events.projection import MEMBER_EVENTS, ORG_EVENTS, RegistryProjection
from common.events.runtime import rebuild
from services.activities.models import consumer_cursors, members, orgs
from services.activities.service import keys
from services.activities.settings import ActivitiesSettings

# A member or an org created just now has no rows here yet (rows are written only for
# projected ones): a bulk import costs no statement more per event.
REKEYING_ORG_EVENTS = ORG_EVENTS - {"org.created"}
REKEYING_MEMBER_EVENTS = MEMBER_EVENTS - {"member.registered"}


class ActivitiesRegistryModel(RegistryProjection):
    """The read model, and this service's rows following their keys: when an event gives a
    member or an org's subtree another projected key (a member's relation moved to another
    county, an org moved under another county), the rows keyed by them take it in the same
    transaction (services/activities/service/keys.py). `apply` and `apply_batch` both, so
    the bulk path of a rebuild or a demo load re-keys too."""

    async def apply(self, session: AsyncSession, event: Event) -> None:
        if event.type in REKEYING_ORG_EVENTS:
            org_id = event.payload["org_id"]
            before = await self._key_of(session, org_id)
            await super().apply(session, event)
            if before is None or before.shard_key is None:
                return  # as the projection's own re-keying: only an org that had a key
            after = await self._key_of(session, org_id)
            if after.shard_key != before.shard_key:
                await keys.rekey_subtree(session, path=str(after.path))
        else:
            await super().apply(session, event)
            if event.type in REKEYING_MEMBER_EVENTS:
                await keys.rekey_member_ids(session, [event.aggregate_id])

    async def apply_batch(self, session: AsyncSession, events: list[Event]) -> None:
        # Org events of the batch go through `apply` above; members' runs do not.
        await super().apply_batch(session, events)
        await keys.rekey_member_ids(
            session, (e.aggregate_id for e in events if e.type in REKEYING_MEMBER_EVENTS)
        )

    async def _key_of(self, session: AsyncSession, org_id: Any) -> Any:
        query = select(self.orgs.c.path, self.orgs.c.shard_key)
        return (await session.execute(query.where(self.orgs.c.org_id == org_id))).first()


registry_model = ActivitiesRegistryModel(orgs=orgs, members=members)


def registry_consumer() -> Consumer:
    return Consumer(
        name="activities.registry",
        sources=("registry",),
        cursors=consumer_cursors,
        apply=registry_model.apply,
        # A run of member events as one statement: event by event, the projection fell
        # behind 200 registry writes/s (p99 lag 8.5 s on the 2-core machine).
        apply_batch=registry_model.apply_batch,
    )


async def _rebuild(settings: ActivitiesSettings) -> int | None:
    engine = create_engine(
        settings.database_url, pool_size=2, application_name="activities-rebuild"
    )
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
    parser = argparse.ArgumentParser(prog="python -m services.activities.projections")
    parser.add_argument("action", choices=["rebuild"])
    parser.parse_args(argv)
    applied = asyncio.run(_rebuild(ActivitiesSettings()))
    if applied is None:
        print("read model emptied; the running activities service is replaying the stream")
    else:
        print(f"read model rebuilt from the start of the stream: {applied} events applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
