"""The transactional outbox: a service writes each domain event into `<schema>.outbox` in the
same transaction as the change it describes (`emit`), so there is no event without its
change and no change without its event. A statement trigger sends `NOTIFY lianxin_outbox`
with the schema name, delivered when the transaction commits.

Readers take events in commit-safe order (`read_after`): by `(txid, id)`, only from
transactions older than the reader's snapshot xmin. Every transaction with an xid below
xmin has finished, so once a reader has moved its cursor past a row no row can still
appear behind it, even when a transaction with a lower id commits after a higher one. A
long-running writer holds delivery back for as long as it runs (statement and
idle-in-transaction timeouts bound it)."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic_core import to_json, to_jsonable_python
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    cast,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import UserDefinedType

from common.bulk import copy_records, new_ids
from common.db import NAMING_CONVENTION, insert_into

CHANNEL = "lianxin_outbox"
# Never in an event: the personal data only the owning service keeps (see API.md).
SENSITIVE_KEYS = frozenset(
    {
        "id_number",
        "id_number_masked",
        "phone",
        "phone_masked",
        "contact_phone",
        "address",
        "notes",
        "place",
        "whereabouts",
    }
)


class Xid8(UserDefinedType[str]):
    """PostgreSQL `xid8` (64-bit transaction id). asyncpg has no codec for it, so values
    travel as text: bound through `CAST(CAST(:v AS text) AS xid8)`, read as `txid::text`."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(cast(bindvalue, Text), self)

    def column_expression(self, column: Any) -> Any:
        return cast(column, Text)


def _register_xid8_reflection() -> None:
    from sqlalchemy.dialects.postgresql.base import ischema_names

    ischema_names["xid8"] = Xid8


_register_xid8_reflection()

# The position of a reader in an outbox: (txid as text, id). Start of the stream: ("0", 0).
Position = tuple[str, int]
START: Position = ("0", 0)


def outbox_table(metadata: MetaData, schema: str) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("event_id", PGUUID(as_uuid=True), nullable=False),
        Column("txid", Xid8(), nullable=False, server_default=text("pg_current_xact_id()")),
        Column("type", String(64), nullable=False),
        Column("aggregate_type", String(32), nullable=False),
        Column("aggregate_id", PGUUID(as_uuid=True), nullable=False),
        Column("aggregate_version", BigInteger, nullable=False),
        # The aggregate's distribution key (common/sharding.py) when the event was written.
        Column("shard_key", PGUUID(as_uuid=True), nullable=True),
        # The partition column (UTC days: common/events/outbox_partitions.py), so in the keys.
        Column(
            "occurred_at",
            DateTime(timezone=True),
            primary_key=True,
            nullable=False,
            server_default=func.now(),
        ),
        # The org paths the event concerns (scopes subscriptions to a subtree).
        Column("org_paths", ARRAY(Text), nullable=False, server_default="{}"),
        Column("payload", JSONB, nullable=False),
        Index(None, "txid", "id"),
        UniqueConstraint("event_id", "occurred_at"),
        schema=schema,
        postgresql_partition_by="RANGE (occurred_at)",
    )


def outbox_sql(schema: str) -> list[str]:
    """DDL for the migration creating `<schema>.outbox`: NOTIFY on insert (once per
    statement; PostgreSQL folds equal notifications of one transaction) and no UPDATE —
    events are immutable (DELETE stays possible for retention)."""
    return [
        f"""CREATE FUNCTION {schema}.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('{CHANNEL}', '{schema}'); RETURN NULL; END $$""",
        f"""CREATE TRIGGER outbox_notify AFTER INSERT ON {schema}.outbox
        FOR EACH STATEMENT EXECUTE FUNCTION {schema}.outbox_notify()""",
        f"""CREATE FUNCTION {schema}.outbox_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'events in {schema}.outbox are immutable'
            USING ERRCODE = '42501'; END $$""",
        f"""CREATE TRIGGER outbox_no_update BEFORE UPDATE ON {schema}.outbox
        FOR EACH ROW EXECUTE FUNCTION {schema}.outbox_immutable()""",
    ]


