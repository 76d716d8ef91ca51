"""The consumers the activities service runs: background tasks of its process, started by the
app's lifespan and cancelled on shutdown (`LIANXIN_CONSUMERS_ENABLED=false` turns them
off). Without `NATS_URL` they read the producers' outbox tables, woken by LISTEN/NOTIFY
with polling as the fallback; with it they read JetStream, and this process also relays
its own outbox (`activities.outbox`) there.

Adding a consumer:
1. write an apply function `async def apply(session, event) -> None` that changes only this
   service's tables, ignores event types it does not need, and is idempotent: keep the
   aggregate's version on the row and skip an event whose `aggregate_version` is not newer
   (events are delivered at least once; a rebuild replays them all);
2. add `Consumer(name="activities.<purpose>", sources=("registry", ...), cursors=consumer_cursors,
   apply=apply)` to `consumers()` below — the name is its durable cursor, never reuse it;
3. test it with `common.events.consumer.catch_up` after committing a change (see
   `tests/events/`).
Emitting this service's own events: `common.events.outbox.emit(session, outbox, ...)` in
the transaction of the change, with no sensitive field, and a catalogue entry in the
README."""

from __future__ import annotations

from common.events.consumer import Consumer
from common.events.runtime import lifespan_hooks
from services.activities.models import SCHEMA, consumer_cursors
from services.activities.projections import registry_consumer


def consumers() -> list[Consumer]:
    return [registry_consumer()]


on_startup, on_shutdown = lifespan_hooks(
    consumers=consumers, schema=SCHEMA, cursors=consumer_cursors
)
