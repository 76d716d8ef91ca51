"""Dual management (双向管理): links between a member, a workplace (an org node or an outside
unit) and a residence community; reporting (报到), the community's yearly feedback, ending.

Who sees a link: the community (its residence org in the caller's subtree) and the
workplace (its workplace org in the caller's subtree; an API key with scope `read` of that
org); the member themself. Feedback travels with the link, so a community never sees
feedback given by another community."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import false, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import audit
from common.auth import Principal, Role
from common.errors import FieldError, Forbidden
from common.pagination import decode_cursor, page_of
from common.sharding import UNSHARDED
from services.mobility.errors import (
    InvalidLink,
    LinkAlreadyOpen,
    LinkNotFound,
    LinkStateConflict,
)
from services.mobility.models import (
    LinkStatus,
    audit_log,
    change_seq,
    feedback,
    links,
    members,
    orgs,
)
from services.mobility.schemas import (
    ExternalUnit,
    FeedbackCreate,
    FeedbackPublic,
    LinkCreate,
    LinkPublic,
)
from services.mobility.service.events import emit_feedback, emit_links
from services.mobility.service.scope import (
    forbid_auditors,
    ids_under,
    org_in_scope,
    require_writer,
)

lc = links.c


def link_visible(principal: Principal) -> Any:
    if principal.role is Role.member:
        return lc.member_id == principal.member_id if principal.member_id else false()
    if principal.role is Role.integration:
        if "read" not in principal.scopes and "sync" not in principal.scopes:
            return false()
        return org_in_scope(principal, lc.workplace_org_id)
    return or_(
        org_in_scope(principal, lc.residence_org_id), org_in_scope(principal, lc.workplace_org_id)
    )


def community_side(principal: Principal) -> Any:
    return org_in_scope(principal, lc.residence_org_id)


def to_public(row: Any, *, with_feedback: list[FeedbackPublic] | None = None) -> LinkPublic:
    external = None
    if row.workplace_external_name is not None:
        external = ExternalUnit(name=row.workplace_external_name, code=row.workplace_external_code)
    return LinkPublic(
        id=row.id,
        member_id=row.member_id,
        member_name=getattr(row, "member_name", None),
        workplace_org_id=row.workplace_org_id,
        workplace_external=external,
        residence_org_id=row.residence_org_id,
        mode=row.mode,
        status=row.status,
        reported_on=row.reported_on,
        ended_on=row.ended_on,
        external_id=row.external_id,
        version=row.version,
        feedback=with_feedback,
    )


def _select() -> Any:
    return select(links, members.c.name.label("member_name")).outerjoin(
        members, members.c.member_id == lc.member_id
    )


async def _in_scope_org(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> bool:
    found = await session.scalar(
        select(orgs.c.org_id).where(orgs.c.org_id == org_id, org_in_scope(principal, orgs.c.org_id))
    )
    return found is not None


async def create_link(session: AsyncSession, *, data: LinkCreate, principal: Principal) -> Any:
    require_writer(principal)
    errors: list[FieldError] = []
    member = (
        await session.execute(
            select(members.c.member_id, members.c.shard_key)
            .where(members.c.member_id == data.member_id, members.c.merged_into.is_(None))
            # Its key stays until the link is written (services/mobility/service/keys.py).
            .with_for_update(read=True)
        )
    ).first()
    if member is None:
        errors.append(FieldError(field="member_id", message="no such member"))
    known = set(
        (
            await session.scalars(
                select(orgs.c.org_id).where(
                    orgs.c.org_id.in_(
                        [i for i in (data.residence_org_id, data.workplace_org_id) if i]
                    )
                )
            )
        ).all()
    )
    if data.residence_org_id not in known:
        errors.append(FieldError(field="residence_org_id", message="no such organization"))
    if data.workplace_org_id is not None and data.workplace_org_id not in known:
        errors.append(FieldError(field="workplace_org_id", message="no such organization"))
    if errors:
        raise InvalidLink("The link names unknown records.", errors=errors)
    sides = [data.residence_org_id] + ([data.workplace_org_id] if data.workplace_org_id else [])
    if not any([await _in_scope_org(session, principal, o) for o in sides]):
        raise InvalidLink(
            "Neither the community nor the workplace is in your scope.",
            errors=[
                FieldError(field="residence_org_id", message="no such organization in your scope")
            ],
        )
    values = {
        "id": uuid.uuid4(),
        "shard_key": member.shard_key or UNSHARDED,
        "member_id": data.member_id,
        "workplace_org_id": data.workplace_org_id,
        "workplace_external_name": data.workplace_external.name
        if data.workplace_external
        else None,
        "workplace_external_code": data.workplace_external.code
        if data.workplace_external
        else None,
        "residence_org_id": data.residence_org_id,
        "mode": data.mode.value,
    }
    stmt = insert(links).values(values).on_conflict_do_nothing().returning(lc.id)
    if await session.scalar(stmt) is None:
        raise LinkAlreadyOpen("The member already has an open link with this workplace.")
    row = await _row(session, values["id"])
    await audit.record(
        session,
        audit_log,
        principal,
        action="link.create",
        resource="link",
        record_id=row.id,
        subject_member_id=row.member_id,
    )
    await emit_links(session, [row.id], type="link.created")
    return row


async def _row(session: AsyncSession, link_id: uuid.UUID) -> Any:
    return (await session.execute(_select().where(lc.id == link_id))).one()


async def get_link(session: AsyncSession, *, link_id: uuid.UUID, principal: Principal) -> Any:
    forbid_auditors(principal)
    row = (
        await session.execute(_select().where(lc.id == link_id, link_visible(principal)))
    ).first()
    if row is None:
        raise LinkNotFound("No such link in your scope.")
    return row


async def read_link(
    session: AsyncSession, *, link_id: uuid.UUID, principal: Principal
) -> LinkPublic:
    row = await get_link(session, link_id=link_id, principal=principal)
    given = await session.execute(
        select(feedback).where(feedback.c.link_id == link_id).order_by(feedback.c.year)
    )
    return to_public(
        row,
        with_feedback=[
            FeedbackPublic(
                year=f.year,
                rating=f.rating,
                comment=f.comment,
                given_by=f.given_by,
                updated_at=f.updated_at,
            )
            for f in given
        ],
    )


async def list_links(
    session: AsyncSession,
    *,
    principal: Principal,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    forbid_auditors(principal)
    query = _select().where(link_visible(principal))
    for name in ("residence_org_id", "workplace_org_id"):
        if filters.get(name) is not None:
            query = query.where(lc[name].in_(ids_under(filters[name])))
    if filters.get("org_id") is not None:
        under = ids_under(filters["org_id"])
        query = query.where(or_(lc.residence_org_id.in_(under), lc.workplace_org_id.in_(under)))
    for name in ("member_id", "status", "mode"):
        if filters.get(name) is not None:
            query = query.where(lc[name] == str(filters[name]))
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(lc.id > after[0])
    rows = (await session.execute(query.order_by(lc.id).limit(limit + 1))).all()
    return page_of(rows, limit=limit, key=lambda r: [r.id], filters=filters)


async def _for_change(
    session: AsyncSession, *, link_id: uuid.UUID, principal: Principal, community_only: bool
) -> Any:
    forbid_auditors(principal)
    row = (
        await session.execute(
            select(links).where(lc.id == link_id, link_visible(principal)).with_for_update()
        )
    ).first()
    if row is None:
        raise LinkNotFound("No such link in your scope.")
    own = principal.role is Role.member and row.member_id == principal.member_id
    if community_only:
        allowed = principal.can_write and (
            await _in_scope_org(session, principal, row.residence_org_id)
        )
    else:
        allowed = principal.can_write
    if not (allowed or (own and not community_only)):
        raise Forbidden("Your role may not change this link.")
    return row


async def _change(
    session: AsyncSession, *, row: Any, principal: Principal, values: dict[str, Any], action: str
) -> Any:
    await session.execute(
        update(links)
        .where(lc.id == row.id)
        .values(
            **values,
            version=lc.version + 1,
            updated_at=func.now(),
            change_seq=change_seq.next_value(),
        )
    )
    updated = await _row(session, row.id)
    await audit.record(
        session,
        audit_log,
        principal,
        action=action,
        resource="link",
        record_id=row.id,
        subject_member_id=row.member_id,
    )
    await emit_links(
        session,
        [updated.id],
        type=action.replace("link.report", "link.reported").replace("link.end", "link.ended"),
    )
    return updated


async def report(
    session: AsyncSession, *, link_id: uuid.UUID, on: date | None, principal: Principal
) -> Any:
    """The member reported to the community (报到): by the member or the community."""
    row = await _for_change(session, link_id=link_id, principal=principal, community_only=False)
    if row.status != LinkStatus.pending.value:
        raise LinkStateConflict(f"The link is {row.status}; only a pending link is reported.")
    day = on or date.today()
    if day > date.today():
        raise InvalidLink(
            "on is in the future.", errors=[FieldError(field="on", message="is in the future")]
        )
    return await _change(
        session,
        row=row,
        principal=principal,
        values={"status": LinkStatus.reported.value, "reported_on": day},
        action="link.report",
    )


async def end(
    session: AsyncSession, *, link_id: uuid.UUID, on: date | None, principal: Principal
) -> Any:
    row = await _for_change(session, link_id=link_id, principal=principal, community_only=False)
    if principal.role is Role.member:
        raise Forbidden("A member does not end their own link.")
    if row.status == LinkStatus.ended.value:
        raise LinkStateConflict("The link has ended already.")
    return await _change(
        session,
        row=row,
        principal=principal,
        values={"status": LinkStatus.ended.value, "ended_on": on or date.today()},
        action="link.end",
    )


async def give_feedback(
    session: AsyncSession, *, link_id: uuid.UUID, data: FeedbackCreate, principal: Principal
) -> Any:
    """The community's rating of the member for a year; giving it again replaces it."""
    row = await _for_change(session, link_id=link_id, principal=principal, community_only=True)
    if row.status == LinkStatus.ended.value:
        raise LinkStateConflict("The link has ended.")
    stmt = insert(feedback).values(
        id=uuid.uuid4(),
        shard_key=row.shard_key,  # the link's: its member's
        link_id=link_id,
        year=data.year,
        rating=data.rating.value,
        comment=data.comment,
        given_by=principal.username or principal.subject,
    )
    saved = (
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[feedback.c.link_id, feedback.c.year],
                set_={
                    "rating": stmt.excluded.rating,
                    "comment": stmt.excluded.comment,
                    "given_by": stmt.excluded.given_by,
                    "updated_at": func.now(),
                    "change_seq": change_seq.next_value(),
                },
            ).returning(feedback)
        )
    ).one()
    await audit.record(
        session,
        audit_log,
        principal,
        action="feedback.give",
        resource="link",
        record_id=link_id,
        subject_member_id=row.member_id,
    )
    await emit_feedback(
        session,
        feedback_id=saved.id,
        link=row._mapping,
        year=data.year,
        rating=data.rating.value,
        version=int(saved.change_seq),
    )
    return saved
