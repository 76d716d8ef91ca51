"""Transfers of organizational relation (组织关系转接).

A transfer moves a member's relation from one org to another: `requested` by the sending
org, `issued` when it gives the letter (number, valid until a date), then `completed` when
the receiving org receives it, or `rejected`, or `expired` once the letter's last valid day
has passed. A transfer from outside the system starts as `issued` (the letter is in hand);
a transfer to outside the system is completed by the sending org recording the receipt.

Counting a member in transit: the member keeps their old `org_id` until the transfer is
completed, so every member is counted once, by the org that holds the relation now. The
receiving org sees the member (read-only) while the transfer is open (`member_in_scope`).
Completing moves `org_id` in the same transaction as the status change, and clears
`group_id` when the party group does not lie under the new org; completing a transfer out
of the system marks the member `transferred_out` (their last org stays as history); an
incoming transfer from outside gives the member `org_id = to_org_id`.

A letter that expires leaves a "pocket member" (口袋党员): a member whose latest transfer
is `expired` — still listed under the old org, whose relation went nowhere.

Expiry is stored by `expire_overdue`, run at the start of every transfers request (and
exported for a scheduler); reads are correct without it too: an `issued` transfer whose
`valid_until` has passed is reported and filtered as `expired`. "Today" is always the
database's `current_date`, so the sweep, the reads and the checks agree.

Races: the partial unique index allows one open transfer per member, whatever the timing;
each transition locks its row (`SELECT … FOR UPDATE`) and updates it on the condition that
its status is still the one checked; a trigger refuses any status change outside the state
machine, whoever makes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from common import audit
from common.auth import Principal, Role
from common.errors import FieldError, Forbidden, Unprocessable
from common.etag import check_if_match
from common.pagination import decode_cursor, page_of
from services.registry.errors import (
    InvalidReference,
    MemberNotFound,
    OpenTransferExists,
    TransferNotAllowed,
    TransferNotFound,
)
from services.registry.events import emit_member_change, emit_transfer
from services.registry.models import (
    OPEN_TRANSFER_STATUSES,
    Member,
    MemberStatus,
    Org,
    Transfer,
    TransferStatus,
    audit_log,
)
from services.registry.schemas.transfers import (
    ExternalOrg,
    TransferCreate,
    TransferDirection,
    TransferIssue,
    TransferPublic,
    TransferQueueItem,
    TransferReject,
)
from services.registry.service import shard_keys
from services.registry.service.orgs import get_org
from services.registry.service.scope import (
    ORG_SCOPED,
    member_in_scope,
    org_ids_under,
    org_in_scope,
    scoped_org_ids,
)

# Letters are valid from the day they are issued for at most this many days.
MAX_LETTER_DAYS = 180
# Work queue: a letter expiring within this many days, or a request waiting longer, is overdue.
LETTER_DUE_SOON_DAYS = 7
REQUEST_OVERDUE_DAYS = 14

# Member statuses that end a membership in the system: no transfer starts or completes.
CLOSED_MEMBER_STATUSES = frozenset(
    {MemberStatus.transferred_out, MemberStatus.deceased, MemberStatus.removed}
)

SYSTEM = Principal(subject="system", role=Role.service, username="system")

_OPEN_INDEX = "uq_transfers_open_member"


# --- reading -------------------------------------------------------------------------------


def effective_status_expr() -> ColumnElement[str]:
    """The status as SQL, an `issued` letter past its last valid day being `expired`."""
    return case(
        (
            and_(
                Transfer.status == TransferStatus.issued.value,
                Transfer.valid_until < func.current_date(),
            ),
            literal(TransferStatus.expired.value),
        ),
        else_=Transfer.status,
    )


def effective_status(transfer: Transfer, *, today: date) -> TransferStatus:
    status = TransferStatus(transfer.status)
    if (
        status is TransferStatus.issued
        and transfer.valid_until is not None
        and transfer.valid_until < today
    ):
        return TransferStatus.expired
    return status


def _external(name: str | None, code: str | None) -> ExternalOrg | None:
    return ExternalOrg(name=name, code=code) if name is not None else None


def to_public(transfer: Transfer, *, today: date) -> TransferPublic:
    return TransferPublic(
        id=transfer.id,
        member_id=transfer.member_id,
        from_org_id=transfer.from_org_id,
        from_external=_external(transfer.from_external_name, transfer.from_external_code),
        to_org_id=transfer.to_org_id,
        to_external=_external(transfer.to_external_name, transfer.to_external_code),
        reason=transfer.reason,
        status=effective_status(transfer, today=today),
        letter_no=transfer.letter_no,
        valid_until=transfer.valid_until,
        reject_reason=transfer.reject_reason,
        requested_by=transfer.requested_by,
        issued_at=transfer.issued_at,
        completed_at=transfer.completed_at,
        closed_at=transfer.closed_at,
        created_at=transfer.created_at,
        updated_at=transfer.updated_at,
    )


async def db_today(session: AsyncSession) -> date:
    """Today by the database's clock: the one date the sweep, reads and checks use."""
    today = await session.scalar(select(func.current_date()))
    assert isinstance(today, date)
    return today


