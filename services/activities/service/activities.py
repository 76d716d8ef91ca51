"""Activities (organizational life, service and care), their attendance (bulk, idempotent,
one `attendance.recorded` event per changed row, points settled per rule) and members'
signups (capacity enforced under the activity's row lock)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.errors import FieldError, Forbidden, PreconditionFailed, Unprocessable
from common.events.outbox import EventRow, emit, emit_many
from common.pagination import decode_cursor, page_of
from services.activities.errors import ActivityFull, ActivityNotFound, AlreadySignedUp
from services.activities.models import (
    AttendanceStatus,
    PointsSource,
    activities,
    attendance,
    audit_log,
    members,
    orgs,
    outbox,
    signups,
)
from services.activities.schemas import ActivityCreate, ActivityUpdate, AttendanceEntry
from services.activities.service import keys, points
from services.activities.service.scope import (
    member_readable,
    org_readable,
    org_writable,
    require_reader,
    require_writer,
    subtree_ids,
    writable_org_path,
)

_signed_up = (
    select(func.count())
    .where(signups.c.activity_id == activities.c.id)
    .correlate(activities)
    .scalar_subquery()
    .label("signed_up")
)


def _actor(principal: Principal) -> str:
    return principal.username or principal.subject


async def create_activity(
    session: AsyncSession, *, data: ActivityCreate, principal: Principal
) -> Any:
    path = await writable_org_path(session, principal, data.org_id)
    values = data.model_dump()
    values["type"] = data.type.value
    row = (
        (
            await session.execute(
                insert(activities)
                .values(
                    id=uuid.uuid4(),
                    shard_key=keys.org_key(data.org_id),
                    created_by=_actor(principal),
                    **values,
                )
                .returning(activities)
            )
        )
        .mappings()
        .one()
    )
    await audit.record(
        session, audit_log, principal, action="create", resource="activity", record_id=row["id"]
    )
    await emit(
        session,
        outbox,
        type="activity.created",
        aggregate_type="activity",
        aggregate_id=row["id"],
        aggregate_version=row["version"],
        payload={
            "activity_id": row["id"],
            "org_id": row["org_id"],
            "activity_type": row["type"],
            "title": row["title"],
            "starts_at": row["starts_at"],
            "ends_at": row["ends_at"],
        },
        org_paths=[path],
        shard_key=row["shard_key"],
    )
    return {**row, "signed_up": 0}


async def get_activity(
    session: AsyncSession, *, activity_id: uuid.UUID, principal: Principal
) -> Any:
    require_reader(principal)
    row = (
        (
            await session.execute(
                select(activities, _signed_up).where(
                    activities.c.id == activity_id, org_readable(principal, activities.c.org_id)
                )
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise ActivityNotFound("No such activity in your scope.")
    return row


async def list_activities(
    session: AsyncSession,
    *,
    principal: Principal,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    require_reader(principal)
    query = select(activities, _signed_up).where(org_readable(principal, activities.c.org_id))
    if filters.get("org_id") is not None:
        query = query.where(activities.c.org_id.in_(subtree_ids(filters["org_id"])))
    if filters.get("type") is not None:
        query = query.where(activities.c.type == filters["type"])
    if filters.get("starts_from") is not None:
        query = query.where(activities.c.starts_at >= filters["starts_from"])
    if filters.get("starts_before") is not None:
        query = query.where(activities.c.starts_at < filters["starts_before"])
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(
            tuple_(activities.c.starts_at, activities.c.id) > tuple_(after[0], after[1])
        )
    query = query.order_by(activities.c.starts_at, activities.c.id).limit(limit + 1)
    rows = (await session.execute(query)).mappings().all()
    return page_of(rows, limit=limit, key=lambda r: [r["starts_at"], r["id"]], filters=filters)


async def update_activity(
    session: AsyncSession,
    *,
    activity_id: uuid.UUID,
    data: ActivityUpdate,
    expected_version: int,
    principal: Principal,
) -> Any:
    require_writer(principal)
    current = await _writable(session, activity_id, principal)
    changes = data.model_dump(exclude_unset=True)
    if "type" in changes and changes["type"] is None:
        raise Unprocessable(errors=[FieldError(field="type", message="may not be null")])
    if "title" in changes and changes["title"] is None:
        raise Unprocessable(errors=[FieldError(field="title", message="may not be null")])
    for key in ("starts_at", "ends_at"):
        if key in changes and changes[key] is None:
            raise Unprocessable(errors=[FieldError(field=key, message="may not be null")])
    starts = changes.get("starts_at", current["starts_at"])
    ends = changes.get("ends_at", current["ends_at"])
    if ends < starts:
        raise Unprocessable(
            "ends_at must not be before starts_at.",
            errors=[FieldError(field="ends_at", message="before starts_at")],
        )
    if changes.get("capacity") is not None:
        taken = await session.scalar(
            select(func.count()).where(signups.c.activity_id == activity_id)
        )
        if int(taken or 0) > changes["capacity"]:
            raise ActivityFull(f"{taken} members signed up already; capacity cannot go lower.")
    if "type" in changes:
        changes["type"] = str(changes["type"])
    if "description" in changes and changes["description"] is None:
        changes["description"] = ""
    row = (
        (
            await session.execute(
                update(activities)
                .where(activities.c.id == activity_id, activities.c.version == expected_version)
                .values(**changes, version=activities.c.version + 1)
                .returning(activities)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise PreconditionFailed("The activity changed since you read it; read it again.")
    await audit.record(
        session, audit_log, principal, action="update", resource="activity", record_id=activity_id
    )
    return await get_activity(session, activity_id=activity_id, principal=principal)


async def _writable(
    session: AsyncSession, activity_id: uuid.UUID, principal: Principal, *, lock: bool = False
) -> Any:
    query = select(activities).where(
        activities.c.id == activity_id, org_writable(principal, activities.c.org_id)
    )
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().first()
    if row is None:
        if principal.can_write:
            raise ActivityNotFound("No such activity in your scope.")
        raise Forbidden("Your role may not change records.")
    return row


async def set_attendance(
    session: AsyncSession,
    *,
    activity_id: uuid.UUID,
    entries: Sequence[AttendanceEntry],
    principal: Principal,
) -> list[Any]:
    """Record the attendance of many members at once (the same member twice is a 422). Rows
    already holding the same status and hours are left alone: no event, no points."""
    require_writer(principal)
    activity = await _writable(session, activity_id, principal, lock=True)
    wanted = [e.member_id for e in entries]
    seen: set[uuid.UUID] = set()
    errors = []
    for i, member_id in enumerate(wanted):
        if member_id in seen:
            errors.append(FieldError(field=f"{i}.member_id", message="listed twice"))
        seen.add(member_id)
    known = {
        r.member_id: r
        for r in await session.execute(
            select(members.c.member_id, members.c.org_id).where(
                members.c.member_id.in_(seen), member_readable(principal, members.c.member_id)
            )
        )
    }
    for i, member_id in enumerate(wanted):
        if member_id not in known:
            errors.append(FieldError(field=f"{i}.member_id", message="no such member in scope"))
    if errors:
        raise Unprocessable("Some attendance rows are not valid.", errors=errors)
    changed: list[Any] = []
    if entries:
        stmt = insert(attendance).values(
            [
                {
                    # The activity's key, whatever county the member is from.
                    "shard_key": activity["shard_key"],
                    "activity_id": activity_id,
                    "member_id": e.member_id,
                    "status": e.status.value,
                    "hours": e.hours,
                }
                for e in entries
            ]
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[attendance.c.activity_id, attendance.c.member_id],
            set_={
                "status": stmt.excluded.status,
                "hours": stmt.excluded.hours,
                "recorded_at": func.now(),
            },
            where=tuple_(attendance.c.status, attendance.c.hours).is_distinct_from(
                tuple_(stmt.excluded.status, stmt.excluded.hours)
            ),
        ).returning(attendance)
        changed = list((await session.execute(upsert)).mappings().all())
    org_path = await session.scalar(select(orgs.c.path).where(orgs.c.org_id == activity["org_id"]))
    await emit_many(
        session,
        outbox,
        [
            EventRow(
                type="attendance.recorded",
                aggregate_type="activity",
                aggregate_id=activity_id,
                aggregate_version=activity["version"],
                payload={
                    "activity_id": activity_id,
                    "org_id": activity["org_id"],
                    "member_id": row["member_id"],
                    "status": row["status"],
                    "activity_type": activity["type"],
                    "starts_at": activity["starts_at"],
                },
                org_paths=[str(org_path) if org_path else None],
                shard_key=activity["shard_key"],
            )
            for row in changed
        ],
    )
    per_attendance = await points.rule_points(
        session,
        org_id=activity["org_id"],
        source=PointsSource.activity,
        activity_type=activity["type"],
    )
    await points.settle_many(
        session,
        [
            points.Settlement(
                member_id=row["member_id"],
                org_id=known[row["member_id"]].org_id,
                target=per_attendance if row["status"] == AttendanceStatus.present else 0,
            )
            for row in changed
        ],
        year=activity["starts_at"].year,
        reason="attendance",
        source_id=activity_id,
        actor=_actor(principal),
    )
    await audit.record(
        session,
        audit_log,
        principal,
        action="record_attendance",
        resource="activity",
        record_id=activity_id,
    )
    return list(
        (
            await session.execute(
                select(attendance)
                .where(attendance.c.activity_id == activity_id)
                .order_by(attendance.c.member_id)
            )
        )
        .mappings()
        .all()
    )


async def list_attendance(
    session: AsyncSession, *, activity_id: uuid.UUID, principal: Principal
) -> list[Any]:
    await get_activity(session, activity_id=activity_id, principal=principal)
    query = select(attendance).where(
        attendance.c.activity_id == activity_id,
        member_readable(principal, attendance.c.member_id),
    )
    return list((await session.execute(query.order_by(attendance.c.member_id))).mappings().all())


async def sign_up(session: AsyncSession, *, activity_id: uuid.UUID, principal: Principal) -> Any:
    """A member signs up for an activity of their communities. The activity row is locked
    while the seats are counted, so concurrent signups never exceed the capacity."""
    if principal.role is not Role.member or principal.member_id is None:
        raise Forbidden("Members sign up themselves.")
    activity = (
        (
            await session.execute(
                select(activities)
                .where(activities.c.id == activity_id, org_readable(principal, activities.c.org_id))
                .with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if activity is None:
        raise ActivityNotFound("No such activity in your scope.")
    if activity["capacity"] is not None:
        taken = await session.scalar(
            select(func.count()).where(signups.c.activity_id == activity_id)
        )
        if int(taken or 0) >= activity["capacity"]:
            raise ActivityFull(f"All {activity['capacity']} places are taken.")
    row = (
        (
            await session.execute(
                insert(signups)
                .values(
                    shard_key=activity["shard_key"],
                    activity_id=activity_id,
                    member_id=principal.member_id,
                )
                .on_conflict_do_nothing()
                .returning(signups)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise AlreadySignedUp("You have signed up for this activity already.")
    await audit.record(
        session,
        audit_log,
        principal,
        action="sign_up",
        resource="activity",
        record_id=activity_id,
        subject_member_id=principal.member_id,
    )
    return row
