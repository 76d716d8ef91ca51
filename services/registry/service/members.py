"""Members' registration cards: reads within the caller's scope, registration and changes
under the card's rules, one live record per person (409 naming the record that holds an ID
number), the audited read of a full ID number."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common import audit
from common.auth import Principal, Role
from common.errors import FieldError, Forbidden, PreconditionFailed, Unprocessable
from common.pagination import decode_cursor, page_of
from services.registry import idnumber
from services.registry.dependencies import FieldCrypto
from services.registry.errors import (
    MemberNotFound,
    MemberOrgChangeNotAllowed,
    PersonAlreadyRegistered,
)
from services.registry.events import emit_member, emit_member_change
from services.registry.models import Member, Relation, audit_log
from services.registry.schemas.members import MemberCreate, MemberUpdate
from services.registry.service import shard_keys
from services.registry.service.member_card import (
    ID_NUMBER,
    ORG_REFS,
    card_errors,
    default_relation,
    forbid_auditors,
    id_number_columns,
    phone_columns,
    raise_card_errors,
    reference_errors,
    require_writer,
    resume_json,
    today,
)
from services.registry.service.scope import (
    member_in_scope,
    member_writable,
    org_column_under,
    session_fetchrow,
    subtree_is_small,
)

# One live record per ID number: the lookup table's key (`shard_keys.set_identity`).
ID_NUMBER_INDEX = shard_keys.IDENTITY_KEY
MAX_MERGE_HOPS = 8


def _already_registered(existing_id: uuid.UUID | None) -> PersonAlreadyRegistered:
    return PersonAlreadyRegistered(
        f"A live record already holds this ID number: {existing_id}.",
        extra={"existing_id": str(existing_id) if existing_id else None},
    )


def _is_id_number_clash(exc: IntegrityError) -> bool:
    cause = getattr(exc.orig, "__cause__", None)
    name = getattr(cause, "constraint_name", None)
    return name == ID_NUMBER_INDEX or ID_NUMBER_INDEX in str(exc.orig)


# --- reads --------------------------------------------------------------------------------


async def get_member(
    session: AsyncSession, *, member_id: uuid.UUID, principal: Principal
) -> Member:
    """The live record `member_id` names: itself, or the record it was merged into."""
    forbid_auditors(principal)
    scoped = member_in_scope(principal)
    for _ in range(MAX_MERGE_HOPS):
        member = await session.scalar(select(Member).where(col(Member.id) == member_id, scoped))
        if member is not None and member.merged_into is None:
            return member
        merged_into = await session.scalar(
            select(col(Member.merged_into)).where(col(Member.id) == member_id)
        )
        if merged_into is None:
            break
        member_id = merged_into
    raise MemberNotFound("No such member in your scope.")


SUBTREE_FILTERS = ("org_id", "residence_org_id")


async def subtree_forms(session: AsyncSession, filters: dict[str, Any]) -> dict[str, bool]:
    """Each subtree filter's form, as its size asks (`scope.subtree_is_small`): the same
    rows either way, found through the org index (True) or in id order (False)."""
    return {
        name: await subtree_is_small(await session_fetchrow(session), filters[name])
        for name in SUBTREE_FILTERS
        if filters.get(name) is not None
    }


async def list_members(
    session: AsyncSession,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    filters: dict[str, Any],
) -> tuple[list[Member], str | None]:
    forbid_auditors(principal)
    after = decode_cursor(cursor, filters)
    small = await subtree_forms(session, filters)
    query = member_list_query(principal=principal, filters=filters, small=small)
    if after is not None:
        query = query.where(col(Member.id) > after[0])
    rows = (await session.scalars(query.order_by(col(Member.id)).limit(limit + 1))).all()
    return page_of(rows, limit=limit, key=lambda m: [m.id], filters=filters)


def member_list_query(
    *,
    principal: Principal,
    filters: dict[str, Any],
    small: Mapping[str, bool] | None = None,
) -> Select[tuple[Member]]:
    """The live members in the caller's scope that match the list filters (unordered);
    the list and the export share it. `small` tells, per subtree filter, which form
    (`scope.org_column_under`) to give it; through the org index unless it says no."""
    forbid_auditors(principal)
    age_min, age_max = filters.get("age_min"), filters.get("age_max")
    if age_min is not None and age_max is not None and age_min > age_max:
        raise Unprocessable(
            "age_min is above age_max.",
            errors=[FieldError(field="age_max", message="must not be below age_min")],
        )
    query = select(Member).where(col(Member.merged_into).is_(None), member_in_scope(principal))
    for name in SUBTREE_FILTERS:
        if filters.get(name) is not None:
            in_small = True if small is None else small.get(name, True)
            column = col(getattr(Member, name))
            query = query.where(org_column_under(column, filters[name], small=in_small))
    for name in ("category", "relation", "status", "education"):
        if filters.get(name) is not None:
            query = query.where(col(getattr(Member, name)) == str(filters[name]))
    birth = col(Member.birth_date)
    if age_min is not None:
        query = query.where(birth <= idnumber.years_before(today(), age_min))
    if age_max is not None:
        query = query.where(birth > idnumber.years_before(today(), age_max + 1))
    if filters.get("q"):
        query = query.where(col(Member.name).contains(filters["q"], autoescape=True))
    return query


async def read_id_number(
    session: AsyncSession, *, member_id: uuid.UUID, principal: Principal, crypto: FieldCrypto
) -> tuple[Member, str | None]:
    """The full number, for admins and the member's org admins; every read is audited."""
    member = await get_member(session, member_id=member_id, principal=principal)
    if principal.role not in (Role.admin, Role.org_admin):
        raise Forbidden("Only admins and the member's org admins read full ID numbers.")
    number = None
    if member.id_number_cipher is not None:
        number = crypto.keys.decrypt(member.id_number_cipher, purpose=ID_NUMBER)
    await audit.record(
        session,
        audit_log,
        principal,
        action="member.read_id_number",
        resource="member",
        record_id=member.id,
        subject_member_id=member.id,
    )
    return member, number


