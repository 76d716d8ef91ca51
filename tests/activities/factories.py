"""Builders for activities tests: the registry's read model is this service's own table, so
tests seed it directly (what the registry's events would have projected)."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.sharding import child_shard_key, member_shard_key
from services.activities.models import members, orgs

Sessions = async_sessionmaker[AsyncSession]
BASE = "/api/v1/activities"
_n = itertools.count(1)


@dataclass
class Org:
    id: uuid.UUID
    path: str
    # The distribution key the registry gives it (common/sharding.py) and its level.
    key: uuid.UUID | None = None
    area_level: str | None = None

    @property
    def sid(self) -> str:
        return str(self.id)


@dataclass
class Member:
    id: uuid.UUID
    name: str
    org: Org

    @property
    def sid(self) -> str:
        return str(self.id)


async def seed_org(
    sessions: Sessions,
    *,
    parent: Org | None = None,
    kind: str = "branch",
    area_level: str = "community",
    name: str | None = None,
) -> Org:
    org_id = uuid.uuid4()
    label = f"n{org_id.hex[:12]}"
    path = f"{parent.path}.{label}" if parent else label
    key = child_shard_key(
        org_id, parent.key if parent else None, parent.area_level if parent else None
    )
    async with sessions() as s:
        await s.execute(
            insert(orgs).values(
                org_id=org_id,
                parent_id=parent.id if parent else None,
                path=path,
                code=f"C{next(_n)}-{org_id.hex[:6]}",
                name=name or f"组织{next(_n)}",
                kind=kind,
                area_level=area_level,
                shard_key=key,
                version=1,
                updated_at=func.now(),
            )
        )
        await s.commit()
    return Org(org_id, path, key, area_level)


async def seed_member(
    sessions: Sessions,
    org: Org,
    *,
    name: str | None = None,
    residence: Org | None = None,
    group: Org | None = None,
    skills: list[str] | None = None,
    status: str = "active",
    category: str = "retired",
) -> Member:
    member_id = uuid.uuid4()
    name = name or f"党员{next(_n)}"
    async with sessions() as s:
        await s.execute(
            insert(members).values(
                member_id=member_id,
                name=name,
                status=status,
                category=category,
                relation="enrolled" if residence is None else "resident",
                org_id=org.id,
                org_path=org.path,
                residence_org_id=residence.id if residence else None,
                residence_path=residence.path if residence else None,
                shard_key=member_shard_key(org.key, residence.key if residence else None),
                group_id=group.id if group else None,
                skills=skills or [],
                version=1,
                updated_at=func.now(),
            )
        )
        await s.commit()
    return Member(member_id, name, org)


@dataclass
class World:
    """city → street → communities A (with building group A1) and B; members in each."""

    city: Org
    street: Org
    a: Org
    b: Org
    a1: Org
    a_members: list[Member] = field(default_factory=list)
    b_members: list[Member] = field(default_factory=list)


async def build_world(sessions: Sessions) -> World:
    city = await seed_org(sessions, kind="committee", area_level="city", name="嘉兴市")
    street = await seed_org(
        sessions, parent=city, kind="working_committee", area_level="street", name="当湖街道"
    )
    a = await seed_org(sessions, parent=street, name="如意社区")
    b = await seed_org(sessions, parent=street, name="凤凰社区")
    a1 = await seed_org(sessions, parent=a, kind="group", area_level="building", name="1号楼")
    world = World(city, street, a, b, a1)
    for i in range(3):
        world.a_members.append(await seed_member(sessions, a, name=f"如意{i}", group=a1))
    for i in range(2):
        world.b_members.append(await seed_member(sessions, b, name=f"凤凰{i}"))
    return world


def when(days: int = 1, hours: int = 0) -> datetime:
    return datetime(2026, 6, 1, 19, 0, tzinfo=UTC) + timedelta(days=days, hours=hours)


async def make_activity(c: httpx.AsyncClient, org: Org, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "org_id": org.sid,
        "type": "party_lecture",
        "title": "党课",
        "starts_at": when().isoformat(),
        "ends_at": when(hours=2).isoformat(),
        **extra,
    }
    r = await c.post(f"{BASE}/activities", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())
