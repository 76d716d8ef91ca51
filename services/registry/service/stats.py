"""Figures of an org subtree for reports, each one aggregate query (GROUP BY in PostgreSQL).

A subtree's members are those whose org is in it plus the residents whose residence org is
in it, each counted once (one row per member: the OR is inside one WHERE), and only live
records: not transferred out, deceased or removed, not merged into another. Ages are
counted at 31 December of the year, or today for the current (or a future) year. Every
breakdown lists every known value (zero included) and `unknown`; shares are fractions of
the breakdown's total rounded to 4 places, never forced to sum to 1."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, extract, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from common.auth import Principal
from common.errors import Forbidden
from common.stats import (
    AGE_BANDS,
    EDUCATION_BANDS,
    UNKNOWN,
    age_as_of,
    age_band,
    breakdown,
    education_band,
)
from services.registry.models import (
    AreaLevel,
    Category,
    Member,
    MemberStatus,
    Org,
    OrgKind,
    Relation,
    Transfer,
    TransferStatus,
)
from services.registry.service.orgs import get_org
from services.registry.service.scope import org_ids_under

GONE = (MemberStatus.transferred_out, MemberStatus.deceased, MemberStatus.removed)


async def stats(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID, year: int
) -> dict[str, Any]:
    if not principal.reads_org_data:
        raise Forbidden("Statistics are for org roles.")
    await get_org(session, org_id=org_id, principal=principal)  # 404 out of scope
    under = org_ids_under(org_id)
    as_of = age_as_of(year)

    org_rows = (
        await session.execute(
            select(Org.kind, Org.area_level, func.count())
            .where(Org.id.in_(under))  # type: ignore[attr-defined]
            .group_by(Org.kind, Org.area_level)
        )
    ).all()
    by_kind: dict[str, int] = {}
    by_level: dict[str, int] = {}
    for kind, level, n in org_rows:
        by_kind[kind] = by_kind.get(kind, 0) + int(n)
        by_level[level] = by_level.get(level, 0) + int(n)
    org_total = sum(by_kind.values())

    live = and_(
        or_(Member.org_id.in_(under), Member.residence_org_id.in_(under)),  # type: ignore[union-attr]
        Member.status.notin_([s.value for s in GONE]),  # type: ignore[attr-defined]
        Member.merged_into.is_(None),  # type: ignore[union-attr]
    )
    m = (
        select(
            Member.category.label("category"),
            Member.relation.label("relation"),
            age_band(Member.birth_date, as_of).label("age_band"),
            education_band(Member.education).label("education_band"),
        )
        .where(live)
        .subquery()
    )
    dims = ("category", "relation", "age_band", "education_band")
    grouped: dict[str, dict[str, int]] = {d: {} for d in dims}
    # One scan: a GROUPING SETS query, one set per breakdown.
    rows = await session.execute(
        select(
            *(m.c[d] for d in dims), *(func.grouping(m.c[d]) for d in dims), func.count()
        ).group_by(func.grouping_sets(*(m.c[d] for d in dims)))
    )
    for row in rows:
        values, flags, n = row[:4], row[4:8], int(row[8])
        for d, value, flag in zip(dims, values, flags, strict=True):
            if flag == 0:
                grouped[d][str(value) if value is not None else UNKNOWN] = n
    member_total = sum(grouped["relation"].values())

    completed = and_(
        Transfer.status == TransferStatus.completed.value,
        extract("year", Transfer.completed_at) == year,
    )
    to_in = Transfer.to_org_id.in_(under)  # type: ignore[union-attr]
    from_in = Transfer.from_org_id.in_(under)  # type: ignore[union-attr]
    t_in, t_out = (
        await session.execute(
            select(
                func.count().filter(to_in, or_(Transfer.from_org_id.is_(None), ~from_in)),  # type: ignore[union-attr]
                func.count().filter(from_in, or_(Transfer.to_org_id.is_(None), ~to_in)),  # type: ignore[union-attr]
            ).where(completed)
        )
    ).one()

    return {
        "org_id": org_id,
        "year": year,
        "age_as_of": as_of,
        "orgs": {
            "total": org_total,
            "by_kind": breakdown(by_kind, [k.value for k in OrgKind], org_total),
            "by_area_level": breakdown(by_level, [a.value for a in AreaLevel], org_total),
        },
        "members": {
            "total": member_total,
            "by_category": breakdown(
                grouped["category"], [c.value for c in Category], member_total
            ),
            "by_relation": breakdown(
                grouped["relation"], [r.value for r in Relation], member_total
            ),
            "by_age_band": breakdown(grouped["age_band"], AGE_BANDS, member_total),
            "by_education_band": breakdown(
                grouped["education_band"], EDUCATION_BANDS, member_total
            ),
        },
        "transfers": {"transfers_in": int(t_in), "transfers_out": int(t_out)},
    }
