"""Programs: templates an org adopts (the system's "ten ones" pledge and "eight roles" from
the first migration, or an org's own), each member's yearly pledge with every done item
linked to its evidence, and role assignments (a role of a program, a post by layer, or the
party-worker post) with their history."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.errors import FieldError, Unprocessable
from services.activities.errors import (
    InvalidEvidence,
    InvalidTransition,
    ProgramNotFound,
    RoleAlreadyHeld,
    RoleAssignmentNotFound,
)
from services.activities.models import (
    EvidenceType,
    ProgramKind,
    activities,
    attendance,
    audit_log,
    help_requests,
    pledge_items,
    program_adoptions,
    programs,
    role_assignments,
    service_hours,
)
from services.activities.schemas import (
    PledgeItemDone,
    ProgramCreate,
    RoleAssignmentCreate,
)
from services.activities.service import keys
from services.activities.service.scope import (
    member_row,
    org_readable,
    org_writable,
    require_reader,
    require_writer,
    subtree_ids,
    writable_org_path,
)

TEN_ONES = "ten_ones"


def _actor(principal: Principal) -> str:
    return principal.username or principal.subject


def _visible(principal: Principal) -> Any:
    """System templates and the programs of orgs the principal reads."""
    return or_(programs.c.org_id.is_(None), org_readable(principal, programs.c.org_id))


async def _adopters(
    session: AsyncSession, principal: Principal, program_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    out: dict[uuid.UUID, list[uuid.UUID]] = {p: [] for p in program_ids}
    rows = await session.execute(
        select(program_adoptions.c.program_id, program_adoptions.c.org_id)
        .where(
            program_adoptions.c.program_id.in_(program_ids),
            org_readable(principal, program_adoptions.c.org_id),
        )
        .order_by(program_adoptions.c.adopted_at, program_adoptions.c.org_id)
    )
    for r in rows:
        out[r.program_id].append(r.org_id)
    return out


async def list_programs(
    session: AsyncSession, *, principal: Principal, kind: ProgramKind | None
) -> list[dict[str, Any]]:
    require_reader(principal)
    query = select(programs).where(_visible(principal))
    if kind is not None:
        query = query.where(programs.c.kind == kind.value)
    rows = (
        (
            await session.execute(
                query.order_by(programs.c.org_id.is_not(None), programs.c.code, programs.c.id)
            )
        )
        .mappings()
        .all()
    )
    adopters = await _adopters(session, principal, [r["id"] for r in rows])
    return [{**r, "adopted_by": adopters[r["id"]]} for r in rows]


async def get_program(session: AsyncSession, *, principal: Principal, program_id: uuid.UUID) -> Any:
    require_reader(principal)
    row = (
        (
            await session.execute(
                select(programs).where(programs.c.id == program_id, _visible(principal))
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise ProgramNotFound("No such program.")
    adopters = await _adopters(session, principal, [row["id"]])
    return {**row, "adopted_by": adopters[row["id"]]}


async def create_program(
    session: AsyncSession, *, principal: Principal, data: ProgramCreate
) -> dict[str, Any]:
    """An org's own program; the org adopts it at once."""
    await writable_org_path(session, principal, data.org_id)
    row = (
        (
            await session.execute(
                insert(programs)
                .values(
                    id=uuid.uuid4(),
                    org_id=data.org_id,
                    code=data.code,
                    name=data.name,
                    kind=data.kind.value,
                    items=[i.model_dump() for i in sorted(data.items, key=lambda i: i.n)],
                )
                .on_conflict_do_nothing()
                .returning(programs)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise Unprocessable(
            "The org has a program with this code already.",
            errors=[FieldError(field="code", message="already used by this org")],
        )
    await session.execute(
        insert(program_adoptions).values(
            shard_key=keys.org_key(data.org_id), program_id=row["id"], org_id=data.org_id
        )
    )
    await audit.record(
        session, audit_log, principal, action="create", resource="program", record_id=row["id"]
    )
    return {**row, "adopted_by": [data.org_id]}


async def adopt(
    session: AsyncSession, *, principal: Principal, program_id: uuid.UUID, org_id: uuid.UUID
) -> dict[str, Any]:
    """An org adopts a system template or a program of an org above it. Idempotent."""
    await writable_org_path(session, principal, org_id)
    program = await get_program(session, principal=principal, program_id=program_id)
    await session.execute(
        insert(program_adoptions)
        .values(shard_key=keys.org_key(org_id), program_id=program_id, org_id=org_id)
        .on_conflict_do_nothing()
    )
    await audit.record(
        session, audit_log, principal, action="adopt", resource="program", record_id=program_id
    )
    return await get_program(session, principal=principal, program_id=program["id"])


async def _pledge_program(
    session: AsyncSession, principal: Principal, program_id: uuid.UUID | None
) -> Any:
    if program_id is None:
        query = select(programs).where(programs.c.org_id.is_(None), programs.c.code == TEN_ONES)
    else:
        query = select(programs).where(programs.c.id == program_id, _visible(principal))
    row = (await session.execute(query)).mappings().first()
    if row is None or row["kind"] != ProgramKind.pledge:
        raise ProgramNotFound("No such pledge program.")
    return row


async def pledge(
    session: AsyncSession,
    *,
    principal: Principal,
    member_id: uuid.UUID,
    year: int,
    program_id: uuid.UUID | None,
) -> dict[str, Any]:
    require_reader(principal)
    await member_row(session, principal, member_id)
    program = await _pledge_program(session, principal, program_id)
    done = {
        r["n"]: r
        for r in (
            await session.execute(
                select(pledge_items).where(
                    pledge_items.c.member_id == member_id,
                    pledge_items.c.year == year,
                    pledge_items.c.program_id == program["id"],
                )
            )
        ).mappings()
    }
    items = []
    for item in program["items"]:
        d = done.get(item["n"])
        items.append(
            {
                **item,
                "done": d is not None,
                "done_on": d["done_on"] if d else None,
                "evidence_type": d["evidence_type"] if d else None,
                "evidence_id": d["evidence_id"] if d else None,
            }
        )
    return {
        "member_id": member_id,
        "year": year,
        "program_id": program["id"],
        "program": program["name"],
        "items": items,
        "done": len(done),
        "total": len(program["items"]),
    }


async def _evidence_date(
    session: AsyncSession, member_id: uuid.UUID, data: PledgeItemDone, year: int
) -> date | None:
    """The date of the evidence if it is the member's own: an activity they attended, their
    verified hours, a help request they completed; None when it is not."""
    if data.evidence_type is EvidenceType.activity:
        row = (
            await session.execute(
                select(activities.c.starts_at)
                .join(attendance, attendance.c.activity_id == activities.c.id)
                .where(
                    activities.c.id == data.evidence_id,
                    attendance.c.member_id == member_id,
                    attendance.c.status == "present",
                )
            )
        ).first()
        return row.starts_at.date() if row else None
    if data.evidence_type is EvidenceType.service_hours:
        row = (
            await session.execute(
                select(service_hours.c.on).where(
                    service_hours.c.id == data.evidence_id,
                    service_hours.c.member_id == member_id,
                    service_hours.c.verified,
                )
            )
        ).first()
        return row.on if row else None
    row = (
        await session.execute(
            select(help_requests.c.completed_at).where(
                help_requests.c.id == data.evidence_id,
                help_requests.c.member_id == member_id,
                help_requests.c.status.in_(["done", "closed"]),
            )
        )
    ).first()
    return row.completed_at.date() if row else None


async def mark_done(
    session: AsyncSession,
    *,
    principal: Principal,
    member_id: uuid.UUID,
    year: int,
    n: int,
    data: PledgeItemDone,
) -> dict[str, Any]:
    """Mark item `n` of the member's pledge done with its evidence (the member themself or
    an org admin in scope). Marking it again replaces the evidence."""
    if principal.role is Role.member:
        await member_row(session, principal, member_id)  # 404 for anyone but themself
    else:
        require_writer(principal)
        await member_row(session, principal, member_id, write=True)
    program = await _pledge_program(session, principal, data.program_id)
    if n < 1 or n > len(program["items"]):
        raise ProgramNotFound(f"The pledge has items 1..{len(program['items'])}.")
    on = await _evidence_date(session, member_id, data, year)
    if on is None:
        raise InvalidEvidence(
            "The evidence is not this member's (attended, verified or completed).",
            errors=[FieldError(field="evidence_id", message="not the member's evidence")],
        )
    done_on = data.done_on or on
    if done_on.year != year:
        raise InvalidEvidence(
            f"The evidence is of {done_on.year}, not {year}.",
            errors=[FieldError(field="done_on", message="outside the pledge's year")],
        )
    values = {
        "evidence_type": data.evidence_type.value,
        "evidence_id": data.evidence_id,
        "done_on": done_on,
        "recorded_by": _actor(principal),
    }
    stmt = insert(pledge_items).values(
        shard_key=keys.member_key(member_id),
        program_id=program["id"],
        member_id=member_id,
        year=year,
        n=n,
        **values,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[
                pledge_items.c.member_id,
                pledge_items.c.year,
                pledge_items.c.program_id,
                pledge_items.c.n,
            ],
            set_=values,
        )
    )
    await audit.record(
        session,
        audit_log,
        principal,
        action="pledge_done",
        resource="pledge",
        record_id=program["id"],
        subject_member_id=member_id,
    )
    return await pledge(
        session, principal=principal, member_id=member_id, year=year, program_id=program["id"]
    )


async def assign_role(
    session: AsyncSession, *, principal: Principal, data: RoleAssignmentCreate
) -> Any:
    await writable_org_path(session, principal, data.org_id)
    member = await member_row(session, principal, data.member_id, write=True)
    if data.program_id is not None:
        program = await get_program(session, principal=principal, program_id=data.program_id)
        titles = {i["title"] for i in program["items"]} | {
            i.get("title_zh") for i in program["items"]
        }
        if program["kind"] != ProgramKind.roles or data.role not in titles:
            raise Unprocessable(
                "The role is not one of the program's roles.",
                errors=[FieldError(field="role", message="not a role of the program")],
            )
    row = (
        (
            await session.execute(
                insert(role_assignments)
                .values(
                    id=uuid.uuid4(),
                    shard_key=keys.known(member["shard_key"]),
                    member_id=data.member_id,
                    org_id=data.org_id,
                    kind=data.kind.value,
                    role=data.role,
                    program_id=data.program_id,
                    layer=data.layer.value if data.layer else None,
                    started_on=data.started_on,
                    created_by=_actor(principal),
                )
                .on_conflict_do_nothing()
                .returning(role_assignments)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise RoleAlreadyHeld("The member holds this role already; end it first.")
    await audit.record(
        session,
        audit_log,
        principal,
        action="assign",
        resource="role_assignment",
        record_id=row["id"],
        subject_member_id=data.member_id,
    )
    return row


async def end_role(
    session: AsyncSession, *, principal: Principal, assignment_id: uuid.UUID, ended_on: date
) -> Any:
    require_writer(principal)
    current = (
        (
            await session.execute(
                select(role_assignments)
                .where(
                    role_assignments.c.id == assignment_id,
                    org_writable(principal, role_assignments.c.org_id),
                )
                .with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if current is None:
        raise RoleAssignmentNotFound("No such role assignment in your scope.")
    if current["ended_on"] is not None:
        raise InvalidTransition("This assignment has ended already.")
    if ended_on < current["started_on"]:
        raise Unprocessable(errors=[FieldError(field="ended_on", message="before started_on")])
    row = (
        (
            await session.execute(
                update(role_assignments)
                .where(role_assignments.c.id == assignment_id)
                .values(ended_on=ended_on)
                .returning(role_assignments)
            )
        )
        .mappings()
        .one()
    )
    await audit.record(
        session,
        audit_log,
        principal,
        action="end",
        resource="role_assignment",
        record_id=assignment_id,
        subject_member_id=row["member_id"],
    )
    return row


async def list_roles(
    session: AsyncSession, *, principal: Principal, filters: dict[str, Any]
) -> list[Any]:
    """Assignments, current ones first then the history (newest first)."""
    require_reader(principal)
    if principal.role is Role.member:
        # A member reads their own assignments.
        query = select(role_assignments).where(role_assignments.c.member_id == principal.member_id)
    else:
        query = select(role_assignments).where(org_readable(principal, role_assignments.c.org_id))
    if filters.get("org_id") is not None:
        query = query.where(role_assignments.c.org_id.in_(subtree_ids(filters["org_id"])))
    if filters.get("member_id") is not None:
        query = query.where(role_assignments.c.member_id == filters["member_id"])
    if filters.get("kind") is not None:
        query = query.where(role_assignments.c.kind == filters["kind"])
    if filters.get("current") is not None:
        query = query.where(
            role_assignments.c.ended_on.is_(None)
            if filters["current"]
            else role_assignments.c.ended_on.is_not(None)
        )
    query = query.order_by(
        role_assignments.c.ended_on.is_not(None),
        role_assignments.c.started_on.desc(),
        role_assignments.c.id,
    ).limit(500)
    return list((await session.execute(query)).mappings().all())
