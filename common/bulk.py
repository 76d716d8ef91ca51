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
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

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


def _encoder(column: Column[Any]) -> Any:
    kind = column.type
    if isinstance(kind, ARRAY):
        return _array_literal
    if isinstance(kind, JSON):  # JSONB too
        return lambda v: None if v is None else to_json(v).decode()
    return None


def _checked(value: Any, element: str) -> Any:
    if element == "uuid" and isinstance(value, str):
        return uuid.UUID(value)
    if element == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


def insert_statement(
    table: Table, columns: Sequence[str], *, on_conflict: str = "", returning: str = ""
) -> str:
    """The statement for `columns` (`:c0`, `:c1`, ... one array each)."""
    sends, selects = [], []
    for i, name in enumerate(columns):
        element, cast = _pg_type(table.c[name])
        sends.append(f"CAST(:c{i} AS {element}[])")
        selects.append(f"u.c{i}::{cast}" if cast else f"u.c{i}")
    target = f"{table.schema}.{table.name}" if table.schema else table.name
    names = ", ".join(f'"{c}"' for c in columns)
    aliases = ", ".join(f"c{i}" for i in range(len(columns)))
    # Names come from the Table; every value is a bind parameter.
    sql = (
        f"INSERT INTO {target} ({names}) SELECT {', '.join(selects)} "  # noqa: S608
        f"FROM unnest({', '.join(sends)}) AS u({aliases})"
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
) -> list[Any]:
    """Insert `rows` (each with the same keys) in one statement; the `returning` rows."""
    if not rows:
        return []
    columns = list(rows[0].keys())
    params: dict[str, list[Any]] = {}
    for i, name in enumerate(columns):
        column = table.c[name]
        encode = _encoder(column)
        element, _ = _pg_type(column)
        if encode is not None:
            params[f"c{i}"] = [encode(r[name]) for r in rows]
        else:
            params[f"c{i}"] = [_checked(r[name], element) for r in rows]
    sql = insert_statement(table, columns, on_conflict=on_conflict, returning=returning)
    result = await session.execute(text(sql), params)
    return list(result) if returning else []
