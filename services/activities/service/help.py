"""Residents' help requests ("micro-wishes", 求助): taken by the community, matched to
candidate members by skill, building and load, assigned by the community or claimed by a
member from the open list, completed (which logs the service hours) and closed with the
resident's confirmation.

    open → assigned (assign | claim) → done (complete) → closed (close)"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.errors import FieldError, Forbidden, Unprocessable
from common.pagination import decode_cursor, page_of
from services.activities.errors import HelpRequestNotFound, InvalidTransition, MemberNotFound
from services.activities.models import HelpStatus, audit_log, help_requests, members, orgs
from services.activities.schemas import HelpRequestCreate
from services.activities.service import hours, keys
from services.activities.service.scope import (
    org_readable,
    org_writable,
    require_reader,
    require_writer,
    subtree_ids,
    writable_org_path,
)

SKILL_POINTS = 10
BUILDING_POINTS = 5
LOAD_PENALTY = 2
MAX_CANDIDATES = 20


def _actor(principal: Principal) -> str:
    return principal.username or principal.subject


async def create(session: AsyncSession, *, principal: Principal, data: HelpRequestCreate) -> Any:
    await writable_org_path(session, principal, data.org_id)
    if data.building_id is not None:
        inside = await session.scalar(
            select(orgs.c.org_id).where(
                orgs.c.org_id == data.building_id, orgs.c.org_id.in_(subtree_ids(data.org_id))
            )
        )
        if inside is None:
            raise Unprocessable(
                "The building is not part of the org.",
                errors=[FieldError(field="building_id", message="not within org_id")],
            )
    skills = list(dict.fromkeys(s for s in data.needed_skills))
    row = (
        (
            await session.execute(
                insert(help_requests)
                .values(
                    id=uuid.uuid4(),
                    shard_key=keys.org_key(data.org_id),
                    org_id=data.org_id,
                    building_id=data.building_id,
                    title=data.title,
                    description=data.description,
                    needed_skills=skills,
                    resident_name=data.resident_name,
                    created_by=_actor(principal),
                )
                .returning(help_requests)
            )
        )
        .mappings()
        .one()
    )
    await audit.record(
        session, audit_log, principal, action="create", resource="help_request", record_id=row["id"]
    )
    return row


def _readable(principal: Principal) -> Any:
    """Org roles: requests of their subtree; members: those of their communities (the open
    list to claim from) and the ones they hold."""
    if principal.role is Role.member:
        return or_(
            org_readable(principal, help_requests.c.org_id),
            help_requests.c.member_id == principal.member_id,
        )
    return org_readable(principal, help_requests.c.org_id)


async def get(
    session: AsyncSession, *, principal: Principal, request_id: uuid.UUID, lock: bool = False
) -> Any:
    require_reader(principal)
    query = select(help_requests).where(help_requests.c.id == request_id, _readable(principal))
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().first()
    if row is None:
        raise HelpRequestNotFound("No such help request in your scope.")
    return row


async def list_requests(
    session: AsyncSession,
    *,
    principal: Principal,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    require_reader(principal)
    query = select(help_requests).where(_readable(principal))
    if filters.get("org_id") is not None:
        query = query.where(help_requests.c.org_id.in_(subtree_ids(filters["org_id"])))
    if filters.get("status") is not None:
        query = query.where(help_requests.c.status == filters["status"])
    if filters.get("member_id") is not None:
        query = query.where(help_requests.c.member_id == filters["member_id"])
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(
            tuple_(help_requests.c.created_at, help_requests.c.id) > tuple_(after[0], after[1])
        )
    query = query.order_by(help_requests.c.created_at, help_requests.c.id).limit(limit + 1)
    rows = (await session.execute(query)).mappings().all()
    return page_of(rows, limit=limit, key=lambda r: [r["created_at"], r["id"]], filters=filters)


async def candidates(
    session: AsyncSession, *, principal: Principal, request_id: uuid.UUID
) -> list[dict[str, Any]]:
    """Active members enrolled in or living in the request's community, scored: +10 per
    needed skill on their card (case-insensitive), +5 living in the request's building
    group, −2 per request they hold open now. Best first; ties by lighter load, then name."""
    if principal.role is Role.member:
        raise Forbidden("The community matches requests to members.")
    request = await get(session, principal=principal, request_id=request_id)
    root = select(orgs.c.path).where(orgs.c.org_id == request["org_id"]).scalar_subquery()
    load = (
        select(func.count())
        .where(
            help_requests.c.member_id == members.c.member_id,
            help_requests.c.status == HelpStatus.assigned.value,
        )
        .correlate(members)
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            select(
                members.c.member_id,
                members.c.name,
                members.c.skills,
                members.c.group_id,
                load.label("load"),
            ).where(
                members.c.status == "active",
                members.c.merged_into.is_(None),
                or_(members.c.org_path.op("<@")(root), members.c.residence_path.op("<@")(root)),
            )
        )
    ).all()
    needed = {s.casefold(): s for s in request["needed_skills"]}
    scored = []
    for r in rows:
        have = {s.casefold() for s in (r.skills or [])}
        matched = [needed[k] for k in needed if k in have]
        same_building = request["building_id"] is not None and r.group_id == request["building_id"]
        score = (
            SKILL_POINTS * len(matched)
            + (BUILDING_POINTS if same_building else 0)
            - LOAD_PENALTY * int(r.load)
        )
        reasons = [f"skill: {s}" for s in matched]
        if same_building:
            reasons.append("same building")
        reasons.append(f"load {int(r.load)}")
        scored.append(
            {
                "member_id": r.member_id,
                "name": r.name,
                "score": score,
                "reasons": reasons,
                "_load": int(r.load),
            }
        )
    scored.sort(key=lambda c: (-c["score"], c["_load"], c["name"], str(c["member_id"])))
    return [{k: v for k, v in c.items() if k != "_load"} for c in scored[:MAX_CANDIDATES]]


async def _in_community(session: AsyncSession, org_id: uuid.UUID, member_id: uuid.UUID) -> bool:
    root = select(orgs.c.path).where(orgs.c.org_id == org_id).scalar_subquery()
    found = await session.scalar(
        select(members.c.member_id).where(
            members.c.member_id == member_id,
            members.c.status == "active",
            or_(members.c.org_path.op("<@")(root), members.c.residence_path.op("<@")(root)),
        )
    )
    return found is not None


async def _take(
    session: AsyncSession, principal: Principal, request: Any, member_id: uuid.UUID, action: str
) -> Any:
    if request["status"] != HelpStatus.open:
        raise InvalidTransition(f"The request is {request['status']}, not open.")
    row = (
        (
            await session.execute(
                update(help_requests)
                .where(help_requests.c.id == request["id"])
                .values(
                    status=HelpStatus.assigned.value, member_id=member_id, assigned_at=func.now()
                )
                .returning(help_requests)
            )
        )
        .mappings()
        .one()
    )
    await audit.record(
        session,
        audit_log,
        principal,
        action=action,
        resource="help_request",
        record_id=request["id"],
        subject_member_id=member_id,
    )
    return row


async def assign(
    session: AsyncSession, *, principal: Principal, request_id: uuid.UUID, member_id: uuid.UUID
) -> Any:
    require_writer(principal)
    request = await _writable(session, principal, request_id)
    if not await _in_community(session, request["org_id"], member_id):
        raise MemberNotFound("No such active member in the request's community.")
    return await _take(session, principal, request, member_id, "assign")


async def claim(session: AsyncSession, *, principal: Principal, request_id: uuid.UUID) -> Any:
    if principal.role is not Role.member or principal.member_id is None:
        raise Forbidden("Members claim requests for themselves.")
    request = await get(session, principal=principal, request_id=request_id, lock=True)
    if not await _in_community(session, request["org_id"], principal.member_id):
        raise HelpRequestNotFound("No such help request in your scope.")
    return await _take(session, principal, request, principal.member_id, "claim")


async def _writable(session: AsyncSession, principal: Principal, request_id: uuid.UUID) -> Any:
    row = (
        (
            await session.execute(
                select(help_requests)
                .where(
                    help_requests.c.id == request_id,
                    org_writable(principal, help_requests.c.org_id),
                )
                .with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise HelpRequestNotFound("No such help request in your scope.")
    return row


async def complete(
    session: AsyncSession,
    *,
    principal: Principal,
    request_id: uuid.UUID,
    spent: Decimal,
    on: date | None,
) -> Any:
    """The member holding it (or an org admin) completes it: logs the service hours (to be
    verified like any others) and marks it done."""
    if principal.role is Role.member:
        request = await get(session, principal=principal, request_id=request_id, lock=True)
        if request["member_id"] != principal.member_id:
            raise Forbidden("Only the member holding the request completes it.")
    else:
        require_writer(principal)
        request = await _writable(session, principal, request_id)
    if request["status"] != HelpStatus.assigned:
        raise InvalidTransition(f"The request is {request['status']}, not assigned.")
    await hours.log_hours(
        session,
        principal=principal,
        member_id=request["member_id"],
        on=on or date.today(),
        hours=spent,
        role="为民排忧解难员",
        help_request_id=request_id,
        description=request["title"],
    )
    row = (
        (
            await session.execute(
                update(help_requests)
                .where(help_requests.c.id == request_id)
                .values(status=HelpStatus.done.value, hours=spent, completed_at=func.now())
                .returning(help_requests)
            )
        )
        .mappings()
        .one()
    )
    await audit.record(
        session,
        audit_log,
        principal,
        action="complete",
        resource="help_request",
        record_id=request_id,
        subject_member_id=request["member_id"],
    )
    return row


async def close(session: AsyncSession, *, principal: Principal, request_id: uuid.UUID) -> Any:
    """The community closes a done request on the resident's confirmation."""
    require_writer(principal)
    request = await _writable(session, principal, request_id)
    if request["status"] != HelpStatus.done:
        raise InvalidTransition(f"The request is {request['status']}, not done.")
    row = (
        (
            await session.execute(
                update(help_requests)
                .where(help_requests.c.id == request_id)
                .values(status=HelpStatus.closed.value, closed_at=func.now())
                .returning(help_requests)
            )
        )
        .mappings()
        .one()
    )
    await audit.record(
        session, audit_log, principal, action="close", resource="help_request", record_id=request_id
    )
    return row
