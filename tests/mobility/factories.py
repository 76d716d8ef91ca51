"""Builders for mobility tests."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.outbox import Event, source_outbox
from services.mobility.consumers import apply_attendance, apply_transfer
from services.mobility.projections import registry_model
from services.registry.consumers import apply_mobile
from tests.registry.factories import make_org


class EventPump:
    """Applies the events written so far in this test's transaction (which no real consumer
    can read before it commits) to the consumers of the other services, in order, until
    nothing new remains. With `batch`, the registry's events of each round go to the
    projection as one batch (`apply_batch`, as a consumer configured for bulk does)."""

    def __init__(self, db: async_sessionmaker[AsyncSession], *, batch: bool = False) -> None:
        self.db = db
        self.batch = batch
        self.seen = {"registry": 0, "mobility": 0, "activities": 0}

    async def __call__(self) -> None:
        while True:
            moved = False
            for source in ("registry", "mobility", "activities"):
                table = source_outbox(source)
                async with self.db() as session:
                    rows = (
                        (
                            await session.execute(
                                select(table)
                                .where(table.c.id > self.seen[source])
                                .order_by(table.c.id)
                            )
                        )
                        .mappings()
                        .all()
                    )
                    events = [_event(source, row) for row in rows]
                    if self.batch and source == "registry" and events:
                        await registry_model.apply_batch(session, events)
                    for row, event in zip(rows, events, strict=True):
                        if source == "registry":
                            if not self.batch:
                                await registry_model.apply(session, event)
                            await apply_transfer(session, event)
                        elif source == "mobility":
                            await apply_mobile(session, event)
                        else:
                            await apply_attendance(session, event)
                        self.seen[source] = row["id"]
                        moved = True
                    await session.commit()
            if not moved:
                return


def _event(source: str, row: Any) -> Event:
    return Event(
        source=source,
        seq=row["id"],
        txid=str(row["txid"]),
        event_id=row["event_id"],
        type=row["type"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        aggregate_version=row["aggregate_version"],
        occurred_at=row["occurred_at"],
        org_paths=tuple(row["org_paths"]),
        payload=row["payload"],
        shard_key=row["shard_key"],
    )


async def work_unit(registry: httpx.AsyncClient, parent_id: str) -> dict[str, Any]:
    return await make_org(registry, parent_id=parent_id, kind="committee", area_level="work_unit")


def card_body(member_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "direction": "outflow",
        "place": "广东省深圳市宝安区",
        "left_on": str(date.today() - timedelta(days=10)),
        "contact_phone": "13800138000",
        "tracker": "王书记",
        **overrides,
    }


async def open_card(c: httpx.AsyncClient, member_id: str, **overrides: Any) -> dict[str, Any]:
    r = await c.post("/api/v1/mobility/mobile-members", json=card_body(member_id, **overrides))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def make_link(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await c.post("/api/v1/mobility/links", json={"mode": "direct", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())