def transfer_in_scope(principal: Principal) -> ColumnElement[bool]:
    """Transfers the principal may read: admins all; org roles those leaving or entering
    their subtree; a member their own."""
    if principal.is_admin:
        return true()
    if principal.role is Role.member:
        return Transfer.member_id == principal.member_id if principal.member_id else false()
    if principal.role in ORG_SCOPED and principal.org_id is not None:
        ids = scoped_org_ids(principal)
        return or_(Transfer.from_org_id.in_(ids), Transfer.to_org_id.in_(ids))  # type: ignore[union-attr]
    return false()


def _require_reader(principal: Principal) -> None:
    if not (principal.reads_org_data or principal.role is Role.member):
        raise Forbidden("Your role may not read transfers.")


def _require_writer(principal: Principal) -> None:
    if not principal.can_write:
        raise Forbidden("Your role may not act on transfers.")


async def _holds(session: AsyncSession, principal: Principal, org_id: uuid.UUID | None) -> bool:
    """Whether `org_id` lies in the principal's scope."""
    if org_id is None:
        return False
    if principal.is_admin:
        return True
    found = await session.scalar(select(exists().where(Org.id == org_id, org_in_scope(principal))))
    return bool(found)


def _resume_after(cursor: str | None, filters: dict[str, Any], *types: type) -> list[Any] | None:
    """The sort key a cursor resumes after, checked to be of the query's key types (a
    hand-made cursor must be a 422, not a database error)."""
    key = decode_cursor(cursor, filters)
    if key is not None and (
        len(key) != len(types)
        or not all(
            isinstance(v, t) and not isinstance(v, bool) for v, t in zip(key, types, strict=False)
        )
    ):
        raise Unprocessable(
            "The cursor is not valid.", errors=[FieldError(field="cursor", message="malformed")]
        )
    return key


async def get_transfer(
    session: AsyncSession, *, transfer_id: uuid.UUID, principal: Principal
) -> Transfer:
    transfer = await session.scalar(
        select(Transfer).where(Transfer.id == transfer_id, transfer_in_scope(principal))
    )
    if transfer is None:
        raise TransferNotFound(f"No transfer {transfer_id} in your scope.")
    return transfer


