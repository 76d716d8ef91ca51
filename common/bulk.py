"""Set-based inserts for bulk writes: many rows in ONE statement,
`INSERT ... SELECT FROM unnest($1::uuid[], $2::text[], ...)`, one array per column.

SQLAlchemy's executemany of dictionaries processes every parameter of every row in Python
(20,000 rows × 15 columns is seconds); here each column is one array handed to asyncpg,
which encodes it in C. The statement runs on the session's connection, inside its
transaction, like any other.

Columns whose values are themselves arrays or JSON travel as text (one PostgreSQL array
literal, or one JSON document, per row) and are cast back in the SELECT: `unnest` would
flatten an array of arrays."""

from __future__ import annotations

import datetime as dt
import gc
import os
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import repeat
from operator import is_, itemgetter
from typing import Any

from asyncpg.pgproto.pgproto import UUID as PgUUID
from pydantic_core import to_json
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    SmallInteger,
    Table,
    exc,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import JSON, TypeEngine

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _pg_type(column: Column[Any]) -> tuple[str, str | None]:
    """(the element type the array is sent as, the cast back to the column's type)."""
    kind: TypeEngine[Any] = column.type
    if isinstance(kind, ARRAY):
        return "text", kind.compile(dialect=_PG)
    if isinstance(kind, JSONB):
        return "text", "jsonb"
    if isinstance(kind, JSON):
        return "text", "json"
    if isinstance(kind, UUID):
        return "uuid", None
    if isinstance(kind, BigInteger):
        return "bigint", None
    if isinstance(kind, SmallInteger | Integer):
        return "integer", None
    if isinstance(kind, Boolean):
        return "boolean", None
    if isinstance(kind, DateTime):
        return ("timestamptz" if kind.timezone else "timestamp"), None
    if isinstance(kind, Date):
        return "date", None
    if isinstance(kind, LargeBinary):
        return "bytea", None
    spec = getattr(kind, "get_col_spec", None)
    if spec is not None:  # user-defined (ltree): as text, cast back
        return "text", str(spec())
    return "text", None


def _array_literal(values: Any) -> str | None:
    if values is None:
        return None
    items = []
    for v in values:
        if v is None:
            items.append("NULL")
        else:
            s = str(v).replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'"{s}"')
    return "{" + ",".join(items) + "}"


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return to_json(value).decode()


def _encoder(column: Column[Any]) -> Any:
    kind = column.type
    if isinstance(kind, ARRAY):
        return _array_literal
    if isinstance(kind, JSON):  # JSONB too
        return _json_text
    return None


def _checked(value: Any, element: str) -> Any:
    if element == "uuid" and isinstance(value, str):
        return uuid.UUID(value)
    if element == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


def _column(rows: Sequence[Mapping[str, Any]], name: str, element: str) -> list[Any]:
    """One column's values; text given for a uuid or date column is parsed here."""
    values = list(map(itemgetter(name), rows))
    if element in ("uuid", "date") and any(issubclass(t, str) for t in set(map(type, values))):
        return [_checked(v, element) for v in values]
    return values


def new_ids(n: int) -> list[uuid.UUID]:
    """`n` fresh random UUIDs, version 4 as `uuid.uuid4()` draws them, from one call to the
    system's random source: for the rows of a bulk write (`uuid4()` costs microseconds a
    call). They come as the driver's own UUID type (a `uuid.UUID`), which it sends
    without converting."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes([b & 0x0F | 0x40 for b in raw[6::16]])  # version 4
    raw[8::16] = bytes([b & 0x3F | 0x80 for b in raw[8::16]])  # the RFC 4122 variant
    data = bytes(raw)
    return [PgUUID(data[i : i + 16]) for i in range(0, len(data), 16)]


_gc_holds = 0  # nested `gc_paused` blocks in this process (the event loop's one thread)
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection for the duration of one bulk operation.

    Tens of thousands of rows allocate hundreds of thousands of small containers (row
    dicts, results, event payloads); each few hundred allocations trigger a collection and
    the full ones walk the whole heap: over a third of a 20,000-row sync's time. Nothing
    here makes cycles worth collecting mid-request, so collection waits until the last
    nested (or concurrent) bulk block ends; reference counting still frees everything
    as usual."""
    global _gc_holds, _gc_was_enabled
    if _gc_holds == 0:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_holds += 1
    try:
        yield
    finally:
        _gc_holds -= 1
        if _gc_holds == 0 and _gc_was_enabled:
            gc.enable()


def insert_statement(
    table: Table,
    columns: Sequence[str],
    *,
    on_conflict: str = "",
    returning: str = "",
    constants: Collection[str] = (),
    computed: Mapping[str, str] | None = None,
) -> str:
    """The statement for `columns` (`:c0`, `:c1`, ... one array each; one value for each
    of the `constants`, the same in every row), then the `computed` columns, each the SQL
    expression given (evaluated per row). At least one column must be an array."""
    sends, selects, aliases = [], [], []
    for i, name in enumerate(columns):
        element, cast = _pg_type(table.c[name])
        if name in constants:
            value = f"CAST(:c{i} AS {element})"
        else:
            sends.append(f"CAST(:c{i} AS {element}[])")
            aliases.append(f"c{i}")
            value = f"u.c{i}"
        selects.append(f"{value}::{cast}" if cast else value)
    for name, expression in (computed or {}).items():
        table.c[name]  # a column of the table (KeyError otherwise)
        selects.append(expression)
    target = f"{table.schema}.{table.name}" if table.schema else table.name
    names = ", ".join(f'"{c}"' for c in [*columns, *(computed or {})])
    # Names come from the Table; every value is a bind parameter.
    sql = (
        f"INSERT INTO {target} ({names}) SELECT {', '.join(selects)} "  # noqa: S608
        f"FROM unnest({', '.join(sends)}) AS u({', '.join(aliases)})"
    )
    if on_conflict:
        sql += f" {on_conflict}"
    if returning:
        sql += f" RETURNING {returning}"
    return sql


