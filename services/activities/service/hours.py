"""Service hours: logged by a member (their own) or an org admin, against a role or an
activity, counted once an org admin verifies them. A member's entries of one day never add
up to more than 24 hours, and one activity is logged once per member."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.errors import FieldError, Forbidden, Unprocessable
from common.events.outbox import emit
from common.pagination import decode_cursor, page_of
from services.activities.errors import (
    ActivityNotFound,
    AlreadyVerified,
    DuplicateEntry,
    HoursExceedDay,
    ServiceHoursNotFound,
)
from services.activities.models import (
    PointsSource,
    activities,
    audit_log,
    members,
    orgs,
    outbox,
    service_hours,
)
from services.activities.service import keys, points
from services.activities.service.scope import (
    member_readable,
    member_row,
    member_writable,
    org_readable,
    require_reader,
    subtree_ids,
)

MAX_HOURS_PER_DAY = Decimal("24")


async def log_hours(
    session: AsyncSession,
    *,
    principal: Principal,
    member_id: uuid.UUID | None,
    on: date,
    hours: Decimal,
    role: str | None = None,
    activity_id: uuid.UUID | None = None,
    help_request_id: uuid.UUID | None = None,
    description: str = "",
) -> Any:
    if principal.role is Role.member:
        if member_id not in (None, principal.member_id) or principal.member_id is None:
            raise Forbidden("Members log their own hours.")
        member_id = principal.member_id
        member = await member_row(session, principal, member_id)
    elif principal.can_write:
        if member_id is None:
            raise Unprocessable(errors=[FieldError(field="member_id", message="required")])
        member = await member_row(session, principal, member_id, write=True)
    else:
        raise Forbidden("Your role may not log service hours.")
    if activity_id is not None:
        found = await session.scalar(
            select(activities.c.id).where(
                activities.c.id == activity_id,
                org_readable(principal, activities.c.org_id),
            )
        )
        if found is None:
            raise ActivityNotFound("No such activity in your scope.")
    # One member's day at a time: the sum check and the insert under one lock.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('activities.hours'), hashtext(:k))"),
        {"k": f"{member_id}:{on.isoformat()}"},
    )
    logged = await session.scalar(
        select(func.coalesce(func.sum(service_hours.c.hours), 0)).where(
            service_hours.c.member_id == member_id, service_hours.c.on == on
        )
    )
    if Decimal(logged or 0) + hours > MAX_HOURS_PER_DAY:
        raise HoursExceedDay(
            f"{logged} hours are logged for {on.isoformat()} already; a day has 24."
        )
    stmt = (
        insert(service_hours)
        .values(
            id=uuid.uuid4(),
            shard_key=keys.known(member["shard_key"]),
            member_id=member_id,
            org_id=member["org_id"],
            on=on,
            hours=hours,
            role=role,
            activity_id=activity_id,
            help_request_id=help_request_id,
            description=description,
            created_by=principal.username or principal.subject,
        )
        .on_conflict_do_nothing()
        .returning(service_hours)
    )
    row = (await session.execute(stmt)).mappings().first()
    if row is None:
        raise DuplicateEntry("These hours are logged already for this activity.")
    await audit.record(
        session,
        audit_log,
        principal,
        action="create",
        resource="service_hours",
        record_id=row["id"],
        subject_member_id=member_id,
    )
    return row


async def verify(session: AsyncSession, *, entry_id: uuid.UUID, principal: Principal) -> Any:
    """An org admin verifies an entry of a member in scope: it counts from now on (points per
    the org's rule, a `service_hours.verified` event)."""
    if not principal.can_write:
        raise Forbidden("Org admins verify service hours.")
    current = (
        (
            await session.execute(
                select(service_hours)
                .where(
                    service_hours.c.id == entry_id,
                    member_writable(principal, service_hours.c.member_id),
                )
                .with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if current is None:
        raise ServiceHoursNotFound("No such entry in your scope.")
    if current["verified"]:
        raise AlreadyVerified("This entry is verified already.")
    row = (
        (
            await session.execute(
                update(service_hours)
                .where(service_hours.c.id == entry_id)
                .values(
                    verified=True,
                    verified_by=principal.username or principal.subject,
                    verified_at=func.now(),
                )
                .returning(service_hours)
            )
        )
        .mappings()
        .one()
    )
    org_path = await session.scalar(select(orgs.c.path).where(orgs.c.org_id == row["org_id"]))
    await emit(
        session,
        outbox,
        type="service_hours.verified",
        aggregate_type="service_hours",
        aggregate_id=entry_id,
        aggregate_version=1,
        payload={
            "entry_id": entry_id,
            "member_id": row["member_id"],
            "org_id": row["org_id"],
            "hours": str(row["hours"]),
            "on": row["on"],
        },
        org_paths=[str(org_path) if org_path else None],
        shard_key=row["shard_key"],
    )
    per_hour = await points.rule_points(
        session, org_id=row["org_id"], source=PointsSource.service_hour, activity_type=None
    )
    await points.settle(
        session,
        member_id=row["member_id"],
        org_id=row["org_id"],
        year=row["on"].year,
        reason="service_hours",
        source_id=entry_id,
        target=points.hour_points(row["hours"], per_hour),
        actor=principal.username or principal.subject,
    )
    await audit.record(
        session,
        audit_log,
        principal,
        action="verify",
        resource="service_hours",
        record_id=entry_id,
        subject_member_id=row["member_id"],
    )
    return row


async def list_hours(
    session: AsyncSession,
    *,
    principal: Principal,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    require_reader(principal)
    query = select(service_hours).where(member_readable(principal, service_hours.c.member_id))
    if filters.get("member_id") is not None:
        query = query.where(service_hours.c.member_id == filters["member_id"])
    if filters.get("org_id") is not None:
        query = query.where(
            service_hours.c.member_id.in_(
                select(members.c.member_id).where(
                    members.c.org_id.in_(subtree_ids(filters["org_id"]))
                )
            )
        )
    if filters.get("verified") is not None:
        query = query.where(service_hours.c.verified == filters["verified"])
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(
            tuple_(service_hours.c.on, service_hours.c.id) > tuple_(after[0], after[1])
        )
    query = query.order_by(service_hours.c.on, service_hours.c.id).limit(limit + 1)
    rows = (await session.execute(query)).mappings().all()
    return page_of(rows, limit=limit, key=lambda r: [r["on"], r["id"]], filters=filters)
