"""The consumers the registry runs (see `services/mobility/consumers.py` for how they work
and how to add one).

- `registry.mobility`: a member's status follows their mobile card — `mobile` when a card
  opens or contact resumes, `lost_contact` when the card falls silent, back to `active` on
  return — each change with its own `member.status_changed` event. Every transition names
  the statuses it starts from, so a replayed or late event changes nothing it should not."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common.events.consumer import Consumer
from common.events.outbox import Event
from services.registry.events import emit_member_change
from services.registry.models import Member, MemberStatus, consumer_cursors

# event type → (the statuses it moves from, the status it moves to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "mobile.registered": (frozenset({MemberStatus.active.value}), MemberStatus.mobile.value),
    "mobile.contact_resumed": (
        frozenset({MemberStatus.lost_contact.value}),
        MemberStatus.mobile.value,
    ),
    "mobile.lost_contact": (
        frozenset({MemberStatus.mobile.value}),
        MemberStatus.lost_contact.value,
    ),
    "mobile.returned": (
        frozenset({MemberStatus.mobile.value, MemberStatus.lost_contact.value}),
        MemberStatus.active.value,
    ),
}


async def apply_mobile(session: AsyncSession, event: Event) -> None:
    transition = TRANSITIONS.get(event.type)
    if transition is None:
        return
    sources, target = transition
    member_id = uuid.UUID(str(event.payload["member_id"]))
    member = await session.scalar(
        select(Member)
        .where(col(Member.id) == member_id, col(Member.merged_into).is_(None))
        .with_for_update()
    )
    if member is None or member.status not in sources:
        return
    previous = member.status
    await session.execute(
        update(Member)
        .where(col(Member.id) == member.id)
        .values(status=target, version=col(Member.version) + 1, updated_at=func.now())
        .execution_options(synchronize_session=False)
    )
    await session.refresh(member)
    await emit_member_change(session, member, previous_status=previous)


def consumers() -> list[Consumer]:
    return [
        Consumer(
            name="registry.mobility",
            sources=("mobility",),
            cursors=consumer_cursors,
            apply=apply_mobile,
        )
    ]
