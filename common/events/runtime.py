"""Running the backbone inside a service process: its consumers (and, with NATS, the relay of
its own outbox) as background tasks started by the app's lifespan and cancelled on
shutdown; `LIANXIN_CONSUMERS_ENABLED=false` leaves them off (tests start their own).
Also the rebuild every projection offers from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import FastAPI
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.audit import add_audit_partitions
from common.db import plain_url
from common.events import outbox_partitions
from common.events.consumer import (
    Consumer,
    advisory_key,
    catch_up,
    lock_cursor,
    reset_cursors,
    run_outbox_consumer,
    save_cursor,
    try_lock,
)
from common.events.jetstream import NATS_SOURCE, catch_up_nats, run_nats_consumer, run_relay
from common.events.outbox import START
from common.schedule import run_periodic
from common.settings import BaseAppSettings

log = logging.getLogger("lianxin.events")


@dataclass
class EventRuntime:
    sessionmaker: async_sessionmaker[AsyncSession]
    dsn: str
    consumers: Sequence[Consumer]
    # The service's own outbox, relayed to NATS when `nats_url` is set.
    schema: str | None = None
    cursors: Table | None = None
    nats_url: str | None = None
    poll_interval_s: float = 1.0
    # Upkeep of the service's partitioned tables (common/partitions.py), once an hour
    # across replicas: the outbox's coming days (and, with a retention, its relayed old
    # ones dropped), the audit log's coming months.
    outbox_retention_days: int | None = None
    upkeep_every_s: float = 3600.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        for consumer in self.consumers:
            if self.nats_url:
                runner = run_nats_consumer(
                    self.sessionmaker,
                    consumer,
                    dsn=self.dsn,
                    nats_url=self.nats_url,
                    poll_interval_s=self.poll_interval_s,
                )
            else:
                runner = run_outbox_consumer(
                    self.sessionmaker, consumer, dsn=self.dsn, poll_interval_s=self.poll_interval_s
                )
            self.tasks.append(asyncio.create_task(runner, name=f"consumer:{consumer.name}"))
        if self.nats_url and self.schema and self.cursors is not None:
            relay = run_relay(
                self.sessionmaker,
                schema=self.schema,
                cursors=self.cursors,
                dsn=self.dsn,
                nats_url=self.nats_url,
                poll_interval_s=self.poll_interval_s,
            )
            self.tasks.append(asyncio.create_task(relay, name=f"relay:{self.schema}"))
        if self.schema and self.cursors is not None:
            upkeep = run_periodic(
                self.sessionmaker,
                self.schema,
                f"{self.schema}.partitions",
                self._upkeep,
                every_s=self.upkeep_every_s,
            )
            self.tasks.append(asyncio.create_task(upkeep, name=f"partitions:{self.schema}"))

    async def _upkeep(self, session: AsyncSession) -> None:
        assert self.schema is not None
        created, dropped = await outbox_partitions.maintain(
            session, self.schema, retention_days=self.outbox_retention_days
        )
        created += await add_audit_partitions(session, self.schema)
        if created or dropped:
            log.info("%s: %d partitions created, %d dropped", self.schema, created, dropped)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()


def lifespan_hooks(
    *,
    consumers: Callable[[], Sequence[Consumer]],
    schema: str | None = None,
    cursors: Table | None = None,
) -> tuple[Callable[[FastAPI], Awaitable[None]], Callable[[FastAPI], Awaitable[None]]]:
    """`(on_startup, on_shutdown)` for `create_service_app`."""

    async def on_startup(app: FastAPI) -> None:
        settings: BaseAppSettings = app.state.settings
        app.state.events = None
        if not settings.consumers_enabled:
            return
        runtime = EventRuntime(
            sessionmaker=app.state.sessionmaker,
            dsn=plain_url(settings.database_url),
            consumers=consumers(),
            schema=schema,
            cursors=cursors,
            nats_url=settings.nats_url,
            poll_interval_s=settings.events_poll_interval_s,
            outbox_retention_days=settings.outbox_retention_days,
        )
        runtime.start()
        app.state.events = runtime

    async def on_shutdown(app: FastAPI) -> None:
        runtime: EventRuntime | None = getattr(app.state, "events", None)
        if runtime is not None:
            await runtime.stop()

    return on_startup, on_shutdown


async def rebuild(
    sessionmaker: async_sessionmaker[AsyncSession],
    consumer: Consumer,
    *,
    reset: Callable[[AsyncSession], Awaitable[Any]],
    dsn: str,
    nats_url: str | None = None,
) -> int | None:
    """Empty the read model and rewind the consumer to the start of the stream, in one
    transaction; then replay it here if no running service holds the consumer (returns the
    events applied), or leave the replay to the running one (returns None)."""
    async with sessionmaker() as session, session.begin():
        for source in (*consumer.sources, NATS_SOURCE):
            await lock_cursor(session, consumer.cursors, consumer.name, source)
        await reset(session)
        await reset_cursors(session, consumer)
        await save_cursor(session, consumer.cursors, consumer.name, NATS_SOURCE, START)
    conn = await asyncpg.connect(dsn)
    try:
        if not await try_lock(conn, advisory_key("consumer", consumer.name)):
            return None
        if nats_url:
            return await catch_up_nats(sessionmaker, consumer, nats_url=nats_url)
        return (await catch_up(sessionmaker, consumer)).applied
    finally:
        await conn.close()
