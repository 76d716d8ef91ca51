"""The registry's side of common/sharding.py: the key each row is written with, the re-keying
of rows whose org or member moves to another county, the lookup tables that keep ID numbers
and org codes unique across shards, and the copy of the upper tree (`upper_orgs`) — all in
the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import cast

from sqlalchemy import Table, and_, delete, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common.bulk import copy_skipping_conflicts
from common.sharding import UPPER_AREA_LEVEL, child_shard_key, member_shard_key
from services.registry.models import (
    Member,
    MemberIdentity,
    MemberMerge,
    Org,
    OrgCode,
    Transfer,
    UpperOrg,
)

# The primary keys of the lookup tables: a duplicate ID number or code violates these.
IDENTITY_KEY = "pk_member_identities"
CODE_KEY = "pk_org_codes"


# --- keys of new rows ----------------------------------------------------------------------


def org_key(org_id: uuid.UUID, parent: Org | None) -> uuid.UUID:
    """The key of org `org_id` under `parent` (None: at the root)."""
    if parent is None:
        return child_shard_key(org_id, None, None)
    return child_shard_key(org_id, parent.shard_key, parent.area_level)


async def member_key(
    session: AsyncSession, *, org_id: uuid.UUID | None, residence_org_id: uuid.UUID | None
) -> uuid.UUID:
    """A member's key: their relation org's, else their residence org's."""
    wanted = [i for i in (org_id, residence_org_id) if i is not None]
    keys: dict[uuid.UUID, uuid.UUID] = {}
    if wanted:
        rows = await session.execute(
            select(col(Org.id), col(Org.shard_key)).where(col(Org.id).in_(wanted))
        )
        keys = {r.id: r.shard_key for r in rows}
    return member_shard_key(
        keys.get(org_id) if org_id else None,
        keys.get(residence_org_id) if residence_org_id else None,
    )


# --- re-keying -----------------------------------------------------------------------------


async def rekey_member_rows(
    session: AsyncSession, *, member_ids: Collection[uuid.UUID], key: uuid.UUID
) -> None:
    """The rows that belong to these members (already carrying `key`) follow them: their
    transfers, the merges they survived, their ID numbers' lookup rows."""
    if not member_ids:
        return
    ids = list(member_ids)
    await session.execute(
        update(Transfer)
        .where(col(Transfer.member_id).in_(ids), col(Transfer.shard_key) != key)
        .values(shard_key=key)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(MemberMerge)
        .where(col(MemberMerge.into_id).in_(ids), col(MemberMerge.shard_key) != key)
        .values(shard_key=key)
        .execution_options(synchronize_session=False)
    )
    hashes = select(col(Member.id_number_hash)).where(
        col(Member.id).in_(ids), col(Member.id_number_hash).is_not(None)
    )
    await session.execute(
        update(MemberIdentity)
        .where(col(MemberIdentity.id_number_hash).in_(hashes))
        .values(shard_key=key)
        .execution_options(synchronize_session=False)
    )


async def rekey_member(session: AsyncSession, *, member_id: uuid.UUID) -> uuid.UUID:
    """Give the member the key their orgs imply now (after a change of org or residence),
    with their rows; returns the key."""
    row = (
        await session.execute(
            select(col(Member.shard_key), col(Member.org_id), col(Member.residence_org_id)).where(
                col(Member.id) == member_id
            )
        )
    ).one()
    key = await member_key(session, org_id=row.org_id, residence_org_id=row.residence_org_id)
    if key != row.shard_key:
        await session.execute(
            update(Member)
            .where(col(Member.id) == member_id)
            .values(shard_key=key)
            .execution_options(synchronize_session=False)
        )
        await rekey_member_rows(session, member_ids=[member_id], key=key)
    return key


async def rekey_subtree(
    session: AsyncSession, *, path: str, old: uuid.UUID, new: uuid.UUID
) -> None:
    """The orgs at or under `path` that carried `old` take `new` (an org moved to another
    county, or the level above them changed), with their codes, the members whose relation
    org (without one: residence org) is among them, and those members' rows."""
    if old == new:
        return
    path_col = col(Org.path)
    orgs = (
        await session.execute(
            update(Org)
            .where(path_col.op("<@")(literal(path, Org.path.type)), col(Org.shard_key) == old)  # type: ignore[attr-defined]
            .values(shard_key=new)
            .returning(col(Org.id), col(Org.code))
            .execution_options(synchronize_session=False)
        )
    ).all()
    if not orgs:
        return
    org_ids = [r.id for r in orgs]
    await session.execute(
        update(OrgCode)
        .where(col(OrgCode.code).in_([r.code for r in orgs]))
        .values(shard_key=new)
        .execution_options(synchronize_session=False)
    )
    members = (
        await session.scalars(
            update(Member)
            .where(
                or_(
                    col(Member.org_id) == func.any(org_ids),
                    and_(
                        col(Member.org_id).is_(None),
                        col(Member.residence_org_id) == func.any(org_ids),
                    ),
                )
            )
            .values(shard_key=new)
            .returning(col(Member.id))
            .execution_options(synchronize_session=False)
        )
    ).all()
    await rekey_member_rows(session, member_ids=members, key=new)