async def list_transfers(
    session: AsyncSession,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    filters: dict[str, Any],
) -> tuple[list[Transfer], str | None]:
    """Newest first. `org_id`: transfers leaving or entering that subtree; `direction`:
    relative to the `org_id` subtree if given, else to the caller's scope."""
    _require_reader(principal)
    query = select(Transfer).where(transfer_in_scope(principal))
    for name in ("member_id", "from_org_id", "to_org_id"):
        if filters.get(name) is not None:
            query = query.where(getattr(Transfer, name) == filters[name])
    if filters.get("status") is not None:
        query = query.where(effective_status_expr() == str(filters["status"]))
    org_id = filters.get("org_id")
    if org_id is not None:
        under = org_ids_under(org_id)
        query = query.where(
            or_(Transfer.from_org_id.in_(under), Transfer.to_org_id.in_(under))  # type: ignore[union-attr]
        )
    direction = filters.get("direction")
    if direction is not None:
        side = org_ids_under(org_id) if org_id is not None else scoped_org_ids(principal)
        inside_from = Transfer.from_org_id.in_(side)  # type: ignore[union-attr]
        inside_to = Transfer.to_org_id.in_(side)  # type: ignore[union-attr]
        if direction == TransferDirection.incoming:
            query = query.where(
                inside_to,
                or_(Transfer.from_org_id.is_(None), ~inside_from),  # type: ignore[union-attr]
            )
        else:
            query = query.where(
                inside_from,
                or_(Transfer.to_org_id.is_(None), ~inside_to),  # type: ignore[union-attr]
            )
    after = _resume_after(cursor, filters, datetime, uuid.UUID)
    if after is not None:
        query = query.where(tuple_(Transfer.created_at, Transfer.id) < tuple_(after[0], after[1]))
    query = query.order_by(Transfer.created_at.desc(), Transfer.id.desc())  # type: ignore[union-attr,attr-defined]
    rows = (await session.scalars(query.limit(limit + 1))).all()
    return page_of(rows, limit=limit, key=lambda t: [t.created_at, t.id], filters=filters)


@dataclass(frozen=True)
class QueueEntry:
    transfer: Transfer
    waiting_on: Literal["issue", "receive"]
    overdue: bool
    waiting_since: datetime

    def public(self, *, today: date) -> TransferQueueItem:
        return TransferQueueItem(
            **to_public(self.transfer, today=today).model_dump(),
            waiting_on=self.waiting_on,
            overdue=self.overdue,
            waiting_since=self.waiting_since,
        )


async def work_queue(
    session: AsyncSession,
    *,
    principal: Principal,
    org_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[QueueEntry], str | None]:
    """The transfers waiting on the `org_id` subtree (default: the caller's scope): requests
    waiting for its letter, letters waiting for its receipt. Overdue first (a letter that
    expires within 7 days, a request older than 14 days), then the longest waiting."""
    if not principal.reads_org_data:
        raise Forbidden("Your role has no transfer work queue.")
    if org_id is not None:
        await get_org(session, org_id=org_id, principal=principal)
        subtree = org_ids_under(org_id)
    else:
        subtree = scoped_org_ids(principal)
    today = func.current_date()
    is_issued = Transfer.status == TransferStatus.issued.value
    overdue = case(
        (is_issued, Transfer.valid_until <= today + LETTER_DUE_SOON_DAYS),
        else_=Transfer.created_at < func.now() - timedelta(days=REQUEST_OVERDUE_DAYS),
    )
    rank = case((overdue, 0), else_=1)
    since = case(
        (is_issued, func.coalesce(Transfer.issued_at, Transfer.created_at)),
        else_=Transfer.created_at,
    )
    waiting = or_(
        and_(
            Transfer.status == TransferStatus.requested.value,
            Transfer.from_org_id.in_(subtree),  # type: ignore[union-attr]
        ),
        and_(
            is_issued,
            Transfer.valid_until >= today,
            or_(
                Transfer.to_org_id.in_(subtree),  # type: ignore[union-attr]
                and_(Transfer.to_org_id.is_(None), Transfer.from_org_id.in_(subtree)),  # type: ignore[union-attr]
            ),
        ),
    )
    query = select(Transfer, overdue.label("overdue"), since.label("waiting_since")).where(
        waiting, transfer_in_scope(principal)
    )
    filters = {"org_id": org_id, "queue": True}
    after = _resume_after(cursor, filters, int, datetime, uuid.UUID)
    if after is not None:
        query = query.where(
            tuple_(rank, since, Transfer.id) > tuple_(literal(after[0]), after[1], after[2])
        )
    query = query.order_by(rank, since, Transfer.id).limit(limit + 1)
    entries = [
        QueueEntry(
            transfer=row[0],
            waiting_on="receive" if row[0].status == TransferStatus.issued.value else "issue",
            overdue=bool(row.overdue),
            waiting_since=row.waiting_since,
        )
        for row in (await session.execute(query)).all()
    ]
    return page_of(
        entries,
        limit=limit,
        key=lambda e: [0 if e.overdue else 1, e.waiting_since, e.transfer.id],
        filters=filters,
    )


