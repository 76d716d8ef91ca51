from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.activities.models import ActivityType
from tests.activities.factories import BASE, World, make_activity, when

Sessions = async_sessionmaker[AsyncSession]
AsRole = Callable[..., httpx.AsyncClient]
ACTIVITIES = f"{BASE}/activities"


async def outbox_of(db: Sessions, type: str) -> list[dict[str, Any]]:
    async with db() as s:
        rows = await s.execute(
            text("SELECT payload FROM activities.outbox WHERE type = :t ORDER BY id"), {"t": type}
        )
        return [r[0] for r in rows]


class TestCreateActivity:
    @pytest.mark.parametrize("kind", [t.value for t in ActivityType])
    async def test_every_activity_type_is_accepted(
        self, admin: httpx.AsyncClient, world: World, kind: str
    ) -> None:
        a = await make_activity(admin, world.a, type=kind, cost="12.5", capacity=3)
        assert a["type"] == kind
        assert a["cost"] == "12.50"
        assert a["capacity"] == 3 and a["signed_up"] == 0

    async def test_org_admin_schedules_in_own_subtree_and_event_is_emitted(
        self, as_role: AsRole, world: World, db: Sessions
    ) -> None:
        async with as_role("org_admin", org_id=world.street.id) as c:
            a = await make_activity(c, world.a1)
        events = await outbox_of(db, "activity.created")
        assert events[-1]["activity_id"] == a["id"]

    async def test_sibling_community_is_404(self, as_role: AsRole, world: World) -> None:
        async with as_role("org_admin", org_id=world.a.id) as c:
            r = await c.post(
                ACTIVITIES,
                json={
                    "org_id": world.b.sid,
                    "type": "patrol",
                    "title": "夜间巡逻",
                    "starts_at": when().isoformat(),
                    "ends_at": when(hours=1).isoformat(),
                },
            )
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"

    async def test_viewer_cannot_write(self, as_role: AsRole, world: World) -> None:
        async with as_role("org_viewer", org_id=world.a.id) as c:
            r = await c.post(
                ACTIVITIES,
                json={
                    "org_id": world.a.sid,
                    "type": "patrol",
                    "title": "夜间巡逻",
                    "starts_at": when().isoformat(),
                    "ends_at": when(hours=1).isoformat(),
                },
            )
        assert r.status_code == 403

    @pytest.mark.parametrize(
        "change",
        [
            {"type": "dance"},
            {"ends_at": when(hours=-1).isoformat()},
            {"capacity": 0},
            {"cost": "-1"},
            {"cost": "1.234"},
            {"title": ""},
            {"title": "a\x00b"},
            {"starts_at": "2026-06-01T19:00:00"},
            {"unknown": 1},
        ],
    )
    async def test_bad_input_is_422(
        self, admin: httpx.AsyncClient, world: World, change: dict[str, Any]
    ) -> None:
        body = {
            "org_id": world.a.sid,
            "type": "patrol",
            "title": "夜间巡逻",
            "starts_at": when().isoformat(),
            "ends_at": when(hours=1).isoformat(),
            **change,
        }
        r = await admin.post(ACTIVITIES, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["errors"]

    async def test_idempotency_key_replays(self, admin: httpx.AsyncClient, world: World) -> None:
        body = {
            "org_id": world.a.sid,
            "type": "cleanup",
            "title": "大扫除",
            "starts_at": when().isoformat(),
            "ends_at": when(hours=1).isoformat(),
        }
        first = await admin.post(ACTIVITIES, json=body, headers={"Idempotency-Key": "k1"})
        again = await admin.post(ACTIVITIES, json=body, headers={"Idempotency-Key": "k1"})
        other = await admin.post(
            ACTIVITIES, json={**body, "title": "x"}, headers={"Idempotency-Key": "k1"}
        )
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert other.status_code == 422


class TestListActivities:
    async def test_org_scope_and_member_communities(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        in_a = await make_activity(admin, world.a)
        in_b = await make_activity(admin, world.b)
        in_street = await make_activity(admin, world.street)
        in_a1 = await make_activity(admin, world.a1)
        async with as_role("org_viewer", org_id=world.a.id) as c:
            ids = {i["id"] for i in (await c.get(ACTIVITIES)).json()["items"]}
        assert ids == {in_a["id"], in_a1["id"]}
        member = world.a_members[0]
        async with as_role("member", member_id=member.id, org_id=world.a.id) as c:
            ids = {i["id"] for i in (await c.get(ACTIVITIES)).json()["items"]}
        assert ids == {in_a["id"], in_street["id"], in_a1["id"]}
        assert in_b["id"] not in ids

    async def test_filters_and_pages(self, admin: httpx.AsyncClient, world: World) -> None:
        for day in range(5):
            await make_activity(
                admin,
                world.a,
                type="patrol",
                starts_at=when(day).isoformat(),
                ends_at=when(day, 1).isoformat(),
            )
        await make_activity(admin, world.b, type="patrol")
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"org_id": world.a.sid, "type": "patrol", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await admin.get(ACTIVITIES, params=params)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)) == 5

    async def test_bad_cursor_is_422(self, admin: httpx.AsyncClient) -> None:
        assert (await admin.get(ACTIVITIES, params={"cursor": "zz"})).status_code == 422

    async def test_auditor_is_403(self, as_role: AsRole) -> None:
        async with as_role("auditor") as c:
            assert (await c.get(ACTIVITIES)).status_code == 403


