"""Heart-to-heart talks (谈心). The notes are sealed at rest (purpose `talk.notes`) and opened
only in `get_talk` for admins and the org admins whose scope holds the member, each such read
audited; lists, counts and events never carry them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.pagination import decode_cursor, page_of
from services.activities.dependencies import NotesCipher
from services.activities.errors import TalkNotFound
from services.activities.models import audit_log, members, talks
from services.activities.schemas import TalkCreate
from services.activities.service import keys
from services.activities.service.scope import (
    member_readable,
    member_row,
    member_writable,
    require_reader,
    require_writer,
    subtree_ids,
)

# Every column but the sealed notes: what lists and counts may touch.
PUBLIC_COLUMNS = [
    talks.c.id,
    talks.c.member_id,
    talks.c.org_id,
    talks.c.held_on,
    talks.c.talker,
    talks.c.topic,
    talks.c.notes_enc.is_not(None).label("has_notes"),
]


async def create_talk(
    session: AsyncSession, *, data: TalkCreate, principal: Principal, cipher: NotesCipher
) -> Any:
    require_writer(principal)
    member = await member_row(session, principal, data.member_id, write=True)
    row = (
        (
            await session.execute(
                insert(talks)
                .values(
                    id=uuid.uuid4(),
                    shard_key=keys.known(member["shard_key"]),
                    member_id=data.member_id,
                    org_id=member["org_id"],
                    held_on=data.held_on,
                    talker=data.talker,
                    topic=data.topic,
                    notes_enc=cipher.seal(data.notes) if data.notes else None,
                    created_by=principal.username or principal.subject,
                )
                .returning(*PUBLIC_COLUMNS)
            )
        )
        .mappings()
        .one()
    )
    await audit.record(
        session,
        audit_log,
        principal,
        action="create",
        resource="talk",
        record_id=row["id"],
        subject_member_id=data.member_id,
    )
    return row


async def list_talks(
    session: AsyncSession,
    *,
    principal: Principal,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    require_reader(principal)
    query = select(*PUBLIC_COLUMNS).where(member_readable(principal, talks.c.member_id))
    query = _filtered(query, filters)
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(tuple_(talks.c.held_on, talks.c.id) > tuple_(after[0], after[1]))
    query = query.order_by(talks.c.held_on, talks.c.id).limit(limit + 1)
    rows = (await session.execute(query)).mappings().all()
    return page_of(rows, limit=limit, key=lambda r: [r["held_on"], r["id"]], filters=filters)


def _filtered(query: Any, filters: dict[str, Any]) -> Any:
    if filters.get("member_id") is not None:
        query = query.where(talks.c.member_id == filters["member_id"])
    if filters.get("org_id") is not None:
        query = query.where(
            talks.c.member_id.in_(
                select(members.c.member_id).where(
                    members.c.org_id.in_(subtree_ids(filters["org_id"]))
                )
            )
        )
    if filters.get("held_from") is not None:
        query = query.where(talks.c.held_on >= filters["held_from"])
    if filters.get("held_until") is not None:
        query = query.where(talks.c.held_on <= filters["held_until"])
    return query


async def count_talks(
    session: AsyncSession, *, principal: Principal, filters: dict[str, Any]
) -> int:
    """How many talks in scope match (the report's figure: 188 in a year)."""
    require_reader(principal)
    query = (
        select(func.count()).select_from(talks).where(member_readable(principal, talks.c.member_id))
    )
    return int(await session.scalar(_filtered(query, filters)) or 0)


def may_read_notes(principal: Principal) -> bool:
    return principal.role in (Role.admin, Role.org_admin)


async def get_talk(
    session: AsyncSession, *, talk_id: uuid.UUID, principal: Principal, cipher: NotesCipher
) -> dict[str, Any]:
    """The talk; its notes only for admins and the member's own org admins, each read of
    them audited. The member reads their own talk's facts, never the notes."""
    require_reader(principal)
    row = (
        (
            await session.execute(
                select(*PUBLIC_COLUMNS, talks.c.notes_enc).where(
                    talks.c.id == talk_id, member_readable(principal, talks.c.member_id)
                )
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise TalkNotFound("No such talk in your scope.")
    out = {k: v for k, v in row.items() if k != "notes_enc"}
    out["notes"] = None
    if row["notes_enc"] is not None and may_read_notes(principal):
        # The member must still be in the caller's writable scope (an org admin's own).
        allowed = await session.scalar(
            select(members.c.member_id).where(
                members.c.member_id == row["member_id"],
                member_writable(principal, members.c.member_id),
            )
        )
        if allowed is not None:
            out["notes"] = cipher.open(row["notes_enc"])
            await audit.record(
                session,
                audit_log,
                principal,
                action="read_notes",
                resource="talk",
                record_id=talk_id,
                subject_member_id=row["member_id"],
            )
    return out
