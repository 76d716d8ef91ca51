"""Funds: each org's yearly allocation (member count × rate: the report's 10–20 yuan per
member, 50 proposed), expenses booked against it (append-only), the balance never silently
negative. A booking locks its allocation row, so concurrent bookings cannot overspend; an
overspend is refused unless an org admin explicitly approves it, which is recorded."""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal
from common.pagination import decode_cursor, page_of
from services.activities.errors import (
    ActivityNotFound,
    AllocationExists,
    AllocationNotFound,
    Overspend,
)
from services.activities.models import (
    activities,
    audit_log,
    fund_allocations,
    fund_expenses,
    members,
)
from services.activities.schemas import AllocationCreate, ExpenseCreate
from services.activities.service import keys
from services.activities.service.scope import (
    ACTIVE,
    org_readable,
    readable_org_path,
    require_reader,
    subtree_ids,
    writable_org_path,
)

CENT = Decimal("0.01")


def _actor(principal: Principal) -> str:
    return principal.username or principal.subject


async def member_count(session: AsyncSession, org_id: uuid.UUID) -> int:
    """Members enrolled in the org's subtree with an active status (mobile ones included)."""
    count = await session.scalar(
        select(func.count()).where(
            members.c.org_id.in_(subtree_ids(org_id)),
            members.c.status.in_(ACTIVE),
            members.c.merged_into.is_(None),
        )
    )
    return int(count or 0)


async def create_allocation(
    session: AsyncSession, *, data: AllocationCreate, principal: Principal
) -> Any:
    await writable_org_path(session, principal, data.org_id)
    count = await member_count(session, data.org_id)
    amount = (data.rate_per_member * count).quantize(CENT, rounding=ROUND_HALF_UP)
    row = (
        (
            await session.execute(
                insert(fund_allocations)
                .values(
                    id=uuid.uuid4(),
                    shard_key=keys.org_key(data.org_id),
                    org_id=data.org_id,
                    year=data.year,
                    rate_per_member=data.rate_per_member,
                    member_count=count,
                    amount=amount,
                    created_by=_actor(principal),
                )
                .on_conflict_do_nothing()
                .returning(fund_allocations)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise AllocationExists(f"The org has its {data.year} allocation already.")
    await audit.record(
        session,
        audit_log,
        principal,
        action="create",
        resource="fund_allocation",
        record_id=row["id"],
    )
    return row


async def list_allocations(
    session: AsyncSession,
    *,
    principal: Principal,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    require_reader(principal)
    query = select(fund_allocations).where(org_readable(principal, fund_allocations.c.org_id))
    if filters.get("org_id") is not None:
        query = query.where(fund_allocations.c.org_id.in_(subtree_ids(filters["org_id"])))
    if filters.get("year") is not None:
        query = query.where(fund_allocations.c.year == filters["year"])
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(
            tuple_(fund_allocations.c.year, fund_allocations.c.id) > tuple_(after[0], after[1])
        )
    query = query.order_by(fund_allocations.c.year, fund_allocations.c.id).limit(limit + 1)
    rows = (await session.execute(query)).mappings().all()
    return page_of(rows, limit=limit, key=lambda r: [r["year"], r["id"]], filters=filters)


async def book_expense(
    session: AsyncSession, *, data: ExpenseCreate, principal: Principal
) -> dict[str, Any]:
    await writable_org_path(session, principal, data.org_id)
    allocation = (
        (
            await session.execute(
                select(fund_allocations)
                .where(
                    fund_allocations.c.org_id == data.org_id,
                    fund_allocations.c.year == data.year,
                )
                .with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if allocation is None:
        raise AllocationNotFound(f"The org has no {data.year} allocation to book against.")
    if data.activity_id is not None:
        found = await session.scalar(
            select(activities.c.id).where(
                activities.c.id == data.activity_id,
                activities.c.org_id.in_(subtree_ids(data.org_id)),
            )
        )
        if found is None:
            raise ActivityNotFound("No such activity in this org's subtree.")
    balance = allocation["amount"] - allocation["spent"]
    overspend = data.amount > balance
    if overspend and not data.approved_overspend:
        raise Overspend(
            f"The balance is {balance:.2f}; booking {data.amount:.2f} would overspend. "
            "An org admin may approve it explicitly with approved_overspend.",
            extra={"balance": f"{balance:.2f}"},
        )
    row = (
        (
            await session.execute(
                insert(fund_expenses)
                .values(
                    id=uuid.uuid4(),
                    shard_key=allocation["shard_key"],
                    allocation_id=allocation["id"],
                    amount=data.amount,
                    purpose=data.purpose,
                    activity_id=data.activity_id,
                    approved_overspend_by=_actor(principal) if overspend else None,
                    created_by=_actor(principal),
                )
                .returning(fund_expenses)
            )
        )
        .mappings()
        .one()
    )
    await session.execute(
        update(fund_allocations)
        .where(fund_allocations.c.id == allocation["id"])
        .values(spent=fund_allocations.c.spent + data.amount)
    )
    await audit.record(
        session,
        audit_log,
        principal,
        action="approve_overspend" if overspend else "create",
        resource="fund_expense",
        record_id=row["id"],
    )
    return _expense(row, allocation)


def _expense(row: Any, allocation: Any) -> dict[str, Any]:
    return {
        **row,
        "org_id": allocation["org_id"],
        "year": allocation["year"],
        "approved_overspend": row["approved_overspend_by"] is not None,
    }


async def list_expenses(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID, year: int
) -> list[dict[str, Any]]:
    allocation = await _allocation(session, principal, org_id, year)
    rows = (
        (
            await session.execute(
                select(fund_expenses)
                .where(fund_expenses.c.allocation_id == allocation["id"])
                .order_by(fund_expenses.c.created_at, fund_expenses.c.id)
            )
        )
        .mappings()
        .all()
    )
    return [_expense(r, allocation) for r in rows]


async def _allocation(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, year: int
) -> Any:
    await readable_org_path(session, principal, org_id)
    allocation = (
        (
            await session.execute(
                select(fund_allocations).where(
                    fund_allocations.c.org_id == org_id, fund_allocations.c.year == year
                )
            )
        )
        .mappings()
        .first()
    )
    if allocation is None:
        raise AllocationNotFound(f"The org has no {year} allocation.")
    return allocation


async def summary(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID, year: int
) -> dict[str, Any]:
    """Allocated, spent (the sum of the ledger's entries), balance, and allocation per
    member."""
    allocation = await _allocation(session, principal, org_id, year)
    spent = Decimal(
        await session.scalar(
            select(func.coalesce(func.sum(fund_expenses.c.amount), 0)).where(
                fund_expenses.c.allocation_id == allocation["id"]
            )
        )
        or 0
    )
    count = allocation["member_count"]
    per_member = (
        (allocation["amount"] / count).quantize(CENT, rounding=ROUND_HALF_UP)
        if count
        else Decimal("0.00")
    )
    return {
        "org_id": org_id,
        "year": year,
        "member_count": count,
        "allocated": allocation["amount"],
        "spent": spent,
        "balance": allocation["amount"] - spent,
        "per_member": per_member,
    }
