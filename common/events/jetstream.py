"""The NATS JetStream transport, used when `NATS_URL` is set.

The relay publishes a service's outbox, in commit-safe order, to the stream `LIANXIN`
with the subject `lianxin.<schema>.<type>` and `Nats-Msg-Id` = the event id (JetStream
drops a duplicate within its window). It is an outbox consumer like any other: its cursor
(in the producer's `consumer_cursors`) moves only after the publish acks have come back and
commits, so a crash publishes again, never skips.

Consumers read through a durable pull consumer named after them, filtered to their
sources' subjects. The last applied stream sequence is kept in the consumer's own
`consumer_cursors` (source `nats:LIANXIN`) and moves in the same transaction as the
projection; messages are acked after that commit. Our cursor is the truth: at every start
the durable consumer is recreated to deliver from the message after it, a message at or
below it is acked without applying, and a failed batch restarts from it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.consumer import (
    Consumer,
    advisory_key,
    exclusive_connection,
    lock_cursor,
    run_outbox_consumer,
    save_cursor,
)
from common.events.outbox import Event

log = logging.getLogger("lianxin.events")

STREAM = "LIANXIN"
SUBJECT_ROOT = "lianxin"
NATS_SOURCE = f"nats:{STREAM}"  # the cursor row of a NATS consumer
DUPLICATE_WINDOW_S = 600.0
ACK_WAIT_S = 60.0
PUBLISH_ACKS_TIMEOUT_S = 10.0
BATCH_FILL_S = 0.01  # how long a fetch waits for more once a message has come


class CursorMoved(RuntimeError):
    """The cursor changed under a running consumer (a rebuild reset it): start over."""


def subject(event: Event) -> str:
    return f"{SUBJECT_ROOT}.{event.source}.{event.type}"


def durable_name(consumer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", consumer)


async def connect(url: str, *, name: str) -> NATS:
    return await nats.connect(
        servers=[url],
        name=name,
        connect_timeout=2,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
    )


async def ensure_stream(js: JetStreamContext) -> None:
    try:
        await js.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        with contextlib.suppress(nats.js.errors.BadRequestError):  # created concurrently
            await js.add_stream(
                StreamConfig(
                    name=STREAM,
                    subjects=[f"{SUBJECT_ROOT}.>"],
                    storage=StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW_S,
                )
            )


# --- the relay ----------------------------------------------------------------------------


def relay_consumer(schema: str, cursors: Table, js: JetStreamContext) -> Consumer:
    def message(event: Event) -> tuple[str, bytes, dict[str, str]]:
        body = json.dumps(event.envelope(), ensure_ascii=False).encode()
        return subject(event), body, {"Nats-Msg-Id": str(event.event_id)}

    async def publish(session: AsyncSession, event: Event) -> None:
        name, body, headers = message(event)
        await js.publish(name, body, stream=STREAM, headers=headers)

    async def publish_batch(session: AsyncSession, events: list[Event]) -> None:
        # Sent in order on one connection (JetStream stores them in that order); the
        # cursor moves only once every ack is back.
        acks = []
        for event in events:
            name, body, headers = message(event)
            acks.append(await js.publish_async(name, body, stream=STREAM, headers=headers))
        try:
            await asyncio.wait_for(asyncio.gather(*acks), PUBLISH_ACKS_TIMEOUT_S)
        finally:
            for ack in acks:
                ack.cancel()

    return Consumer(
        name=f"relay.nats.{schema}",
        sources=(schema,),
        cursors=cursors,
        apply=publish,
        apply_batch=publish_batch,
    )


async def run_relay(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    schema: str,
    cursors: Table,
    dsn: str,
    nats_url: str,
    poll_interval_s: float = 1.0,
) -> None:
    """Publish `schema`'s outbox to JetStream until cancelled."""
    backoff = 0.5
    while True:
        nc: NATS | None = None
        try:
            nc = await connect(nats_url, name=f"lianxin-relay-{schema}")
            js = nc.jetstream()
            await ensure_stream(js)
            await run_outbox_consumer(
                sessionmaker,
                relay_consumer(schema, cursors, js),
                dsn=dsn,
                poll_interval_s=poll_interval_s,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay of %s failed; retrying in %.1fs", schema, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(nc.close())


# --- consumers ----------------------------------------------------------------------------


class JetStreamReader:
    """Applies one consumer's messages batch by batch, one transaction each."""

    def __init__(
        self,
        js: JetStreamContext,
        sessionmaker: async_sessionmaker[AsyncSession],
        consumer: Consumer,
    ) -> None:
        self.js = js
        self.sessionmaker = sessionmaker
        self.consumer = consumer
        self.name = durable_name(consumer.name)
        self.applied_up_to = 0
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        async with self.sessionmaker() as session, session.begin():
            _, self.applied_up_to = await lock_cursor(
                session, self.consumer.cursors, self.consumer.name, NATS_SOURCE
            )
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_consumer(STREAM, self.name)
        subjects = [f"{SUBJECT_ROOT}.{s}.>" for s in self.consumer.sources]
        await self.js.add_consumer(
            STREAM,
            ConsumerConfig(
                name=self.name,
                durable_name=self.name,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_S,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.applied_up_to + 1,
                max_ack_pending=self.consumer.batch_size * 2,
                **(
                    {"filter_subject": subjects[0]}
                    if len(subjects) == 1
                    else {"filter_subjects": subjects}
                ),
            ),
        )
        self._sub = await self.js.pull_subscribe_bind(durable=self.name, stream=STREAM)

    async def step(self, timeout_s: float) -> int | None:
        """Fetch and apply one batch; None when nothing came within `timeout_s`."""
        assert self._sub is not None, "start() first"
        # A lingering pull for a whole batch would wait until the batch is full or the
        # timeout ends: wait for one message, then take what else is there at once.
        try:
            msgs = await self._sub.fetch(1, timeout=timeout_s)
        except TimeoutError:
            await self._check_cursor()
            return None
        if self.consumer.batch_size > 1:
            with contextlib.suppress(TimeoutError):
                msgs += await self._sub.fetch(self.consumer.batch_size - 1, timeout=BATCH_FILL_S)
        applied = await self._apply(msgs)
        for msg in msgs:
            await msg.ack()
        return applied

    async def _check_cursor(self) -> None:
        """Idle: make sure no rebuild has rewound the cursor meanwhile."""
        cursors = self.consumer.cursors
        async with self.sessionmaker() as session:
            stored = await session.scalar(
                select(cursors.c.id).where(
                    cursors.c.consumer == self.consumer.name, cursors.c.source == NATS_SOURCE
                )
            )
        if stored is not None and stored != self.applied_up_to:
            raise CursorMoved(f"{self.consumer.name}: cursor moved to {stored}")

    async def _apply(self, msgs: list[Msg]) -> int:
        consumer = self.consumer
        async with self.sessionmaker() as session, session.begin():
            _, stored = await lock_cursor(session, consumer.cursors, consumer.name, NATS_SOURCE)
            if stored != self.applied_up_to:
                raise CursorMoved(f"{consumer.name}: cursor moved to {stored}")
            last = stored
            events = []
            for msg in sorted(msgs, key=lambda m: m.metadata.sequence.stream):
                seq = msg.metadata.sequence.stream
                if seq <= last:
                    continue  # applied before (a redelivery)
                events.append(Event.from_envelope(json.loads(msg.data)))
                last = seq
            if consumer.apply_batch is not None and events:
                await consumer.apply_batch(session, events)
            else:
                for event in events:
                    await consumer.apply(session, event)
            applied = len(events)
            if last != stored:
                await save_cursor(
                    session, consumer.cursors, consumer.name, NATS_SOURCE, ("0", last)
                )
        self.applied_up_to = last
        return applied

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


async def catch_up_nats(
    sessionmaker: async_sessionmaker[AsyncSession],
    consumer: Consumer,
    *,
    nats_url: str,
    idle_s: float = 0.5,
) -> int:
    """Apply what the stream holds for `consumer` until it stays quiet for `idle_s`."""
    nc = await connect(nats_url, name=f"lianxin-{consumer.name}")
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        reader = JetStreamReader(js, sessionmaker, consumer)
        await reader.start()
        total = 0
        while (applied := await reader.step(idle_s)) is not None:
            total += applied
        await reader.close()
        return total
    finally:
        await nc.close()


async def run_nats_consumer(
    sessionmaker: async_sessionmaker[AsyncSession],
    consumer: Consumer,
    *,
    dsn: str,
    nats_url: str,
    poll_interval_s: float = 1.0,
) -> None:
    """Run `consumer` on JetStream until cancelled (one active runner per name)."""
    backoff = 0.5
    while True:
        conn = None
        nc: NATS | None = None
        reader: JetStreamReader | None = None
        try:
            conn = await exclusive_connection(
                dsn, advisory_key("consumer", consumer.name), standby_poll_s=poll_interval_s
            )
            nc = await connect(nats_url, name=f"lianxin-{consumer.name}")
            js = nc.jetstream()
            await ensure_stream(js)
            reader = JetStreamReader(js, sessionmaker, consumer)
            await reader.start()
            log.info("consumer %s reading %s from NATS", consumer.name, consumer.sources)
            while True:
                if conn.is_closed():
                    raise ConnectionError("the lock connection was lost")
                await reader.step(poll_interval_s)
                backoff = 0.5
        except asyncio.CancelledError:
            raise
        except CursorMoved as exc:
            log.info("%s; restarting from it", exc)
        except Exception:
            log.exception("consumer %s failed; retrying in %.1fs", consumer.name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
        finally:
            if reader is not None:
                await asyncio.shield(reader.close())
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(nc.close())
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