# --- writes -------------------------------------------------------------------------------


def _column_values(data: MemberCreate | MemberUpdate, *, exclude_unset: bool) -> dict[str, Any]:
    raw = data.model_dump(exclude_unset=exclude_unset, exclude={"id_number", "phone", "resume"})
    values = {k: v.value if isinstance(v, StrEnum) else v for k, v in raw.items()}
    if data.resume is not None and (not exclude_unset or "resume" in data.model_fields_set):
        values["resume"] = resume_json(data.resume)
    return values


async def create_member(
    session: AsyncSession, *, data: MemberCreate, principal: Principal, crypto: FieldCrypto
) -> Member:
    require_writer(principal)
    card = _column_values(data, exclude_unset=False)
    relation = data.relation or default_relation(data.category, org_id=data.org_id)
    card["relation"] = relation.value
    errors = card_errors(card, id_number=data.id_number, blame_id_number=True)
    references = await reference_errors(
        session, principal=principal, card=card, changed=set(ORG_REFS)
    )
    raise_card_errors(errors, references)
    secrets = {**id_number_columns(crypto, data.id_number), **phone_columns(crypto, data.phone)}
    if secrets["id_number_hash"] is not None:
        holder = await shard_keys.identity_holder(session, secrets["id_number_hash"])
        if holder is not None:
            raise _already_registered(holder)
    key = await shard_keys.member_key(
        session, org_id=card["org_id"], residence_org_id=card["residence_org_id"]
    )
    member = Member(id=uuid.uuid4(), shard_key=key, **card, **secrets)
    try:
        async with session.begin_nested():
            # The ID number's lookup row first: a number taken meanwhile stops here.
            await shard_keys.set_identity(
                session, old=None, new=secrets["id_number_hash"], member_id=member.id, key=key
            )
            session.add(member)
            await session.flush()
    except IntegrityError as exc:
        if not _is_id_number_clash(exc):
            raise
        raise _already_registered(
            await shard_keys.identity_holder(session, secrets["id_number_hash"])
        ) from exc
    await session.refresh(member)
    await audit.record(
        session,
        audit_log,
        principal,
        action="member.create",
        resource="member",
        record_id=member.id,
        subject_member_id=member.id,
    )
    await emit_member(session, member, type="member.registered")
    return member


