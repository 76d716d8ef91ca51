"""Who may see which rows: SQL predicates built from the principal, applied inside every
query (never as a filter after the fact)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import ColumnElement, and_, any_, cast, exists, false, func, or_, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PGUUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from common.auth import Principal, Role
from services.registry.models import OPEN_TRANSFER_STATUSES, Member, Org, Transfer

ORG_SCOPED = frozenset({Role.org_admin, Role.org_viewer, Role.integration, Role.member})


def _root_path(principal: Principal) -> Any:
    return select(Org.path).where(Org.id == principal.org_id).scalar_subquery()


def org_in_scope(principal: Principal, path_col: Any = None) -> ColumnElement[bool]:
    """Orgs the principal may read: everything for admins, its subtree for org roles."""
    if principal.is_admin:
        return true()
    if principal.role in ORG_SCOPED and principal.org_id is not None:
        col = path_col if path_col is not None else Org.path
        return col.op("<@")(_root_path(principal))
    return false()


def scoped_org_ids(principal: Principal) -> Any:
    """A subquery of the ids of orgs in scope."""
    return select(Org.id).where(org_in_scope(principal))


def org_ids_under(org_id: Any) -> Any:
    """Ids of `org_id` and its whole subtree."""
    root = select(Org.path).where(Org.id == org_id).scalar_subquery()
    return select(Org.id).where(Org.path.op("<@")(root))


def org_id_array_under(org_id: Any) -> Any:
    """Ids of `org_id` and its subtree as one array value, for `column = ANY(...)`: the
    planner then reaches members through their org index (with `IN (subquery)` it guesses
    one size for every subtree, and a community's first page scanned the whole members
    table). For a small subtree only: a large one's array makes the planner read and sort
    all its members (`org_column_under`)."""
    root = select(Org.path).where(Org.id == org_id).scalar_subquery()
    ids = select(func.array_agg(Org.id)).where(Org.path.op("<@")(root)).scalar_subquery()
    return cast(ids, ARRAY(PGUUID(as_uuid=True)))


# --- a subtree filter on members: through the org index, or in id order -------------------

# A subtree of up to this many orgs is read through the members' org index (`= ANY(ids)`,
# then sorted); a larger one in id order (the keyset order) with the subtree as a
# filter on `orgs.path <@ root` (the page is found early, the scan stops at limit + 1).
# One form for both is bad for one of them: a whole province through the org index reads
# and sorts all its members (with a filter besides `org_id`: no page in 120 s on 4 million
# members); a community in id order walks the whole table.
# Or of less than this share of all orgs (a street of a city: its members are too sparse
# in id order).
SMALL_SUBTREE_ORGS = 64
SMALL_SUBTREE_SHARE = 0.05
# The subtree's size and the planner's estimate of all orgs (-1 before ANALYZE); asyncpg
# parameters ($1: the subtree's root).
SUBTREE_SIZE = (
    "SELECT count(*), "
    "(SELECT c.reltuples FROM pg_class c WHERE c.oid = 'registry.orgs'::regclass) "
    "FROM registry.orgs o "
    "WHERE o.path <@ (SELECT r.path FROM registry.orgs r WHERE r.id = $1)"
)

FetchRow = Callable[..., Awaitable[Any]]

# Only the plan depends on a subtree's size, and the size changes rarely: the counts are
# kept per org for a while (a memo of this process, bounded), so a page costs one
# statement, not two — counting a province's 26,000 orgs took longer than reading its
# page. A count gone stale picks the slower form for a while, never other rows.
SUBTREE_SIZE_TTL_S = 60.0
SUBTREE_SIZE_MEMO = 4096  # orgs
_sizes: dict[uuid.UUID, tuple[float, int, float]] = {}  # org -> (expires, orgs, all orgs)


async def subtree_is_small(fetchrow: FetchRow, org_id: uuid.UUID) -> bool:
    """Whether the members under `org_id` are read through the org index (True) or in id
    order (False): the one choice for every list of a subtree's members. `fetchrow` is an
    asyncpg connection's (`session_fetchrow` gives a session's)."""
    now = time.monotonic()
    memo = _sizes.get(org_id)
    if memo is None or memo[0] <= now:
        row = await fetchrow(SUBTREE_SIZE, org_id)
        memo = (now + SUBTREE_SIZE_TTL_S, int(row[0]), float(row[1] or 0))
        if org_id not in _sizes and len(_sizes) >= SUBTREE_SIZE_MEMO:
            del _sizes[next(iter(_sizes))]  # the oldest entry
        _sizes[org_id] = memo
    _, orgs, all_orgs = memo
    return orgs <= SMALL_SUBTREE_ORGS or orgs < SMALL_SUBTREE_SHARE * all_orgs


async def session_fetchrow(session: AsyncSession) -> FetchRow:
    """The `fetchrow` of the session's own connection (it sees what the session sees)."""
    connection = await (await session.connection()).get_raw_connection()
    driver: Any = connection.driver_connection
    fetchrow: FetchRow = driver.fetchrow
    return fetchrow


def org_column_under(column: Any, org_id: Any, *, small: bool) -> ColumnElement[bool]:
    """`column` (an org reference of the outer row) lies in the subtree of `org_id`: as
    `= ANY(ids)` for a small subtree (the column's index), else as a per-row test of the
    referenced org's path: a filter, never a join the planner could drive from the orgs
    (it guesses a subtree of 1% of the orgs, and a province's page then probed the org
    index once per org and sorted all its members) — the scan goes in id order and stops
    at the page's end (or, for a rare filter, reads the table once and sorts the few)."""
    if small:
        small_form: ColumnElement[bool] = column == any_(org_id_array_under(org_id))
        return small_form
    org, root = aliased(Org), aliased(Org)
    root_path = select(root.path).where(root.id == org_id).scalar_subquery()
    path = select(org.path).where(org.id == column).scalar_subquery()
    large_form: ColumnElement[bool] = path.op("<@")(root_path)
    return large_form


def member_in_scope(principal: Principal) -> ColumnElement[bool]:
    """Members the principal may read: admins all; org roles those enrolled in, living in,
    or transferring into their subtree; a member only themself."""
    if principal.is_admin:
        return true()
    if principal.role is Role.member:
        return Member.id == principal.member_id if principal.member_id else false()
    if principal.role in ORG_SCOPED and principal.org_id is not None:
        ids = scoped_org_ids(principal)
        incoming = exists().where(
            and_(
                Transfer.member_id == Member.id,
                Transfer.status.in_([s.value for s in OPEN_TRANSFER_STATUSES]),
                Transfer.to_org_id.in_(ids),
            )
        )
        return or_(Member.org_id.in_(ids), Member.residence_org_id.in_(ids), incoming)
    return false()


def member_writable(principal: Principal) -> ColumnElement[bool]:
    """Members the principal may change: admins all; org admins those in scope."""
    if principal.is_admin:
        return true()
    if principal.role is Role.org_admin:
        return member_in_scope(principal)
    return false()
