"""Points (积分): rules per activity type and per verified service hour (system defaults from
the migration, overridden per org and inherited down its subtree), an append-only ledger per
member whose balance is the sum of its entries, redemption for material rewards, and the
leaderboard per org and year."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from sqlalchemy import Select, bindparam, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal
from common.events.outbox import EventRow, emit_many
from services.activities.errors import InsufficientPoints
from services.activities.models import (
    ActivityType,
    PointsSource,
    audit_log,
    members,
    orgs,
    outbox,
    points_ledger,
    points_rules,
)
from services.activities.schemas import PointsRuleSet
from services.activities.service import keys
from services.activities.service.scope import (
    member_row,
    readable_org_path,
    subtree_ids,
    writable_org_path,
)


async def _lock_member(session: AsyncSession, member_id: uuid.UUID) -> None:
    """Serialises ledger writes of one member (the balance check of a redemption)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('activities.points'), hashtext(:m))"),
        {"m": str(member_id)},
    )


async def _lock_members(session: AsyncSession, member_ids: list[uuid.UUID]) -> None:
    """`_lock_member` for many, in one statement, in a fixed order (two writers locking
    overlapping sets cannot each wait for the other)."""
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtext('activities.points'), hashtext(m)) "
            "FROM (SELECT m FROM unnest(CAST(:ms AS text[])) AS u(m) ORDER BY m) AS ordered"
        ),
        {"ms": sorted({str(m) for m in member_ids})},
    )


async def rule_points(
    session: AsyncSession, *, org_id: uuid.UUID | None, source: PointsSource, activity_type: Any
) -> int:
    """The rule in force for an org: its own, else its nearest ancestor's, else the system
    default."""
    return int((await _effective(session, org_id, source, activity_type))["points"])


async def balance(session: AsyncSession, member_id: uuid.UUID) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(points_ledger.c.points), 0)).where(
            points_ledger.c.member_id == member_id
        )
    )
    return int(total or 0)


@dataclass(frozen=True)
class Settlement:
    member_id: uuid.UUID
    org_id: uuid.UUID | None
    target: int


async def settle_many(
    session: AsyncSession,
    settlements: Sequence[Settlement],
    *,
    year: int,
    reason: str,
    source_id: uuid.UUID,
    actor: str,
) -> list[int]:
    """`settle` for many members from one source at once (an attendance list): a few
    statements for the lot instead of four per member. Returns each one's delta."""
    if not settlements:
        return []
    ids = [s.member_id for s in settlements]
    await _lock_members(session, ids)
    current = {
        r.member_id: int(r.total)
        for r in await session.execute(
            select(
                points_ledger.c.member_id,
                func.coalesce(func.sum(points_ledger.c.points), 0).label("total"),
            )
            .where(
                points_ledger.c.member_id.in_(ids),
                points_ledger.c.source_id == source_id,
                points_ledger.c.reason == reason,
            )
            .group_by(points_ledger.c.member_id)
        )
    }
    deltas = [s.target - current.get(s.member_id, 0) for s in settlements]
    due = [(s, d) for s, d in zip(settlements, deltas, strict=True) if d != 0]
    if not due:
        return deltas
    member_keys = await keys.member_keys(session, (s.member_id for s, _ in due))
    # One statement whatever the number of rows (its form does not change with it, so it
    # is built and planned once), the keys read above.
    entries = (
        await session.execute(
            insert(points_ledger).returning(
                points_ledger.c.id, points_ledger.c.shard_key, points_ledger.c.member_id
            ),
            [
                {
                    "shard_key": member_keys[s.member_id],
                    "member_id": s.member_id,
                    "org_id": s.org_id,
                    "year": year,
                    "points": delta,
                    "reason": reason,
                    "source_id": source_id,
                    "created_by": actor,
                }
                for s, delta in due
            ],
        )
    ).all()
    by_member = {e.member_id: e for e in entries}
    await emit_many(
        session,
        outbox,
        [
            EventRow(
                type="points.awarded",
                aggregate_type="member_points",
                aggregate_id=s.member_id,
                aggregate_version=int(by_member[s.member_id].id),
                payload={
                    "member_id": s.member_id,
                    "org_id": s.org_id,
                    "points": delta,
                    "reason": reason,
                    "source_id": source_id,
                    "year": year,
                },
                shard_key=by_member[s.member_id].shard_key,
            )
            for s, delta in due
        ],
    )
    return deltas


async def settle(
    session: AsyncSession,
    *,
    member_id: uuid.UUID,
    org_id: uuid.UUID | None,
    year: int,
    reason: str,
    source_id: uuid.UUID,
    target: int,
    actor: str,
) -> int:
    """Make the member's points from one source (an attendance, an hours entry) add up to
    `target` by appending the difference; returns it (0: nothing appended). Idempotent."""
    (delta,) = await settle_many(
        session,
        [Settlement(member_id=member_id, org_id=org_id, target=target)],
        year=year,
        reason=reason,
        source_id=source_id,
        actor=actor,
    )
    return delta


def hour_points(hours: Decimal, per_hour: int) -> int:
    return int((hours * per_hour).to_integral_value(rounding=ROUND_FLOOR))


async def list_rules(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID | None
) -> list[dict[str, Any]]:
    """The rules in force for `org_id` (or the system defaults), one per activity type and
    one per service hour."""
    if org_id is not None:
        await readable_org_path(session, principal, org_id)
    out = []
    for activity_type in ActivityType:
        out.append(await _effective(session, org_id, PointsSource.activity, activity_type))
    out.append(await _effective(session, org_id, PointsSource.service_hour, None))
    return out


