"""`common.bulk.insert_rows`: many rows in one set-based statement, every column type the
bulk writers use (uuid, text, bigint, date, bytea, jsonb, text[]), NULLs kept, conflicts
skipped, and the inserted rows returned. `copy_rows`: the same rows through one COPY, in the
session's transaction, its failures raised as SQLAlchemy's."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from common.bulk import copy_rows, copy_skipping_conflicts, gc_paused, insert_rows
from common.db import make_sessionmaker

metadata = MetaData()
things = Table(
    "bulk_things",
    metadata,
    Column("id", PGUUID(as_uuid=True), primary_key=True),
    Column("name", String(50)),
    Column("n", BigInteger),
    Column("born", Date),
    Column("blob", LargeBinary),
    Column("data", JSONB),
    Column("tags", ARRAY(Text)),
)


def _rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {
            "id": uuid.uuid4(),
            "name": f'名字 "{i}", \\ {{x}}',
            "n": i,
            "born": date(1970, 1, 1 + i % 28),
            "blob": bytes([i % 256]) * 3,
            "data": {"i": i, "id": uuid.UUID(int=i), "nested": [{"on": date(2000, 1, 1)}]},
            "tags": ["a,b", 'q"uote', None] if i % 2 else [],
        }
        for i in range(500)
    ]
    rows[7] |= {"name": None, "data": None, "tags": None}
    return rows


def _assert_stored(stored: dict[uuid.UUID, object], rows: list[dict[str, object]]) -> None:
    assert len(stored) == len(rows)
    for row in rows:
        got: Any = stored[row["id"]]  # type: ignore[index]
        assert got.name == row["name"] and got.n == row["n"] and got.born == row["born"]
        assert got.blob == row["blob"]
        assert got.tags == row["tags"]
    got = stored[rows[1]["id"]]  # type: ignore[index]
    assert got.data == {"i": 1, "id": str(uuid.UUID(int=1)), "nested": [{"on": "2000-01-01"}]}
    assert stored[rows[7]["id"]].data is None  # type: ignore[index, attr-defined]


async def test_rows_go_in_as_given(db: async_sessionmaker[AsyncSession]) -> None:
    rows = _rows()
    async with db() as session:
        await session.execute(
            text(
                "CREATE TEMP TABLE bulk_things (id uuid PRIMARY KEY, "
                "name varchar(50), n bigint, born date, blob bytea, "
                "data jsonb, tags text[])"
            )
        )
        returned = await insert_rows(session, things, rows, returning="id")
        assert {r.id for r in returned} == {r["id"] for r in rows}
        # A conflicting row is skipped when asked, and not returned.
        again = await insert_rows(
            session, things, rows[:3], on_conflict="ON CONFLICT DO NOTHING", returning="id"
        )
        assert again == []
        stored = {r.id: r for r in await session.execute(select(things))}
    _assert_stored(stored, rows)


@pytest.fixture
async def copy_table(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """`bulk_things` as a committed table (with a default), and sessions of their own."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE public.bulk_things (id uuid PRIMARY KEY, "
                "name varchar(50) DEFAULT 'unnamed', n bigint, born date, blob bytea, "
                "data jsonb, tags text[])"
            )
        )
    try:
        yield make_sessionmaker(engine)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE public.bulk_things"))


async def test_copy_puts_rows_in_as_given(copy_table: async_sessionmaker[AsyncSession]) -> None:
    rows = _rows()
    rows[3]["id"] = str(rows[3]["id"])  # an id given as text is parsed, as by insert_rows
    async with copy_table() as session:
        await copy_rows(session, things, rows)
        await copy_rows(session, things, [{"id": uuid.UUID(int=0)}])  # the rest: defaults
        await session.commit()
    rows[3]["id"] = uuid.UUID(str(rows[3]["id"]))
    async with copy_table() as session:
        stored = {r.id: r for r in await session.execute(select(things))}
    default = stored.pop(uuid.UUID(int=0))
    assert (default.name, default.n, default.data, default.tags) == ("unnamed", None, None, None)
    _assert_stored(stored, rows)


