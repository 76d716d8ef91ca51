"""The hot read: one member's card by id (`GET /members/{id}`), the request a phone makes
most. One prepared statement through asyncpg — the scope check inside the same statement —
instead of an ORM query in a session: no identity map, no ORM object, no `BEGIN`/`COMMIT`
around a single read, and no pool pre-ping (three more round trips with asyncpg: the
issue's numbers give the ORM read a third of the driver's throughput).

The statement runs on a small asyncpg pool of the app's own (`HotReads`) when the app's
sessions are bound to an engine; when they are bound to one connection (the tests' outer
transaction) it runs on that connection, so it sees what the session sees. A connection
error on the pool falls back to the session.

The same answers as `members.get_member` + `to_public`: a record merged into another, or
one not found, goes the ORM way (`get_member` follows merges and raises the 404)."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine

from common.auth import Principal, Role
from common.db import plain_url
from common.pagination import Page, decode_cursor, page_of
from services.registry import idnumber
from services.registry.dependencies import FieldCrypto
from services.registry.models import OPEN_TRANSFER_STATUSES, Member
from services.registry.schemas.members import MemberPublic
from services.registry.service.member_card import (
    PHONE,
    forbid_auditors,
    sees_full_phone,
    to_public,
    today,
)
from services.registry.service.scope import ORG_SCOPED, subtree_is_small

_COLUMNS = (
    "m.id, m.name, m.gender, m.birth_date, m.id_number_masked, m.phone_cipher, "
    "m.phone_masked, m.ethnicity, m.education, m.joined_on, m.membership, m.category, "
    "m.relation, m.status, m.org_id, m.residence_org_id, m.group_id, m.address, m.employer, "
    "m.skills, m.resume::text AS resume, m.merged_into, m.created_at, m.updated_at, m.version"
)
# (Constant text only: every value is a bind parameter.)
_BY_ID = f"SELECT {_COLUMNS} FROM registry.members m WHERE m.id = $1"  # noqa: S608
# `member_in_scope` for org roles, as one statement: enrolled in, living in, or
# transferring into the subtree of the caller's org ($2).
_IN_SUBTREE = (
    f"SELECT {_COLUMNS} FROM registry.members m WHERE m.id = $1 AND ("  # noqa: S608
    " EXISTS (SELECT 1 FROM registry.orgs r JOIN registry.orgs o ON o.path <@ r.path"
    "  WHERE r.id = $2 AND o.id IN (m.org_id, m.residence_org_id))"
    " OR EXISTS (SELECT 1 FROM registry.transfers t"
    "  JOIN registry.orgs o ON o.id = t.to_org_id"
    "  JOIN registry.orgs r ON r.id = $2 AND o.path <@ r.path"
    "  WHERE t.member_id = m.id AND t.status = ANY($3::text[])))"
)
_OPEN = [s.value for s in OPEN_TRANSFER_STATUSES]


async def _no_session_state(connection: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing to send. Its connections only run single
    SELECTs outside transactions — no settings changed, no LISTEN, no advisory lock, no
    cursor — so asyncpg's default (`RESET ALL; UNLISTEN *; CLOSE ALL; ...` after every
    read) is a second round trip per request for nothing; asyncpg still ends a transaction
    left open (a read cancelled midway) before this runs."""


class HotReads:
    """The app's asyncpg pool for hot reads, opened on first use, closed at shutdown."""

    def __init__(self, url: str, *, max_size: int, statement_timeout_ms: int) -> None:
        self._url = url
        self._max_size = max_size
        self._timeout_ms = statement_timeout_ms
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._url,
                        min_size=1,
                        max_size=self._max_size,
                        server_settings={
                            "statement_timeout": str(self._timeout_ms),
                            "application_name": "registry-reads",
                        },
                        reset=_no_session_state,
                    )
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def hot_reads(app: Any) -> HotReads | None:
    """The app's `HotReads`, opened by its lifespan (`open_hot_reads`); None when the app
    runs without one (the ORM path answers then)."""
    return getattr(app.state, "hot_reads", None)


def open_hot_reads(app: Any) -> HotReads | None:
    """Makes the app's `HotReads` (its pool opens on first use) unless its sessions share
    one connection (tests); the lifespan closes it with `close_hot_reads`."""
    reads: HotReads | None = getattr(app.state, "hot_reads", None)
    if reads is not None:
        return reads
    bind = getattr(app.state, "sessionmaker", None)
    engine = getattr(bind, "kw", {}).get("bind")
    if not isinstance(engine, AsyncEngine):
        return None
    settings = getattr(app.state, "settings", None)
    reads = HotReads(
        plain_url(engine.url.render_as_string(hide_password=False)),
        max_size=getattr(settings, "hot_reads_pool_size", 10),
        statement_timeout_ms=getattr(settings, "db_statement_timeout_ms", 15_000),
    )
    app.state.hot_reads = reads
    return reads


async def close_hot_reads(app: Any) -> None:
    reads: HotReads | None = getattr(app.state, "hot_reads", None)
    app.state.hot_reads = None
    if reads is not None:
        await reads.close()


