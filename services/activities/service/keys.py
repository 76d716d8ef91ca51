"""The distribution key of this service's rows (common/sharding.py; the choice per table is in
models.py): read from the read model of the registry when a row is written, `UNSHARDED`
while its org or member is not projected yet, and moved along when the projection gives a
member or an org's subtree another key (`rekey_members`, `rekey_subtree`, run by the
registry consumer in the transaction of the event that changed it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import LTree
from common.sharding import UNSHARDED
from services.activities.models import (
    activities,
    fund_allocations,
    help_requests,
    members,
    orgs,
    pledge_items,
    program_adoptions,
    role_assignments,
    service_hours,
    talks,
    training_sessions,
)

# Rows keyed by their org's key. Attendance, signups and training attendance follow their
# activity or session (foreign keys ON UPDATE CASCADE), fund expenses their allocation.
ORG_KEYED: tuple[Table, ...] = (
    activities,
    help_requests,
    fund_allocations,
    training_sessions,
    program_adoptions,
)
# Rows keyed by their member's key; the points ledger too, through its own function (the
# service's role may not UPDATE a ledger).
MEMBER_KEYED: tuple[Table, ...] = (talks, service_hours, pledge_items, role_assignments)

_UUIDS = ARRAY(PGUUID(as_uuid=True))


def _unsharded() -> ColumnElement[uuid.UUID]:
    return literal(UNSHARDED, PGUUID(as_uuid=True))


def known(key: uuid.UUID | None) -> uuid.UUID:
    """A key read from the projection (a loaded `orgs` or `members` row), `UNSHARDED` when
    it has none."""
    return key or UNSHARDED


def org_key(org_id: Any) -> ColumnElement[uuid.UUID]:
    """The key of org `org_id` (a value or a column) as the projection holds it, for an
    INSERT's values: no round trip of its own."""
    projected = select(orgs.c.shard_key).where(orgs.c.org_id == org_id).scalar_subquery()
    return func.coalesce(projected, _unsharded())


def member_key(member_id: Any) -> ColumnElement[uuid.UUID]:
    """The key of member `member_id` (a value or a column) as the projection holds it."""
    projected = (
        select(members.c.shard_key).where(members.c.member_id == member_id).scalar_subquery()
    )
    return func.coalesce(projected, _unsharded())


async def member_keys(
    session: AsyncSession, member_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """`member_key` of many members read in one statement (for rows written in bulk, where
    a subquery per row made the INSERT itself a new statement to build and plan each time):
    each member's projected key, `UNSHARDED` for one not projected yet."""
    wanted = list(dict.fromkeys(member_ids))
    found = {
        r.member_id: r.shard_key
        for r in await session.execute(
            select(members.c.member_id, members.c.shard_key).where(
                members.c.member_id == any_(literal(wanted, _UUIDS))
            )
        )
    }
    return {m: known(found.get(m)) for m in wanted}


async def rekey_members(session: AsyncSession, which: ColumnElement[bool]) -> int:
    """The rows of the members matching `which` (a condition on `members`) take each
    member's projected key where they hold another: one statement for all the tables.
    Returns how many rows moved."""
    chosen = (
        select(
            members.c.member_id,
            func.coalesce(members.c.shard_key, _unsharded()).label("shard_key"),
        )
        .where(which)
        .cte("rekeyed_members")
    )
    moved = [
        update(table)
        .where(table.c.member_id == chosen.c.member_id, table.c.shard_key != chosen.c.shard_key)
        .values(shard_key=chosen.c.shard_key)
        .returning(table.c.member_id)
        .cte(f"moved_{table.name}")
        for table in MEMBER_KEYED
    ]
    ids = select(func.array_agg(chosen.c.member_id)).scalar_subquery()
    total: Any = func.activities.rekey_points_ledger(ids)
    for cte in moved:
        total = total + select(func.count()).select_from(cte).scalar_subquery()
    return int(await session.scalar(select(total)) or 0)


async def rekey_member_ids(session: AsyncSession, member_ids: Iterable[uuid.UUID]) -> int:
    """`rekey_members` for these members (after their events were applied)."""
    ids = sorted(set(member_ids))
    if not ids:
        return 0
    return await rekey_members(session, members.c.member_id == any_(literal(ids, _UUIDS)))


async def rekey_subtree(session: AsyncSession, *, path: str) -> int:
    """The org at `path` moved to another county, and the projection re-keyed its subtree's
    orgs and members: the rows of those orgs (activities with their attendance and signups,
    help requests, funds, training, adoptions) and of those members take the new keys."""
    under = literal(path, LTree())
    subtree = (
        select(orgs.c.org_id, func.coalesce(orgs.c.shard_key, _unsharded()).label("shard_key"))
        .where(orgs.c.path.op("<@")(under))
        .cte("moved_orgs")
    )
    count = 0
    allocations: list[uuid.UUID] = []
    for table in ORG_KEYED:
        result = await session.execute(
            update(table)
            .where(table.c.org_id == subtree.c.org_id, table.c.shard_key != subtree.c.shard_key)
            .values(shard_key=subtree.c.shard_key)
            .returning(table.c.org_id if table is program_adoptions else table.c.id)
        )
        changed = list(result.scalars())
        count += len(changed)
        if table is fund_allocations:
            allocations = changed
    if allocations:
        count += int(
            await session.scalar(
                select(func.activities.rekey_fund_expenses(literal(allocations, _UUIDS)))
            )
            or 0
        )
    in_subtree = or_(members.c.org_path.op("<@")(under), members.c.residence_path.op("<@")(under))
    return count + await rekey_members(session, in_subtree)