async def insert_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    on_conflict: str = "",
    returning: str = "",
    computed: Mapping[str, str] | None = None,
) -> list[Any]:
    """Insert `rows` (each with the same keys) in one statement; the `returning` rows.
    `computed`: columns the database fills per row, by a fixed SQL expression of the
    caller's (`{"id": "gen_random_uuid()"}`), never by a value from the rows.

    A column holding the very same object in every row (a status, the actor, NULL) is
    sent once, not as an array of 20,000 copies that the driver checks one by one."""
    if not rows:
        return []
    columns = list(rows[0].keys())
    params: dict[str, Any] = {}
    constants: set[str] = set()
    first = rows[0]
    for i, name in enumerate(columns):
        column = table.c[name]
        encode = _encoder(column)
        element, _ = _pg_type(column)
        value = first[name]
        same = len(rows) > 1 and len(constants) < len(columns) - 1
        if same and all(map(is_, map(itemgetter(name), rows), repeat(value))):
            constants.add(name)
            params[f"c{i}"] = encode(value) if encode is not None else _checked(value, element)
        elif encode is not None:
            params[f"c{i}"] = list(map(encode, map(itemgetter(name), rows)))
        else:
            params[f"c{i}"] = _column(rows, name, element)
    sql = insert_statement(
        table,
        columns,
        on_conflict=on_conflict,
        returning=returning,
        constants=constants,
        computed=computed,
    )
    result = await session.execute(text(sql), params)
    return list(result) if returning else []


async def copy_rows(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (each with the same keys) with one binary `COPY` (`copy_records`): for
    appends that need neither `ON CONFLICT` nor `RETURNING` (events, audit entries,
    records whose ids the caller drew). Values as for `insert_rows`."""
    if not rows:
        return
    names = list(rows[0].keys())
    columns: list[Any] = []
    for name in names:
        column = table.c[name]
        if isinstance(column.type, JSON):  # JSONB too: the driver's codec takes the text
            columns.append(list(map(_json_text, map(itemgetter(name), rows))))
        else:  # arrays as lists: COPY's binary format nests them
            columns.append(_column(rows, name, _pg_type(column)[0]))
    await copy_records(session, table, names, list(zip(*columns, strict=True)))


async def copy_skipping_conflicts(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]], *, on_conflict: str
) -> list[Mapping[str, Any]]:
    """Insert `rows`, skipping those that conflict with a row already there (`on_conflict`:
    `ON CONFLICT ... DO NOTHING`); the rows inserted, with the keys given. The usual case,
    no conflict, is one COPY (`copy_rows`) in a savepoint; when a row does conflict (a
    concurrent writer got there first) the savepoint is rolled back and the rows go in
    through `insert_rows` with `on_conflict`, which skips that one."""
    if not rows:
        return []
    try:
        async with session.begin_nested():
            await copy_rows(session, table, rows)
        return list(rows)
    except exc.IntegrityError:
        pass  # a conflict, or a row the INSERT refuses in the same words
    names = ", ".join(f'"{name}"' for name in rows[0])
    inserted = await insert_rows(session, table, rows, on_conflict=on_conflict, returning=names)
    return [row._mapping for row in inserted]


async def copy_records(
    session: AsyncSession, table: Table, columns: Sequence[str], records: Sequence[tuple[Any, ...]]
) -> None:
    """Insert `records` (one tuple of values a row, in the order of `columns`, each as the
    driver sends it: JSON as its text, arrays as lists) with one binary `COPY`, on the
    session's connection and inside its transaction. Columns left out take their
    defaults; row and statement triggers fire as for an INSERT.

    Cheaper than `insert_rows` at both ends: the driver encodes each value once by its
    column's type, without checking every element of 20 arrays for nesting, and the
    server inserts in batches without an executor row per value. A failure raises the
    driver's error as SQLAlchemy's (`sqlalchemy.exc.DBAPIError` and its kinds) and leaves
    the transaction to be rolled back, as any failed statement does."""
    if not records:
        return
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapted: Any = raw.dbapi_connection  # SQLAlchemy's adapter of the asyncpg connection
    try:
        # As the adapter runs a statement: one at a time, in the session's transaction
        # (begun here when COPY is the first statement).
        async with adapted._execute_mutex:
            if adapted._transaction is None:
                await adapted._start_transaction()
            await adapted._connection.copy_records_to_table(
                table.name, schema_name=table.schema, columns=list(columns), records=records
            )
    except Exception as error:  # the driver's: raised as the DBAPI's, then SQLAlchemy's
        try:
            adapted._handle_exception(error)
        except Exception as dbapi_error:
            raise exc.DBAPIError.instance(
                f"COPY {table.fullname}", None, dbapi_error, type(dbapi_error)
            ) from error
        raise
