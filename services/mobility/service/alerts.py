"""Alerts per org subtree (重复组织 / 遗漏: organised twice or missed by everyone) and the
flow statistics for reports. Every alert is computed from the current data when read, so it
disappears as soon as its cause is fixed."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import and_, exists, extract, func, literal, literal_column, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from common.auth import Principal
from services.mobility.models import (
    CardStatus,
    Direction,
    LinkStatus,
    last_org_life,
    links,
    members,
    mobile_cards,
    transfers,
)
from services.mobility.schemas import Alert, CommunityLinks, Count, Statistics
from services.mobility.service.cards import card_status
from services.mobility.service.scope import ids_under, scoped_root
from services.mobility.settings import MobilitySettings

ALERT_TYPES = (
    "duplicate_person",
    "pocket_member",
    "unreported_resident",
    "lost_contact",
    "no_org_life",
)
ORG_LIFE_TYPES = ("branch_assembly", "branch_committee", "group_meeting", "party_lecture")
GONE = ("transferred_out", "deceased", "removed")
m = members.c


def _live() -> Any:
    return and_(m.merged_into.is_(None), m.status.not_in(GONE))


def _member_under(root: uuid.UUID | None) -> Any:
    if root is None:
        return true()
    under = ids_under(root)
    return or_(m.org_id.in_(under), m.residence_org_id.in_(under))


def _under(column: Any, root: uuid.UUID | None) -> Any:
    return true() if root is None else column.in_(ids_under(root))


async def list_alerts(
    session: AsyncSession,
    *,
    principal: Principal,
    org_id: uuid.UUID | None,
    type: str | None,
    settings: MobilitySettings,
) -> list[Alert]:
    root = await scoped_root(session, principal=principal, org_id=org_id)
    wanted = [type] if type else list(ALERT_TYPES)
    out: list[Alert] = []
    for kind in wanted:
        out.extend(await _ALERTS[kind](session, root, settings))
    return sorted(out, key=lambda a: (a.type, str(a.record_id)))


async def _duplicates(
    session: AsyncSession, root: uuid.UUID | None, _: MobilitySettings
) -> list[Alert]:
    other = aliased(members)
    twin = (
        select(func.array_agg(other.c.member_id))
        .where(
            other.c.name == m.name,
            other.c.birth_date == m.birth_date,
            other.c.member_id != m.member_id,
            other.c.merged_into.is_(None),
            other.c.status.not_in(GONE),
        )
        .scalar_subquery()
    )
    rows = await session.execute(
        select(m.member_id, m.org_id, m.residence_org_id, twin.label("twins")).where(
            _live(), _member_under(root), m.birth_date.is_not(None), twin.is_not(None)
        )
    )
    return [
        Alert(
            type="duplicate_person",
            record_id=r.member_id,
            member_id=r.member_id,
            org_id=r.org_id or r.residence_org_id,
            reason="the same name and birth date as " + ", ".join(sorted(str(t) for t in r.twins)),
        )
        for r in rows
    ]


async def _pockets(
    session: AsyncSession, root: uuid.UUID | None, _: MobilitySettings
) -> list[Alert]:
    t = transfers.c
    expired = await session.execute(
        select(m.member_id, m.org_id, t.transfer_id, t.valid_until)
        .join(transfers, t.member_id == m.member_id)
        .where(
            _live(), _member_under(root), t.status == "issued", t.valid_until < func.current_date()
        )
    )
    out = [
        Alert(
            type="pocket_member",
            record_id=r.member_id,
            member_id=r.member_id,
            org_id=r.org_id,
            reason=f"transfer letter {r.transfer_id} expired on {r.valid_until} "
            "and was never received",
        )
        for r in expired
    ]
    orphans = await session.execute(
        select(m.member_id, m.residence_org_id).where(
            _live(), _member_under(root), m.relation == "enrolled", m.org_id.is_(None)
        )
    )
    out += [
        Alert(
            type="pocket_member",
            record_id=r.member_id,
            member_id=r.member_id,
            org_id=r.residence_org_id,
            reason="an enrolled member without an organization",
        )
        for r in orphans
    ]
    return out


async def _unreported(
    session: AsyncSession, root: uuid.UUID | None, s: MobilitySettings
) -> list[Alert]:
    lc = links.c
    rows = await session.execute(
        select(lc.id, lc.member_id, lc.residence_org_id, lc.created_at).where(
            lc.status == LinkStatus.pending.value,
            lc.created_at < func.now() - func.make_interval(0, 0, 0, s.unreported_days),
            or_(_under(lc.residence_org_id, root), _under(lc.workplace_org_id, root)),
        )
    )
    return [
        Alert(
            type="unreported_resident",
            record_id=r.id,
            member_id=r.member_id,
            org_id=r.residence_org_id,
            reason=f"linked on {r.created_at.date()} and not reported to the community "
            f"within {s.unreported_days} days",
        )
        for r in rows
    ]


async def _lost(session: AsyncSession, root: uuid.UUID | None, s: MobilitySettings) -> list[Alert]:
    c = mobile_cards.c
    rows = await session.execute(
        select(
            c.id, c.member_id, c.org_id, func.coalesce(c.last_contact_on, c.left_on).label("since")
        ).where(
            card_status(s.lost_contact_days) == CardStatus.lost_contact.value,
            _under(c.org_id, root),
        )
    )
    return [
        Alert(
            type="lost_contact",
            record_id=r.id,
            member_id=r.member_id,
            org_id=r.org_id,
            reason=f"no contact since {r.since} (more than {s.lost_contact_days} days)",
        )
        for r in rows
    ]


async def _no_org_life(
    session: AsyncSession, root: uuid.UUID | None, s: MobilitySettings
) -> list[Alert]:
    lo = last_org_life.c
    cutoff = func.now() - func.make_interval(0, s.org_life_months)
    attended = exists().where(lo.member_id == m.member_id, lo.last_attended_at >= cutoff)
    under = true() if root is None else m.org_id.in_(ids_under(root))
    rows = await session.execute(
        select(
            m.member_id,
            m.org_id,
            select(lo.last_attended_at)
            .where(lo.member_id == m.member_id)
            .scalar_subquery()
            .label("last"),
        ).where(_live(), m.relation == "enrolled", m.org_id.is_not(None), under, ~attended)
    )
    return [
        Alert(
            type="no_org_life",
            record_id=r.member_id,
            member_id=r.member_id,
            org_id=r.org_id,
            reason=(
                f"no organizational life attended since {r.last.date()}"
                if r.last
                else "no organizational life attended on record"
            )
            + f" (more than {s.org_life_months} months)",
        )
        for r in rows
    ]


_ALERTS = {
    "duplicate_person": _duplicates,
    "pocket_member": _pockets,
    "unreported_resident": _unreported,
    "lost_contact": _lost,
    "no_org_life": _no_org_life,
}


def _share(n: int, total: int) -> float | None:
    return round(n / total, 4) if total else None


async def statistics(
    session: AsyncSession,
    *,
    principal: Principal,
    org_id: uuid.UUID | None,
    year: int,
    settings: MobilitySettings,
) -> Statistics:
    root = await scoped_root(session, principal=principal, org_id=org_id)
    c = mobile_cards.c
    flows = dict.fromkeys(("inflow", "outflow"), 0)
    for r in await session.execute(
        select(c.direction, func.count())
        .where(_under(c.org_id, root), extract("year", c.left_on) == year)
        .group_by(c.direction)
    ):
        flows["inflow" if r[0] == Direction.inflow.value else "outflow"] = int(r[1])
    status = card_status(settings.lost_contact_days)
    by_status = {s.value: 0 for s in CardStatus}
    for r in await session.execute(
        select(status.label("s"), func.count())
        .where(_under(c.org_id, root))
        .group_by(literal_column("s"))
    ):
        by_status[r[0]] = int(r[1])
    total = sum(by_status.values())
    lc = links.c
    community: list[CommunityLinks] = []
    for r in await session.execute(
        select(
            lc.residence_org_id,
            func.count(),
            func.count().filter(lc.status == LinkStatus.reported.value),
        )
        .where(lc.status != LinkStatus.ended.value, _under(lc.residence_org_id, root))
        .group_by(lc.residence_org_id)
        .order_by(lc.residence_org_id)
    ):
        community.append(
            CommunityLinks(
                org_id=r[0],
                links=int(r[1]),
                reported=int(r[2]),
                report_rate=_share(int(r[2]), int(r[1])),
            )
        )
    all_links = sum(x.links for x in community)
    reported = sum(x.reported for x in community)
    return Statistics(
        org_id=root,
        year=year,
        flows=flows,
        dual_management={
            "links": all_links,
            "reported": reported,
            "report_rate": _share(reported, all_links),
        },
        by_community=community,
        mobile={
            "by_status": {k: Count(count=v, share=_share(v, total)) for k, v in by_status.items()}
        },
    )


__all__ = ["ALERT_TYPES", "ORG_LIFE_TYPES", "date", "list_alerts", "literal", "statistics"]
