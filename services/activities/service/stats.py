"""The statistics reports are composed from: per org subtree and year, counts and rates
(rates are null when there is nothing to divide by, never a forced figure)."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import extract, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from common.auth import Principal, Role
from common.errors import Forbidden
from common.stats import AGE_BANDS, EDUCATION_BANDS, age_band, breakdown, education_band
from services.activities.models import (
    ORGANIZATIONAL_LIFE,
    AssignmentKind,
    AttendanceStatus,
    activities,
    attendance,
    fund_allocations,
    fund_expenses,
    members,
    pledge_items,
    points_ledger,
    programs,
    role_assignments,
    service_hours,
    talks,
)
from services.activities.service.scope import ACTIVE, readable_org_path, subtree_ids
from services.activities.service.training import coverage_figures

CENT = Decimal("0.01")


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def stats(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID, year: int
) -> dict[str, Any]:
    if principal.role is Role.member:
        raise Forbidden("Statistics are for org roles.")
    await readable_org_path(session, principal, org_id)
    orgs_under = subtree_ids(org_id)
    member_count = int(
        await session.scalar(
            select(func.count()).where(
                members.c.org_id.in_(orgs_under),
                members.c.status.in_(ACTIVE),
                members.c.merged_into.is_(None),
            )
        )
        or 0
    )
    in_year = [
        activities.c.org_id.in_(orgs_under),
        extract("year", activities.c.starts_at) == year,
    ]
    by_type = {
        r.type: int(r.n)
        for r in await session.execute(
            select(activities.c.type, func.count().label("n"))
            .where(*in_year)
            .group_by(activities.c.type)
            .order_by(activities.c.type)
        )
    }

    async def attendance_rate(types: Any = None) -> float | None:
        query = (
            select(
                func.count().filter(attendance.c.status == AttendanceStatus.present.value),
                func.count(),
            )
            .select_from(attendance.join(activities, activities.c.id == attendance.c.activity_id))
            .where(*in_year)
        )
        if types is not None:
            query = query.where(activities.c.type.in_([t.value for t in types]))
        present, total = (await session.execute(query)).one()
        return _rate(int(present), int(total))

    talk_count = int(
        await session.scalar(
            select(func.count()).where(
                talks.c.org_id.in_(orgs_under), extract("year", talks.c.held_on) == year
            )
        )
        or 0
    )
    hours_sum, hours_entries = (
        await session.execute(
            select(func.coalesce(func.sum(service_hours.c.hours), 0), func.count()).where(
                service_hours.c.org_id.in_(orgs_under),
                service_hours.c.verified,
                extract("year", service_hours.c.on) == year,
            )
        )
    ).one()
    ten_ones = select(programs.c.id).where(
        programs.c.org_id.is_(None), programs.c.code == "ten_ones"
    )
    pledges_done = int(
        await session.scalar(
            select(func.count()).where(
                pledge_items.c.year == year,
                pledge_items.c.program_id.in_(ten_ones),
                pledge_items.c.member_id.in_(
                    select(members.c.member_id).where(members.c.org_id.in_(orgs_under))
                ),
            )
        )
        or 0
    )
    points_awarded = int(
        await session.scalar(
            select(func.coalesce(func.sum(points_ledger.c.points), 0)).where(
                points_ledger.c.org_id.in_(orgs_under),
                points_ledger.c.year == year,
                points_ledger.c.points > 0,
            )
        )
        or 0
    )
    allocated = Decimal(
        await session.scalar(
            select(func.coalesce(func.sum(fund_allocations.c.amount), 0)).where(
                fund_allocations.c.org_id.in_(orgs_under), fund_allocations.c.year == year
            )
        )
        or 0
    )
    spent = Decimal(
        await session.scalar(
            select(func.coalesce(func.sum(fund_expenses.c.amount), 0)).where(
                fund_expenses.c.allocation_id.in_(
                    select(fund_allocations.c.id).where(
                        fund_allocations.c.org_id.in_(orgs_under),
                        fund_allocations.c.year == year,
                    )
                )
            )
        )
        or 0
    )
    as_of = min(date(year, 12, 31), date.today())
    workers, trained = await coverage_figures(session, org_id=org_id, as_of=as_of)
    party_workers = await _party_worker_bands(session, orgs_under=orgs_under, as_of=as_of)
    return {
        "org_id": org_id,
        "year": year,
        "members": member_count,
        "activities_by_type": by_type,
        "activities": sum(by_type.values()),
        "attendance_rate": await attendance_rate(),
        "organizational_life_attendance_rate": await attendance_rate(ORGANIZATIONAL_LIFE),
        "talks": talk_count,
        "service_hours_verified": Decimal(hours_sum),
        "service_hours_entries": int(hours_entries),
        "pledge_items_done": pledges_done,
        "pledge_completion": _rate(pledges_done, member_count * 10),
        "points_awarded": points_awarded,
        "funds_allocated": allocated,
        "funds_spent": spent,
        "funds_per_member": (allocated / member_count).quantize(CENT, rounding=ROUND_HALF_UP)
        if member_count
        else None,
        "training_coverage": _rate(trained, workers),
        "party_workers": party_workers,
    }


async def _party_worker_bands(
    session: AsyncSession, *, orgs_under: Any, as_of: date
) -> dict[str, Any]:
    """Party workers (open `party_worker` assignments in the subtree at `as_of`, each member
    once) by age band at `as_of` and by education band, from the projected members; a
    worker the projection does not know (yet) or knows no education of is `unknown`."""
    workers = (
        select(role_assignments.c.member_id)
        .where(
            role_assignments.c.kind == AssignmentKind.party_worker.value,
            role_assignments.c.org_id.in_(orgs_under),
            role_assignments.c.started_on <= as_of,
            (role_assignments.c.ended_on.is_(None)) | (role_assignments.c.ended_on >= as_of),
        )
        .distinct()
        .subquery()
    )
    banded = (
        select(
            age_band(members.c.birth_date, as_of).label("age_band"),
            education_band(members.c.education).label("education_band"),
        )
        .select_from(workers.outerjoin(members, members.c.member_id == workers.c.member_id))
        .subquery()
    )
    by_age: dict[str, int] = {}
    by_education: dict[str, int] = {}
    for age, education, n in await session.execute(
        select(banded.c.age_band, banded.c.education_band, func.count()).group_by(
            banded.c.age_band, banded.c.education_band
        )
    ):
        by_age[age] = by_age.get(age, 0) + int(n)
        by_education[education] = by_education.get(education, 0) + int(n)
    total = sum(by_age.values())
    return {
        "total": total,
        "by_age_band": breakdown(by_age, AGE_BANDS, total),
        "by_education_band": breakdown(by_education, EDUCATION_BANDS, total),
    }
