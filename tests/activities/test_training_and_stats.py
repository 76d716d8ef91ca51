from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.activities.factories import BASE, World, make_activity, when

AsRole = Callable[..., httpx.AsyncClient]
SESSIONS = f"{BASE}/training/sessions"


async def party_worker(admin: httpx.AsyncClient, org_id: str, member_id: str) -> None:
    r = await admin.post(
        f"{BASE}/role-assignments",
        json={
            "member_id": member_id,
            "org_id": org_id,
            "kind": "party_worker",
            "role": "党务工作者",
            "started_on": "2020-01-01",
        },
    )
    assert r.status_code == 201, r.text


async def training(
    admin: httpx.AsyncClient, org_id: str, held_on: str, *member_ids: str
) -> dict[str, Any]:
    r = await admin.post(
        SESSIONS,
        json={
            "org_id": org_id,
            "title": "轮训",
            "held_on": held_on,
            "hours": "6",
            "member_ids": list(member_ids),
        },
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


class TestCreateTrainingSession:
    async def test_records_who_attended(self, admin: httpx.AsyncClient, world: World) -> None:
        s = await training(admin, world.a.sid, "2026-04-20", world.a_members[0].sid)
        assert s["member_ids"] == [world.a_members[0].sid] and s["hours"] == "6.00"

    async def test_out_of_scope_member_is_422_and_viewer_403(
        self, as_role: AsRole, world: World
    ) -> None:
        body = {
            "org_id": world.a.sid,
            "title": "轮训",
            "held_on": "2026-04-20",
            "member_ids": [world.b_members[0].sid],
        }
        async with as_role("org_admin", org_id=world.a.id) as c:
            r = await c.post(SESSIONS, json=body)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "member_ids.0"
        async with as_role("org_viewer", org_id=world.a.id) as c:
            assert (await c.post(SESSIONS, json={**body, "member_ids": []})).status_code == 403


class TestListTrainingSessions:
    async def test_scope(self, admin: httpx.AsyncClient, as_role: AsRole, world: World) -> None:
        await training(admin, world.a.sid, "2026-04-20")
        await training(admin, world.b.sid, "2026-04-21")
        async with as_role("org_viewer", org_id=world.b.id) as c:
            items = (await c.get(SESSIONS)).json()["items"]
        assert [i["org_id"] for i in items] == [world.b.sid]


class TestGetTrainingCoverage:
    async def test_share_trained_within_three_years(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        m0, m1, m2 = (m.sid for m in world.a_members)
        for m in (m0, m1, m2):
            await party_worker(admin, world.a.sid, m)
        await training(admin, world.a.sid, "2024-06-01", m0)
        await training(admin, world.street.sid, "2022-06-01", m1)  # too long ago
        r = await admin.get(
            f"{BASE}/training/coverage", params={"org_id": world.a.sid, "as_of": "2026-06-01"}
        )
        assert r.json() == {
            "org_id": world.a.sid,
            "as_of": "2026-06-01",
            "party_workers": 3,
            "trained_within_three_years": 1,
            "coverage": 0.3333,
        }
        none = await admin.get(f"{BASE}/training/coverage", params={"org_id": world.b.sid})
        assert none.json()["coverage"] is None and none.json()["party_workers"] == 0


class TestGetActivitiesStats:
    async def test_the_reports_figures(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        m0, m1, m2 = (m.sid for m in world.a_members)
        lecture = await make_activity(admin, world.a, type="party_lecture")
        await admin.put(
            f"{BASE}/activities/{lecture['id']}/attendance",
            json=[
                {"member_id": m0, "status": "present"},
                {"member_id": m1, "status": "present"},
                {"member_id": m2, "status": "absent"},
            ],
        )
        patrol = await make_activity(admin, world.a1, type="patrol")
        await admin.put(
            f"{BASE}/activities/{patrol['id']}/attendance",
            json=[{"member_id": m0, "status": "excused"}],
        )
        await make_activity(
            admin,
            world.a,
            type="patrol",
            starts_at=when(-400).isoformat(),
            ends_at=when(-400, 1).isoformat(),
        )
        await admin.post(
            f"{BASE}/talks",
            json={"member_id": m0, "held_on": "2026-03-01", "talker": "李", "topic": "x"},
        )
        e = (
            await admin.post(
                f"{BASE}/service-hours", json={"member_id": m1, "on": "2026-05-01", "hours": "2.5"}
            )
        ).json()
        await admin.post(f"{BASE}/service-hours/{e['id']}/verify")
        await admin.post(
            f"{BASE}/members/{m1}/pledges/2026/items/2",
            json={"evidence_type": "service_hours", "evidence_id": e["id"]},
        )
        await admin.post(
            f"{BASE}/funds/allocations",
            json={"org_id": world.a.sid, "year": 2026, "rate_per_member": "20"},
        )
        await admin.post(
            f"{BASE}/funds/expenses",
            json={"org_id": world.a.sid, "year": 2026, "amount": "15", "purpose": "茶水"},
        )
        async with as_role("org_viewer", org_id=world.a.id) as c:
            r = await c.get(f"{BASE}/stats", params={"org_id": world.a.sid, "year": 2026})
            out = await c.get(f"{BASE}/stats", params={"org_id": world.b.sid, "year": 2026})
        assert r.status_code == 200, r.text
        s = r.json()
        assert s["members"] == 3
        assert s["activities_by_type"] == {"party_lecture": 1, "patrol": 1}
        assert s["activities"] == 2
        assert s["attendance_rate"] == 0.5
        assert s["organizational_life_attendance_rate"] == 0.6667
        assert s["talks"] == 1
        assert s["service_hours_verified"] == "2.50" and s["service_hours_entries"] == 1
        assert s["pledge_items_done"] == 1 and s["pledge_completion"] == 0.0333
        assert s["points_awarded"] == 2 + 2 + 5  # two lecture attendances, 2.5 h × 2
        assert s["funds_allocated"] == "60.00" and s["funds_spent"] == "15.00"
        assert s["funds_per_member"] == "20.00"
        assert s["training_coverage"] is None
        assert out.status_code == 404
