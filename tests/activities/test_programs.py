from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.activities.factories import BASE, World, make_activity

AsRole = Callable[..., httpx.AsyncClient]
PROGRAMS = f"{BASE}/programs"
ROLES = f"{BASE}/role-assignments"
EIGHT_ROLES = "0f1e0000-0000-4000-8000-000000000008"


async def verified_hours(admin: httpx.AsyncClient, member_id: str, on: str = "2026-05-04") -> str:
    e = (
        await admin.post(
            f"{BASE}/service-hours", json={"member_id": member_id, "on": on, "hours": "2"}
        )
    ).json()
    await admin.post(f"{BASE}/service-hours/{e['id']}/verify")
    return str(e["id"])


class TestListPrograms:
    async def test_default_templates_are_there_from_the_start(
        self, as_role: AsRole, world: World
    ) -> None:
        async with as_role("org_viewer", org_id=world.a.id) as c:
            programs = {p["code"]: p for p in (await c.get(PROGRAMS)).json()}
        ten = programs["ten_ones"]
        assert ten["org_id"] is None and ten["kind"] == "pledge" and len(ten["items"]) == 10
        assert ten["items"][0]["title_zh"] == "为群众作一次报告"
        eight = programs["eight_roles"]
        assert eight["kind"] == "roles" and len(eight["items"]) == 8
        assert eight["items"][3]["title_zh"] == "民事调解员"

    async def test_other_orgs_programs_are_not_listed(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        await admin.post(
            PROGRAMS,
            json={
                "org_id": world.b.sid,
                "code": "b_own",
                "name": "凤凰自定",
                "kind": "pledge",
                "items": [{"n": 1, "title": "x"}],
            },
        )
        async with as_role("org_viewer", org_id=world.a.id) as c:
            codes = {p["code"] for p in (await c.get(PROGRAMS)).json()}
        assert "b_own" not in codes


class TestCreateProgram:
    async def test_org_defines_and_adopts_its_own(self, as_role: AsRole, world: World) -> None:
        async with as_role("org_admin", org_id=world.a.id) as c:
            r = await c.post(
                PROGRAMS,
                json={
                    "org_id": world.a.sid,
                    "code": "three_helps",
                    "name": "三帮",
                    "kind": "pledge",
                    "items": [{"n": 2, "title": "b"}, {"n": 1, "title": "a"}],
                },
            )
            again = await c.post(
                PROGRAMS,
                json={
                    "org_id": world.a.sid,
                    "code": "three_helps",
                    "name": "重复",
                    "kind": "pledge",
                    "items": [{"n": 1, "title": "a"}],
                },
            )
        assert r.status_code == 201, r.text
        assert [i["n"] for i in r.json()["items"]] == [1, 2]
        assert r.json()["adopted_by"] == [world.a.sid]
        assert again.status_code == 422

    @pytest.mark.parametrize(
        "change",
        [
            {"items": []},
            {"items": [{"n": 1, "title": "a"}, {"n": 3, "title": "c"}]},
            {"kind": "other"},
            {"code": "Bad Code"},
        ],
    )
    async def test_bad_input_is_422(
        self, admin: httpx.AsyncClient, world: World, change: dict[str, Any]
    ) -> None:
        body = {
            "org_id": world.a.sid,
            "code": "p",
            "name": "p",
            "kind": "pledge",
            "items": [{"n": 1, "title": "a"}],
            **change,
        }
        assert (await admin.post(PROGRAMS, json=body)).status_code == 422


class TestGetProgram:
    async def test_unknown_is_404(self, admin: httpx.AsyncClient) -> None:
        r = await admin.get(f"{PROGRAMS}/00000000-0000-4000-8000-000000000000")
        assert r.status_code == 404


class TestAdoptProgram:
    async def test_adopting_a_template_is_idempotent(self, as_role: AsRole, world: World) -> None:
        async with as_role("org_admin", org_id=world.a.id) as c:
            first = await c.post(f"{PROGRAMS}/{EIGHT_ROLES}/adopt", json={"org_id": world.a.sid})
            again = await c.post(f"{PROGRAMS}/{EIGHT_ROLES}/adopt", json={"org_id": world.a.sid})
            other = await c.post(f"{PROGRAMS}/{EIGHT_ROLES}/adopt", json={"org_id": world.b.sid})
        assert first.status_code == again.status_code == 200
        assert again.json()["adopted_by"] == [world.a.sid]
        assert other.status_code == 404


class TestGetMemberPledge:
    async def test_items_show_done_or_not(
        self, as_role: AsRole, world: World, admin: httpx.AsyncClient
    ) -> None:
        m = world.a_members[0]
        async with as_role("member", member_id=m.id) as c:
            r = await c.get(f"{BASE}/members/{m.sid}/pledges/2026")
            other = await c.get(f"{BASE}/members/{world.a_members[1].sid}/pledges/2026")
        assert r.status_code == 200
        body = r.json()
        assert body["total"] == 10 and body["done"] == 0
        assert all(not i["done"] for i in body["items"])
        assert other.status_code == 404
        assert (await admin.get(f"{BASE}/members/{m.sid}/pledges/1999")).status_code == 422


class TestMarkPledgeItemDone:
    async def test_done_items_link_their_evidence(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        m = world.a_members[0].sid
        hours_id = await verified_hours(admin, m)
        patrol = await make_activity(admin, world.a, type="patrol")
        await admin.put(
            f"{BASE}/activities/{patrol['id']}/attendance",
            json=[{"member_id": m, "status": "present"}],
        )
        r = await admin.post(
            f"{BASE}/members/{m}/pledges/2026/items/5",
            json={"evidence_type": "service_hours", "evidence_id": hours_id},
        )
        r = await admin.post(
            f"{BASE}/members/{m}/pledges/2026/items/9",
            json={"evidence_type": "activity", "evidence_id": patrol["id"]},
        )
        assert r.status_code == 200, r.text
        items = {i["n"]: i for i in r.json()["items"]}
        assert r.json()["done"] == 2
        assert items[5]["evidence_id"] == hours_id and items[5]["done_on"] == "2026-05-04"
        assert items[9]["evidence_type"] == "activity" and items[1]["done"] is False

    async def test_evidence_must_be_the_members_own(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        other_hours = await verified_hours(admin, world.a_members[1].sid)
        m = world.a_members[0].sid
        r = await admin.post(
            f"{BASE}/members/{m}/pledges/2026/items/5",
            json={"evidence_type": "service_hours", "evidence_id": other_hours},
        )
        assert r.status_code == 422
        unverified = (
            await admin.post(
                f"{BASE}/service-hours", json={"member_id": m, "on": "2026-05-06", "hours": "1"}
            )
        ).json()
        r = await admin.post(
            f"{BASE}/members/{m}/pledges/2026/items/5",
            json={"evidence_type": "service_hours", "evidence_id": unverified["id"]},
        )
        assert r.status_code == 422

    async def test_item_out_of_range_and_wrong_year(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        m = world.a_members[0].sid
        hours_id = await verified_hours(admin, m)
        body = {"evidence_type": "service_hours", "evidence_id": hours_id}
        assert (
            await admin.post(f"{BASE}/members/{m}/pledges/2026/items/11", json=body)
        ).status_code == 404
        assert (
            await admin.post(f"{BASE}/members/{m}/pledges/2025/items/1", json=body)
        ).status_code == 422

    async def test_viewer_is_403(self, as_role: AsRole, world: World) -> None:
        async with as_role("org_viewer", org_id=world.a.id) as c:
            r = await c.post(
                f"{BASE}/members/{world.a_members[0].sid}/pledges/2026/items/1",
                json={
                    "evidence_type": "activity",
                    "evidence_id": "00000000-0000-4000-8000-000000000000",
                },
            )
        assert r.status_code == 403


class TestCreateRoleAssignment:
    async def test_roles_of_the_eight_and_posts_with_history(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        m = world.a_members[0].sid
        body = {
            "member_id": m,
            "org_id": world.a.sid,
            "kind": "role",
            "role": "民事调解员",
            "program_id": EIGHT_ROLES,
            "started_on": "2025-01-01",
        }
        first = await admin.post(ROLES, json=body)
        assert first.status_code == 201, first.text
        assert (await admin.post(ROLES, json=body)).status_code == 409
        ended = await admin.post(
            f"{ROLES}/{first.json()['id']}/end", json={"ended_on": "2025-12-31"}
        )
        assert ended.status_code == 200 and ended.json()["ended_on"] == "2025-12-31"
        assert (
            await admin.post(ROLES, json={**body, "started_on": "2026-01-01"})
        ).status_code == 201
        post = await admin.post(
            ROLES,
            json={
                "member_id": m,
                "org_id": world.a.sid,
                "kind": "post",
                "role": "便民服务",
                "layer": "skilled",
                "started_on": "2026-01-01",
            },
        )
        assert post.status_code == 201
        history = (await admin.get(ROLES, params={"member_id": m})).json()
        assert [h["ended_on"] for h in history] == [None, None, "2025-12-31"]

    async def test_unknown_role_of_a_program_is_422(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        r = await admin.post(
            ROLES,
            json={
                "member_id": world.a_members[0].sid,
                "org_id": world.a.sid,
                "kind": "role",
                "role": "宇航员",
                "program_id": EIGHT_ROLES,
                "started_on": "2026-01-01",
            },
        )
        assert r.status_code == 422

    async def test_out_of_scope_member_is_404(self, as_role: AsRole, world: World) -> None:
        async with as_role("org_admin", org_id=world.a.id) as c:
            r = await c.post(
                ROLES,
                json={
                    "member_id": world.b_members[0].sid,
                    "org_id": world.a.sid,
                    "kind": "post",
                    "role": "巡逻",
                    "started_on": "2026-01-01",
                },
            )
        assert r.status_code == 404


class TestEndRoleAssignment:
    async def test_end_before_start_is_422_and_twice_409(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        r = await admin.post(
            ROLES,
            json={
                "member_id": world.a_members[0].sid,
                "org_id": world.a.sid,
                "kind": "party_worker",
                "role": "党务工作者",
                "started_on": "2026-01-01",
            },
        )
        url = f"{ROLES}/{r.json()['id']}/end"
        assert (await admin.post(url, json={"ended_on": "2025-01-01"})).status_code == 422
        assert (await admin.post(url, json={"ended_on": "2026-02-01"})).status_code == 200
        assert (await admin.post(url, json={"ended_on": "2026-03-01"})).status_code == 409


class TestListRoleAssignments:
    async def test_scope(self, admin: httpx.AsyncClient, as_role: AsRole, world: World) -> None:
        for org, member in ((world.a, world.a_members[0]), (world.b, world.b_members[0])):
            await admin.post(
                ROLES,
                json={
                    "member_id": member.sid,
                    "org_id": org.sid,
                    "kind": "post",
                    "role": "巡逻",
                    "started_on": "2026-01-01",
                },
            )
        async with as_role("org_viewer", org_id=world.a.id) as c:
            assert [r["member_id"] for r in (await c.get(ROLES)).json()] == [world.a_members[0].sid]
        async with as_role("member", member_id=world.b_members[0].id) as c:
            assert [r["member_id"] for r in (await c.get(ROLES)).json()] == [world.b_members[0].sid]