# --- pocket members --------------------------------------------------------------------------


def pocket_member_clause(member_id: Any = None) -> ColumnElement[bool]:
    """SQL: the member's latest transfer is expired (a "pocket member", 口袋党员). Usable
    in a member query: `select(Member, pocket_member_clause().label("pocket_member"))`."""
    col = member_id if member_id is not None else Member.id
    latest = (
        select(effective_status_expr())
        .where(Transfer.member_id == col)
        .order_by(Transfer.created_at.desc(), Transfer.id.desc())  # type: ignore[union-attr,attr-defined]
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(latest == TransferStatus.expired.value, false())


async def pocket_member_ids(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """The members in the principal's scope (and, if given, enrolled in the `org_id`
    subtree) whose latest transfer is expired; deceased or removed members are not."""
    ranked = select(
        Transfer.member_id,
        effective_status_expr().label("status"),
        func.row_number()
        .over(
            partition_by=Transfer.member_id,
            order_by=(Transfer.created_at.desc(), Transfer.id.desc()),  # type: ignore[union-attr,attr-defined]
        )
        .label("n"),
    ).subquery()
    latest = select(ranked.c.member_id, ranked.c.status).where(ranked.c.n == 1).subquery()
    query = (
        select(Member.id)
        .join(latest, latest.c.member_id == Member.id)
        .where(
            latest.c.status == TransferStatus.expired.value,
            member_in_scope(principal),
            Member.merged_into.is_(None),  # type: ignore[union-attr]
            Member.status.not_in([MemberStatus.deceased.value, MemberStatus.removed.value]),  # type: ignore[attr-defined]
        )
        .order_by(Member.id)
    )
    if org_id is not None:
        query = query.where(Member.org_id.in_(org_ids_under(org_id)))  # type: ignore[union-attr]
    return list((await session.scalars(query)).all())


# --- expiry ------------------------------------------------------------------------------------


async def expire_overdue(session: AsyncSession) -> list[uuid.UUID]:
    """Turn every `issued` letter past its last valid day `expired`, in one UPDATE over the
    partial index on issued letters; rows another transaction holds are left to it (it
    sees them as expired too). Records `transfer.expire` by "system". Returns the ids."""
    due = aliased(Transfer)
    candidates = (
        select(due.id)
        .where(
            # A literal, not a parameter, so the planner can always use the partial index.
            due.status == literal_column("'issued'"),
            due.valid_until < func.current_date(),
        )
        .with_for_update(skip_locked=True)
    )
    rows = (
        await session.execute(
            update(Transfer)
            .where(
                Transfer.id.in_(candidates),  # type: ignore[attr-defined]
                Transfer.status == TransferStatus.issued.value,
            )
            .values(
                status=TransferStatus.expired.value,
                closed_at=func.now(),
                updated_at=func.now(),
                version=Transfer.version + 1,
            )
            .returning(Transfer.id, Transfer.member_id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    for transfer_id, member_id in rows:
        await audit.record(
            session,
            audit_log,
            SYSTEM,
            action="transfer.expire",
            resource="transfer",
            record_id=transfer_id,
            subject_member_id=member_id,
        )
    return [transfer_id for transfer_id, _ in rows]


# --- creating ----------------------------------------------------------------------------------


async def _org_exists(session: AsyncSession, org_id: uuid.UUID, *, field: str) -> None:
    if await session.scalar(select(Org.id).where(Org.id == org_id)) is None:
        raise InvalidReference(
            f"No organization {org_id}.",
            errors=[FieldError(field=field, message="no such organization")],
        )


def _refuse_closed_member(member: Member, *, allowed: frozenset[MemberStatus]) -> None:
    if member.merged_into is not None:
        raise TransferNotAllowed(
            "This record was merged into another; transfer that one.",
            extra={"merged_into": str(member.merged_into)},
        )
    status = MemberStatus(member.status)
    if status in CLOSED_MEMBER_STATUSES and status not in allowed:
        raise TransferNotAllowed(
            f"A member who is {status.value} cannot be transferred.",
            extra={"member_status": status.value},
        )


async def _refuse_open_transfer(session: AsyncSession, *, member_id: uuid.UUID) -> None:
    open_id = await session.scalar(
        select(Transfer.id).where(
            Transfer.member_id == member_id,
            Transfer.status.in_([s.value for s in OPEN_TRANSFER_STATUSES]),  # type: ignore[attr-defined]
        )
    )
    if open_id is not None:
        raise OpenTransferExists(
            f"The member already has an open transfer {open_id}; finish or reject it first.",
            extra={"transfer_id": str(open_id)},
        )


def _check_letter_date(valid_until: date, *, today: date) -> None:
    last = today + timedelta(days=MAX_LETTER_DAYS)
    if not today <= valid_until <= last:
        raise Unprocessable(
            "The letter's validity is out of range.",
            errors=[
                FieldError(field="valid_until", message=f"must be from {today} to {last} inclusive")
            ],
        )


async def _visible_member(
    session: AsyncSession, *, member_id: uuid.UUID, principal: Principal
) -> Member:
    member = await session.scalar(
        select(Member).where(Member.id == member_id, member_in_scope(principal))
    )
    if member is None:
        raise MemberNotFound(f"No member {member_id} in your scope.")
    return member


async def _outgoing(
    session: AsyncSession, *, data: TransferCreate, principal: Principal
) -> dict[str, Any]:
    member = await _visible_member(session, member_id=data.member_id, principal=principal)
    if member.org_id is None:
        raise TransferNotAllowed(
            "The member's relation is held by no org in the system; record an incoming "
            "transfer (from_external) instead."
        )
    if not await _holds(session, principal, member.org_id):
        raise Forbidden("Only the org holding the member's relation requests a transfer out.")
    if data.to_org_id is not None:
        await _org_exists(session, data.to_org_id, field="to_org_id")
        if data.to_org_id == member.org_id:
            raise Unprocessable(
                "The member's relation is already held by that organization.",
                errors=[
                    FieldError(field="to_org_id", message="is the member's current organization")
                ],
            )
    _refuse_closed_member(member, allowed=frozenset())
    await _refuse_open_transfer(session, member_id=member.id)
    external = data.to_external
    return {
        "shard_key": member.shard_key,
        "status": TransferStatus.requested.value,
        "from_org_id": member.org_id,
        "to_org_id": data.to_org_id,
        "to_external_name": external.name if external else None,
        "to_external_code": external.code if external else None,
    }


async def _incoming(
    session: AsyncSession, *, data: TransferCreate, principal: Principal
) -> dict[str, Any]:
    assert data.from_external is not None and data.to_org_id is not None
    assert data.valid_until is not None
    await _org_exists(session, data.to_org_id, field="to_org_id")
    if not await _holds(session, principal, data.to_org_id):
        raise Forbidden("You receive transfers only into organizations in your scope.")
    member = await _visible_member(session, member_id=data.member_id, principal=principal)
    _check_letter_date(data.valid_until, today=await db_today(session))
    _refuse_closed_member(member, allowed=frozenset({MemberStatus.transferred_out}))
    held_elsewhere = (
        member.org_id is not None
        and member.org_id != data.to_org_id
        and member.status != MemberStatus.transferred_out.value
    )
    if held_elsewhere:
        raise TransferNotAllowed(
            "The member's relation is held by an org in the system; that org requests the "
            "transfer.",
            extra={"org_id": str(member.org_id)},
        )
    await _refuse_open_transfer(session, member_id=member.id)
    return {
        "shard_key": member.shard_key,
        "status": TransferStatus.issued.value,
        "from_external_name": data.from_external.name,
        "from_external_code": data.from_external.code,
        "to_org_id": data.to_org_id,
        "letter_no": data.letter_no,
        "valid_until": data.valid_until,
        "issued_at": func.now(),
    }


def _violated_constraint(exc: IntegrityError) -> str | None:
    cause = getattr(exc.orig, "__cause__", None)
    return getattr(cause, "constraint_name", None)


async def create_transfer(
    session: AsyncSession, *, data: TransferCreate, principal: Principal
) -> Transfer:
    """A transfer out of the member's org (`requested`) or into an org in scope from
    outside the system (`issued`). At most one open transfer per member: checked first,
    and enforced by the unique index when two requests race."""
    _require_writer(principal)
    if errors := data.shape_errors():
        raise Unprocessable("The transfer's fields do not fit together.", errors=errors)
    if data.from_external is not None:
        values = await _incoming(session, data=data, principal=principal)
    else:
        values = await _outgoing(session, data=data, principal=principal)
    transfer = Transfer(
        id=uuid.uuid4(),
        member_id=data.member_id,
        reason=data.reason,
        requested_by=principal.username or principal.subject,
        **values,
    )
    session.add(transfer)
    try:
        await session.flush()
    except IntegrityError as exc:
        if _violated_constraint(exc) == _OPEN_INDEX:
            raise OpenTransferExists(
                "The member already has an open transfer; finish or reject it first."
            ) from exc
        raise
    await session.refresh(transfer)
    await _audit(session, principal, transfer, "transfer.create")
    if transfer.status == TransferStatus.issued.value:  # incoming: the letter exists already
        await emit_transfer(session, transfer, type="transfer.issued")
    return transfer


# --- transitions -------------------------------------------------------------------------------


async def _audit(
    session: AsyncSession, principal: Principal, transfer: Transfer, action: str
) -> None:
    await audit.record(
        session,
        audit_log,
        principal,
        action=action,
        resource="transfer",
        record_id=transfer.id,
        subject_member_id=transfer.member_id,
    )


async def _lock(
    session: AsyncSession, *, transfer_id: uuid.UUID, principal: Principal, if_match: str | None
) -> Transfer:
    """The transfer, locked until the end of the transaction; 412 if `If-Match` is stale."""
    transfer = await session.scalar(
        select(Transfer)
        .where(Transfer.id == transfer_id, transfer_in_scope(principal))
        .with_for_update(of=Transfer)
        .execution_options(populate_existing=True)
    )
    if transfer is None:
        raise TransferNotFound(f"No transfer {transfer_id} in your scope.")
    if if_match is not None:
        check_if_match(if_match, transfer.version)
    return transfer


_VERBS = {"issue": "issued", "receive": "received", "reject": "rejected"}


def _require_status(
    transfer: Transfer, *, today: date, action: str, allowed: tuple[TransferStatus, ...]
) -> TransferStatus:
    current = effective_status(transfer, today=today)
    if current not in allowed:
        detail = f"A transfer that is {current.value} cannot be {_VERBS[action]}."
        if current is TransferStatus.expired:
            detail += f" The letter was valid until {transfer.valid_until}."
        raise TransferNotAllowed(detail, extra={"current_status": current.value})
    return current


async def _move(
    session: AsyncSession, transfer: Transfer, *, to: TransferStatus, **values: Any
) -> Transfer:
    """Change the status, on the condition that it is still the one checked."""
    moved = await session.scalar(
        update(Transfer)
        .where(Transfer.id == transfer.id, Transfer.status == transfer.status)
        .values(status=to.value, updated_at=func.now(), version=Transfer.version + 1, **values)
        .returning(Transfer)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    if moved is None:
        raise TransferNotAllowed("The transfer changed meanwhile; read it again.")
    return moved


async def issue_transfer(
    session: AsyncSession,
    *,
    transfer_id: uuid.UUID,
    data: TransferIssue,
    if_match: str | None,
    default_validity_days: int,
    principal: Principal,
) -> Transfer:
    """The sending org issues the letter: `requested` → `issued`."""
    _require_writer(principal)
    transfer = await _lock(session, transfer_id=transfer_id, principal=principal, if_match=if_match)
    today = await db_today(session)
    _require_status(transfer, today=today, action="issue", allowed=(TransferStatus.requested,))
    if not await _holds(session, principal, transfer.from_org_id):
        raise Forbidden("Only the sending organization issues the letter.")
    days = min(default_validity_days, MAX_LETTER_DAYS)
    valid_until = data.valid_until or today + timedelta(days=days)
    _check_letter_date(valid_until, today=today)
    transfer = await _move(
        session,
        transfer,
        to=TransferStatus.issued,
        letter_no=data.letter_no,
        valid_until=valid_until,
        issued_at=func.now(),
    )
    await _audit(session, principal, transfer, "transfer.issue")
    await emit_transfer(session, transfer, type="transfer.issued")
    return transfer


async def receive_transfer(
    session: AsyncSession,
    *,
    transfer_id: uuid.UUID,
    if_match: str | None,
    principal: Principal,
) -> Transfer:
    """The receiving org receives the letter (for a transfer out of the system, the sending
    org records the receipt): `issued` → `completed`, and the member moves with it."""
    _require_writer(principal)
    transfer = await _lock(session, transfer_id=transfer_id, principal=principal, if_match=if_match)
    today = await db_today(session)
    _require_status(transfer, today=today, action="receive", allowed=(TransferStatus.issued,))
    if transfer.to_org_id is not None:
        if not await _holds(session, principal, transfer.to_org_id):
            raise Forbidden("Only the receiving organization receives the transfer.")
    elif not await _holds(session, principal, transfer.from_org_id):
        raise Forbidden("Only the sending organization records a receipt outside the system.")
    member = await session.scalar(
        select(Member)
        .where(Member.id == transfer.member_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    assert member is not None  # a foreign key holds it
    if member.status in (MemberStatus.deceased.value, MemberStatus.removed.value):
        raise TransferNotAllowed(
            f"The member is {member.status}; reject the transfer instead.",
            extra={"member_status": member.status},
        )
    transfer = await _move(
        session,
        transfer,
        to=TransferStatus.completed,
        completed_at=func.now(),
        closed_at=func.now(),
    )
    changes: dict[str, Any]
    if transfer.to_org_id is None:
        changes = {"status": MemberStatus.transferred_out.value, "group_id": None}
    else:
        changes = {
            "org_id": transfer.to_org_id,
            "group_id": case(
                (Member.group_id.in_(org_ids_under(transfer.to_org_id)), Member.group_id),  # type: ignore[union-attr]
                else_=None,
            ),
        }
        if member.status == MemberStatus.transferred_out.value:
            changes["status"] = MemberStatus.active.value
    previous_status = member.status
    await session.execute(
        update(Member)
        .where(Member.id == member.id)
        .values(**changes, version=Member.version + 1, updated_at=func.now())
        .execution_options(synchronize_session=False)
    )
    # Received in another county: the member and their rows (this transfer too) take its key.
    await shard_keys.rekey_member(session, member_id=member.id)
    await _audit(session, principal, transfer, "transfer.receive")
    await session.refresh(member)
    await session.refresh(transfer)
    await emit_member_change(session, member, previous_status=previous_status)
    await emit_transfer(session, transfer, type="transfer.completed")
    return transfer


async def reject_transfer(
    session: AsyncSession,
    *,
    transfer_id: uuid.UUID,
    data: TransferReject,
    if_match: str | None,
    principal: Principal,
) -> Transfer:
    """A request is rejected by the sending org; an issued letter by either side."""
    _require_writer(principal)
    transfer = await _lock(session, transfer_id=transfer_id, principal=principal, if_match=if_match)
    today = await db_today(session)
    current = _require_status(
        transfer,
        today=today,
        action="reject",
        allowed=(TransferStatus.requested, TransferStatus.issued),
    )
    if current is TransferStatus.requested:
        allowed = await _holds(session, principal, transfer.from_org_id)
    else:
        allowed = await _holds(session, principal, transfer.from_org_id) or await _holds(
            session, principal, transfer.to_org_id
        )
    if not allowed:
        raise Forbidden("Only the sending organization rejects a request.")
    transfer = await _move(
        session,
        transfer,
        to=TransferStatus.rejected,
        reject_reason=data.reason,
        closed_at=func.now(),
    )
    await _audit(session, principal, transfer, "transfer.reject")
    return transfer
