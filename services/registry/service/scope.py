"""Who may see which rows: SQL predicates built from the principal, applied inside every
query (never as a filter after the fact)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, cast, exists, false, func, or_, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PGUUID

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
    planner then reaches members through their org index whatever the subtree's size (with
    `IN (subquery)` it guesses one size for every subtree, and a community's first page
    scanned the whole members table)."""
    root = select(Org.path).where(Org.id == org_id).scalar_subquery()
    ids = select(func.array_agg(Org.id)).where(Org.path.op("<@")(root)).scalar_subquery()
    return cast(ids, ARRAY(PGUUID(as_uuid=True)))


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
