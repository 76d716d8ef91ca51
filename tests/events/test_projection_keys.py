"""The projections keep each org's and member's distribution key (common/sharding.py): the
registry's when its event carries one, else the same rule applied to the projected tree;
an org moved to another county takes its subtree and their members with it."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.consumer import catch_up
from common.events.outbox import Event
from common.sharding import UNSHARDED
from tests.events.helpers import consumer, model, populate, rows
from tests.helpers import keys_by_rule

Sessions = async_sessionmaker[AsyncSession]
SCHEMAS = ("mobility", "activities")


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_keys_follow_the_rule_and_a_move_to_another_county(
    schema: str, admin: httpx.AsyncClient, committed_db: Sessions
) -> None:
    tree = await populate(admin, members=2)  # moves community A to a second street
    await catch_up(committed_db, consumer(schema))
    registry = await rows(committed_db, "SELECT id, parent_id, area_level FROM registry.orgs")
    expected = keys_by_rule({org: (parent, level) for org, parent, level in registry})
    projected = dict(await rows(committed_db, f"SELECT org_id, shard_key FROM {schema}.orgs"))  # noqa: S608
    assert projected == expected

    # Community A started under the first street (its key) and now hangs under the second.
    community_a = uuid.UUID(tree.community_a["id"])
    assert projected[community_a] != uuid.UUID(tree.street["id"])
    assert projected[community_a] == expected[uuid.UUID(tree.building_a1["id"])]

    members = await rows(
        committed_db,
        f"SELECT org_id, residence_org_id, shard_key FROM {schema}.members",  # noqa: S608
    )
    assert len(members) == 6
    for org_id, residence_org_id, key in members:
        assert key == expected[org_id or residence_org_id]
    moved = [m for m in members if community_a in (m[0], m[1])]
    assert moved and {m[2] for m in moved} == {projected[community_a]}


def _event(type_: str, aggregate: uuid.UUID, payload: dict[str, Any], key: uuid.UUID) -> Event:
    return Event(
        source="registry",
        seq=1,
        txid="1",
        event_id=uuid.uuid4(),
        type=type_,
        aggregate_type=type_.split(".")[0],
        aggregate_id=aggregate,
        aggregate_version=1,
        occurred_at=datetime.now(UTC),
        org_paths=(),
        payload=payload,
        shard_key=key,
    )


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_the_registry_key_is_taken_as_given(schema: str, committed_db: Sessions) -> None:
    """The registry decides keys; the projection does not second-guess one it was given."""
    org, member, given = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    org_data = {
        "org_id": org,
        "parent_id": None,
        "code": f"K{org.hex[:8]}",
        "name": "测试社区",
        "kind": "committee",
        "area_level": "community",
        "path": "o" + org.hex,
    }
    member_data = {
        "name": "党员",
        "status": "active",
        "category": "retired",
        "relation": "enrolled",
        "org_id": str(org),
    }
    async with committed_db() as session, session.begin():
        await model(schema).apply(session, _event("org.created", org, org_data, given))
        await model(schema).apply(session, _event("member.registered", member, member_data, given))
        # A member of no known org, from an older producer: the unsharded key.
        stray = _event("member.registered", uuid.uuid4(), {**member_data, "org_id": None}, given)
        await model(schema).apply(session, dataclasses.replace(stray, shard_key=None))
    async with committed_db() as session:
        org_key = await session.scalar(
            text(f"SELECT shard_key FROM {schema}.orgs WHERE org_id = :o"),  # noqa: S608
            {"o": org},
        )
        query = text(f"SELECT member_id, shard_key FROM {schema}.members")  # noqa: S608
        keys: dict[Any, Any] = dict((await session.execute(query)).all())
    assert org_key == given
    assert keys == {member: given, stray.aggregate_id: UNSHARDED}
