"""A registration card (党员登记表): the rules across its fields, the org references it
may hold, how its secrets are stored (encrypted, hashed, masked) and who sees them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common.auth import NO_RECORDS, Principal, Role
from common.errors import FieldError, Forbidden
from services.registry import idnumber
from services.registry.dependencies import FieldCrypto
from services.registry.errors import InvalidMember, InvalidReference
from services.registry.models import Category, Member, Org, OrgKind, Relation
from services.registry.schemas.members import MAX_SKILLS, MemberPublic, ResumeEntry
from services.registry.service.scope import org_in_scope

# Purposes binding each cipher and keyed hash to its field.
ID_NUMBER = "member.id_number"
PHONE = "member.phone"
ORG_REFS = ("org_id", "residence_org_id", "group_id")
EARLIEST_BIRTH = date(1900, 1, 1)

# The report's categories and the relation each implies (None: either).
CATEGORY_RELATION: dict[Category, Relation | None] = {
    Category.community_staff: Relation.enrolled,
    Category.new_economic_org: Relation.enrolled,
    Category.retired: Relation.enrolled,
    Category.laid_off: Relation.enrolled,
    Category.migrant_worker: Relation.enrolled,
    Category.rural_to_urban: Relation.enrolled,
    Category.in_service_resident: Relation.resident,
    Category.retired_unit_resident: Relation.resident,
    Category.other: None,
}


def today() -> date:
    return date.today()


def forbid_auditors(principal: Principal) -> None:
    if principal.role in NO_RECORDS:
        raise Forbidden(f"The {principal.role} role reads no member records.")


def require_writer(principal: Principal) -> None:
    forbid_auditors(principal)
    if not principal.can_write:
        raise Forbidden("Your role may not change members' records.")


def sees_full_phone(principal: Principal, member: Member) -> bool:
    # Org admins only ever get members in their scope, so their role suffices here.
    if principal.role in (Role.admin, Role.org_admin):
        return True
    return principal.role is Role.member and principal.member_id == member.id


def to_public(member: Member, *, crypto: FieldCrypto, principal: Principal) -> MemberPublic:
    phone = None
    if member.phone_cipher is not None and sees_full_phone(principal, member):
        phone = crypto.keys.decrypt(member.phone_cipher, purpose=PHONE)
    return MemberPublic(
        id=member.id,
        name=member.name,
        gender=member.gender,
        birth_date=member.birth_date,
        age=idnumber.age_on(member.birth_date, today()),
        id_number_masked=member.id_number_masked,
        phone=phone,
        phone_masked=member.phone_masked,
        ethnicity=member.ethnicity,
        education=member.education,
        joined_on=member.joined_on,
        membership=member.membership,
        category=member.category,
        relation=member.relation,
        status=member.status,
        org_id=member.org_id,
        residence_org_id=member.residence_org_id,
        group_id=member.group_id,
        address=member.address,
        employer=member.employer,
        skills=list(member.skills),
        resume=[ResumeEntry.model_validate(e) for e in member.resume],
        created_at=member.created_at,
        updated_at=member.updated_at,
    )


def default_relation(category: Category, *, org_id: uuid.UUID | None) -> Relation:
    implied = CATEGORY_RELATION[category]
    if implied is not None:
        return implied
    return Relation.enrolled if org_id is not None else Relation.resident


def card_errors(
    card: dict[str, Any], *, id_number: str | None, blame_id_number: bool
) -> list[FieldError]:
    """Rules across fields of a whole card (`card` holds column values)."""
    errors: list[FieldError] = []
    now = today()
    birth: date = card["birth_date"]
    if birth > now:
        errors.append(FieldError(field="birth_date", message="is in the future"))
    elif birth < EARLIEST_BIRTH:
        errors.append(FieldError(field="birth_date", message="is before 1900"))
    category = Category(card["category"])
    implied = CATEGORY_RELATION[category]
    if implied is not None and card["relation"] != implied.value:
        errors.append(
            FieldError(field="relation", message=f"must be {implied.value} for {category.value}")
        )
    if card["relation"] == Relation.enrolled.value and card["org_id"] is None:
        errors.append(FieldError(field="org_id", message="is required for an enrolled member"))
    if card["relation"] == Relation.resident.value and card["residence_org_id"] is None:
        errors.append(
            FieldError(field="residence_org_id", message="is required for a resident member")
        )
    joined: date | None = card["joined_on"]
    if joined is not None:
        if joined > now:
            errors.append(FieldError(field="joined_on", message="is in the future"))
        elif idnumber.age_on(birth, joined) < 18:
            errors.append(FieldError(field="joined_on", message="is before the 18th birthday"))
    if id_number is not None:
        parsed = idnumber.parse(id_number)
        if parsed.birth_date != birth:
            field = "id_number" if blame_id_number else "birth_date"
            errors.append(FieldError(field=field, message="birth date and ID number do not agree"))
        if parsed.gender != card["gender"]:
            field = "id_number" if blame_id_number else "gender"
            errors.append(FieldError(field=field, message="gender and ID number do not agree"))
    return errors


@dataclass(frozen=True)
class OrgRef:
    """What the reference rules need to know of an org a card names."""

    id: uuid.UUID
    kind: str
    path: str
    in_scope: bool
    shard_key: uuid.UUID


async def fetch_org_refs(
    session: AsyncSession, *, principal: Principal, where: ColumnElement[bool]
) -> list[tuple[OrgRef, str]]:
    """The orgs matching `where`, each with its code and whether it is in the caller's scope."""
    rows = (
        await session.execute(
            select(
                col(Org.id),
                col(Org.code),
                col(Org.kind),
                col(Org.path),
                org_in_scope(principal).label("in_scope"),
                col(Org.shard_key),
            ).where(where)
        )
    ).all()
    return [
        (OrgRef(r.id, r.kind, str(r.path), bool(r.in_scope), r.shard_key), r.code) for r in rows
    ]


