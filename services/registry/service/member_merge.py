"""Merging two records found to be one person: the survivor absorbs the duplicate, which
keeps its row as history and resolves to the survivor from then on."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common import audit
from common.auth import Principal
from common.errors import FieldError
from services.registry import idnumber
from services.registry.dependencies import FieldCrypto
from services.registry.errors import (
    InvalidMember,
    InvalidReference,
    MemberNotFound,
    MergeNotAllowed,
)
from services.registry.events import emit_member
from services.registry.models import (
    OPEN_TRANSFER_STATUSES,
    Member,
    MemberIdentity,
    MemberMerge,
    Transfer,
    audit_log,
)
from services.registry.schemas.members import MergeRequest
from services.registry.service.member_card import (
    ID_NUMBER,
    id_number_columns,
    require_writer,
    skills_union,
)
from services.registry.service.scope import member_writable


async def merge_members(
    session: AsyncSession,
    *,
    survivor_id: uuid.UUID,
    data: MergeRequest,
    principal: Principal,
    crypto: FieldCrypto,
) -> Member:
    """`survivor_id` absorbs `data.duplicate_id`: the duplicate keeps its row (history) and
    resolves to the survivor from now on; what the survivor lacks is filled from it."""
    require_writer(principal)
    duplicate_id = data.duplicate_id
    if duplicate_id == survivor_id:
        raise InvalidMember(
            "A record cannot be merged into itself.",
            errors=[FieldError(field="duplicate_id", message="must differ from the survivor")],
        )
    rows = (
        await session.scalars(
            select(Member)
            .where(col(Member.id).in_([survivor_id, duplicate_id]), member_writable(principal))
            .order_by(col(Member.id))
            .with_for_update()
        )
    ).all()
    by_id = {m.id: m for m in rows}
    survivor, duplicate = by_id.get(survivor_id), by_id.get(duplicate_id)
    if survivor is None:
        raise MemberNotFound("No such member in your scope.")
    if duplicate is None:
        raise InvalidReference(
            "The duplicate is not a member in your scope.",
            errors=[FieldError(field="duplicate_id", message="no such member in your scope")],
        )
    if survivor.merged_into is not None or duplicate.merged_into is not None:
        raise MergeNotAllowed("One of the records was already merged into another.")
    open_transfers = (
        await session.scalars(
            select(col(Transfer.member_id)).where(
                col(Transfer.member_id).in_([survivor_id, duplicate_id]),
                col(Transfer.status).in_([s.value for s in OPEN_TRANSFER_STATUSES]),
            )
        )
    ).all()
    if len(set(open_transfers)) > 1:
        raise MergeNotAllowed("Both records have an open transfer; complete or reject one first.")
    fill = _fill_from(survivor, duplicate, crypto=crypto)
    moves_id_number = "id_number_cipher" in fill

    # The duplicate leaves the live set first (and gives up its ID number), so the survivor
    # can take the number without touching the unique index twice.
    dup_values: dict[str, Any] = {"merged_into": survivor_id}
    if moves_id_number:
        dup_values |= id_number_columns(crypto, None)
    await session.execute(
        update(Member)
        .where(col(Member.id) == duplicate_id)
        .values(**dup_values, version=col(Member.version) + 1, updated_at=func.now())
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Member)
        .where(col(Member.merged_into) == duplicate_id)
        .values(merged_into=survivor_id)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Member)
        .where(col(Member.id) == survivor_id)
        .values(**fill, version=col(Member.version) + 1, updated_at=func.now())
        .execution_options(synchronize_session=False)
    )
    if moves_id_number:  # the number's lookup row now names the survivor
        await session.execute(
            update(MemberIdentity)
            .where(col(MemberIdentity.id_number_hash) == duplicate.id_number_hash)
            .values(member_id=survivor_id, shard_key=survivor.shard_key)
            .execution_options(synchronize_session=False)
        )
    # The duplicate's transfers become the survivor's, on the survivor's key.
    await session.execute(
        update(Transfer)
        .where(col(Transfer.member_id) == duplicate_id)
        .values(member_id=survivor_id, shard_key=survivor.shard_key)
        .execution_options(synchronize_session=False)
    )
    session.add(
        MemberMerge(
            id=uuid.uuid4(),
            shard_key=survivor.shard_key,
            from_id=duplicate_id,
            into_id=survivor_id,
            reason=data.reason,
            merged_by=principal.username or principal.subject,
        )
    )
    await session.flush()
    for record_id in (survivor_id, duplicate_id):
        await audit.record(
            session,
            audit_log,
            principal,
            action="member.merge",
            resource="member",
            record_id=record_id,
            subject_member_id=record_id,
        )
    await session.refresh(survivor)
    await session.refresh(duplicate)
    await emit_member(session, duplicate, type="member.merged")
    await emit_member(session, survivor, type="member.updated")
    return survivor


def _fill_from(survivor: Member, duplicate: Member, *, crypto: FieldCrypto) -> dict[str, Any]:
    """The survivor's missing fields, taken from the duplicate."""
    fill: dict[str, Any] = {}
    if duplicate.id_number_cipher is not None:
        if survivor.id_number_cipher is not None:
            raise MergeNotAllowed("The records carry different ID numbers: not one person.")
        number = crypto.keys.decrypt(duplicate.id_number_cipher, purpose=ID_NUMBER)
        parsed = idnumber.parse(number)
        if parsed.birth_date != survivor.birth_date or parsed.gender != survivor.gender:
            raise MergeNotAllowed(
                "The duplicate's ID number disagrees with the survivor's birth date or "
                "gender; correct the survivor first."
            )
        fill |= id_number_columns(crypto, number)
    if survivor.phone_cipher is None and duplicate.phone_cipher is not None:
        fill["phone_cipher"] = duplicate.phone_cipher
        fill["phone_masked"] = duplicate.phone_masked
    for name in ("address", "employer", "ethnicity", "education"):
        if getattr(survivor, name) is None and getattr(duplicate, name) is not None:
            fill[name] = getattr(duplicate, name)
    skills = skills_union(list(survivor.skills), list(duplicate.skills))
    if skills != list(survivor.skills):
        fill["skills"] = skills
    resume = list(survivor.resume)
    resume += [e for e in duplicate.resume if e not in resume]
    if len(resume) != len(survivor.resume):
        fill["resume"] = sorted(resume, key=lambda e: (e["from"], e.get("to") or ""))
    return fill
