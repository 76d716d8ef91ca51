"""Organizations: a tree kept as an ltree materialized path of per-org sequence labels."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select, text, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.errors import Forbidden, PreconditionFailed
from common.pagination import decode_cursor, page_of
from services.registry.errors import OrgCodeTaken, OrgMoveNotAllowed, OrgNotFound
from services.registry.events import emit_org
from services.registry.models import Org, audit_log
from services.registry.schemas.orgs import OrgCreate, OrgPublic, OrgUpdate
from services.registry.service.scope import org_ids_under, org_in_scope

_SEQ = text("nextval(pg_get_serial_sequence('registry.orgs', 'seq'))")


def to_public(org: Org) -> OrgPublic:
    return OrgPublic(
        id=org.id,
        code=org.code,
        name=org.name,
        kind=org.kind,  # type: ignore[arg-type]
        area_level=org.area_level,
        parent_id=org.parent_id,  # type: ignore[arg-type]
        depth=org.path.count("."),
        created_at=org.created_at,  # type: ignore[arg-type]
        updated_at=org.updated_at,  # type: ignore[arg-type]
    )


def orgs_visible(principal: Principal) -> ColumnElement[bool]:
    """The orgs a principal may read: a security admin reads the whole tree (names and codes,
    to place accounts and API keys; never a member), everyone else their scope."""
    if principal.role is Role.security_admin:
        return true()
    return org_in_scope(principal)


async def get_org(session: AsyncSession, *, org_id: uuid.UUID, principal: Principal) -> Org:
    org = await session.scalar(select(Org).where(Org.id == org_id, orgs_visible(principal)))
    if org is None:
        raise OrgNotFound(f"No organization {org_id} in your scope.")
    return org


async def _parent_for_write(
    session: AsyncSession, *, parent_id: uuid.UUID | None, principal: Principal
) -> Org | None:
    if parent_id is None:
        if not principal.is_admin:
            raise Forbidden("Only admins create or move orgs at the root.")
        return None
    parent = await session.scalar(
        select(Org).where(Org.id == parent_id, org_in_scope(principal)).with_for_update()
    )
    if parent is None:
        raise OrgNotFound(f"No parent organization {parent_id} in your scope.")
    return parent


async def create_org(session: AsyncSession, *, data: OrgCreate, principal: Principal) -> Org:
    if not principal.can_write:
        raise Forbidden("Your role may not create organizations.")
    parent = await _parent_for_write(session, parent_id=data.parent_id, principal=principal)
    if await session.scalar(select(Org.id).where(Org.code == data.code)) is not None:
        raise OrgCodeTaken(f"Code {data.code!r} is already used by another organization.")
    seq = int(await session.scalar(select(_SEQ)))  # type: ignore[arg-type]
    path = f"{parent.path}.{seq}" if parent else str(seq)
    org = Org(
        id=uuid.uuid4(),
        seq=seq,
        code=data.code,
        name=data.name,
        kind=data.kind.value,
        area_level=data.area_level.value,
        parent_id=data.parent_id,
        path=path,
    )
    session.add(org)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise OrgCodeTaken(f"Code {data.code!r} is already used by another organization.") from exc
    await session.refresh(org)
    await audit.record(
        session, audit_log, principal, action="org.create", resource="org", record_id=org.id
    )
    await emit_org(session, org, type="org.created")
    return org


async def list_orgs(
    session: AsyncSession,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    filters: dict[str, Any],
) -> tuple[list[Org], str | None]:
    if principal.role is Role.auditor:
        raise Forbidden("Auditors read the audit log only.")
    query = select(Org).where(orgs_visible(principal))
    if filters.get("org_id") is not None:
        query = query.where(Org.id.in_(org_ids_under(filters["org_id"])))  # type: ignore[attr-defined]
    if filters.get("parent_id") is not None:
        query = query.where(Org.parent_id == filters["parent_id"])
    for name in ("kind", "area_level", "code"):
        if filters.get(name) is not None:
            query = query.where(getattr(Org, name) == str(filters[name]))
    if filters.get("q"):
        query = query.where(Org.name.contains(filters["q"], autoescape=True))  # type: ignore[attr-defined]
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(Org.path > literal(after[0], Org.path.type))  # type: ignore[attr-defined]
    rows = (await session.scalars(query.order_by(Org.path).limit(limit + 1))).all()
    return page_of(rows, limit=limit, key=lambda o: [o.path], filters=filters)


async def update_org(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    data: OrgUpdate,
    expected_version: int,
    principal: Principal,
) -> Org:
    if not principal.can_write:
        raise Forbidden("Your role may not change organizations.")
    org = await get_org(session, org_id=org_id, principal=principal)
    if org.version != expected_version:
        raise PreconditionFailed("The organization has changed since you read it.")
    changes = data.model_dump(exclude_unset=True)
    old_path, old_parent_id = org.path, org.parent_id
    moved = "parent_id" in changes and changes["parent_id"] != org.parent_id
    if moved:
        await _move(session, org=org, new_parent_id=changes["parent_id"], principal=principal)
    values: dict[str, Any] = {}
    for name in ("code", "name", "kind", "area_level"):
        if changes.get(name) is not None:
            values[name] = str(changes[name])
    if "code" in values and values["code"] != org.code:
        taken = await session.scalar(select(Org.id).where(Org.code == values["code"]))
        if taken is not None:
            raise OrgCodeTaken(f"Code {values['code']!r} is already used by another organization.")
    if "parent_id" in changes:
        values["parent_id"] = changes["parent_id"]
    result = await session.execute(
        update(Org)
        .where(Org.id == org.id, Org.version == expected_version)  # type: ignore[arg-type]
        .values(**values, version=Org.version + 1, updated_at=func.now())
        .returning(Org.id)
    )
    if result.scalar_one_or_none() is None:
        raise PreconditionFailed("The organization has changed since you read it.")
    await audit.record(
        session, audit_log, principal, action="org.update", resource="org", record_id=org.id
    )
    await session.refresh(org)
    if moved:
        await emit_org(
            session, org, type="org.moved", old_path=old_path, old_parent_id=old_parent_id
        )
    else:
        await emit_org(session, org, type="org.updated")
    return org


async def _move(
    session: AsyncSession, *, org: Org, new_parent_id: uuid.UUID | None, principal: Principal
) -> None:
    if org.parent_id is None and not principal.is_admin:
        raise Forbidden("Only admins move root orgs.")
    if not principal.is_admin and principal.org_id == org.id:
        raise Forbidden("You cannot move the org your scope starts at.")
    parent = await _parent_for_write(session, parent_id=new_parent_id, principal=principal)
    if parent is not None and (parent.path == org.path or parent.path.startswith(org.path + ".")):
        raise OrgMoveNotAllowed("An organization cannot move under itself or its own subtree.")
    old_path = org.path
    new_path = f"{parent.path}.{org.seq}" if parent else str(org.seq)
    depth = old_path.count(".") + 1
    path_col = Org.path
    await session.execute(
        update(Org)
        .where(path_col.op("<@")(literal(old_path, path_col.type)))
        .values(
            path=case(
                (path_col == literal(old_path, path_col.type), literal(new_path, path_col.type)),
                else_=literal(new_path, path_col.type).op("||")(func.subpath(path_col, depth)),
            )
        )
        .execution_options(synchronize_session=False)
    )
