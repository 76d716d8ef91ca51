"""What the event tests share: bounded waits on a condition, background runners that are
always stopped, and the two sides to compare — a projection, and what the registry says it
should hold."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.consumer import Consumer
from common.events.projection import RegistryProjection
from services.activities import projections as activities_projections
from services.mobility import projections as mobility_projections
from tests.registry.factories import Tree, build_tree, make_member, make_org

T = TypeVar("T")

PROJECTIONS: dict[str, Any] = {
    "mobility": mobility_projections,
    "activities": activities_projections,
}


def model(schema: str) -> RegistryProjection:
    return PROJECTIONS[schema].registry_model  # type: ignore[no-any-return]


def consumer(schema: str, **changes: Any) -> Consumer:
    """`<schema>.registry`, the service's consumer of the registry (fields overridable; a
    replaced `apply` runs event by event unless an `apply_batch` is given too)."""
    if "apply" in changes:
        changes.setdefault("apply_batch", None)
    return dataclasses.replace(PROJECTIONS[schema].registry_consumer(), **changes)


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout_s: float = 10.0, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run a runner in the background for the block; cancel it and wait for it after."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        await stop(task)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def rows(
    sessionmaker: async_sessionmaker[AsyncSession], sql: str, **params: Any
) -> list[tuple[Any, ...]]:
    async with sessionmaker() as session:
        return [tuple(r) for r in (await session.execute(text(sql), params)).all()]


async def projection(
    sessionmaker: async_sessionmaker[AsyncSession], schema: str
) -> dict[str, list[tuple[Any, ...]]]:
    """A projection's content (without the times it was written at)."""
    return {
        "orgs": await rows(
            sessionmaker,
            f"SELECT org_id, parent_id, path::text, code, name, kind, area_level, version "  # noqa: S608
            f"FROM {schema}.orgs ORDER BY org_id",
        ),
        "members": await rows(
            sessionmaker,
            f"SELECT member_id, name, status, category, relation, org_id, org_path::text, "  # noqa: S608
            f"residence_org_id, residence_path::text, merged_into, version "
            f"FROM {schema}.members ORDER BY member_id",
        ),
    }


async def registry_view(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> dict[str, list[tuple[Any, ...]]]:
    """What a projection must hold, read from the registry's own tables."""
    return {
        "orgs": await rows(
            sessionmaker,
            "SELECT id, parent_id, path::text, code, name, kind, area_level, version "
            "FROM registry.orgs ORDER BY id",
        ),
        "members": await rows(
            sessionmaker,
            "SELECT m.id, m.name, m.status, m.category, m.relation, m.org_id, o.path::text, "
            "m.residence_org_id, r.path::text, m.merged_into, m.version "
            "FROM registry.members m LEFT JOIN registry.orgs o ON o.id = m.org_id "
            "LEFT JOIN registry.orgs r ON r.id = m.residence_org_id ORDER BY m.id",
        ),
    }


async def outbox_count(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    return int((await rows(sessionmaker, "SELECT count(*) FROM registry.outbox"))[0][0])


async def move(admin: httpx.AsyncClient, org: dict[str, Any], parent_id: str) -> dict[str, Any]:
    current = await admin.get(f"/api/v1/registry/orgs/{org['id']}")
    r = await admin.patch(
        f"/api/v1/registry/orgs/{org['id']}",
        json={"parent_id": parent_id},
        headers={"If-Match": current.headers["ETag"]},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def populate(admin: httpx.AsyncClient, *, members: int = 4) -> Tree:
    """A tree, enrolled members and residents in it, a second street, and a community
    moved under it after its members were registered."""
    tree = await build_tree(admin)
    for _ in range(members):
        await make_member(admin, org_id=tree.community_a["id"], group_id=tree.building_a1["id"])
        await make_member(
            admin,
            residence_org_id=tree.community_a["id"],
            group_id=tree.building_a1["id"],
            category="in_service_resident",
        )
        await make_member(admin, org_id=tree.community_b["id"])
    street2 = await make_org(
        admin, parent_id=tree.city["id"], kind="working_committee", area_level="street"
    )
    await move(admin, tree.community_a, street2["id"])
    return tree