class TestGetActivity:
    async def test_out_of_scope_is_404(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        a = await make_activity(admin, world.b)
        async with as_role("org_admin", org_id=world.a.id) as c:
            assert (await c.get(f"{ACTIVITIES}/{a['id']}")).status_code == 404
        r = await admin.get(f"{ACTIVITIES}/{a['id']}")
        assert r.status_code == 200 and r.headers["ETag"] == '"1"'


class TestUpdateActivity:
    async def test_if_match_rules(self, admin: httpx.AsyncClient, world: World) -> None:
        a = await make_activity(admin, world.a)
        url = f"{ACTIVITIES}/{a['id']}"
        assert (await admin.patch(url, json={"title": "新"})).status_code == 428
        r = await admin.patch(url, json={"title": "新"}, headers={"If-Match": '"1"'})
        assert r.status_code == 200 and r.json()["title"] == "新" and r.headers["ETag"] == '"2"'
        stale = await admin.patch(url, json={"title": "旧"}, headers={"If-Match": '"1"'})
        assert stale.status_code == 412

    async def test_ends_before_start_is_422(self, admin: httpx.AsyncClient, world: World) -> None:
        a = await make_activity(admin, world.a)
        r = await admin.patch(
            f"{ACTIVITIES}/{a['id']}",
            json={"ends_at": when(-3).isoformat()},
            headers={"If-Match": '"1"'},
        )
        assert r.status_code == 422

    async def test_null_title_is_422(self, admin: httpx.AsyncClient, world: World) -> None:
        a = await make_activity(admin, world.a)
        r = await admin.patch(
            f"{ACTIVITIES}/{a['id']}", json={"title": None}, headers={"If-Match": '"1"'}
        )
        assert r.status_code == 422


class TestSetAttendance:
    async def test_bulk_record_emits_one_event_per_changed_row_and_awards_points(
        self, admin: httpx.AsyncClient, world: World, db: Sessions
    ) -> None:
        a = await make_activity(admin, world.a, type="volunteer_service")
        m0, m1, m2 = world.a_members
        body = [
            {"member_id": m0.sid, "status": "present", "hours": "2"},
            {"member_id": m1.sid, "status": "absent"},
            {"member_id": m2.sid, "status": "excused"},
        ]
        r = await admin.put(f"{ACTIVITIES}/{a['id']}/attendance", json=body)
        assert r.status_code == 200, r.text
        assert {(i["member_id"], i["status"]) for i in r.json()["items"]} == {
            (m0.sid, "present"),
            (m1.sid, "absent"),
            (m2.sid, "excused"),
        }
        events = await outbox_of(db, "attendance.recorded")
        assert len(events) == 3
        assert set(events[0]) == {
            "activity_id",
            "org_id",
            "member_id",
            "status",
            "activity_type",
            "starts_at",
        }
        # The same again changes nothing: no event, no points.
        await admin.put(f"{ACTIVITIES}/{a['id']}/attendance", json=body)
        assert len(await outbox_of(db, "attendance.recorded")) == 3
        points = (await admin.get(f"{BASE}/members/{m0.sid}/points")).json()
        assert points["balance"] == 5  # the default rule for volunteer service
        # Turned absent, the points go back (a new ledger entry).
        await admin.put(
            f"{ACTIVITIES}/{a['id']}/attendance",
            json=[{"member_id": m0.sid, "status": "absent"}],
        )
        points = (await admin.get(f"{BASE}/members/{m0.sid}/points")).json()
        assert points["balance"] == 0 and len(points["entries"]) == 2

    async def test_idempotency_key_replays(self, admin: httpx.AsyncClient, world: World) -> None:
        a = await make_activity(admin, world.a)
        body = [{"member_id": world.a_members[0].sid, "status": "present"}]
        url = f"{ACTIVITIES}/{a['id']}/attendance"
        first = await admin.put(url, json=body, headers={"Idempotency-Key": "att"})
        again = await admin.put(url, json=body, headers={"Idempotency-Key": "att"})
        assert first.json() == again.json()
        changed = await admin.put(
            url,
            json=[{"member_id": world.a_members[0].sid, "status": "absent"}],
            headers={"Idempotency-Key": "att"},
        )
        assert changed.status_code == 422

    @pytest.mark.parametrize(
        "row",
        [
            {"status": "late"},
            {"status": "present", "hours": "25"},
            {"status": "present", "hours": "-1"},
            {"status": "present", "extra": True},
        ],
    )
    async def test_bad_rows_are_422(
        self, admin: httpx.AsyncClient, world: World, row: dict[str, Any]
    ) -> None:
        a = await make_activity(admin, world.a)
        r = await admin.put(
            f"{ACTIVITIES}/{a['id']}/attendance",
            json=[{"member_id": world.a_members[0].sid, **row}],
        )
        assert r.status_code == 422

    async def test_unknown_or_duplicate_members_are_422(
        self, as_role: AsRole, admin: httpx.AsyncClient, world: World
    ) -> None:
        a = await make_activity(admin, world.a)
        m = world.a_members[0].sid
        async with as_role("org_admin", org_id=world.a.id) as c:
            r = await c.put(
                f"{ACTIVITIES}/{a['id']}/attendance",
                json=[
                    {"member_id": m, "status": "present"},
                    {"member_id": m, "status": "absent"},
                    {"member_id": world.b_members[0].sid, "status": "present"},
                ],
            )
        assert r.status_code == 422
        assert {e["field"] for e in r.json()["errors"]} == {"1.member_id", "2.member_id"}

    async def test_viewer_403_and_other_org_404(
        self, as_role: AsRole, admin: httpx.AsyncClient, world: World
    ) -> None:
        a = await make_activity(admin, world.a)
        body = [{"member_id": world.a_members[0].sid, "status": "present"}]
        async with as_role("org_viewer", org_id=world.a.id) as c:
            assert (await c.put(f"{ACTIVITIES}/{a['id']}/attendance", json=body)).status_code == 403
        async with as_role("org_admin", org_id=world.b.id) as c:
            assert (await c.put(f"{ACTIVITIES}/{a['id']}/attendance", json=body)).status_code == 404


class TestListAttendance:
    async def test_member_sees_own_row_only(
        self, as_role: AsRole, admin: httpx.AsyncClient, world: World
    ) -> None:
        a = await make_activity(admin, world.a)
        m0, m1, _ = world.a_members
        await admin.put(
            f"{ACTIVITIES}/{a['id']}/attendance",
            json=[
                {"member_id": m0.sid, "status": "present"},
                {"member_id": m1.sid, "status": "absent"},
            ],
        )
        async with as_role("member", member_id=m0.id) as c:
            items = (await c.get(f"{ACTIVITIES}/{a['id']}/attendance")).json()["items"]
        assert [i["member_id"] for i in items] == [m0.sid]


class TestSignUp:
    async def test_capacity_is_respected(
        self, as_role: AsRole, admin: httpx.AsyncClient, world: World
    ) -> None:
        a = await make_activity(admin, world.a, capacity=2)
        codes = []
        for m in world.a_members:
            async with as_role("member", member_id=m.id) as c:
                codes.append((await c.post(f"{ACTIVITIES}/{a['id']}/signups")).status_code)
        assert codes == [201, 201, 409]
        assert (await admin.get(f"{ACTIVITIES}/{a['id']}")).json()["signed_up"] == 2

    async def test_twice_is_409_and_other_community_404(
        self, as_role: AsRole, admin: httpx.AsyncClient, world: World
    ) -> None:
        a = await make_activity(admin, world.a)
        async with as_role("member", member_id=world.a_members[0].id) as c:
            assert (await c.post(f"{ACTIVITIES}/{a['id']}/signups")).status_code == 201
            assert (await c.post(f"{ACTIVITIES}/{a['id']}/signups")).status_code == 409
        async with as_role("member", member_id=world.b_members[0].id) as c:
            assert (await c.post(f"{ACTIVITIES}/{a['id']}/signups")).status_code == 404
        assert (await admin.post(f"{ACTIVITIES}/{a['id']}/signups")).status_code == 403


class TestConcurrentSignups:
    async def test_last_seat_goes_to_one_of_two(
        self, committed: Sessions, activities_settings: Any
    ) -> None:
        from services.activities.app import create_app
        from tests.activities.factories import build_world
        from tests.helpers import client, mint

        world = await build_world(committed)
        apps = [create_app(activities_settings, sessionmaker=committed) for _ in range(2)]
        async with client(apps[0], mint("admin")) as admin:
            a = await make_activity(admin, world.a, capacity=1)
        clients = [
            client(app, mint("member", member_id=m.id))
            for app, m in zip(apps, world.a_members[:2], strict=True)
        ]
        try:
            results = await asyncio.gather(
                *(c.post(f"{ACTIVITIES}/{a['id']}/signups") for c in clients)
            )
        finally:
            for c in clients:
                await c.aclose()
        assert sorted(r.status_code for r in results) == [201, 409]
        async with committed() as s:
            count = await s.scalar(select(text("count(*)")).select_from(text("activities.signups")))
        assert count == 1