def _rule_query(typed: bool) -> Select[Any]:
    """The rule in force for `:org_id` (its own, else the nearest ancestor's with one, else
    the system's) for `:source` and `:activity_type` (`typed`) or no type; built once, run
    with parameters. No org: only the system's rule (`path @> NULL` holds for no org)."""
    org_path = select(orgs.c.path).where(orgs.c.org_id == bindparam("org_id")).scalar_subquery()
    kind = points_rules.c.activity_type
    return (
        select(points_rules.c.points, points_rules.c.org_id)
        .select_from(points_rules.outerjoin(orgs, orgs.c.org_id == points_rules.c.org_id))
        .where(
            points_rules.c.source == bindparam("source"),
            kind == bindparam("activity_type") if typed else kind.is_(None),
            or_(points_rules.c.org_id.is_(None), orgs.c.path.op("@>")(org_path)),
        )
        .order_by(func.nlevel(orgs.c.path).desc().nulls_last())
        .limit(1)
    )


_RULE = {typed: _rule_query(typed) for typed in (True, False)}


async def _effective(
    session: AsyncSession, org_id: uuid.UUID | None, source: PointsSource, activity_type: Any
) -> dict[str, Any]:
    params: dict[str, Any] = {"org_id": org_id, "source": source.value}
    if activity_type is not None:
        params["activity_type"] = str(activity_type)
    row = (await session.execute(_RULE[activity_type is not None], params)).first()
    return {
        "source": source,
        "activity_type": activity_type,
        "points": int(row.points) if row else 0,
        "org_id": row.org_id if row else None,
    }


async def set_rule(
    session: AsyncSession, *, principal: Principal, data: PointsRuleSet
) -> dict[str, Any]:
    await writable_org_path(session, principal, data.org_id)
    activity_type = data.activity_type.value if data.activity_type else None
    stmt = insert(points_rules).values(
        id=uuid.uuid4(),
        org_id=data.org_id,
        source=data.source.value,
        activity_type=activity_type,
        points=data.points,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            constraint="uq_points_rules_org_id", set_={"points": stmt.excluded.points}
        )
    )
    await audit.record(
        session, audit_log, principal, action="set", resource="points_rule", record_id=data.org_id
    )
    return {
        "source": data.source,
        "activity_type": data.activity_type,
        "points": data.points,
        "org_id": data.org_id,
    }


async def member_points(
    session: AsyncSession, *, principal: Principal, member_id: uuid.UUID, year: int | None
) -> dict[str, Any]:
    await member_row(session, principal, member_id)
    query = select(points_ledger).where(points_ledger.c.member_id == member_id)
    if year is not None:
        query = query.where(points_ledger.c.year == year)
    entries = (
        (await session.execute(query.order_by(points_ledger.c.id.desc()).limit(500)))
        .mappings()
        .all()
    )
    earned = None
    if year is not None:
        earned = int(
            await session.scalar(
                select(func.coalesce(func.sum(points_ledger.c.points), 0)).where(
                    points_ledger.c.member_id == member_id,
                    points_ledger.c.year == year,
                    points_ledger.c.points > 0,
                )
            )
            or 0
        )
    return {
        "member_id": member_id,
        "balance": await balance(session, member_id),
        "year": year,
        "earned_in_year": earned,
        "entries": entries,
    }


async def redeem(
    session: AsyncSession,
    *,
    principal: Principal,
    member_id: uuid.UUID,
    reward: str,
    points: int,
    year: int,
) -> Any:
    """Spend points on a material reward; refused (409) beyond the balance."""
    member = await member_row(session, principal, member_id, write=True)
    await _lock_member(session, member_id)
    available = await balance(session, member_id)
    if points > available:
        raise InsufficientPoints(f"The member has {available} points; {points} asked.")
    row = (
        (
            await session.execute(
                insert(points_ledger)
                .values(
                    shard_key=keys.known(member["shard_key"]),
                    member_id=member_id,
                    org_id=member["org_id"],
                    year=year,
                    points=-points,
                    reason="redemption",
                    note=reward,
                    created_by=principal.username or principal.subject,
                )
                .returning(points_ledger)
            )
        )
        .mappings()
        .one()
    )
    await audit.record(
        session,
        audit_log,
        principal,
        action="redeem",
        resource="points",
        subject_member_id=member_id,
    )
    return row


async def leaderboard(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID, year: int, limit: int
) -> list[dict[str, Any]]:
    """Members of the org's subtree by points earned in the year (redemptions do not lower
    a rank), ties by name then id."""
    await readable_org_path(session, principal, org_id)
    earned = func.sum(points_ledger.c.points).label("points")
    rows = (
        await session.execute(
            select(members.c.member_id, members.c.name, earned)
            .join(points_ledger, points_ledger.c.member_id == members.c.member_id)
            .where(
                members.c.org_id.in_(subtree_ids(org_id)),
                points_ledger.c.year == year,
                points_ledger.c.points > 0,
            )
            .group_by(members.c.member_id, members.c.name)
            .order_by(earned.desc(), members.c.name, members.c.member_id)
            .limit(limit)
        )
    ).all()
    return [
        {"rank": i, "member_id": r.member_id, "name": r.name, "points": int(r.points)}
        for i, r in enumerate(rows, start=1)
    ]
