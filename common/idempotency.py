"""`Idempotency-Key` for creating writes, atomic with the write itself.

The first request with a key takes a transaction-scoped advisory lock on (caller, key),
does its work, and stores its response in the same transaction. A concurrent request with
the same key finds the lock taken and gets 409; a later one gets the stored response again
(same status and body), or 422 if its body differs. Each service keeps its keys in a table
of its own schema made by `idempotency_table`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Header
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.errors import Conflict, Unprocessable

RETENTION = timedelta(hours=48)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Makes a retried create a no-op: the same key and body return the "
        "first response again.",
    ),
]


def idempotency_table(metadata: MetaData, schema: str) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("caller", String(200), primary_key=True),
        Column("key", String(255), primary_key=True),
        Column("fingerprint", String(64), nullable=False),
        Column("status_code", Integer, nullable=False),
        Column("body", JSONB, nullable=False),
        Column(
            "created_at",
            DateTime(timezone=True),
            nullable=False,
            server_default=func.now(),
            index=True,
        ),
        schema=schema,
    )


def fingerprint(payload: Any) -> str:
    """A stable hash of a request body (a JSON-able value or raw bytes)."""
    if isinstance(payload, bytes):
        return hashlib.sha256(payload).hexdigest()
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


async def run_idempotent(
    session: AsyncSession,
    *,
    table: Table,
    caller: str,
    key: str | None,
    request_fingerprint: str,
    produce: Callable[[], Awaitable[tuple[int, Any]]],
) -> tuple[int, Any]:
    """Run `produce` once per (caller, key); returns (status code, JSON-able body)."""
    if key is None:
        return await produce()
    locked = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(hashtext(:ns), hashtext(:ck))"),
        {"ns": f"{table.schema}.idempotency", "ck": f"{caller}\x1f{key}"},
    )
    if not locked:
        # Retry soon: the first request finishes, or (its client gone) the server cancels
        # it within a second (common/db.py) and the key is free again.
        raise Conflict(
            "A request with this Idempotency-Key is still being processed.",
            headers={"Retry-After": "1"},
        )
    row = (
        await session.execute(
            select(table.c.fingerprint, table.c.status_code, table.c.body).where(
                table.c.caller == caller,
                table.c.key == key,
                table.c.created_at > func.now() - RETENTION,
            )
        )
    ).first()
    if row is not None:
        if row.fingerprint != request_fingerprint:
            raise Unprocessable(
                "This Idempotency-Key was already used with a different request body."
            )
        return int(row.status_code), row.body
    status_code, body = await produce()
    stmt = insert(table).values(
        caller=caller,
        key=key,
        fingerprint=request_fingerprint,
        status_code=status_code,
        body=body,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.caller, table.c.key],
        set_={
            "fingerprint": stmt.excluded.fingerprint,
            "status_code": stmt.excluded.status_code,
            "body": stmt.excluded.body,
            "created_at": func.now(),
        },
    )
    await session.execute(stmt)
    return status_code, body
