"""Who may see and change which rows, as SQL predicates over this service's read model of
the registry (`activities.orgs`, `activities.members`), applied inside every query."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from common.auth import NO_RECORDS, Principal, Role
from services.activities.errors import MemberNotFound, OrgNotFound, ReadOnlyRole
from services.activities.models import members, orgs

ORG_ROLES = frozenset({Role.org_admin, Role.org_viewer, Role.integration})
ACTIVE = ("active", "mobile")


def _root(principal: Principal) -> Any:
    return select(orgs.c.path).where(orgs.c.org_id == principal.org_id).scalar_subquery()


def subtree_ids(org_id: uuid.UUID) -> Any:
    """Ids of `org_id` and its whole subtree."""
    root = select(orgs.c.path).where(orgs.c.org_id == org_id).scalar_subquery()
    return select(orgs.c.org_id).where(orgs.c.path.op("<@")(root))


def scoped_org_ids(principal: Principal) -> Any:
    return select(orgs.c.org_id).where(orgs.c.path.op("<@")(_root(principal)))


def _own_org_ids(principal: Principal) -> Any:
    """The orgs whose activities a member sees: the orgs above and at their own org, their
    residence community and their building group."""
    me = members.alias("me")
    return select(orgs.c.org_id).where(
        select(me.c.member_id)
        .where(
            me.c.member_id == principal.member_id,
            or_(
                orgs.c.path.op("@>")(me.c.org_path),
                orgs.c.path.op("@>")(me.c.residence_path),
                orgs.c.org_id == me.c.group_id,
            ),
        )
        .exists()
    )


def org_readable(principal: Principal, column: Any) -> ColumnElement[bool]:
    """Rows of an org (`column` holds its id) the principal may read."""
    if principal.is_admin:
        return true()
    if principal.role in ORG_ROLES and principal.org_id is not None:
        return column.in_(scoped_org_ids(principal))  # type: ignore[no-any-return]
    if principal.role is Role.member and principal.member_id is not None:
        return column.in_(_own_org_ids(principal))  # type: ignore[no-any-return]
    return false()


def org_writable(principal: Principal, column: Any) -> ColumnElement[bool]:
    if principal.is_admin:
        return true()
    if principal.role is Role.org_admin and principal.org_id is not None:
        return column.in_(scoped_org_ids(principal))  # type: ignore[no-any-return]
    return false()


def members_in_scope(principal: Principal) -> Any:
    """A subquery of the member ids the principal may read: org roles the members enrolled
    in or living in their subtree, a member only themself."""
    if principal.is_admin:
        return select(members.c.member_id)
    if principal.role in ORG_ROLES and principal.org_id is not None:
        root = _root(principal)
        return select(members.c.member_id).where(
            or_(members.c.org_path.op("<@")(root), members.c.residence_path.op("<@")(root))
        )
    if principal.role is Role.member and principal.member_id is not None:
        return select(members.c.member_id).where(members.c.member_id == principal.member_id)
    return select(members.c.member_id).where(false())


def member_readable(principal: Principal, column: Any) -> ColumnElement[bool]:
    if principal.is_admin:
        return true()
    if principal.role is Role.member:
        return column == principal.member_id if principal.member_id else false()  # type: ignore[no-any-return]
    return column.in_(members_in_scope(principal))  # type: ignore[no-any-return]


def member_writable(principal: Principal, column: Any) -> ColumnElement[bool]:
    if principal.is_admin:
        return true()
    if principal.role is Role.org_admin:
        return column.in_(members_in_scope(principal))  # type: ignore[no-any-return]
    return false()


def require_writer(principal: Principal) -> None:
    """Org admins and admins write; viewers, auditors and integrations only read."""
    if not principal.can_write:
        raise ReadOnlyRole("Your role may not change records.")


def require_reader(principal: Principal) -> None:
    if principal.role in NO_RECORDS:
        raise ReadOnlyRole(f"The {principal.role} role reads no member records.")


async def writable_org_path(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> str:
    """The path of an org the principal may write to; 404 when unknown or out of scope, 403
    for roles that never write."""
    require_writer(principal)
    path = await session.scalar(
        select(orgs.c.path).where(orgs.c.org_id == org_id, org_writable(principal, orgs.c.org_id))
    )
    if path is None:
        raise OrgNotFound("No such organization in your scope.")
    return str(path)


async def readable_org_path(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> str:
    require_reader(principal)
    condition = org_readable(principal, orgs.c.org_id)
    path = await session.scalar(select(orgs.c.path).where(orgs.c.org_id == org_id, condition))
    if path is None:
        raise OrgNotFound("No such organization in your scope.")
    return str(path)


async def member_row(
    session: AsyncSession, principal: Principal, member_id: uuid.UUID, *, write: bool = False
) -> Any:
    """The projected member (a row mapping) if the principal may read (or change) it. A
    change asked by a role that changes nothing is a 403 whatever the member (API5)."""
    if write:
        require_writer(principal)
    condition = (
        member_writable(principal, members.c.member_id)
        if write
        else member_readable(principal, members.c.member_id)
    )
    row = (
        (await session.execute(select(members).where(members.c.member_id == member_id, condition)))
        .mappings()
        .first()
    )
    if row is None:
        raise MemberNotFound("No such member in your scope.")
    return row
