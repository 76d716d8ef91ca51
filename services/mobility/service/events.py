"""The mobility service's domain events, written to `mobility.outbox` in the transaction
of the change. No payload carries a whereabouts, phone or note."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from common.events.outbox import EventRow, emit, emit_many
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


def _id(value: Any) -> Any:
    """An id as the payload's JSON has it: the driver's own UUIDs (rows just written and
    returned) as their text, which the serializer writes as it is (it takes a slow path
    for them, 20,000 payloads at a time in a sync); the same JSON."""
    return value if value is None or type(value) is uuid.UUID else str(value)


def link_payload(link: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "link_id": _id(link["id"]),
        "member_id": _id(link["member_id"]),
        "workplace_org_id": _id(link["workplace_org_id"]),
        "residence_org_id": _id(link["residence_org_id"]),
        "mode": link["mode"],
        "status": link["status"],
        "reported_on": link.get("reported_on"),
        "ended_on": link.get("ended_on"),
        "version": link["version"],
    }


def link_event(link: Mapping[str, Any], *, type: str, paths: Mapping[Any, str]) -> EventRow:
    return EventRow(
        type=type,
        aggregate_type="link",
        aggregate_id=link["id"],
        aggregate_version=int(link["version"]),
        payload=link_payload(link),
        org_paths=[paths.get(link["residence_org_id"]), paths.get(link["workplace_org_id"])],
        shard_key=link["shard_key"],
    )


async def emit_links(
    session: AsyncSession, rows: Iterable[Mapping[str, Any]], *, type: str
) -> None:
    """`link.created`, `link.reported`, `link.ended` for one or many links."""
    rows = list(rows)
    if not rows:
        return
    ids = {r["residence_org_id"] for r in rows} | {r["workplace_org_id"] for r in rows}
    paths = await _paths(session, ids)
    await emit_many(session, outbox, [link_event(r, type=type, paths=paths) for r in rows])


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