async def reference_errors(
    session: AsyncSession, *, principal: Principal, card: dict[str, Any], changed: set[str]
) -> list[FieldError]:
    """Changed org references must exist in the caller's scope; a group must be a party
    group under the member's org or residence community."""
    ids = {card[f] for f in ORG_REFS if card[f] is not None}
    if not ids or not changed & set(ORG_REFS):
        return []
    refs = await fetch_org_refs(session, principal=principal, where=col(Org.id).in_(ids))
    return check_references({ref.id: ref for ref, _ in refs}, card=card, changed=changed)


def check_references(
    found: Mapping[uuid.UUID, OrgRef], *, card: dict[str, Any], changed: set[str]
) -> list[FieldError]:
    """`reference_errors` once the referenced orgs are known (`found` may hold more)."""
    errors: list[FieldError] = []
    for field in ORG_REFS:
        row = found.get(card[field]) if card[field] is not None else None
        if field in changed and card[field] is not None and (row is None or not row.in_scope):
            errors.append(FieldError(field=field, message="no such organization in your scope"))
    group = found.get(card["group_id"]) if card["group_id"] is not None else None
    if group is not None and not errors:
        if group.kind != OrgKind.group.value:
            errors.append(FieldError(field="group_id", message="is not a party group"))
        else:
            homes = [
                found[card[f]].path for f in ("org_id", "residence_org_id") if card[f] in found
            ]
            if not any(group.path == p or group.path.startswith(f"{p}.") for p in homes):
                errors.append(
                    FieldError(field="group_id", message="is not under org_id or residence_org_id")
                )
    return errors


def raise_card_errors(errors: list[FieldError], references: list[FieldError]) -> None:
    if errors:
        raise InvalidMember("The registration card breaks a rule.", errors=errors + references)
    if references:
        raise InvalidReference("An organization reference is not valid.", errors=references)


def skills_union(first: list[str], second: list[str]) -> list[str]:
    seen = {s.casefold() for s in first}
    out = list(first)
    for skill in second:
        if skill.casefold() not in seen and len(out) < MAX_SKILLS:
            seen.add(skill.casefold())
            out.append(skill)
    return out


def resume_json(entries: list[ResumeEntry]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json", by_alias=True) for e in entries]


def id_number_columns(
    crypto: FieldCrypto, number: str | None, *, digest: bytes | None = None
) -> dict[str, Any]:
    """`digest`: the number's keyed hash (`ID_NUMBER`) when the caller already took it."""
    if number is None:
        return {"id_number_cipher": None, "id_number_hash": None, "id_number_masked": None}
    return {
        "id_number_cipher": crypto.keys.encrypt(number, purpose=ID_NUMBER),
        "id_number_hash": digest or crypto.lookup.digest(number, purpose=ID_NUMBER),
        "id_number_masked": idnumber.mask(number),
    }


def phone_columns(crypto: FieldCrypto, phone: str | None) -> dict[str, Any]:
    if phone is None:
        return {"phone_cipher": None, "phone_masked": None}
    return {
        "phone_cipher": crypto.keys.encrypt(phone, purpose=PHONE),
        "phone_masked": idnumber.mask_phone(phone),
    }


async def renew_statistics(session: AsyncSession, changed: int) -> bool:
    """After a bulk write of `changed` members in this transaction: the planner's
    statistics of the members renewed now when the write changed at least 1,000 rows and a
    tenth of the table (`registry.analyze_members`, migration 0006), not when autovacuum
    next looks — till then a page of a county's members was planned as a scan of them all.
    Whether they were."""
    renewed = await session.scalar(
        text("SELECT registry.analyze_members(:changed)"), {"changed": changed}
    )
    return bool(renewed)
