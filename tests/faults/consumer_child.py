"""A consumer in a process of its own, for the test that kills one mid-batch:

    python -m tests.faults.consumer_child DSN MARKER BATCH_SIZE HANG_AT_BATCH

runs mobility's consumer of the registry (name `mobility.registry`, the projection's bulk
`apply_batch`), which also counts every event it applies in `public.fault_effects` (one row
per application, no constraint: a double effect shows as two rows). With HANG_AT_BATCH > 0,
that batch applies half of its events, writes MARKER, and hangs inside its transaction
until the process is killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import create_engine, make_sessionmaker
from common.events.consumer import Consumer, run_outbox_consumer
from common.events.outbox import Event
from services.mobility.models import consumer_cursors
from services.mobility.projections import registry_model

EFFECTS = "CREATE TABLE IF NOT EXISTS public.fault_effects (event_id uuid NOT NULL)"


async def count_effects(session: AsyncSession, events: list[Event]) -> None:
    await session.execute(
        text("INSERT INTO public.fault_effects (event_id) VALUES (:e)"),
        [{"e": e.event_id} for e in events],
    )


async def main(dsn: str, marker: Path, batch_size: int, hang_at: int) -> None:
    engine = create_engine(dsn, pool_size=2, application_name="fault-consumer")
    batches = 0

    async def apply_batch(session: AsyncSession, events: list[Event]) -> None:
        nonlocal batches
        batches += 1
        if batches == hang_at:
            half = events[: len(events) // 2]
            await registry_model.apply_batch(session, half)
            await count_effects(session, half)
            await session.flush()
            await asyncio.to_thread(marker.write_text, f"{len(half)} of {len(events)}")
            await asyncio.Event().wait()  # until killed
        await registry_model.apply_batch(session, events)
        await count_effects(session, events)

    consumer = Consumer(
        name="mobility.registry",
        sources=("registry",),
        cursors=consumer_cursors,
        apply=registry_model.apply,
        batch_size=batch_size,
        apply_batch=apply_batch,
    )
    try:
        await run_outbox_consumer(make_sessionmaker(engine), consumer, dsn=dsn, poll_interval_s=0.2)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    dsn, marker, size, hang = sys.argv[1:5]
    asyncio.run(main(dsn, Path(marker), int(size), int(hang)))
