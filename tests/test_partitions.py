"""The append-only tables partitioned by time (common/partitions.py), on a scratch database
migrated for the test. The outbox by UTC day (common/events/outbox_partitions.py): events
land in their day's partition, the coming days are created ahead, a day no one created still
takes writes, old days go only once relayed, the migration keeps every event and its id. The
audit log by UTC month: records land in their month, it stays append-only, the migration
keeps every record."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession

from common.audit import AUDIT_MONTHS_AHEAD
from common.db import create_engine, make_sessionmaker, plain_url
from common.events import outbox_partitions
from common.events.outbox import emit
from common.events.runtime import EventRuntime
from services.registry.models import consumer_cursors as registry_cursors
from services.registry.models import outbox as registry_outbox
from tests.pgutil import drop_database, fresh_database
from tools import migrate

SCHEMA = "registry"
RELAY = f"relay.nats.{SCHEMA}"


@pytest.fixture
def scratch_url(server_url: str) -> Iterator[str]:
    url, name = fresh_database(server_url)
    yield url
    drop_database(server_url, name)


@pytest.fixture
def migrated(scratch_url: str) -> str:
    command.upgrade(migrate.config(SCHEMA, scratch_url), "head")
    return scratch_url


def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(plain_url(url))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def partitions(url: str, table: str = "registry.outbox") -> set[str]:
    rows = sql(
        url,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass",
        table,
    )
    return {r["relname"] for r in rows}


def day_name(day: datetime) -> str:
    return f"outbox_p{day:%Y%m%d}"


def maintain(url: str, retention_days: int | None) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        engine = create_engine(url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await outbox_partitions.maintain(
                    session, SCHEMA, retention_days=retention_days
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def emit_one(url: str) -> uuid.UUID:
    async def run() -> uuid.UUID:
        engine = create_engine(url, pool_size=1)
        try:
            session: AsyncSession
            async with make_sessionmaker(engine)() as session, session.begin():
                return await emit(
                    session,
                    registry_outbox,
                    type="org.updated",
                    aggregate_type="org",
                    aggregate_id=uuid.uuid4(),
                    aggregate_version=1,
                    payload={"name": "测试"},
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def put_event(url: str, at: datetime) -> int:
    """An event written `at` (as if then); its id."""
    rows = sql(
        url,
        "INSERT INTO registry.outbox (event_id, type, aggregate_type, aggregate_id, "
        "aggregate_version, occurred_at, payload) "
        "VALUES (gen_random_uuid(), 'org.updated', 'org', gen_random_uuid(), 1, $1, '{}') "
        "RETURNING id",
        at,
    )
    return int(rows[0]["id"])


def relay_cursor_at(url: str, event_id: int) -> None:
    """The relay's cursor just past event `event_id` (the position of that row)."""
    sql(
        url,
        "INSERT INTO registry.consumer_cursors (consumer, source, txid, id) "
        "SELECT $1, 'registry', txid, id FROM registry.outbox WHERE id = $2",
        RELAY,
        event_id,
    )


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def test_events_land_in_their_day_and_days_ahead_exist(migrated: str) -> None:
    first = today()
    made = partitions(migrated)
    ahead = {day_name(first + timedelta(days=d)) for d in range(outbox_partitions.AHEAD_DAYS + 1)}
    assert ahead | {"outbox_history", "outbox_default"} <= made

    event_id = emit_one(migrated)
    where = sql(
        migrated,
        "SELECT tableoid::regclass::text AS part FROM registry.outbox WHERE event_id = $1",
        event_id,
    )
    assert where[0]["part"] == f"registry.{day_name(datetime.now(UTC))}"

    # Upkeep puts back a day that went missing, and is a no-op after.
    sql(migrated, f"DROP TABLE registry.{day_name(first + timedelta(days=3))}")
    assert maintain(migrated, None) == (1, 0)
    assert maintain(migrated, None) == (0, 0)
    assert partitions(migrated) == made


def test_a_day_without_partition_takes_writes_in_the_default(migrated: str) -> None:
    far = today() + timedelta(days=40)
    event = put_event(migrated, far + timedelta(hours=5))
    assert (
        sql(
            migrated,
            "SELECT tableoid::regclass::text AS part FROM registry.outbox WHERE id = $1",
            event,
        )[0]["part"]
        == "registry.outbox_default"
    )
    # Creating that day now would strand the row: it is left where it is.
    made = sql(migrated, "SELECT registry.outbox_add_partitions($1, 1) AS n", far.date())
    assert made[0]["n"] == 0 and day_name(far) not in partitions(migrated)
    assert len(sql(migrated, "SELECT 1 FROM registry.outbox WHERE id = $1", event)) == 1


def test_old_days_go_only_once_relayed_and_retention_is_set(migrated: str) -> None:
    # Days well before the retention: the history partition made way for daily ones.
    sql(migrated, "DROP TABLE registry.outbox_history")
    old = today() - timedelta(days=20)
    sql(migrated, "SELECT registry.outbox_add_partitions($1, 3)", old.date())
    relayed = put_event(migrated, old + timedelta(hours=1))
    also_relayed = put_event(migrated, old + timedelta(days=1, hours=1))
    not_relayed = put_event(migrated, old + timedelta(days=2, hours=1))
    recent = put_event(migrated, today() - timedelta(days=1) + timedelta(hours=1))
    assert relayed < also_relayed < not_relayed < recent

    # No relay (events read straight from the outbox): nothing goes, retention or not.
    assert maintain(migrated, 7) == (0, 0)
    relay_cursor_at(migrated, also_relayed)
    # No retention set: everything stays.
    assert maintain(migrated, None) == (0, 0)

    assert maintain(migrated, 7) == (0, 2)
    left = partitions(migrated)
    assert day_name(old) not in left and day_name(old + timedelta(days=1)) not in left
    assert day_name(old + timedelta(days=2)) in left  # holds an event not yet relayed
    ids = {r["id"] for r in sql(migrated, "SELECT id FROM registry.outbox")}
    assert ids == {not_relayed, recent}


