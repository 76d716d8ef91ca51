"""From events to deliveries: the `gateway.webhooks` consumer reads the services' outboxes
and, per event, schedules one delivery for every active webhook whose org subtree holds
one of the event's `org_paths` and whose filter takes its type (once per webhook and
event: the pair is unique). Org paths come from the gateway's own projection of the
registry's `org.*` events, applied by the same consumer before anything that follows.

`schedule_replay` uses the same rules to schedule a webhook's events since a time again.

A delivery carries its event's distribution key (`Event.shard_key`, the outbox's
`shard_key`; `UNSHARDED` from a producer that wrote none), and its attempts carry it too."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncSession

from common.events.consumer import Consumer
from common.events.outbox import Event
from common.events.projection import ORG_EVENTS, RegistryProjection
from common.sharding import UNSHARDED
from gateway.models import consumer_cursors, orgs

CONSUMER_NAME = "gateway.webhooks"
SOURCES = ("registry", "mobility", "activities")

# The type `t` passes the webhook's filter `w.events`.
_TYPE_MATCHES = """EXISTS (SELECT 1 FROM unnest(w.events) AS f(e)
    WHERE f.e = '*' OR f.e = {t} OR (f.e LIKE '%.*' AND starts_with({t}, left(f.e, -1))))"""
# One of the paths `p` (ltree[]) lies in the webhook's org subtree (or the webhook takes all).
_ORG_MATCHES = """(w.org_id IS NULL OR EXISTS (SELECT 1 FROM gateway.orgs AS o
    WHERE o.org_id = w.org_id AND o.path @> ANY({p})))"""

_FAN_OUT = text(
    f"""INSERT INTO gateway.webhook_deliveries
        (id, shard_key, webhook_id, event_id, source, event_type, status, attempts,
         next_attempt_at)
    SELECT gen_random_uuid(), CAST(:shard_key AS uuid), w.id, CAST(:event_id AS uuid),
        CAST(:source AS text), CAST(:type AS text), 'pending', 0, now()
    FROM gateway.webhooks AS w
    WHERE w.active AND w.created_at <= :occurred_at
      AND {_TYPE_MATCHES.format(t="CAST(:type AS text)")}
      AND {_ORG_MATCHES.format(p="CAST(CAST(:paths AS text[]) AS ltree[])")}
    ON CONFLICT (webhook_id, event_id) DO NOTHING"""  # noqa: S608 - constant fragments
)


# The same, for a run of events at once: one statement per batch, not per event.
_FAN_OUT_MANY = text(
    f"""INSERT INTO gateway.webhook_deliveries
        (id, shard_key, webhook_id, event_id, source, event_type, status, attempts,
         next_attempt_at)
    SELECT gen_random_uuid(), e.shard_key, w.id, e.event_id, e.source, e.type, 'pending', 0,
        now()
    FROM unnest(CAST(:event_ids AS uuid[]), CAST(:shard_keys AS uuid[]),
                CAST(:sources AS text[]), CAST(:types AS text[]),
                CAST(:occurred AS timestamptz[]), CAST(:paths AS text[]))
        AS e(event_id, shard_key, source, type, occurred_at, paths)
    JOIN gateway.webhooks AS w ON w.active AND w.created_at <= e.occurred_at
    WHERE {_TYPE_MATCHES.format(t="e.type")}
      AND {_ORG_MATCHES.format(p="CAST(string_to_array(e.paths, ',') AS ltree[])")}
    ON CONFLICT (webhook_id, event_id) DO NOTHING"""  # noqa: S608 - constant fragments
)


class OrgPaths(RegistryProjection):
    """The registry's org tree (id → path) in `gateway.orgs`: the org part of the shared
    registry projection (no member rows: webhooks scope by org)."""

    def __init__(self, table: Table) -> None:
        super().__init__(orgs=table, members=None)

    async def apply(self, session: AsyncSession, event: Event) -> None:
        if event.source == "registry" and event.type in ORG_EVENTS:
            await super().apply(session, event)


org_paths = OrgPaths(orgs)


async def fan_out(session: AsyncSession, event: Event) -> None:
    """The consumer's `apply`: keep the org tree, then schedule this event's deliveries."""
    await org_paths.apply(session, event)
    await session.execute(
        _FAN_OUT,
        {
            "event_id": event.event_id,
            "shard_key": event.shard_key or UNSHARDED,
            "source": event.source,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "paths": list(event.org_paths),
        },
    )


async def existing_sources(session: AsyncSession) -> tuple[str, ...]:
    """The producers whose outbox exists in this database."""
    found = []
    for source in SOURCES:
        if await session.scalar(text("SELECT to_regclass(:t)"), {"t": f"{source}.outbox"}):
            found.append(source)
    return tuple(found)


async def fan_out_batch(session: AsyncSession, events: list[Event]) -> None:
    """The consumer's `apply_batch`: the same as `fan_out` event by event, in one statement
    per run of events between org events (an org event changes the tree the events after
    it are matched against: it is applied, then its run continues)."""
    run: list[Event] = []
    for event in events:
        if event.source == "registry" and event.type in ORG_EVENTS:
            await _fan_out_run(session, run)
            run = []
            await org_paths.apply(session, event)
        run.append(event)
    await _fan_out_run(session, run)


async def _fan_out_run(session: AsyncSession, events: list[Event]) -> None:
    if not events:
        return
    await session.execute(
        _FAN_OUT_MANY,
        {
            "event_ids": [e.event_id for e in events],
            "shard_keys": [e.shard_key or UNSHARDED for e in events],
            "sources": [e.source for e in events],
            "types": [e.type for e in events],
            "occurred": [e.occurred_at for e in events],
            # ltree labels hold no commas: one text per event, split back in SQL.
            "paths": [",".join(p for p in e.org_paths if p) for e in events],
        },
    )


def webhook_consumer(sources: tuple[str, ...]) -> Consumer:
    return Consumer(
        name=CONSUMER_NAME,
        sources=sources,
        cursors=consumer_cursors,
        apply=fan_out,
        apply_batch=fan_out_batch,
    )


async def schedule_replay(
    session: AsyncSession,
    *,
    webhook_id: uuid.UUID,
    since: datetime,
    now: datetime,
    limit: int,
) -> int | None:
    """Schedules (again) every event since `since` this webhook takes; None when more than
    `limit` would be."""
    sources = await existing_sources(session)
    params: dict[str, Any] = {"wid": webhook_id, "since": since, "now": now, "none": UNSHARDED}
    matching = {
        source: f"""FROM {source}.outbox AS ev JOIN gateway.webhooks AS w ON w.id = :wid
            WHERE ev.occurred_at >= :since
              AND {_TYPE_MATCHES.format(t="ev.type")}
              AND {_ORG_MATCHES.format(p="CAST(ev.org_paths AS ltree[])")}"""
        for source in sources
    }
    total = 0
    for where in matching.values():
        count = await session.scalar(
            text(f"SELECT count(*) FROM (SELECT 1 {where} LIMIT :cap) AS c"),  # noqa: S608
            {**params, "cap": limit + 1},
        )
        total += int(count or 0)
    if total > limit:
        return None
    for source, where in matching.items():
        await session.execute(
            text(
                f"""INSERT INTO gateway.webhook_deliveries
                    (id, shard_key, webhook_id, event_id, source, event_type, status,
                     attempts, next_attempt_at)
                SELECT gen_random_uuid(), coalesce(ev.shard_key, CAST(:none AS uuid)), w.id,
                    ev.event_id, CAST(:source AS text), ev.type, 'pending', 0,
                    :now
                {where}
                ON CONFLICT (webhook_id, event_id) DO UPDATE SET status = 'pending',
                    attempts = 0, next_attempt_at = :now, last_status_code = NULL,
                    last_error = NULL, delivered_at = NULL"""
            ),
            {**params, "source": source},
        )
    return total