async def rekey_children_of(
    session: AsyncSession, *, org_id: uuid.UUID, was_upper: bool, is_upper: bool
) -> list[uuid.UUID]:
    """Org `org_id` entered or left the city level: its children start keys of their own
    (entered) or take its key again (left), and their subtrees with them. Returns the
    children's ids (their keys changed)."""
    if was_upper == is_upper:
        return []
    key = await session.scalar(select(col(Org.shard_key)).where(col(Org.id) == org_id))
    assert key is not None
    children = (
        await session.execute(
            select(col(Org.id), col(Org.path)).where(col(Org.parent_id) == org_id)
        )
    ).all()
    for child in children:
        if is_upper:
            await rekey_subtree(session, path=str(child.path), old=key, new=child.id)
        else:
            await rekey_subtree(session, path=str(child.path), old=child.id, new=key)
    return [child.id for child in children]


# --- the lookup tables ----------------------------------------------------------------------


async def identity_holder(
    session: AsyncSession, digest: bytes, *, other_than: uuid.UUID | None = None
) -> uuid.UUID | None:
    """The live record holding an ID number (by its keyed hash)."""
    query = select(col(MemberIdentity.member_id)).where(
        col(MemberIdentity.id_number_hash) == digest
    )
    if other_than is not None:
        query = query.where(col(MemberIdentity.member_id) != other_than)
    holder: uuid.UUID | None = await session.scalar(query)
    return holder


async def identity_holders(
    session: AsyncSession, digests: Collection[bytes]
) -> dict[bytes, uuid.UUID]:
    if not digests:
        return {}
    rows = await session.execute(
        select(col(MemberIdentity.id_number_hash), col(MemberIdentity.member_id)).where(
            col(MemberIdentity.id_number_hash) == func.any(list(digests))
        )
    )
    return {bytes(r[0]): r[1] for r in rows}


async def set_identity(
    session: AsyncSession,
    *,
    old: bytes | None,
    new: bytes | None,
    member_id: uuid.UUID,
    key: uuid.UUID,
) -> None:
    """The member's ID number changes from `old` to `new` (either None): its lookup row
    follows. A number another record holds violates `IDENTITY_KEY` (IntegrityError)."""
    if old == new:
        return
    if old is not None:
        await session.execute(
            delete(MemberIdentity).where(
                col(MemberIdentity.id_number_hash) == old,
                col(MemberIdentity.member_id) == member_id,
            )
        )
    if new is not None:
        await session.execute(
            insert(MemberIdentity).values(id_number_hash=new, member_id=member_id, shard_key=key)
        )


async def claim_identities(
    session: AsyncSession, rows: Collection[tuple[bytes, uuid.UUID, uuid.UUID]]
) -> set[bytes]:
    """Lookup rows `(hash, member_id, key)` for new members, in one statement; returns the
    hashes claimed (one another transaction holds, even uncommitted, is skipped once that
    one commits)."""
    if not rows:
        return set()
    claimed = await copy_skipping_conflicts(
        session,
        cast(Table, MemberIdentity.__table__),
        [{"id_number_hash": h, "member_id": m, "shard_key": k} for h, m, k in rows],
        on_conflict="ON CONFLICT (id_number_hash) DO NOTHING",
    )
    return {bytes(r["id_number_hash"]) for r in claimed}


async def code_holder(session: AsyncSession, code: str) -> uuid.UUID | None:
    holder: uuid.UUID | None = await session.scalar(
        select(col(OrgCode.org_id)).where(col(OrgCode.code) == code)
    )
    return holder


async def set_code(
    session: AsyncSession, *, old: str | None, new: str, org_id: uuid.UUID, key: uuid.UUID
) -> None:
    """The org's code changes from `old` (None: a new org) to `new`: its lookup row
    follows. A code another org holds violates `CODE_KEY` (IntegrityError)."""
    if old == new:
        return
    if old is not None:
        await session.execute(
            delete(OrgCode).where(col(OrgCode.code) == old, col(OrgCode.org_id) == org_id)
        )
    await session.execute(insert(OrgCode).values(code=new, org_id=org_id, shard_key=key))


# --- the upper tree -------------------------------------------------------------------------

_UPPER_COLUMNS = ("id", "parent_id", "path", "code", "name", "kind", "area_level")


async def sync_upper_org(session: AsyncSession, *, org_id: uuid.UUID) -> None:
    """`upper_orgs` holds org `org_id` as it is now if it is at city level, else not."""
    await session.execute(delete(UpperOrg).where(col(UpperOrg.id) == org_id))
    columns = [getattr(Org, c) for c in _UPPER_COLUMNS]
    await session.execute(
        insert(UpperOrg).from_select(
            list(_UPPER_COLUMNS),
            select(*columns).where(col(Org.id) == org_id, col(Org.area_level) == UPPER_AREA_LEVEL),
        )
    )


async def sync_upper_paths(session: AsyncSession, *, path: str) -> None:
    """The upper orgs at or under `path` moved with it: their paths and parents follow."""
    await session.execute(
        update(UpperOrg)
        .where(
            col(UpperOrg.id) == col(Org.id),
            col(Org.path).op("<@")(literal(path, Org.path.type)),  # type: ignore[attr-defined]
            col(Org.area_level) == UPPER_AREA_LEVEL,
        )
        .values(path=col(Org.path), parent_id=col(Org.parent_id))
        .execution_options(synchronize_session=False)
    )