def test_partitioning_keeps_every_event_and_its_id(scratch_url: str) -> None:
    cfg = migrate.config(SCHEMA, scratch_url)
    command.upgrade(cfg, "0003_registry")
    before = [put_event(scratch_url, datetime.now(UTC) - timedelta(days=d)) for d in (30, 1, 0)]
    command.upgrade(cfg, "0004_registry_outbox_key")
    kept = sql(scratch_url, "SELECT id, occurred_at FROM registry.outbox ORDER BY id")
    assert [r["id"] for r in kept] == before
    assert "outbox_history" in partitions(scratch_url)
    # The identity goes on after the last id the plain table gave.
    assert put_event(scratch_url, datetime.now(UTC)) > before[-1]

    command.downgrade(cfg, "0003_registry")
    plain = sql(scratch_url, "SELECT id FROM registry.outbox ORDER BY id")
    assert [r["id"] for r in plain][:3] == before and len(plain) == 4
    kind = sql(
        scratch_url,
        "SELECT relkind::text AS k FROM pg_class WHERE oid = 'registry.outbox'::regclass",
    )
    assert kind[0]["k"] == "r"  # a plain table again


def put_record(url: str, at: datetime) -> uuid.UUID:
    record = uuid.uuid4()
    sql(
        url,
        "INSERT INTO registry.audit_log (id, at, actor, role, action, resource) "
        "VALUES ($1, $2, 'auditor-test', 'admin', 'read', 'member')",
        record,
        at,
    )
    return record


def test_audit_records_land_in_their_month_and_stay_append_only(migrated: str) -> None:
    now = datetime.now(UTC)
    months = partitions(migrated, "registry.audit_log")
    assert (
        f"audit_log_p{now:%Y%m}" in months and {"audit_log_history", "audit_log_default"} <= months
    )
    # Two years of months are there before anyone needs them.
    assert len([m for m in months if m.startswith("audit_log_p")]) == AUDIT_MONTHS_AHEAD
    record = put_record(migrated, now)
    where = sql(
        migrated,
        "SELECT tableoid::regclass::text AS part FROM registry.audit_log WHERE id = $1",
        record,
    )
    assert where[0]["part"] == f"registry.audit_log_p{now:%Y%m}"
    for statement in (
        "UPDATE registry.audit_log SET actor = 'someone else'",
        "DELETE FROM registry.audit_log",
        "TRUNCATE registry.audit_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            sql(migrated, statement)
    assert len(sql(migrated, "SELECT 1 FROM registry.audit_log WHERE actor = 'auditor-test'")) == 1


def test_partitioning_keeps_every_audit_record(scratch_url: str) -> None:
    cfg = migrate.config(SCHEMA, scratch_url)
    command.upgrade(cfg, "0003_registry")
    before = {put_record(scratch_url, datetime.now(UTC) - timedelta(days=d)) for d in (400, 31, 0)}
    command.upgrade(cfg, "0004_registry_outbox_key")
    assert {r["id"] for r in sql(scratch_url, "SELECT id FROM registry.audit_log")} == before
    command.downgrade(cfg, "0003_registry")
    assert {r["id"] for r in sql(scratch_url, "SELECT id FROM registry.audit_log")} == before
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        sql(scratch_url, "DELETE FROM registry.audit_log")


def test_a_service_keeps_its_partitions_coming(migrated: str) -> None:
    """The upkeep every producing service runs (common/events/runtime.py) puts back the
    outbox's coming days and the audit log's coming months."""
    tomorrow = day_name(today() + timedelta(days=1))
    next_month = f"audit_log_p{(today().replace(day=1) + timedelta(days=32)):%Y%m}"
    sql(migrated, f"DROP TABLE registry.{tomorrow}, registry.{next_month}")

    async def run() -> None:
        engine = create_engine(migrated, pool_size=2)
        conn = await asyncpg.connect(plain_url(migrated))
        runtime = EventRuntime(
            sessionmaker=make_sessionmaker(engine),
            dsn=plain_url(migrated),
            consumers=[],
            schema=SCHEMA,
            cursors=registry_cursors,
            upkeep_every_s=3600,
        )
        runtime.start()
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                found = await conn.fetchval(
                    "SELECT count(*) FROM pg_class WHERE relnamespace = 'registry'::regnamespace "
                    "AND relname = ANY($1::text[])",
                    [tomorrow, next_month],
                )
                if found == 2:
                    break
                assert asyncio.get_running_loop().time() < deadline, "no upkeep within 20 s"
                await asyncio.sleep(0.05)
        finally:
            await runtime.stop()
            await conn.close()
            await engine.dispose()

    asyncio.run(run())
    # Claimed once for the period: the job ran a single time.
    query = "SELECT runs FROM registry.scheduled_jobs WHERE name = 'registry.partitions'"
    assert sql(migrated, query)[0]["runs"] == 1
