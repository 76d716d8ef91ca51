"""Organizations: a tree kept as an ltree materialized path of per-org sequence labels."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select, text, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common import audit
from common.auth import Principal, Role
from common.errors import Forbidden, PreconditionFailed
from common.pagination import decode_cursor, page_of
from common.sharding import UPPER_AREA_LEVEL
from services.registry.errors import OrgCodeTaken, OrgMoveNotAllowed, OrgNotFound
from services.registry.events import emit_org
from services.registry.models import Org, audit_log
from services.registry.schemas.orgs import OrgCreate, OrgPublic, OrgUpdate
from services.registry.service import shard_keys
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
    if await shard_keys.code_holder(session, data.code) is not None:
        raise _code_taken(data.code)
    seq = int(await session.scalar(select(_SEQ)))  # type: ignore[arg-type]
    path = f"{parent.path}.{seq}" if parent else str(seq)
    org_id = uuid.uuid4()
    org = Org(
        id=org_id,
        shard_key=shard_keys.org_key(org_id, parent),
        seq=seq,
        code=data.code,
        name=data.name,
        kind=data.kind.value,
        area_level=data.area_level.value,
        parent_id=data.parent_id,
        path=path,
    )
    try:
        async with session.begin_nested():
            # The code's lookup row first: a code taken meanwhile stops here.
            await shard_keys.set_code(
                session, old=None, new=data.code, org_id=org.id, key=org.shard_key
            )
            session.add(org)
            await session.flush()
    except IntegrityError as exc:
        raise _code_taken(data.code) from exc
    await session.refresh(org)
    if org.area_level == UPPER_AREA_LEVEL:
        await shard_keys.sync_upper_org(session, org_id=org.id)
    await audit.record(
        session, audit_log, principal, action="org.create", resource="org", record_id=org.id
    )
    await emit_org(session, org, type="org.created")
    return org


def _code_taken(code: str) -> OrgCodeTaken:
    return OrgCodeTaken(f"Code {code!r} is already used by another organization.")


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
    old_path, old_parent_id, old_code = org.path, org.parent_id, org.code
    was_upper = org.area_level == UPPER_AREA_LEVEL
    moved = "parent_id" in changes and changes["parent_id"] != org.parent_id
    if moved:
        await _move(session, org=org, new_parent_id=changes["parent_id"], principal=principal)
    values: dict[str, Any] = {}
    for name in ("code", "name", "kind", "area_level"):
        if changes.get(name) is not None:
            values[name] = str(changes[name])
    new_code = values.get("code", old_code)
    if new_code != old_code and await shard_keys.code_holder(session, new_code) is not None:
        raise _code_taken(new_code)
    if "parent_id" in changes:
        values["parent_id"] = changes["parent_id"]
    try:
        async with session.begin_nested():
            key = await session.scalar(select(col(Org.shard_key)).where(col(Org.id) == org.id))
            assert key is not None
            await shard_keys.set_code(session, old=old_code, new=new_code, org_id=org.id, key=key)
            result = await session.execute(
                update(Org)
                .where(Org.id == org.id, Org.version == expected_version)  # type: ignore[arg-type]
                .values(**values, version=Org.version + 1, updated_at=func.now())
                .returning(Org.id)
            )
    except IntegrityError as exc:
        raise _code_taken(new_code) from exc
    if result.scalar_one_or_none() is None:
        raise PreconditionFailed("The organization has changed since you read it.")
    is_upper = values.get("area_level", org.area_level) == UPPER_AREA_LEVEL
    rekeyed = await shard_keys.rekey_children_of(
        session, org_id=org.id, was_upper=was_upper, is_upper=is_upper
    )
    if was_upper or is_upper:
        await shard_keys.sync_upper_org(session, org_id=org.id)
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
    if rekeyed:
        # The children's keys changed with the org's level: their own `org.updated` (a new
        # version) carries the new key, and the read models re-key their subtrees from it.
        children = await session.scalars(
            update(Org)
            .where(col(Org.id).in_(rekeyed))
            .values(version=Org.version + 1, updated_at=func.now())
            .returning(Org)
            .execution_options(populate_existing=True, synchronize_session=False)
        )
        for child in children.all():
            await emit_org(session, child, type="org.updated")
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
    old_path, old_key = org.path, org.shard_key
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
    # Another county (or the upper tree): the subtree's rows that shared the org's key, and
    # their members' rows, take the new one; the upper orgs in it follow the new paths.
    new_key = shard_keys.org_key(org.id, parent)
    await shard_keys.rekey_subtree(session, path=new_path, old=old_key, new=new_key)
    await shard_keys.sync_upper_paths(session, path=new_path)
