from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.activities.factories import BASE, World, make_activity

Sessions = async_sessionmaker[AsyncSession]
AsRole = Callable[..., httpx.AsyncClient]
HOURS = f"{BASE}/service-hours"


class TestLogServiceHours:
    async def test_member_logs_own_unverified(self, as_role: AsRole, world: World) -> None:
        m = world.a_members[0]
        async with as_role("member", member_id=m.id) as c:
            r = await c.post(HOURS, json={"on": "2026-05-04", "hours": "2.5", "role": "卫生保洁员"})
            other = await c.post(
                HOURS,
                json={"member_id": world.a_members[1].sid, "on": "2026-05-04", "hours": "1"},
            )
        assert r.status_code == 201, r.text
        assert r.json()["member_id"] == m.sid and r.json()["verified"] is False
        assert r.json()["hours"] == "2.50"
        assert other.status_code == 403

    async def test_a_day_never_exceeds_24_hours(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        m = world.a_members[0].sid
        ok = await admin.post(HOURS, json={"member_id": m, "on": "2026-05-04", "hours": "20"})
        over = await admin.post(HOURS, json={"member_id": m, "on": "2026-05-04", "hours": "4.5"})
        assert ok.status_code == 201 and over.status_code == 409
        assert over.json()["type"].endswith("hours-exceed-day")

    async def test_an_activity_is_logged_once(self, admin: httpx.AsyncClient, world: World) -> None:
        a = await make_activity(admin, world.a, type="volunteer_service")
        body = {
            "member_id": world.a_members[0].sid,
            "on": "2026-06-02",
            "hours": "2",
            "activity_id": a["id"],
        }
        assert (await admin.post(HOURS, json=body)).status_code == 201
        assert (await admin.post(HOURS, json={**body, "hours": "1"})).status_code == 409

    @pytest.mark.parametrize(
        "change",
        [
            {"hours": "0"},
            {"hours": "-2"},
            {"hours": "24.5"},
            {"hours": "1.234"},
            {"on": "x"},
            {"x": 1},
        ],
    )
    async def test_bad_input_is_422(
        self, admin: httpx.AsyncClient, world: World, change: dict[str, Any]
    ) -> None:
        body = {"member_id": world.a_members[0].sid, "on": "2026-05-04", "hours": "1", **change}
        assert (await admin.post(HOURS, json=body)).status_code == 422

    async def test_viewer_403_and_out_of_scope_404(self, as_role: AsRole, world: World) -> None:
        body = {"member_id": world.b_members[0].sid, "on": "2026-05-04", "hours": "1"}
        async with as_role("org_viewer", org_id=world.b.id) as c:
            assert (await c.post(HOURS, json=body)).status_code == 403
        async with as_role("org_admin", org_id=world.a.id) as c:
            assert (await c.post(HOURS, json=body)).status_code == 404


class TestVerifyServiceHours:
    async def test_verify_awards_points_and_emits_event(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World, db: Sessions
    ) -> None:
        m = world.a_members[0]
        entry = (
            await admin.post(HOURS, json={"member_id": m.sid, "on": "2026-05-04", "hours": "3"})
        ).json()
        async with as_role("member", member_id=m.id) as c:
            assert (await c.post(f"{HOURS}/{entry['id']}/verify")).status_code == 403
        async with as_role("org_admin", org_id=world.b.id) as c:
            assert (await c.post(f"{HOURS}/{entry['id']}/verify")).status_code == 404
        async with as_role("org_admin", org_id=world.a.id) as c:
            r = await c.post(f"{HOURS}/{entry['id']}/verify")
            again = await c.post(f"{HOURS}/{entry['id']}/verify")
        assert r.status_code == 200 and r.json()["verified"] is True
        assert again.status_code == 409
        async with db() as s:
            payload = await s.scalar(
                text("SELECT payload FROM activities.outbox WHERE type = 'service_hours.verified'")
            )
        assert payload == {
            "entry_id": entry["id"],
            "member_id": m.sid,
            "org_id": world.a.sid,
            "hours": "3.00",
            "on": "2026-05-04",
        }
        points = (await admin.get(f"{BASE}/members/{m.sid}/points")).json()
        assert points["balance"] == 6  # 2 per verified hour by default


class TestListServiceHours:
    async def test_scope_and_filters(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        a0, b0 = world.a_members[0].sid, world.b_members[0].sid
        e = (
            await admin.post(HOURS, json={"member_id": a0, "on": "2026-05-04", "hours": "1"})
        ).json()
        await admin.post(HOURS, json={"member_id": a0, "on": "2026-05-05", "hours": "1"})
        await admin.post(HOURS, json={"member_id": b0, "on": "2026-05-04", "hours": "1"})
        await admin.post(f"{HOURS}/{e['id']}/verify")
        async with as_role("org_viewer", org_id=world.a.id) as c:
            items = (await c.get(HOURS)).json()["items"]
            verified = (await c.get(HOURS, params={"verified": "true"})).json()["items"]
        assert {i["member_id"] for i in items} == {a0} and len(items) == 2
        assert [i["id"] for i in verified] == [e["id"]]
        async with as_role("member", member_id=world.b_members[0].id) as c:
            assert len((await c.get(HOURS)).json()["items"]) == 1
