"""Finding persons by ID number across the whole registry and registering the missing ones,
in bulk, for other services (the work-unit sync of mobility): one live record per person,
matched by the number's keyed hash, created with the card's storage rules (encrypted,
hashed, masked), all in set-based statements so tens of thousands of rows stay fast."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common import audit
from common.auth import Principal, Role
from common.bulk import copy_rows, new_ids
from common.errors import Forbidden
from common.sharding import member_shard_key
from services.registry import idnumber
from services.registry.dependencies import FieldCrypto
from services.registry.events import emit_members_registered
from services.registry.models import (
    Category,
    Member,
    Membership,
    MemberStatus,
    Org,
    Relation,
    audit_log,
)
from services.registry.schemas.persons import PersonColumns, ResolveRequest
from services.registry.service import shard_keys
from services.registry.service.member_card import (
    ID_NUMBER,
    id_number_columns,
    phone_columns,
)

CHUNK = 10_000  # ID-number hashes per lookup


@dataclass(slots=True)
class _Row:
    at: int  # the person's position in the request
    number: idnumber.IdNumber
    phone: str | None
    digest: bytes


def _check(
    name: str, id_number: str, phone: str | None, crypto: FieldCrypto, at: int
) -> _Row | str:
    try:
        number = idnumber.parse(id_number)
    except idnumber.InvalidIdNumber as exc:
        return f"id_number: {exc}"
    normal = None
    if phone:
        try:
            normal = idnumber.normalise_phone(phone)
        except idnumber.InvalidPhone as exc:
            return f"phone: {exc}"
    if not name.strip():
        return "name: is blank"
    digest = crypto.lookup.digest(number.number, purpose=ID_NUMBER)
    return _Row(at, number, normal, digest)


async def _holders(session: AsyncSession, digests: list[bytes]) -> dict[bytes, uuid.UUID]:
    """The live record holding each number, from the numbers' lookup table."""
    found: dict[bytes, uuid.UUID] = {}
    for start in range(0, len(digests), CHUNK):
        found.update(await shard_keys.identity_holders(session, digests[start : start + CHUNK]))
    return found


async def resolve_persons(
    session: AsyncSession, *, data: ResolveRequest, principal: Principal, crypto: FieldCrypto
) -> dict[str, list[Any]]:
    """Each person's record (`member_id`), whether it was registered now (`created`), the
    org of their residence community (`residence_org_id`) and what stopped them
    (`error`): columns of the results (`ResolveResults`), in the order asked."""
    if principal.role is not Role.service:
        raise Forbidden("Only Lianxin services resolve persons in bulk.")
    persons = data.persons
    n = len(persons)
    nothing: list[Any] = [None] * n
    codes = persons.residence_community_code or nothing
    member_ids: list[uuid.UUID | None] = [None] * n
    created_now = [False] * n
    residence_ids: list[uuid.UUID | None] = [None] * n
    errors: list[str | None] = [None] * n
    rows: list[_Row] = []
    for at, (name, number, phone) in enumerate(
        zip(persons.name, persons.id_number, persons.phone or nothing, strict=True)
    ):
        checked = _check(name, number, phone, crypto, at)
        if isinstance(checked, str):
            errors[at] = checked
        else:
            rows.append(checked)
    holders = await _holders(session, list({r.digest for r in rows}))
    wanted = {codes[r.at] for r in rows if codes[r.at]}
    orgs: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}  # code → (id, shard key)
    if wanted:
        found = await session.execute(
            select(col(Org.code), col(Org.id), col(Org.shard_key)).where(col(Org.code).in_(wanted))
        )
        orgs = {r.code: (r.id, r.shard_key) for r in found}
    new: dict[bytes, dict[str, Any]] = {}
    waiting: list[_Row] = []
    ids = iter(new_ids(len(rows)))  # at most one new record a row
    for row in rows:
        at = row.at
        residence = orgs.get(codes[at] or "")
        residence_ids[at] = residence[0] if residence else None
        if row.digest in holders:
            member_ids[at] = holders[row.digest]
            continue
        if not data.create_missing:
            errors[at] = "no record holds this ID number"
            continue
        if residence is None:
            errors[at] = "residence_community_code: no such community"
            continue
        if row.digest not in new:
            new[row.digest] = _card(
                row,
                persons,
                member_id=next(ids),
                residence_org_id=residence[0],
                shard_key=residence[1],
                crypto=crypto,
            )
            created_now[at] = True
        waiting.append(row)
    created = await _insert(session, list(new.values()))
    taken = await _holders(session, [d for d in new if d not in created])
    for row in waiting:
        at = row.at
        member_ids[at] = created.get(row.digest) or taken.get(row.digest)
        created_now[at] = created_now[at] and row.digest in created
        if member_ids[at] is None:
            errors[at] = "the record could not be registered"
    registered = [card["id"] for digest, card in new.items() if digest in created]
    await audit.record_members(session, audit_log, principal, registered, action="member.create")
    await emit_members_registered(session, registered)
    return {
        "member_id": member_ids,
        "created": created_now,
        "residence_org_id": residence_ids,
        "error": errors,
    }


def _card(
    row: _Row,
    persons: PersonColumns,
    *,
    member_id: uuid.UUID,
    residence_org_id: uuid.UUID,
    shard_key: uuid.UUID,
    crypto: FieldCrypto,
) -> dict[str, Any]:
    at = row.at
    return {
        "id": member_id,
        # A resident without a relation org: the residence community's key.
        "shard_key": member_shard_key(None, shard_key),
        "name": persons.name[at].strip(),
        "gender": row.number.gender,
        "birth_date": row.number.birth_date,
        # The number's keyed hash is the one `_check` took (not computed twice).
        **id_number_columns(crypto, row.number.number, digest=row.digest),
        **phone_columns(crypto, row.phone),
        "membership": Membership.full.value,
        "category": Category.in_service_resident.value,
        "relation": Relation.resident.value,
        "status": MemberStatus.active.value,
        "org_id": None,
        "residence_org_id": residence_org_id,
        "address": persons.address[at] if persons.address else None,
        "employer": persons.employer[at] if persons.employer else None,
        "version": 1,
    }


async def _insert(session: AsyncSession, cards: list[dict[str, Any]]) -> dict[bytes, uuid.UUID]:
    """Set-based INSERTs (`common.bulk`): the numbers' lookup rows first, then the records
    whose number was claimed; a person another transaction registered meanwhile is
    skipped."""
    if not cards:
        return {}
    claimed = await shard_keys.claim_identities(
        session, [(c["id_number_hash"], c["id"], c["shard_key"]) for c in cards]
    )
    mine = [c for c in cards if c["id_number_hash"] in claimed]
    await copy_rows(session, cast(Table, Member.__table__), mine)
    return {c["id_number_hash"]: c["id"] for c in mine}
