"""`common.bulk.insert_rows`: many rows in one set-based statement, every column type the
bulk writers use (uuid, text, bigint, date, bytea, jsonb, text[]), NULLs kept, conflicts
skipped, and the inserted rows returned."""

from __future__ import annotations

import gc
import uuid
from datetime import date

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
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.bulk import gc_paused, insert_rows

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


async def test_rows_go_in_as_given(db: async_sessionmaker[AsyncSession]) -> None:
    rows = [
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
    assert len(stored) == 500
    for row in rows:
        got = stored[row["id"]]
        assert got.name == row["name"] and got.n == row["n"] and got.born == row["born"]
        assert got.blob == row["blob"]
        assert got.tags == row["tags"]
    assert stored[rows[1]["id"]].data == {
        "i": 1,
        "id": str(uuid.UUID(int=1)),
        "nested": [{"on": "2000-01-01"}],
    }
    assert stored[rows[7]["id"]].data is None


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
