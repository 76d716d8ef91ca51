"""The distribution key on every activities row (common/sharding.py, migration 0005): set on
every write path from the read model of the registry, carried by the events, moved along
when a member or an org goes to another county, and backfilled by the migration.

The expected keys are recomputed here from the projected org tree by the rule itself (an org
under a city-level org or at the root is its own key, else it takes its parent's; a member
takes their relation org's key, else their residence org's), not read from the service."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import create_engine, make_sessionmaker, plain_url
from common.events.outbox import Event
from common.sharding import UNSHARDED
from services.activities.projections import registry_consumer, registry_model
from services.activities.service import keys as shard_keys
from tests.activities.factories import (
    BASE,
    Member,
    Org,
    World,
    make_activity,
    seed_member,
    seed_org,
)
from tests.helpers import keys_by_rule
from tests.pgutil import drop_database, fresh_database
from tools import migrate
from tools.db_roles import role_url

Sessions = async_sessionmaker[AsyncSession]
AsRole = Callable[..., httpx.AsyncClient]
EIGHT_ROLES = "0f1e0000-0000-4000-8000-000000000008"
TEN_ONES = "0f1e0000-0000-4000-8000-000000000010"

# table → SQL giving (shard_key, the org the row belongs to) per row.
BY_ORG = {
    "activities": "SELECT shard_key, org_id FROM activities.activities",
    "attendance": "SELECT t.shard_key, a.org_id FROM activities.attendance t "
    "JOIN activities.activities a ON a.id = t.activity_id",
    "signups": "SELECT t.shard_key, a.org_id FROM activities.signups t "
    "JOIN activities.activities a ON a.id = t.activity_id",
    "help_requests": "SELECT shard_key, org_id FROM activities.help_requests",
    "fund_allocations": "SELECT shard_key, org_id FROM activities.fund_allocations",
    "fund_expenses": "SELECT e.shard_key, a.org_id FROM activities.fund_expenses e "
    "JOIN activities.fund_allocations a ON a.id = e.allocation_id",
    "training_sessions": "SELECT shard_key, org_id FROM activities.training_sessions",
    "training_attendance": "SELECT t.shard_key, s.org_id FROM activities.training_attendance t "
    "JOIN activities.training_sessions s ON s.id = t.session_id",
    "program_adoptions": "SELECT shard_key, org_id FROM activities.program_adoptions",
}
# table → SQL giving (shard_key, the member the row belongs to) per row.
BY_MEMBER = {
    table: f"SELECT shard_key, member_id FROM activities.{table}"  # noqa: S608 - constants
    for table in ("talks", "service_hours", "points_ledger", "pledge_items", "role_assignments")
}
KEYED = (*BY_ORG, *BY_MEMBER)


@dataclass
class Keys:
    """The keys the rule gives, from the projected tree."""

    orgs: dict[uuid.UUID, uuid.UUID]
    members: dict[uuid.UUID, uuid.UUID]

    def org(self, org_id: Any) -> uuid.UUID:
        return self.orgs.get(org_id, UNSHARDED)


async def expected_keys(s: AsyncSession | asyncpg.Connection) -> Keys:
    org_rows = await _fetch(s, "SELECT org_id, parent_id, area_level FROM activities.orgs")
    orgs = keys_by_rule({r[0]: (r[1], r[2]) for r in org_rows})
    member_rows = await _fetch(
        s, "SELECT member_id, org_id, residence_org_id FROM activities.members"
    )
    members = {r[0]: orgs.get(r[1]) or orgs.get(r[2]) or UNSHARDED for r in member_rows}
    return Keys(orgs, members)


async def _fetch(s: AsyncSession | asyncpg.Connection, sql: str) -> list[tuple[Any, ...]]:
    if isinstance(s, AsyncSession):
        return [tuple(r) for r in (await s.execute(text(sql))).all()]
    return [tuple(r) for r in await s.fetch(sql)]


async def wrong_keys(s: AsyncSession | asyncpg.Connection) -> dict[str, int]:
    """Rows per table (every keyed table must have some) and, in "<table>!", those whose key
    is not the one the rule gives."""
    keys = await expected_keys(s)
    counts: dict[str, int] = {}
    for table, sql in BY_ORG.items():
        rows = await _fetch(s, sql)
        counts[table] = len(rows)
        counts[f"{table}!"] = sum(1 for key, org in rows if key != keys.org(org))
    for table, sql in BY_MEMBER.items():
        rows = await _fetch(s, sql)
        counts[table] = len(rows)
        counts[f"{table}!"] = sum(
            1 for key, member in rows if key != keys.members.get(member, UNSHARDED)
        )
    return counts


def assert_all_keyed(counts: dict[str, int]) -> None:
    assert {t: counts[t] for t in KEYED if counts[t] == 0} == {}, "a write path wrote no row"
    assert {t: n for t, n in counts.items() if t.endswith("!") and n} == {}


@dataclass
class Scene:
    world: World
    county: Org  # another county under the same city
    c: Org  # a community of it
    x: Member  # a member of that community
    activity: dict[str, Any]


def ok(r: httpx.Response) -> Any:
    assert r.status_code in (200, 201), r.text
    return r.json()


async def everything(
    db: Sessions, admin: httpx.AsyncClient, as_role: AsRole, world: World
) -> Scene:
    """Every write path of the service, with a member from another county in the meeting."""
    county = await seed_org(db, parent=world.city, kind="committee", area_level="county")
    c = await seed_org(db, parent=county)
    x = await seed_member(db, c)
    m0, m1, m2 = world.a_members
    activity = await make_activity(admin, world.a, type="patrol", capacity=10)
    # Present, so each earns the patrol's points (ledger entries and events).
    present = [{"member_id": m.sid, "status": "present"} for m in (m0, m1, x)]
    ok(await admin.put(f"{BASE}/activities/{activity['id']}/attendance", json=present))
    async with as_role("member", member_id=m2.id) as member:
        ok(await member.post(f"{BASE}/activities/{activity['id']}/signups"))
    for m in (m0, x):
        ok(
            await admin.post(
                f"{BASE}/talks",
                json={
                    "member_id": m.sid,
                    "held_on": "2026-03-12",
                    "talker": "李书记",
                    "topic": "谈心",
                },
            )
        )
    hours = ok(
        await admin.post(
            f"{BASE}/service-hours", json={"member_id": m0.sid, "on": "2026-05-04", "hours": "2"}
        )
    )
    ok(await admin.post(f"{BASE}/service-hours/{hours['id']}/verify"))
    ok(
        await admin.post(
            f"{BASE}/members/{m0.sid}/points/redemptions", json={"reward": "毛巾", "points": 1}
        )
    )
    ok(
        await admin.post(
            f"{BASE}/members/{m0.sid}/pledges/2026/items/5",
            json={"evidence_type": "service_hours", "evidence_id": hours["id"]},
        )
    )
    # A role held in community a by the member from the other county: the member's key.
    for m in (m0, x):
        ok(
            await admin.post(
                f"{BASE}/role-assignments",
                json={
                    "member_id": m.sid,
                    "org_id": world.a.sid,
                    "kind": "party_worker",
                    "role": "党务工作者",
                    "started_on": "2026-01-01",
                },
            )
        )
    help_request = ok(
        await admin.post(f"{BASE}/help-requests", json={"org_id": world.a.sid, "title": "修水管"})
    )
    ok(
        await admin.post(
            f"{BASE}/help-requests/{help_request['id']}/assign", json={"member_id": m1.sid}
        )
    )
    ok(await admin.post(f"{BASE}/help-requests/{help_request['id']}/complete", json={"hours": "1"}))
    ok(
        await admin.post(
            f"{BASE}/funds/allocations",
            json={"org_id": world.a.sid, "year": 2026, "rate_per_member": "50"},
        )
    )
    ok(
        await admin.post(
            f"{BASE}/funds/expenses",
            json={"org_id": world.a.sid, "year": 2026, "amount": "10", "purpose": "资料"},
        )
    )
    ok(
        await admin.post(
            f"{BASE}/training/sessions",
            json={
                "org_id": world.a.sid,
                "title": "轮训",
                "held_on": "2026-04-20",
                "member_ids": [m0.sid, x.sid],
            },
        )
    )
    ok(
        await admin.post(
            f"{BASE}/programs",
            json={
                "org_id": world.a.sid,
                "code": "own",
                "name": "自定",
                "kind": "pledge",
                "items": [{"n": 1, "title": "a"}],
            },
        )
    )
    ok(await admin.post(f"{BASE}/programs/{EIGHT_ROLES}/adopt", json={"org_id": c.sid}))
    return Scene(world, county, c, x, activity)


async def counts_of(db: Sessions) -> dict[str, int]:
    async with db() as s:
        return await wrong_keys(s)


def org_event(org: Org, *, parent: Org, version: int, area_level: str = "community") -> Event:
    """`org.moved` as the registry writes it, without a key (an older producer: the
    projection derives it, as it must until the registry sends one)."""
    label = org.path.rsplit(".", 1)[-1]
    return _event(
        "org.moved",
        "org",
        org.id,
        version,
        {
            "org_id": str(org.id),
            "parent_id": str(parent.id),
            "path": f"{parent.path}.{label}",
            "code": f"C-{org.id.hex[:8]}",
            "name": "社区",
            "kind": "branch",
            "area_level": area_level,
        },
    )


def member_event(member: Member, *, org: Org, version: int) -> Event:
    """`member.updated`: the member's relation is now with `org`."""
    return _event(
        "member.updated",
        "member",
        member.id,
        version,
        {
            "member_id": str(member.id),
            "name": member.name,
            "status": "active",
            "category": "retired",
            "relation": "enrolled",
            "org_id": str(org.id),
            "org_path": org.path,
            "residence_org_id": None,
            "residence_path": None,
            "merged_into": None,
            "group_id": None,
            "skills": [],
        },
    )