async def test_copy_belongs_to_the_session_transaction(
    copy_table: async_sessionmaker[AsyncSession],
) -> None:
    """COPY as the session's first statement still runs in its transaction: rolled back
    with it, and invisible to others until the commit."""
    rows = _rows()[:10]
    async with copy_table() as session, copy_table() as other:
        await copy_rows(session, things, rows)
        seen_by_other = await other.scalar(text("SELECT count(*) FROM public.bulk_things"))
        await session.rollback()
        await copy_rows(session, things, rows[:4])
        await session.commit()
    async with copy_table() as session:
        ids = set(await session.scalars(text("SELECT id FROM public.bulk_things")))
    assert seen_by_other == 0
    assert ids == {r["id"] for r in rows[:4]}


async def test_a_failed_copy_raises_sqlalchemys_error_and_rolls_back(
    copy_table: async_sessionmaker[AsyncSession],
) -> None:
    rows = _rows()[:3]
    async with copy_table() as session:
        await copy_rows(session, things, rows[:1])
        with pytest.raises(IntegrityError, match="duplicate key"):
            await copy_rows(session, things, rows)  # the first row is there already
        await session.rollback()
        await copy_rows(session, things, rows[1:])  # the session goes on after its rollback
        await session.commit()
    async with copy_table() as session:
        ids = set(await session.scalars(text("SELECT id FROM public.bulk_things")))
    assert ids == {r["id"] for r in rows[1:]}


async def test_no_rows_is_no_statement(db: async_sessionmaker[AsyncSession]) -> None:
    async with db() as session:
        assert await insert_rows(session, things, []) == []


async def test_a_value_shared_by_every_row_is_sent_once(
    db: async_sessionmaker[AsyncSession],
) -> None:
    """The same object in every row (a status, NULL, one JSON document) goes in as one
    parameter; every row still gets it, also when all columns are the same."""
    born, data, tags = date(1980, 5, 6), {"k": [1, "v"]}, ["x", None]
    same = {"name": "同一", "n": 7, "born": born, "data": data, "tags": tags, "blob": None}
    key = uuid.uuid4()
    async with db() as session:
        await session.execute(
            text(
                "CREATE TEMP TABLE bulk_things (id uuid, name varchar(50), n bigint, "
                "born date, blob bytea, data jsonb, tags text[])"
            )
        )
        await insert_rows(session, things, [{"id": uuid.uuid4(), **same} for _ in range(3)])
        await insert_rows(session, things, [{"id": key, **same}, {"id": key, **same}])
        stored = list(await session.execute(select(things)))
    assert len(stored) == 5
    assert sum(r.id == key for r in stored) == 2
    for r in stored:
        assert (r.name, r.n, r.born, r.blob, r.data, r.tags) == ("同一", 7, born, None, data, tags)


def test_collection_waits_until_the_last_bulk_block_ends() -> None:
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()  # one who turned it off keeps it off
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_copy_skipping_conflicts_skips_what_is_there_already(
    copy_table: async_sessionmaker[AsyncSession],
) -> None:
    """No conflict: every row goes in (as given); a row already there (a concurrent
    writer's): the others go in, it is skipped and not returned, and what the
    session wrote before stays."""
    rows = [{"id": uuid.uuid4(), "name": f"n{i}", "n": i} for i in range(6)]
    async with copy_table() as session:
        first = await copy_skipping_conflicts(
            session, things, rows[:2], on_conflict="ON CONFLICT DO NOTHING"
        )
        rest = await copy_skipping_conflicts(
            session, things, rows[1:], on_conflict="ON CONFLICT DO NOTHING"
        )
        await session.commit()
    async with copy_table() as session:
        stored = {r.id: (r.name, r.n) for r in await session.execute(select(things))}
    assert [dict(r) for r in first] == rows[:2]
    assert sorted((dict(r) for r in rest), key=lambda r: r["n"]) == rows[2:]
    assert stored == {r["id"]: (r["name"], r["n"]) for r in rows}
