"""The consumers the mobility service runs: background tasks of its process, started by the
app's lifespan and cancelled on shutdown (`LIANXIN_CONSUMERS_ENABLED=false` turns them
off). Without `NATS_URL` they read the producers' outbox tables, woken by LISTEN/NOTIFY
with polling as the fallback; with it they read JetStream, and this process also relays
its own outbox (`mobility.outbox`) there.

- `mobility.registry`: the read model of orgs and members (`projections.py`);
- `mobility.transfers`: the registry's transfer letters (pocket members);
- `mobility.org_life`: the activities' attendance at organizational life (`no_org_life`).

Adding a consumer:
1. write an apply function `async def apply(session, event) -> None` that changes only this
   service's tables, ignores event types it does not need, and is idempotent: keep the
   aggregate's version on the row and skip an event whose `aggregate_version` is not newer
   (events are delivered at least once; a rebuild replays them all);
2. add `Consumer(name="mobility.<purpose>", sources=("registry", ...), cursors=consumer_cursors,
   apply=apply)` to `consumers()` below — the name is its durable cursor, never reuse it;
3. test it with `common.events.consumer.catch_up` after committing a change (see
   `tests/events/`).
Emitting this service's own events: `common.events.outbox.emit(session, outbox, ...)` in
the transaction of the change, with no sensitive field, and a catalogue entry in the
README."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import date, datetime

from fastapi import FastAPI
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.events.consumer import Consumer
from common.events.outbox import Event
from common.events.runtime import lifespan_hooks
from common.schedule import run_periodic
from services.mobility.models import SCHEMA, consumer_cursors, transfers
from services.mobility.projections import registry_consumer
from services.mobility.service.alerts import ORG_LIFE_TYPES
from services.mobility.service.cards import publish_lost_contacts, record_org_life
from services.mobility.service.keys import member_key
from services.mobility.settings import MobilitySettings

log = logging.getLogger("lianxin.mobility")

TRANSFER_EVENTS = frozenset(
    {"transfer.issued", "transfer.completed", "transfer.rejected", "transfer.expired"}
)


async def apply_transfer(session: AsyncSession, event: Event) -> None:
    if event.type not in TRANSFER_EVENTS:
        return
    data = event.payload
    valid_until = data.get("valid_until")
    values = {
        "member_id": uuid.UUID(str(data["member_id"])),
        "from_org_id": data.get("from_org_id"),
        "status": str(data["status"]),
        "valid_until": date.fromisoformat(str(valid_until)) if valid_until else None,
        "version": event.aggregate_version,
    }
    stmt = insert(transfers).values(
        transfer_id=event.aggregate_id,
        shard_key=member_key(values["member_id"], share=True),
        **values,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[transfers.c.transfer_id],
            set_=values,
            where=transfers.c.version < stmt.excluded.version,
        )
    )


async def apply_attendance(session: AsyncSession, event: Event) -> None:
    """`attendance.recorded` with `status: present` at organizational life."""
    data = event.payload
    if event.type != "attendance.recorded" or data.get("status") != "present":
        return
    if data.get("activity_type") not in ORG_LIFE_TYPES or not data.get("member_id"):
        return
    starts_at = datetime.fromisoformat(str(data["starts_at"]))
    await record_org_life(session, member_id=uuid.UUID(str(data["member_id"])), on=starts_at)


def consumers() -> list[Consumer]:
    return [
        registry_consumer(),
        Consumer(
            name="mobility.transfers",
            sources=("registry",),
            cursors=consumer_cursors,
            apply=apply_transfer,
        ),
        Consumer(
            name="mobility.org_life",
            sources=("activities",),
            cursors=consumer_cursors,
            apply=apply_attendance,
        ),
    ]


_start_consumers, _stop_consumers = lifespan_hooks(
    consumers=consumers, schema=SCHEMA, cursors=consumer_cursors
)


async def _announce_lost_contacts(app: FastAPI) -> None:
    """Publish `mobile.lost_contact` for cards that fell silent, once per sweep period
    across every replica (`common/schedule.py`); reads never wait for it: they compute the
    status themselves."""
    settings: MobilitySettings = app.state.settings

    async def sweep(session: AsyncSession) -> None:
        await publish_lost_contacts(session, days=settings.lost_contact_days)

    await run_periodic(
        app.state.sessionmaker,
        SCHEMA,
        "mobility.lost_contacts",
        sweep,
        every_s=settings.lost_contact_sweep_s,
    )


async def on_startup(app: FastAPI) -> None:
    await _start_consumers(app)
    app.state.lost_contact_task = None
    if app.state.settings.consumers_enabled:
        app.state.lost_contact_task = asyncio.create_task(
            _announce_lost_contacts(app), name="mobility.lost_contacts"
        )


async def on_shutdown(app: FastAPI) -> None:
    task: asyncio.Task[None] | None = getattr(app.state, "lost_contact_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await _stop_consumers(app)
