"""The mobility service's domain events, written to `mobility.outbox` in the transaction
of the change. No payload carries a whereabouts, phone or note."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from common.events.outbox import RowEvents, emit, emit_rows
from services.mobility.models import orgs, outbox


async def _paths(session: AsyncSession, org_ids: Iterable[Any]) -> dict[Any, str]:
    """Projected paths of the orgs an event concerns (subscriptions scope by them)."""
    wanted = {i for i in org_ids if i is not None}
    if not wanted:
        return {}
    rows = await session.execute(
        select(orgs.c.org_id, orgs.c.path).where(orgs.c.org_id.in_(wanted))
    )
    return {r.org_id: str(r.path) for r in rows}


def card_payload(card: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "card_id": card["id"],
        "member_id": card["member_id"],
        "org_id": card["org_id"],
        "direction": card["direction"],
        "left_on": card["left_on"],
        "returned_on": card.get("returned_on"),
        "version": card["version"],
    }


async def emit_card(session: AsyncSession, card: Mapping[str, Any], *, type: str) -> None:
    """`mobile.registered`, `mobile.lost_contact`, `mobile.contact_resumed`, `mobile.returned`."""
    paths = await _paths(session, [card["org_id"]])
    await emit(
        session,
        outbox,
        type=type,
        aggregate_type="mobile_card",
        aggregate_id=card["id"],
        aggregate_version=int(card["version"]),
        payload=card_payload(card),
        org_paths=paths.values(),
        shard_key=card["shard_key"],
    )


# A link's events, made by the database from the link as the transaction has just written
# it (one statement for the 20,000 links of a work-unit sync, or for one).
LINK_EVENTS = RowEvents(
    table=outbox,
    aggregate_type="link",
    rows="JOIN mobility.links AS l ON l.id = w.id "
    "LEFT JOIN mobility.orgs AS r ON r.org_id = l.residence_org_id "
    "LEFT JOIN mobility.orgs AS k ON k.org_id = l.workplace_org_id",
    aggregate_id="l.id",
    aggregate_version="l.version",
    shard_key="l.shard_key",
    org_paths=("r.path", "k.path"),
    payload={
        "link_id": "l.id",
        "member_id": "l.member_id",
        "workplace_org_id": "l.workplace_org_id",
        "residence_org_id": "l.residence_org_id",
        "mode": "l.mode",
        "status": "l.status",
        "reported_on": "l.reported_on",
        "ended_on": "l.ended_on",
        "version": "l.version",
    },
)


async def emit_links(session: AsyncSession, link_ids: Iterable[uuid.UUID], *, type: str) -> None:
    """`link.created`, `link.reported`, `link.ended` for one or many links (in the order
    given), each with the link's state as written."""
    await emit_rows(session, LINK_EVENTS, link_ids, type=type)


async def emit_feedback(
    session: AsyncSession,
    *,
    feedback_id: uuid.UUID,
    link: Mapping[str, Any],
    year: int,
    rating: str,
    version: int,
) -> None:
    """`feedback.given`: the rating, never the comment."""
    await emit(
        session,
        outbox,
        type="feedback.given",
        aggregate_type="feedback",
        aggregate_id=feedback_id,
        aggregate_version=version,
        shard_key=link["shard_key"],
        org_paths=(
            await _paths(session, [link["residence_org_id"], link["workplace_org_id"]])
        ).values(),
        payload={
            "link_id": link["id"],
            "member_id": link["member_id"],
            "year": year,
            "rating": rating,
        },
    )