async def read_card(
    app: Any, *, member_id: uuid.UUID, principal: Principal, crypto: FieldCrypto
) -> tuple[MemberPublic, int] | None:
    """The card and its version, or None when the ORM path must answer (not found, not in
    scope, merged, the pool's connection failed)."""
    forbid_auditors(principal)
    args: tuple[Any, ...]
    if principal.is_admin:
        sql, args = _BY_ID, (member_id,)
    elif principal.role is Role.member:
        if principal.member_id != member_id:
            return None
        sql, args = _BY_ID, (member_id,)
    elif principal.role in ORG_SCOPED and principal.org_id is not None:
        sql, args = _IN_SUBTREE, (member_id, principal.org_id, _OPEN)
    else:
        return None
    reads = hot_reads(app)
    if reads is not None:
        try:
            row = await (await reads.pool()).fetchrow(sql, *args)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            return None  # the session's pool pings and reconnects
    else:
        async with app.state.sessionmaker() as session:
            connection = await (await session.connection()).get_raw_connection()
            driver: Any = connection.driver_connection
            row = await driver.fetchrow(sql, *args)
    if row is None or row["merged_into"] is not None:
        return None
    fields = dict(row.items())
    fields["resume"] = _resume(fields["resume"])
    member = cast(Member, SimpleNamespace(**fields))
    return to_public(member, crypto=crypto, principal=principal), int(fields["version"])


# --- a page of a subtree's members (`GET /members?org_id=...`, no other filter) -----------

# The form of the statement is the subtree's (`scope.subtree_is_small`, the choice the ORM
# list makes too): through the org index, or in id order with the subtree as a join.
_MEMBER_COLUMNS = _COLUMNS
_SCOPE = (
    " AND (EXISTS (SELECT 1 FROM registry.orgs r JOIN registry.orgs o ON o.path <@ r.path"
    "  WHERE r.id = $4 AND o.id IN (m.org_id, m.residence_org_id))"
    " OR EXISTS (SELECT 1 FROM registry.transfers t"
    "  JOIN registry.orgs o ON o.id = t.to_org_id"
    "  JOIN registry.orgs r ON r.id = $4 AND o.path <@ r.path"
    "  WHERE t.member_id = m.id AND t.status = ANY($5::text[])))"
)
_SMALL = (
    f"SELECT {_MEMBER_COLUMNS} FROM registry.members m "  # noqa: S608
    "WHERE m.org_id = ANY(ARRAY(SELECT o.id FROM registry.orgs o WHERE o.path <@ "
    "(SELECT r.path FROM registry.orgs r WHERE r.id = $1))) "
    "AND m.merged_into IS NULL AND m.id > $2"
)
_LARGE = (
    f"SELECT {_MEMBER_COLUMNS} FROM registry.members m "  # noqa: S608
    "JOIN registry.orgs mo ON mo.id = m.org_id "
    "WHERE mo.path <@ (SELECT r.path FROM registry.orgs r WHERE r.id = $1) "
    "AND m.merged_into IS NULL AND m.id > $2"
)
_ORDER = " ORDER BY m.id LIMIT $3"
_ZERO = uuid.UUID(int=0)
_STATEMENTS = {
    (size, scoped): (_SMALL if size == "small" else _LARGE) + (_SCOPE if scoped else "") + _ORDER
    for size in ("small", "large")
    for scoped in (False, True)
}


async def list_page(
    app: Any,
    *,
    principal: Principal,
    crypto: FieldCrypto,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
) -> Page[MemberPublic] | None:
    """The page `members.list_members` would give, when only `org_id` filters it; None
    when the ORM path must answer (other filters, a member's own scope, tests' shared
    connection)."""
    forbid_auditors(principal)
    org_id = filters.get("org_id")
    if org_id is None or any(v is not None for k, v in filters.items() if k != "org_id"):
        return None
    scoped = not principal.is_admin
    if scoped and (principal.role not in ORG_SCOPED or principal.role is Role.member):
        return None
    if scoped and principal.org_id is None:
        return None
    reads = hot_reads(app)
    if reads is None:
        return None
    after = decode_cursor(cursor, filters)
    start = after[0] if after is not None else _ZERO
    try:
        pool = await reads.pool()
        async with pool.acquire() as conn:
            small = await subtree_is_small(conn.fetchrow, org_id)
            size = "small" if small else "large"
            args: tuple[Any, ...] = (org_id, start, limit + 1)
            if scoped:
                args += (principal.org_id, _OPEN)
            rows = await conn.fetch(_STATEMENTS[size, scoped], *args)
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
        return None
    found, next_cursor = page_of(rows, limit=limit, key=lambda r: [r["id"]], filters=filters)
    # What `to_public` gives, built as plain values and validated in one call (50 model
    # constructions in Python cost more than the query).
    now = today()
    items = []
    for row in found:
        fields = dict(row.items())
        cipher = fields["phone_cipher"]
        fields["phone"] = None
        if cipher is not None and sees_full_phone(principal, _Id(fields["id"])):
            fields["phone"] = crypto.keys.decrypt(cipher, purpose=PHONE)
        fields["age"] = idnumber.age_on(fields["birth_date"], now)
        fields["resume"] = _resume(fields["resume"])
        items.append(fields)
    return _PAGE.validate_python({"items": items, "next_cursor": next_cursor})


def _resume(text: str) -> Any:
    """The resume column's JSON text as values; most members have none (`[]`), which
    needs no parser (a page of 50 spent a fifth of its own time in `json.loads`)."""
    return [] if text == "[]" else json.loads(text)


class _Id:
    """Just the id, for `sees_full_phone`."""

    def __init__(self, member_id: uuid.UUID) -> None:
        self.id = member_id


_PAGE: TypeAdapter[Page[MemberPublic]] = TypeAdapter(Page[MemberPublic])