_seq = iter(range(1, 1_000_000))


def _event(type: str, aggregate: str, aggregate_id: uuid.UUID, version: int, payload: Any) -> Event:
    n = next(_seq)
    return Event(
        source="registry",
        seq=n,
        txid=str(n),
        event_id=uuid.uuid4(),
        type=type,
        aggregate_type=aggregate,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        occurred_at=datetime.now(UTC),
        org_paths=(),
        payload=payload,
    )


async def apply(db: Sessions, *events: Event, batch: bool = False) -> None:
    """Through the consumer the service runs (`services/activities/consumers.py`)."""
    consumer = registry_consumer()
    async with db() as s:
        if batch:
            await registry_model.apply_batch(s, list(events))
        else:
            for event in events:
                await consumer.apply(s, event)
        await s.commit()


class TestEveryWritePathSetsTheKey:
    async def test_rows_carry_their_org_or_member_key(
        self, db: Sessions, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        scene = await everything(db, admin, as_role, world)
        counts = await counts_of(db)
        assert_all_keyed(counts)
        async with db() as s:
            attended: dict[uuid.UUID, uuid.UUID] = dict(
                (
                    await s.execute(
                        text(
                            "SELECT member_id, shard_key FROM activities.attendance "
                            "WHERE activity_id = :a"
                        ),
                        {"a": scene.activity["id"]},
                    )
                ).all()
            )
            x_talk = await s.scalar(
                text("SELECT shard_key FROM activities.talks WHERE member_id = :m"),
                {"m": scene.x.id},
            )
        # The meeting's attendance is on the meeting's node, the visitor's talk on theirs.
        assert world.a.key is not None and scene.county.key is not None
        assert attended[scene.x.id] == world.a.key == world.street.id
        assert x_talk == scene.county.id != world.a.key

    async def test_events_carry_the_key(
        self, db: Sessions, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        await everything(db, admin, as_role, world)
        async with db() as s:
            keys = await expected_keys(s)
            events = (
                await s.execute(text("SELECT type, shard_key, payload FROM activities.outbox"))
            ).all()
        seen = set()
        for type, key, payload in events:
            seen.add(type)
            if type in ("activity.created", "attendance.recorded"):
                assert key == keys.org(uuid.UUID(payload["org_id"])), type
            else:
                assert key == keys.members[uuid.UUID(payload["member_id"])], type
        assert seen == {
            "activity.created",
            "attendance.recorded",
            "service_hours.verified",
            "points.awarded",
        }

    async def test_unknown_org_or_member_is_unsharded(self, db: Sessions, world: World) -> None:
        """Writes check that the org or member is projected; were one not, its rows would
        carry `UNSHARDED` rather than fail."""
        async with db() as s:
            unknown = uuid.uuid4()
            keys = (
                await s.execute(
                    select(
                        shard_keys.org_key(unknown),
                        shard_keys.member_key(unknown),
                        shard_keys.org_key(world.a.id),
                        shard_keys.member_key(world.a_members[0].id),
                    )
                )
            ).one()
        assert tuple(keys) == (UNSHARDED, UNSHARDED, world.street.id, world.street.id)


class TestRekeying:
    @pytest.mark.parametrize("batch", [False, True], ids=["apply", "apply_batch"])
    async def test_member_to_another_county_takes_their_rows(
        self,
        db: Sessions,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        world: World,
        batch: bool,
    ) -> None:
        scene = await everything(db, admin, as_role, world)
        m0 = world.a_members[0]
        await apply(db, member_event(m0, org=scene.c, version=2), batch=batch)
        assert_all_keyed(await counts_of(db))
        async with db() as s:
            moved = set(
                (
                    await s.execute(
                        text(
                            "SELECT shard_key FROM activities.talks WHERE member_id = :m UNION "
                            "SELECT shard_key FROM activities.points_ledger WHERE member_id = :m "
                            "UNION SELECT shard_key FROM activities.pledge_items "
                            "WHERE member_id = :m UNION SELECT shard_key "
                            "FROM activities.role_assignments WHERE member_id = :m UNION "
                            "SELECT shard_key FROM activities.service_hours WHERE member_id = :m"
                        ),
                        {"m": m0.id},
                    )
                ).scalars()
            )
            stays = await s.scalar(
                text("SELECT shard_key FROM activities.attendance WHERE member_id = :m"),
                {"m": m0.id},
            )
        assert moved == {scene.county.id}
        assert stays == world.street.id  # the meeting's attendance stays with the meeting

    async def test_org_moved_to_another_county_takes_its_rows(
        self, db: Sessions, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        scene = await everything(db, admin, as_role, world)
        b_activity = await make_activity(admin, world.b)
        await apply(db, org_event(world.a, parent=scene.county, version=2))
        assert_all_keyed(await counts_of(db))
        async with db() as s:
            keys: dict[uuid.UUID, uuid.UUID] = dict(
                (await s.execute(text("SELECT id, shard_key FROM activities.activities"))).all()
            )
            x_attended = await s.scalar(
                text("SELECT shard_key FROM activities.attendance WHERE member_id = :m"),
                {"m": scene.x.id},
            )
            m0_points = set(
                (
                    await s.execute(
                        text("SELECT shard_key FROM activities.points_ledger WHERE member_id = :m"),
                        {"m": world.a_members[0].id},
                    )
                ).scalars()
            )
        assert keys[uuid.UUID(scene.activity["id"])] == scene.county.id
        assert keys[uuid.UUID(b_activity["id"])] == world.street.id  # b did not move
        assert x_attended == scene.county.id
        assert m0_points == {scene.county.id}

    async def test_the_services_own_role_rekeys_the_ledgers(self, database_url: str) -> None:
        """The consumer connects as `lianxin_activities`, which may not UPDATE a ledger: the
        ledgers move through their SECURITY DEFINER functions; the trigger still refuses
        any other change."""
        engine = create_engine(role_url(database_url, "activities"), pool_size=1)
        try:
            async with engine.connect() as conn:
                outer = await conn.begin()
                try:
                    await self._rekey_as_the_role(
                        make_sessionmaker(conn, join_transaction_mode="create_savepoint")
                    )
                finally:
                    await outer.rollback()
        finally:
            await engine.dispose()

    async def _rekey_as_the_role(self, db: Sessions) -> None:
        city = await seed_org(db, kind="committee", area_level="city")
        one = await seed_org(db, parent=city, kind="committee", area_level="county")
        two = await seed_org(db, parent=city, kind="committee", area_level="county")
        community = await seed_org(db, parent=one)
        m = await seed_member(db, community)
        async with db() as s:
            await s.execute(
                text(
                    "INSERT INTO activities.fund_allocations (id, shard_key, org_id, year, "
                    "rate_per_member, member_count, amount, created_by) "
                    "VALUES (:id, :k, :o, 2026, 1, 1, 1, 't')"
                ),
                {"id": (allocation := uuid.uuid4()), "k": one.id, "o": community.id},
            )
            await s.execute(
                text(
                    "INSERT INTO activities.fund_expenses (id, shard_key, allocation_id, amount, "
                    "purpose, created_by) VALUES (:id, :k, :a, 1, 'p', 't')"
                ),
                {"id": uuid.uuid4(), "k": one.id, "a": allocation},
            )
            await s.execute(
                text(
                    "INSERT INTO activities.points_ledger (shard_key, member_id, year, points, "
                    "reason, created_by) VALUES (:k, :m, 2026, 3, 'adjustment', 't')"
                ),
                {"k": one.id, "m": m.id},
            )
            await s.commit()
        await apply(db, org_event(community, parent=two, version=2))
        async with db() as s:
            keys = (
                await s.execute(
                    text(
                        "SELECT (SELECT shard_key FROM activities.fund_expenses), "
                        "(SELECT shard_key FROM activities.points_ledger)"
                    )
                )
            ).one()
            assert tuple(keys) == (two.id, two.id)
            for sql in (
                "UPDATE activities.points_ledger SET shard_key = gen_random_uuid()",
                "UPDATE activities.fund_expenses SET shard_key = gen_random_uuid()",
            ):
                with pytest.raises(DBAPIError, match="permission denied"):
                    async with s.begin_nested():
                        await s.execute(text(sql))


class TestLedgersStayAppendOnly:
    async def test_only_the_key_may_change(
        self, db: Sessions, admin: httpx.AsyncClient, world: World
    ) -> None:
        a = await make_activity(admin, world.a, type="patrol")
        m = world.a_members[0].sid
        ok(
            await admin.put(
                f"{BASE}/activities/{a['id']}/attendance",
                json=[{"member_id": m, "status": "present"}],
            )
        )
        async with db() as s:
            await s.execute(
                text("UPDATE activities.points_ledger SET shard_key = gen_random_uuid()")
            )
            with pytest.raises(DBAPIError, match="append-only"):
                async with s.begin_nested():
                    await s.execute(
                        text(
                            "UPDATE activities.points_ledger "
                            "SET shard_key = gen_random_uuid(), points = 100"
                        )
                    )


# --- the migration --------------------------------------------------------------------------

ROWS = """
INSERT INTO activities.orgs (org_id, parent_id, path, code, name, kind, area_level, shard_key,
    version, updated_at) VALUES
    ('{city}', NULL, 'c', 'c', 'c', 'committee', 'city', '{city}', 1, now()),
    ('{county}', '{city}', 'c.k', 'k', 'k', 'committee', 'county', '{county}', 1, now()),
    ('{community}', '{county}', 'c.k.m', 'm', 'm', 'branch', 'community', '{county}', 1, now());
INSERT INTO activities.members (member_id, name, status, category, relation, org_id, org_path,
    shard_key, version, updated_at) VALUES
    ('{member}', 'm', 'active', 'retired', 'enrolled', '{community}', 'c.k.m', '{county}', 1,
     now());
INSERT INTO activities.activities (id, org_id, type, title, starts_at, ends_at, created_by)
    VALUES ('{activity}', '{community}', 'patrol', 't', now(), now(), 't'),
           ('{stray}', '{unknown}', 'patrol', 't', now(), now(), 't');
INSERT INTO activities.attendance (activity_id, member_id, status)
    VALUES ('{activity}', '{member}', 'present'), ('{stray}', '{member}', 'present');
INSERT INTO activities.signups (activity_id, member_id) VALUES ('{activity}', '{member}');
INSERT INTO activities.talks (id, member_id, held_on, talker, topic, created_by)
    VALUES (gen_random_uuid(), '{member}', current_date, 't', 't', 't'),
           (gen_random_uuid(), '{unknown}', current_date, 't', 't', 't');
INSERT INTO activities.help_requests (id, org_id, title, created_by)
    VALUES ('{help}', '{community}', 't', 't');
INSERT INTO activities.service_hours (id, member_id, "on", hours, activity_id, help_request_id,
    created_by) VALUES (gen_random_uuid(), '{member}', current_date, 1, '{activity}', '{help}',
    't');
INSERT INTO activities.points_ledger (member_id, year, points, reason, created_by)
    VALUES ('{member}', 2026, 3, 'attendance', 't');
INSERT INTO activities.pledge_items (program_id, member_id, year, n, evidence_type, evidence_id,
    done_on, recorded_by) VALUES ('{ten}', '{member}', 2026, 1, 'activity', '{activity}',
    current_date, 't');
INSERT INTO activities.role_assignments (id, member_id, org_id, kind, role, started_on,
    created_by) VALUES (gen_random_uuid(), '{member}', '{community}', 'role', 'r', current_date,
    't');
INSERT INTO activities.program_adoptions (program_id, org_id) VALUES ('{ten}', '{community}');
INSERT INTO activities.fund_allocations (id, org_id, year, rate_per_member, member_count, amount,
    created_by) VALUES ('{allocation}', '{community}', 2026, 1, 1, 1, 't');
INSERT INTO activities.fund_expenses (id, allocation_id, amount, purpose, created_by)
    VALUES (gen_random_uuid(), '{allocation}', 1, 'p', 't');
INSERT INTO activities.training_sessions (id, org_id, title, held_on, created_by)
    VALUES ('{session}', '{community}', 't', current_date, 't');
INSERT INTO activities.training_attendance (session_id, member_id)
    VALUES ('{session}', '{member}');
"""


class TestMigration:
    def test_backfills_keys_and_downgrades(self, server_url: str) -> None:
        url, name = fresh_database(server_url)
        try:
            cfg = migrate.config("activities", url)
            command.upgrade(cfg, "0004_activities_keys")
            ids = {
                k: uuid.uuid4()
                for k in [
                    "city",
                    "county",
                    "community",
                    "member",
                    "activity",
                    "stray",
                    "unknown",
                    "help",
                    "allocation",
                    "session",
                ]
            }
            asyncio.run(_execute(url, ROWS.format(**ids, ten=TEN_ONES)))
            command.upgrade(cfg, "head")
            counts, strays, primary = asyncio.run(_after_upgrade(url, ids))
            assert_all_keyed(counts)
            assert strays == {UNSHARDED}  # the activity of an unknown org, its attendance
            assert primary == ["shard_key", "id"]
            command.downgrade(cfg, "0004_activities_keys")
            assert asyncio.run(_columns(url)) == []
            command.upgrade(cfg, "head")
        finally:
            drop_database(server_url, name)


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _after_upgrade(
    url: str, ids: dict[str, uuid.UUID]
) -> tuple[dict[str, int], set[uuid.UUID], list[str]]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        counts = await wrong_keys(conn)
        strays = {
            r[0]
            for r in await conn.fetch(
                "SELECT shard_key FROM activities.activities WHERE id = $1 UNION "
                "SELECT shard_key FROM activities.attendance WHERE activity_id = $1",
                ids["stray"],
            )
        }
        primary = [
            r[0]
            for r in await conn.fetch(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
                "WHERE i.indrelid = 'activities.activities'::regclass AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)"
            )
        ]
        return counts, strays, primary
    finally:
        await conn.close()


async def _columns(url: str) -> list[str]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = "
            "'activities' AND column_name = 'shard_key' "
            "AND table_name NOT IN ('orgs', 'members') AND table_name NOT LIKE 'outbox%'"
        )
        return sorted(r[0] for r in rows)
    finally:
        await conn.close()
