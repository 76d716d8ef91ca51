"""Training of party workers (轮训) and the coverage figure: the share of party workers
trained within the last three years (the report's goal: every community party worker once
in three years). Party workers are the members holding an open role assignment of kind
`party_worker` in the org's subtree."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal
from common.errors import FieldError, Unprocessable
from common.pagination import decode_cursor, page_of
from services.activities.models import (
    AssignmentKind,
    audit_log,
    members,
    role_assignments,
    training_attendance,
    training_sessions,
)
from services.activities.schemas import TrainingSessionCreate
from services.activities.service import keys
from services.activities.service.scope import (
    member_writable,
    org_readable,
    readable_org_path,
    require_reader,
    subtree_ids,
    writable_org_path,
)

WINDOW_YEARS = 3


async def create_session(
    session: AsyncSession, *, principal: Principal, data: TrainingSessionCreate
) -> dict[str, Any]:
    await writable_org_path(session, principal, data.org_id)
    wanted = list(dict.fromkeys(data.member_ids))
    if wanted:
        known = set(
            await session.scalars(
                select(members.c.member_id).where(
                    members.c.member_id.in_(wanted),
                    member_writable(principal, members.c.member_id),
                )
            )
        )
        missing = [i for i, m in enumerate(data.member_ids) if m not in known]
        if missing:
            raise Unprocessable(
                "Some members are unknown or out of scope.",
                errors=[
                    FieldError(field=f"member_ids.{i}", message="no such member in scope")
                    for i in missing
                ],
            )
    row = (
        (
            await session.execute(
                insert(training_sessions)
                .values(
                    id=uuid.uuid4(),
                    shard_key=keys.org_key(data.org_id),
                    org_id=data.org_id,
                    title=data.title,
                    held_on=data.held_on,
                    hours=data.hours,
                    created_by=principal.username or principal.subject,
                )
                .returning(training_sessions)
            )
        )
        .mappings()
        .one()
    )
    if wanted:
        await session.execute(
            insert(training_attendance),
            [
                {"shard_key": row["shard_key"], "session_id": row["id"], "member_id": m}
                for m in wanted
            ],
        )
    await audit.record(
        session, audit_log, principal, action="create", resource="training", record_id=row["id"]
    )
    return {**row, "member_ids": wanted}


async def list_sessions(
    session: AsyncSession,
    *,
    principal: Principal,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    require_reader(principal)
    query = select(training_sessions).where(org_readable(principal, training_sessions.c.org_id))
    if filters.get("org_id") is not None:
        query = query.where(training_sessions.c.org_id.in_(subtree_ids(filters["org_id"])))
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(
            tuple_(training_sessions.c.held_on, training_sessions.c.id) > tuple_(after[0], after[1])
        )
    query = query.order_by(training_sessions.c.held_on, training_sessions.c.id).limit(limit + 1)
    rows = (await session.execute(query)).mappings().all()
    page, next_cursor = page_of(
        rows, limit=limit, key=lambda r: [r["held_on"], r["id"]], filters=filters
    )
    attendees: dict[uuid.UUID, list[uuid.UUID]] = {r["id"]: [] for r in page}
    if page:
        for a in await session.execute(
            select(training_attendance)
            .where(training_attendance.c.session_id.in_(list(attendees)))
            .order_by(training_attendance.c.member_id)
        ):
            attendees[a.session_id].append(a.member_id)
    return [{**r, "member_ids": attendees[r["id"]]} for r in page], next_cursor


def _three_years_before(as_of: date) -> date:
    try:
        return as_of.replace(year=as_of.year - WINDOW_YEARS)
    except ValueError:  # 29 February
        return as_of.replace(year=as_of.year - WINDOW_YEARS, day=28)


async def coverage_figures(
    session: AsyncSession, *, org_id: uuid.UUID, as_of: date
) -> tuple[int, int]:
    """(party workers, of whom trained within the three years up to `as_of`)."""
    workers = (
        select(role_assignments.c.member_id)
        .where(
            role_assignments.c.kind == AssignmentKind.party_worker.value,
            role_assignments.c.org_id.in_(subtree_ids(org_id)),
            role_assignments.c.started_on <= as_of,
            (role_assignments.c.ended_on.is_(None)) | (role_assignments.c.ended_on >= as_of),
        )
        .distinct()
        .subquery()
    )
    trained = (
        select(training_attendance.c.member_id)
        .join(training_sessions, training_sessions.c.id == training_attendance.c.session_id)
        .where(
            and_(
                training_sessions.c.held_on > _three_years_before(as_of),
                training_sessions.c.held_on <= as_of,
            )
        )
    )
    total = int(await session.scalar(select(func.count()).select_from(workers)) or 0)
    done = int(
        await session.scalar(
            select(func.count()).select_from(workers).where(workers.c.member_id.in_(trained))
        )
        or 0
    )
    return total, done


async def coverage(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID, as_of: date
) -> dict[str, Any]:
    await readable_org_path(session, principal, org_id)
    total, done = await coverage_figures(session, org_id=org_id, as_of=as_of)
    return {
        "org_id": org_id,
        "as_of": as_of,
        "party_workers": total,
        "trained_within_three_years": done,
        "coverage": round(done / total, 4) if total else None,
    }
