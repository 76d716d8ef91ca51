"""Consumers: apply other services' events to a read model, at least once, in order.

A `Consumer` names itself, the sources (producer schemas) it reads and the `apply`
function it runs per event. Its durable cursor lives in `consumer_cursors` of the
consumer's own schema, and every batch — applying the events and moving the cursor — is
one transaction of the consumer's database session: a batch counts entirely or not at
all, so a projection gets each event effectively once. `apply` must still be idempotent
(projections keep the aggregate version and ignore an event not newer than what they
hold): over NATS a message may come again, and rebuilds replay everything.

`run_outbox_consumer` reads the outbox tables directly (no broker): woken by
`LISTEN lianxin_outbox`, polling as the fallback, retrying soon while a running
transaction holds newer rows back. One runner per consumer name is active at a time
(session advisory lock on a dedicated connection); a second replica waits as a standby.
A consumer that was down resumes from its cursor and catches up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    and_,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.outbox import CHANNEL, START, Event, Position, Xid8, read_after

log = logging.getLogger("lianxin.events")

Apply = Callable[[AsyncSession, Event], Awaitable[None]]
HELD_BACK_MAX_PAUSE_S = 0.1
# While events keep coming, a consumer starts at most one catch-up per this many seconds.
BATCH_WINDOW_S = 0.05
# The database node a source's outbox is read from. One PostgreSQL: one node. On a sharded
# engine each worker keeps its own transaction ids, so commit-safe order, and with it a
# cursor, holds per node (docs/scaling.md, "Events").
LOCAL_NODE = "local"


def cursor_table(metadata: MetaData, schema: str) -> Table:
    """`consumer_cursors`: how far each consumer of this schema got in each source, per
    database node the source is read from."""
    return Table(
        "consumer_cursors",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("source", String(64), primary_key=True),
        Column("node", String(64), primary_key=True, server_default=LOCAL_NODE),
        Column("txid", Xid8(), nullable=False, server_default=text("'0'::xid8")),
        Column("id", BigInteger, nullable=False, server_default="0"),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        schema=schema,
    )


@dataclass(frozen=True)
class Consumer:
    name: str  # unique in the system: the cursor's and the NATS durable consumer's name
    sources: tuple[str, ...]  # producer schemas whose events it reads
    cursors: Table  # consumer_cursors of the consumer's own schema
    apply: Apply
    batch_size: int = 500
    # Optional: applies a whole batch at once instead of `apply` per event (the relay
    # publishes a batch and then waits for all its acks).
    apply_batch: Callable[[AsyncSession, list[Event]], Awaitable[None]] | None = None


@dataclass
class BatchResult:
    applied: int = 0
    full: bool = False  # a batch came back full: more may be waiting
    held_back: bool = False  # newer rows wait for a transaction still running


def _cursor_of(cursors: Table, consumer: str, source: str, node: str) -> Any:
    return and_(cursors.c.consumer == consumer, cursors.c.source == source, cursors.c.node == node)


async def lock_cursor(
    session: AsyncSession, cursors: Table, consumer: str, source: str, node: str = LOCAL_NODE
) -> Position:
    """The cursor of (consumer, source, node), created at the start, locked until commit."""
    await session.execute(
        insert(cursors)
        .values(consumer=consumer, source=source, node=node)
        .on_conflict_do_nothing(
            index_elements=[cursors.c.consumer, cursors.c.source, cursors.c.node]
        )
    )
    row = (
        await session.execute(
            select(cursors.c.txid, cursors.c.id)
            .where(_cursor_of(cursors, consumer, source, node))
            .with_for_update()
        )
    ).one()
    return (str(row.txid), int(row.id))


async def save_cursor(
    session: AsyncSession,
    cursors: Table,
    consumer: str,
    source: str,
    position: Position,
    node: str = LOCAL_NODE,
) -> None:
    await session.execute(
        cursors.update()
        .where(_cursor_of(cursors, consumer, source, node))
        .values(txid=position[0], id=position[1], updated_at=func.now())
    )


async def read_cursor(
    session: AsyncSession, cursors: Table, consumer: str, source: str, node: str = LOCAL_NODE
) -> Position:
    row = (
        await session.execute(
            select(cursors.c.txid, cursors.c.id).where(_cursor_of(cursors, consumer, source, node))
        )
    ).first()
    return START if row is None else (str(row.txid), int(row.id))


async def process_batch(session: AsyncSession, consumer: Consumer, source: str) -> BatchResult:
    """One batch from `source`'s outbox into the caller's transaction (caller commits).
    Reads before locking the cursor: an idle poll writes nothing, and the read runs before
    this transaction holds an xid of its own (which would hold other readers back)."""
    position = await read_cursor(session, consumer.cursors, consumer.name, source)
    events, held_back = await read_after(
        session, source=source, after=position, limit=consumer.batch_size
    )
    if not events:
        return BatchResult(held_back=held_back)
    locked = await lock_cursor(session, consumer.cursors, consumer.name, source)
    if locked != position:  # moved meanwhile (a rebuild): read again from where it is
        events, held_back = await read_after(
            session, source=source, after=locked, limit=consumer.batch_size
        )
    if consumer.apply_batch is not None and events:
        await consumer.apply_batch(session, events)
    else:
        for event in events:
            await consumer.apply(session, event)
    if events:
        await save_cursor(session, consumer.cursors, consumer.name, source, events[-1].position)
    return BatchResult(
        applied=len(events), full=len(events) == consumer.batch_size, held_back=held_back
    )


async def catch_up(
    sessionmaker: async_sessionmaker[AsyncSession],
    consumer: Consumer,
    *,
    sources: Collection[str] | None = None,
    held_back: set[str] | None = None,
) -> BatchResult:
    """Apply every committed event not applied yet (of `sources`, else of all the
    consumer's), batch by batch, one transaction each. The sources where newer rows wait
    for a running transaction are added to `held_back`."""
    total = BatchResult()
    for source in consumer.sources:
        if sources is not None and source not in sources:
            continue
        while True:
            async with sessionmaker() as session, session.begin():
                result = await process_batch(session, consumer, source)
            total.applied += result.applied
            if result.held_back:
                total.held_back = True
                if held_back is not None:
                    held_back.add(source)
            if not result.full:
                break
    return total


async def reset_cursors(session: AsyncSession, consumer: Consumer) -> None:
    """Back to the start of every source (the caller empties the read model alongside)."""
    for source in consumer.sources:
        await lock_cursor(session, consumer.cursors, consumer.name, source)
        await save_cursor(session, consumer.cursors, consumer.name, source, START)


def advisory_key(kind: str, name: str) -> str:
    return f"lianxin.{kind}:{name}"


async def try_lock(conn: asyncpg.Connection, key: str) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key))


async def exclusive_connection(dsn: str, key: str, *, standby_poll_s: float) -> asyncpg.Connection:
    """A dedicated connection holding the session advisory lock `key`; waits as a standby
    while another process holds it (it is released when that process's connection ends)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        announced = False
        while not await try_lock(conn, key):
            if not announced:
                log.info("standby: %s is held by another process", key)
                announced = True
            await asyncio.sleep(standby_poll_s)
    except BaseException:
        await conn.close()
        raise
    return conn


async def run_outbox_consumer(
    sessionmaker: async_sessionmaker[AsyncSession],
    consumer: Consumer,
    *,
    dsn: str,
    poll_interval_s: float = 1.0,
    retry_s: float = 0.02,
    batch_window_s: float = BATCH_WINDOW_S,
) -> None:
    """Run `consumer` on the outbox tables until cancelled. An event after a quiet spell is
    read at once; while events keep coming, at most one catch-up starts per
    `batch_window_s`, so a stream of commits is read in batches rather than one
    transaction (and five statements) per event per consumer."""
    backoff = 0.5
    wake = asyncio.Event()
    # The sources to read at the next catch-up: those that notified, those held back.
    due: set[str] = set(consumer.sources)

    def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
        if payload in consumer.sources:
            due.add(payload)
            wake.set()

    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await exclusive_connection(
                dsn, advisory_key("consumer", consumer.name), standby_poll_s=poll_interval_s
            )
            await conn.add_listener(CHANNEL, on_notify)
            due.update(consumer.sources)  # whatever came while not listening
            log.info("consumer %s reading %s from the outbox", consumer.name, consumer.sources)
            pause = retry_s
            while True:
                if conn.is_closed():
                    raise ConnectionError("the listening connection was lost")
                wake.clear()
                started = time.monotonic()
                sources, held = set(due), set[str]()
                due.clear()
                result = await catch_up(sessionmaker, consumer, sources=sources, held_back=held)
                due.update(held)
                backoff = 0.5
                if result.held_back:
                    # A running transaction holds newer rows back (its commit may not notify:
                    # it may write no event, or roll back): look again soon.
                    timeout = pause
                    pause = min(pause * 2, HELD_BACK_MAX_PAUSE_S, poll_interval_s)
                else:
                    timeout, pause = poll_interval_s, retry_s
                try:
                    await asyncio.wait_for(wake.wait(), timeout)
                except TimeoutError:
                    if not result.held_back:  # no word for a while: look at every source
                        due.update(consumer.sources)
                if result.applied:  # busy: let what comes next gather into one batch
                    rest = started + batch_window_s - time.monotonic()
                    if rest > 0:
                        await asyncio.sleep(rest)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("consumer %s failed; retrying in %.1fs", consumer.name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