_CARD_COLUMNS = (
    "name",
    "gender",
    "birth_date",
    "ethnicity",
    "education",
    "joined_on",
    "membership",
    "category",
    "relation",
    "status",
    *ORG_REFS,
    "address",
    "employer",
    "skills",
    "resume",
)


async def update_member(
    session: AsyncSession,
    *,
    member_id: uuid.UUID,
    data: MemberUpdate,
    expected_version: int,
    principal: Principal,
    crypto: FieldCrypto,
) -> Member:
    require_writer(principal)
    member = await session.scalar(
        select(Member)
        .where(
            col(Member.id) == member_id,
            col(Member.merged_into).is_(None),
            member_writable(principal),
        )
        .with_for_update()
    )
    if member is None:
        raise MemberNotFound("No such member in your scope.")
    if member.version != expected_version:
        raise PreconditionFailed("The member has changed since you read it.")
    values = _column_values(data, exclude_unset=True)
    if "org_id" in values and values["org_id"] != member.org_id:
        relations = {member.relation, values.get("relation", member.relation)}
        if Relation.enrolled.value in relations:
            raise MemberOrgChangeNotAllowed(
                "An enrolled member's organization changes through a transfer: "
                "POST /api/v1/registry/transfers."
            )
    card = {c: getattr(member, c) for c in _CARD_COLUMNS} | values
    given = data.model_fields_set
    id_number: str | None = None
    if "id_number" in given:
        id_number = data.id_number
    elif {"birth_date", "gender"} & values.keys() and member.id_number_cipher is not None:
        id_number = crypto.keys.decrypt(member.id_number_cipher, purpose=ID_NUMBER)
    errors = card_errors(card, id_number=id_number, blame_id_number="id_number" in given)
    references = await reference_errors(
        session, principal=principal, card=card, changed=set(values)
    )
    raise_card_errors(errors, references)
    if "id_number" in given:
        id_columns = id_number_columns(crypto, data.id_number)
        digest = id_columns["id_number_hash"]
        if digest != member.id_number_hash:
            values |= id_columns
        if digest is not None and digest != member.id_number_hash:
            holder = await shard_keys.identity_holder(session, digest, other_than=member.id)
            if holder is not None:
                raise _already_registered(holder)
    if "phone" in given:
        values |= phone_columns(crypto, data.phone)
    if not values:
        return member
    key = member.shard_key
    if {"org_id", "residence_org_id"} & values.keys():
        key = await shard_keys.member_key(
            session, org_id=card["org_id"], residence_org_id=card["residence_org_id"]
        )
        values["shard_key"] = key
    try:
        async with session.begin_nested():
            if "id_number_hash" in values:
                await shard_keys.set_identity(
                    session,
                    old=member.id_number_hash,
                    new=values["id_number_hash"],
                    member_id=member.id,
                    key=key,
                )
            changed = await session.scalar(
                update(Member)
                .where(col(Member.id) == member.id, col(Member.version) == expected_version)
                .values(**values, version=col(Member.version) + 1, updated_at=func.now())
                .returning(col(Member.id))
                .execution_options(synchronize_session=False)
            )
    except IntegrityError as exc:
        if not _is_id_number_clash(exc):
            raise
        raise _already_registered(
            await shard_keys.identity_holder(
                session, values["id_number_hash"], other_than=member.id
            )
        ) from exc
    if changed is None:
        raise PreconditionFailed("The member has changed since you read it.")
    if key != member.shard_key:  # another county: the member's rows follow
        await shard_keys.rekey_member_rows(session, member_ids=[member.id], key=key)
    previous_status = member.status
    await session.refresh(member)
    await audit.record(
        session,
        audit_log,
        principal,
        action="member.update",
        resource="member",
        record_id=member.id,
        subject_member_id=member.id,
    )
    await emit_member_change(session, member, previous_status=previous_status)
    return member