def drop_outbox_sql(schema: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS outbox_no_update ON {schema}.outbox",
        f"DROP FUNCTION IF EXISTS {schema}.outbox_immutable()",
        f"DROP TRIGGER IF EXISTS outbox_notify ON {schema}.outbox",
        f"DROP FUNCTION IF EXISTS {schema}.outbox_notify()",
    ]


@functools.cache
def source_outbox(schema: str) -> Table:
    """The outbox of `schema` as a reader sees it (its own MetaData: readers in another
    service never import the producer's models)."""
    return outbox_table(MetaData(naming_convention=NAMING_CONVENTION), schema)


class SensitiveField(ValueError):
    """An event payload carried a field no event may carry."""


# Values that hold no keys: not descended into (bulk writes check 20,000 payloads).
_LEAVES = (str, int, float, bool, type(None), uuid.UUID, datetime, date)
_LEAF_TYPES = frozenset(_LEAVES)  # the exact types: a set lookup before `isinstance`


def _refuse_sensitive(value: Any, where: str = "payload") -> None:
    kind = type(value)
    if kind is dict or (kind is not list and kind is not tuple and isinstance(value, Mapping)):
        if not SENSITIVE_KEYS.isdisjoint(value.keys()):
            key = next(k for k in value if k in SENSITIVE_KEYS)
            raise SensitiveField(f"{where}.{key} may not appear in an event")
        for key, item in value.items():
            if type(item) not in _LEAF_TYPES and not isinstance(item, _LEAVES):
                _refuse_sensitive(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if type(item) not in _LEAF_TYPES and not isinstance(item, _LEAVES):
                _refuse_sensitive(item, f"{where}[{i}]")


async def emit(
    session: AsyncSession,
    table: Table,
    *,
    type: str,
    aggregate_type: str,
    aggregate_id: uuid.UUID,
    aggregate_version: int,
    payload: Mapping[str, Any],
    org_paths: Iterable[str | None] = (),
    shard_key: uuid.UUID | None = None,
) -> uuid.UUID:
    """Append one event to the caller's transaction; returns its id."""
    _refuse_sensitive(payload)
    event_id = uuid.uuid4()
    await session.execute(
        insert_into(table),
        {
            "event_id": event_id,
            "type": type,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "aggregate_version": aggregate_version,
            "org_paths": sorted({p for p in org_paths if p}),
            "shard_key": shard_key,
            "payload": to_jsonable_python(dict(payload)),
        },
    )
    return event_id


@dataclass(slots=True)  # not frozen: bulk writes make 20,000 at a time, and freezing costs
class EventRow:  # a `object.__setattr__` per field
    """One event to append with `emit_many`."""

    type: str
    aggregate_type: str
    aggregate_id: uuid.UUID
    aggregate_version: int
    payload: Mapping[str, Any]
    org_paths: Iterable[str | None] = ()
    shard_key: uuid.UUID | None = None


# A sensitive key as compact JSON writes it. In `to_json`'s output the text `"phone":` is
# only ever that key: inside a string value its quotes are escaped (`\"phone\":`).
_SENSITIVE_JSON = re.compile(
    b'"(?=['  # (the first letters first: a quote followed by another letter is passed over)
    + "".join(sorted({key[0] for key in SENSITIVE_KEYS})).encode()
    + b"])("
    + b"|".join(re.escape(key.encode()) for key in sorted(SENSITIVE_KEYS))
    + b')":'
)

_EVENT_COLUMNS = (
    "event_id",
    "type",
    "aggregate_type",
    "aggregate_id",
    "aggregate_version",
    "org_paths",
    "shard_key",
    "payload",
)


def _payload_text(payload: Mapping[str, Any]) -> str:
    """The payload as its JSON text, refused (`SensitiveField`) when an object in it, at
    any depth, has a sensitive key: the text searched in C, the structure walked only to
    name the offending field."""
    data = to_json(payload if type(payload) is dict else dict(payload))
    found = _SENSITIVE_JSON.search(data)
    if found is not None:
        _refuse_sensitive(payload)  # names where it is
        key = found[1].decode()
        raise SensitiveField(f"payload carries `{key}`, which may not appear in an event")
    return data.decode()


async def emit_many(session: AsyncSession, table: Table, events: Iterable[EventRow]) -> None:
    """`emit` for many events at once (bulk writes): one `COPY` for the lot. A fresh
    random id per event, as `emit` draws it (drawn here in bulk)."""
    events = list(events)
    records = [
        (
            event_id,
            event.type,
            event.aggregate_type,
            event.aggregate_id,
            event.aggregate_version,
            sorted(set(filter(None, event.org_paths))),
            event.shard_key,
            _payload_text(event.payload),  # serialized once, checked on the text
        )
        for event, event_id in zip(events, new_ids(len(events)), strict=True)
    ]
    await copy_records(session, table, _EVENT_COLUMNS, records)


@dataclass(frozen=True)
class RowEvents:
    """Events made by the database from rows a transaction has just written, one per id
    given (`emit_rows`): for bulk writes, where building, serializing and sending 20,000
    payloads is most of the work. `rows` is the FROM clause after the ids
    (`unnest(:ids) WITH ORDINALITY AS w(id, n)`), joining the written rows on `w.id`; the
    other fields are SQL expressions over it. The payload's keys are fixed here, so no
    sensitive one can slip in (checked when they are declared)."""

    table: Table
    aggregate_type: str
    rows: str
    aggregate_id: str
    aggregate_version: str
    shard_key: str
    org_paths: tuple[str, str]  # two path expressions (either may be NULL)
    payload: Mapping[str, str]  # key → SQL expression of its value (as `jsonb`)

    def __post_init__(self) -> None:
        if not all(key.isidentifier() for key in self.payload):
            raise ValueError("payload keys are plain names (they become column aliases)")
        refused = SENSITIVE_KEYS.intersection(self.payload)
        if refused:
            raise SensitiveField(f"payload.{min(refused)} may not appear in an event")

    @functools.cached_property
    def statement(self) -> TextClause:
        # The paths as `emit` stores them: without NULLs and repeats, in code-point order.
        a, b = (f'CAST({p} AS text) COLLATE "C"' for p in self.org_paths)
        paths = (
            f"CASE WHEN {a} IS NULL AND {b} IS NULL THEN CAST('{{}}' AS text[]) "
            f"WHEN {b} IS NULL OR {a} = {b} THEN ARRAY[{a}] WHEN {a} IS NULL THEN ARRAY[{b}] "
            f"WHEN {a} < {b} THEN ARRAY[{a}, {b}] ELSE ARRAY[{b}, {a}] END"
        )
        # One record made JSON (`to_jsonb` of a row: cheaper than `jsonb_build_object`,
        # which looks up the type of every argument again for every row).
        fields = ", ".join(f'{value} AS "{key}"' for key, value in self.payload.items())
        # Expressions and names are this module's callers' code, never input; the ids,
        # the type and the event ids are bound or drawn per row.
        return text(
            f"INSERT INTO {self.table.fullname} (event_id, type, aggregate_type, "  # noqa: S608
            "aggregate_id, aggregate_version, org_paths, shard_key, payload) "
            f"SELECT gen_random_uuid(), CAST(:type AS text), '{self.aggregate_type}', "
            f"{self.aggregate_id}, {self.aggregate_version}, {paths}, {self.shard_key}, "
            f"(SELECT to_jsonb(x) FROM (SELECT {fields}) AS x) "
            f"FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS w(id, n) {self.rows} "
            "ORDER BY w.n"
        )


async def emit_rows(
    session: AsyncSession, events: RowEvents, ids: Iterable[uuid.UUID], *, type: str
) -> None:
    """One `type` event per row of `ids` (in their order), made by the database from the
    row as the transaction sees it now: one statement, whatever the number. An id with no
    row (a caller's mistake) fails the transaction rather than lose its event."""
    wanted = list(ids)
    if not wanted:
        return
    written = await session.execute(events.statement, {"ids": wanted, "type": type})
    made = written.rowcount if isinstance(written, CursorResult) else -1
    if made != len(wanted):
        raise RuntimeError(
            f"{type}: {len(wanted)} ids given, {made} {events.aggregate_type} rows found"
        )


@dataclass(frozen=True)
class Event:
    """One event as consumers see it, whichever transport brought it."""

    source: str  # the producing service's schema
    seq: int  # the outbox row id
    txid: str
    event_id: uuid.UUID
    type: str
    aggregate_type: str
    aggregate_id: uuid.UUID
    aggregate_version: int
    occurred_at: datetime
    org_paths: tuple[str, ...]
    payload: dict[str, Any]
    # The aggregate's distribution key (common/sharding.py); None from an older producer.
    shard_key: uuid.UUID | None = None

    @property
    def position(self) -> Position:
        return (self.txid, self.seq)

    def envelope(self) -> dict[str, Any]:
        """The JSON body published on NATS (and to integrators)."""
        return {
            "id": str(self.event_id),
            "type": self.type,
            "source": self.source,
            "sequence": self.seq,
            "txid": self.txid,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": str(self.aggregate_id),
            "aggregate_version": self.aggregate_version,
            "occurred_at": self.occurred_at.isoformat(),
            "org_paths": list(self.org_paths),
            "shard_key": None if self.shard_key is None else str(self.shard_key),
            "data": self.payload,
        }

    @classmethod
    def from_envelope(cls, body: Mapping[str, Any]) -> Event:
        return cls(
            source=str(body["source"]),
            seq=int(body["sequence"]),
            txid=str(body["txid"]),
            event_id=uuid.UUID(str(body["id"])),
            type=str(body["type"]),
            aggregate_type=str(body["aggregate_type"]),
            aggregate_id=uuid.UUID(str(body["aggregate_id"])),
            aggregate_version=int(body["aggregate_version"]),
            occurred_at=datetime.fromisoformat(str(body["occurred_at"])),
            org_paths=tuple(body.get("org_paths") or ()),
            payload=dict(body["data"]),
            shard_key=uuid.UUID(str(body["shard_key"])) if body.get("shard_key") else None,
        )


async def read_after(
    session: AsyncSession, *, source: str, after: Position, limit: int
) -> tuple[list[Event], bool]:
    """Up to `limit` committed events of `source` after `after`, in commit-safe order, and
    whether later rows exist that are held back by a transaction still running."""
    table = source_outbox(source)
    xmin = func.pg_snapshot_xmin(func.pg_current_snapshot())
    query = (
        select(table, (table.c.txid < xmin).label("visible"))
        .where(
            tuple_(table.c.txid, table.c.id) > tuple_(cast(cast(after[0], Text), Xid8()), after[1])
        )
        .order_by(table.c.txid, table.c.id)
        .limit(limit)
    )
    rows = (await session.execute(query)).mappings().all()
    events: list[Event] = []
    for row in rows:
        if not row["visible"]:
            return events, True
        events.append(
            Event(
                source=source,
                seq=row["id"],
                txid=row["txid"],
                event_id=row["event_id"],
                type=row["type"],
                aggregate_type=row["aggregate_type"],
                aggregate_id=row["aggregate_id"],
                aggregate_version=row["aggregate_version"],
                occurred_at=row["occurred_at"],
                org_paths=tuple(row["org_paths"]),
                payload=row["payload"],
                shard_key=row["shard_key"],
            )
        )
    return events, False
