"""Mobile members' tracking cards (流动党员跟踪卡): open, read, log contacts, return.

`lost_contact` is never stored: a card reads `lost_contact` while it is active and its last
contact (or, without one, the day the member left) is older than the configured days, in
SQL (`card_status`), so lists, filters, alerts and counts agree at any moment.
`publish_lost_contacts` announces newly silent cards once (`mobile.lost_contact`)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import and_, case, false, func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.errors import FieldError
from common.pagination import decode_cursor, page_of
from common.sharding import UNSHARDED
from services.mobility.dependencies import NOTES, PHONE, PLACE, FieldCrypto
from services.mobility.errors import CardAlreadyOpen, CardNotActive, CardNotFound, InvalidCard
from services.mobility.models import (
    CardStatus,
    Direction,
    audit_log,
    contacts,
    last_org_life,
    members,
    mobile_cards,
    orgs,
)
from services.mobility.schemas import CardCreate, CardPublic, ContactCreate, ContactPublic
from services.mobility.service.events import emit_card
from services.mobility.service.keys import member_key
from services.mobility.service.scope import (
    forbid_auditors,
    ids_under,
    org_in_scope,
    require_writer,
)

c = mobile_cards.c


def card_status(days: int) -> Any:
    silent_since = func.coalesce(c.last_contact_on, c.left_on)
    lost = and_(
        c.status == CardStatus.active.value,
        silent_since < func.current_date() - literal_column(str(int(days))),
    )
    return case((lost, CardStatus.lost_contact.value), else_=c.status)


def card_visible(principal: Principal) -> Any:
    if principal.role is Role.member:
        return c.member_id == principal.member_id if principal.member_id else false()
    return org_in_scope(principal, c.org_id)


def _select(days: int) -> Any:
    return select(mobile_cards, card_status(days).label("current_status"))


def to_public(row: Any, *, crypto: FieldCrypto | None = None) -> CardPublic:
    """Without `crypto` (lists) the whereabouts stay out."""
    return CardPublic(
        id=row.id,
        member_id=row.member_id,
        org_id=row.org_id,
        direction=row.direction,
        place=crypto.open(row.place_cipher, purpose=PLACE) if crypto else None,
        host_org_id=row.host_org_id,
        left_on=row.left_on,
        expected_return_on=row.expected_return_on,
        contact_phone=crypto.open(row.contact_phone_cipher, purpose=PHONE) if crypto else None,
        contact_phone_masked=row.contact_phone_masked,
        tracker=row.tracker,
        status=row.current_status,
        last_contact_on=row.last_contact_on,
        returned_on=row.returned_on,
        version=row.version,
    )


def _mask_phone(phone: str) -> str:
    digits = phone.strip()
    return f"{digits[:3]}****{digits[-4:]}" if len(digits) >= 7 else "****"


async def create_card(
    session: AsyncSession,
    *,
    data: CardCreate,
    principal: Principal,
    crypto: FieldCrypto,
    days: int,
) -> Any:
    require_writer(principal)
    member = (
        await session.execute(
            select(
                members.c.member_id,
                members.c.org_id,
                members.c.residence_org_id,
                members.c.shard_key,
            )
            .where(members.c.member_id == data.member_id, members.c.merged_into.is_(None))
            # Its key stays until the card is written (services/mobility/service/keys.py).
            .with_for_update(read=True)
        )
    ).first()
    if member is None:
        raise InvalidCard(
            "No such member.", errors=[FieldError(field="member_id", message="no such member")]
        )
    org_id = data.org_id
    if org_id is None:
        if data.direction is Direction.outflow:
            org_id = member.org_id or member.residence_org_id
        else:
            org_id = data.host_org_id
    field = (
        "org_id"
        if data.org_id
        else ("host_org_id" if data.direction is Direction.inflow else "member_id")
    )
    if org_id is None:
        raise InvalidCard(
            "The card needs a responsible org.",
            errors=[FieldError(field=field, message="no responsible organization")],
        )
    allowed = await session.scalar(
        select(orgs.c.org_id).where(orgs.c.org_id == org_id, org_in_scope(principal, orgs.c.org_id))
    )
    if allowed is None:
        raise InvalidCard(
            "The responsible org is not in your scope.",
            errors=[FieldError(field=field, message="no such organization in your scope")],
        )
    if data.left_on > date.today():
        raise InvalidCard(
            "left_on is in the future.",
            errors=[FieldError(field="left_on", message="is in the future")],
        )
    values = {
        "id": uuid.uuid4(),
        "shard_key": member.shard_key or UNSHARDED,
        "member_id": data.member_id,
        "org_id": org_id,
        "direction": data.direction.value,
        "place_cipher": crypto.seal(data.place, purpose=PLACE),
        "host_org_id": data.host_org_id,
        "left_on": data.left_on,
        "expected_return_on": data.expected_return_on,
        "contact_phone_cipher": crypto.seal(data.contact_phone, purpose=PHONE),
        "contact_phone_masked": _mask_phone(data.contact_phone) if data.contact_phone else None,
        "tracker": data.tracker,
    }
    stmt = (
        insert(mobile_cards)
        .values(values)
        .on_conflict_do_nothing(index_elements=[c.member_id], index_where=text("status = 'active'"))
        .returning(c.id)
    )
    if await session.scalar(stmt) is None:
        raise CardAlreadyOpen("The member already has an open tracking card.")
    row = await _row(session, values["id"], days=days)
    await audit.record(
        session,
        audit_log,
        principal,
        action="mobile.create",
        resource="mobile_card",
        record_id=row.id,
        subject_member_id=row.member_id,
    )
    await emit_card(session, row._mapping, type="mobile.registered")
    return row


async def _row(session: AsyncSession, card_id: uuid.UUID, *, days: int) -> Any:
    return (await session.execute(_select(days).where(c.id == card_id))).one()


async def get_card(
    session: AsyncSession, *, card_id: uuid.UUID, principal: Principal, days: int
) -> Any:
    forbid_auditors(principal)
    row = (
        await session.execute(_select(days).where(c.id == card_id, card_visible(principal)))
    ).first()
    if row is None:
        raise CardNotFound("No such mobile member's card in your scope.")
    return row


async def read_card(
    session: AsyncSession,
    *,
    card_id: uuid.UUID,
    principal: Principal,
    crypto: FieldCrypto,
    days: int,
) -> CardPublic:
    """The whole card with whereabouts and the contact log; the read is audited."""
    row = await get_card(session, card_id=card_id, principal=principal, days=days)
    public = to_public(row, crypto=crypto)
    log = await session.execute(
        select(contacts).where(contacts.c.card_id == card_id).order_by(contacts.c.on, contacts.c.id)
    )
    public.contacts = [
        ContactPublic(
            id=r.id,
            on=r.on,
            channel=r.channel,
            attended_org_life=r.attended_org_life,
            notes=crypto.open(r.notes_cipher, purpose=NOTES),
            recorded_by=r.recorded_by,
        )
        for r in log
    ]
    await audit.record(
        session,
        audit_log,
        principal,
        action="mobile.read",
        resource="mobile_card",
        record_id=row.id,
        subject_member_id=row.member_id,
    )
    return public


async def list_cards(
    session: AsyncSession,
    *,
    principal: Principal,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
    days: int,
) -> tuple[list[Any], str | None]:
    forbid_auditors(principal)
    status_col = card_status(days)
    query = _select(days).where(card_visible(principal))
    if filters.get("org_id") is not None:
        query = query.where(c.org_id.in_(ids_under(filters["org_id"])))
    if filters.get("member_id") is not None:
        query = query.where(c.member_id == filters["member_id"])
    if filters.get("direction") is not None:
        query = query.where(c.direction == str(filters["direction"]))
    if filters.get("status") is not None:
        query = query.where(status_col == str(filters["status"]))
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(c.id > after[0])
    rows = (await session.execute(query.order_by(c.id).limit(limit + 1))).all()
    return page_of(rows, limit=limit, key=lambda r: [r.id], filters=filters)


async def _writable(
    session: AsyncSession, *, card_id: uuid.UUID, principal: Principal, days: int
) -> Any:
    require_writer(principal)
    row = (
        await session.execute(
            _select(days)
            .where(c.id == card_id, card_visible(principal))
            .with_for_update(of=mobile_cards)
        )
    ).first()
    if row is None:
        raise CardNotFound("No such mobile member's card in your scope.")
    if row.status != CardStatus.active.value:
        raise CardNotActive("The member has returned; the card is closed.")
    return row


async def add_contact(
    session: AsyncSession,
    *,
    card_id: uuid.UUID,
    data: ContactCreate,
    principal: Principal,
    crypto: FieldCrypto,
    days: int,
) -> Any:
    row = await _writable(session, card_id=card_id, principal=principal, days=days)
    if data.on > date.today() or data.on < row.left_on:
        raise InvalidCard(
            "The contact's day is not within the card.",
            errors=[FieldError(field="on", message="is in the future or before left_on")],
        )
    await session.execute(
        insert(contacts).values(
            id=uuid.uuid4(),
            shard_key=row.shard_key,  # the card's: its member's
            card_id=card_id,
            on=data.on,
            channel=data.channel.value,
            attended_org_life=data.attended_org_life,
            notes_cipher=crypto.seal(data.notes, purpose=NOTES),
            recorded_by=principal.username or principal.subject,
        )
    )
    await session.execute(
        update(mobile_cards)
        .where(c.id == card_id)
        .values(
            last_contact_on=func.greatest(c.last_contact_on, data.on),
            version=c.version + 1,
            updated_at=func.now(),
        )
    )
    if data.attended_org_life:
        await record_org_life(session, member_id=row.member_id, on=data.on)
    updated = await _row(session, card_id, days=days)
    await audit.record(
        session,
        audit_log,
        principal,
        action="mobile.contact",
        resource="mobile_card",
        record_id=card_id,
        subject_member_id=row.member_id,
    )
    if row.current_status == CardStatus.lost_contact.value and (
        updated.current_status == CardStatus.active.value
    ):
        await session.execute(
            update(mobile_cards).where(c.id == card_id).values(lost_reported=False)
        )
        await emit_card(session, updated._mapping, type="mobile.contact_resumed")
    return updated


async def record_org_life(session: AsyncSession, *, member_id: uuid.UUID, on: Any) -> None:
    """The member attended organizational life at `on` (a date or a time)."""
    at = func.cast(on, last_org_life.c.last_attended_at.type) if isinstance(on, date) else on
    stmt = insert(last_org_life).values(
        member_id=member_id, shard_key=member_key(member_id), last_attended_at=at
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[last_org_life.c.member_id],
            set_={
                "last_attended_at": func.greatest(
                    last_org_life.c.last_attended_at, stmt.excluded.last_attended_at
                )
            },
        )
    )


async def return_card(
    session: AsyncSession, *, card_id: uuid.UUID, on: date | None, principal: Principal, days: int
) -> Any:
    row = await _writable(session, card_id=card_id, principal=principal, days=days)
    day = on or date.today()
    if day < row.left_on or day > date.today():
        raise InvalidCard(
            "The day of return is not within the card.",
            errors=[FieldError(field="on", message="is in the future or before left_on")],
        )
    await session.execute(
        update(mobile_cards)
        .where(c.id == card_id)
        .values(
            status=CardStatus.returned.value,
            returned_on=day,
            version=c.version + 1,
            updated_at=func.now(),
        )
    )
    updated = await _row(session, card_id, days=days)
    await audit.record(
        session,
        audit_log,
        principal,
        action="mobile.return",
        resource="mobile_card",
        record_id=card_id,
        subject_member_id=row.member_id,
    )
    await emit_card(session, updated._mapping, type="mobile.returned")
    return updated


async def publish_lost_contacts(session: AsyncSession, *, days: int) -> int:
    """Announce each card that fell silent since the last run (`mobile.lost_contact`, once
    per silence); returns how many. Run it periodically; reads never depend on it."""
    lost = card_status(days) == CardStatus.lost_contact.value
    rows = (
        await session.execute(
            update(mobile_cards)
            .where(lost, c.lost_reported.is_(False))
            .values(lost_reported=True, version=c.version + 1)
            .returning(mobile_cards)
        )
    ).all()
    for row in rows:
        await emit_card(session, row._mapping, type="mobile.lost_contact")
    return len(rows)
