"""Who may see which mobility rows: SQL predicates over the projected org tree, applied
inside every query."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, false, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from common.auth import NO_RECORDS, Principal, Role
from common.errors import Forbidden
from services.mobility.errors import OrgNotFound
from services.mobility.models import orgs

ORG_ROLES = frozenset({Role.org_admin, Role.org_viewer, Role.integration})


def path_of(org_id: Any) -> Any:
    return select(orgs.c.path).where(orgs.c.org_id == org_id).scalar_subquery()


def ids_under(org_id: Any) -> Any:
    """Ids of `org_id` and its whole subtree (projected tree)."""
    return select(orgs.c.org_id).where(orgs.c.path.op("<@")(path_of(org_id)))


def org_in_scope(principal: Principal, column: Any) -> ColumnElement[bool]:
    """`column` (an org id) lies in the principal's subtree; everything for admins."""
    if principal.is_admin:
        return true()
    if principal.role in ORG_ROLES and principal.org_id is not None:
        return column.in_(ids_under(principal.org_id))  # type: ignore[no-any-return]
    return false()


def forbid_auditors(principal: Principal) -> None:
    if principal.role in NO_RECORDS:
        raise Forbidden(f"The {principal.role} role reads no member records.")


def require_writer(principal: Principal) -> None:
    forbid_auditors(principal)
    if not principal.can_write:
        raise Forbidden("Your role may not change mobility records.")


def require_org_reader(principal: Principal) -> None:
    forbid_auditors(principal)
    if not principal.reads_org_data:
        raise Forbidden("Your role does not read organizations' records.")


async def scoped_root(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID | None
) -> uuid.UUID | None:
    """The subtree a per-org figure covers: `org_id` if in scope (404 otherwise), else the
    caller's own org; None means the whole tree (admins without `org_id`)."""
    require_org_reader(principal)
    if org_id is None:
        return None if principal.is_admin else principal.org_id
    found = await session.scalar(
        select(orgs.c.org_id).where(orgs.c.org_id == org_id, org_in_scope(principal, orgs.c.org_id))
    )
    if found is None:
        raise OrgNotFound("No such organization in your scope.")
    return org_id
