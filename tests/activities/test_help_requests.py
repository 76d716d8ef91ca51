from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.activities.factories import BASE, World, seed_member
from tests.conftest import async_sessionmaker

AsRole = Callable[..., httpx.AsyncClient]
HELP = f"{BASE}/help-requests"


async def make_request(c: httpx.AsyncClient, world: World, **extra: Any) -> dict[str, Any]:
    body = {"org_id": world.a.sid, "title": "厨房水管漏水", "needed_skills": ["水电维修"], **extra}
    r = await c.post(HELP, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


class TestCreateHelpRequest:
    async def test_community_takes_a_request(self, as_role: AsRole, world: World) -> None:
        async with as_role("org_admin", org_id=world.a.id) as c:
            r = await make_request(c, world, building_id=world.a1.sid, resident_name="张阿姨")
        assert r["status"] == "open" and r["member_id"] is None
        assert r["needed_skills"] == ["水电维修"]

    @pytest.mark.parametrize(
        "change",
        [{"title": ""}, {"needed_skills": "水电"}, {"needed_skills": [""]}, {"status": "done"}],
    )
    async def test_bad_input_is_422(
        self, admin: httpx.AsyncClient, world: World, change: dict[str, Any]
    ) -> None:
        body = {"org_id": world.a.sid, "title": "x", **change}
        assert (await admin.post(HELP, json=body)).status_code == 422

    async def test_building_outside_org_is_422(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        r = await admin.post(
            HELP, json={"org_id": world.b.sid, "title": "x", "building_id": world.a1.sid}
        )
        assert r.status_code == 422


class TestListHelpRequests:
    async def test_members_see_their_communitys_open_list(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        mine = await make_request(admin, world)
        await admin.post(HELP, json={"org_id": world.b.sid, "title": "凤凰"})
        async with as_role("member", member_id=world.a_members[0].id) as c:
            items = (await c.get(HELP, params={"status": "open"})).json()["items"]
        assert [i["id"] for i in items] == [mine["id"]]


class TestGetHelpRequest:
    async def test_other_community_is_404(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        r = await make_request(admin, world)
        async with as_role("org_viewer", org_id=world.b.id) as c:
            assert (await c.get(f"{HELP}/{r['id']}")).status_code == 404


class TestListHelpRequestCandidates:
    async def test_best_candidate_wins_for_the_stated_reasons(
        self,
        admin: httpx.AsyncClient,
        world: World,
        db: async_sessionmaker,  # type: ignore[type-arg]
    ) -> None:
        # 王: the skill and the building; 李: the skill but busy with two requests;
        # 赵: the building only; 钱: the skill, in another building, idle.
        wang = await seed_member(db, world.a, name="王师傅", group=world.a1, skills=["水电维修"])
        li = await seed_member(db, world.a, name="李师傅", group=world.a1, skills=["水电维修"])
        zhao = await seed_member(db, world.a, name="赵大妈", group=world.a1, skills=["调解"])
        a2 = await _building(db, world)
        qian = await seed_member(db, world.a, name="钱师傅", group=a2, skills=["水电维修 ".strip()])
        for _ in range(2):
            busy = await make_request(admin, world, title="其他")
            await admin.post(f"{HELP}/{busy['id']}/assign", json={"member_id": li.sid})
        req = await make_request(admin, world, building_id=world.a1.sid)
        items = (await admin.get(f"{HELP}/{req['id']}/candidates")).json()["items"]
        by_id = {i["member_id"]: i for i in items}
        assert items[0]["member_id"] == wang.sid
        assert by_id[wang.sid] == {
            "member_id": wang.sid,
            "name": "王师傅",
            "score": 15,
            "reasons": ["skill: 水电维修", "same building", "load 0"],
        }
        assert by_id[qian.sid]["score"] == 10 and by_id[qian.sid]["reasons"] == [
            "skill: 水电维修",
            "load 0",
        ]
        assert by_id[li.sid]["score"] == 11 and "load 2" in by_id[li.sid]["reasons"]
        assert by_id[zhao.sid]["score"] == 5
        assert [i["member_id"] for i in items[:3]] == [wang.sid, li.sid, qian.sid]
        assert world.b_members[0].sid not in by_id

    async def test_skills_match_case_insensitively(
        self,
        admin: httpx.AsyncClient,
        world: World,
        db: async_sessionmaker,  # type: ignore[type-arg]
    ) -> None:
        pc = await seed_member(db, world.a, skills=["PC Repair"])
        req = await make_request(admin, world, needed_skills=["pc repair"])
        items = (await admin.get(f"{HELP}/{req['id']}/candidates")).json()["items"]
        assert items[0]["member_id"] == pc.sid and items[0]["reasons"][0] == "skill: pc repair"

    async def test_members_cannot_list_candidates(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        req = await make_request(admin, world)
        async with as_role("member", member_id=world.a_members[0].id) as c:
            assert (await c.get(f"{HELP}/{req['id']}/candidates")).status_code == 403


async def _building(db: Any, world: World) -> Any:
    from tests.activities.factories import seed_org

    return await seed_org(db, parent=world.a, kind="group", area_level="building", name="2号楼")


class TestAssignHelpRequest:
    async def test_assign_then_not_again(self, admin: httpx.AsyncClient, world: World) -> None:
        req = await make_request(admin, world)
        m = world.a_members[0].sid
        r = await admin.post(f"{HELP}/{req['id']}/assign", json={"member_id": m})
        assert r.status_code == 200 and r.json()["status"] == "assigned"
        again = await admin.post(f"{HELP}/{req['id']}/assign", json={"member_id": m})
        assert again.status_code == 409

    async def test_member_of_another_community_is_404(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        req = await make_request(admin, world)
        r = await admin.post(
            f"{HELP}/{req['id']}/assign", json={"member_id": world.b_members[0].sid}
        )
        assert r.status_code == 404

    async def test_viewer_is_403(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        req = await make_request(admin, world)
        async with as_role("org_viewer", org_id=world.a.id) as c:
            r = await c.post(
                f"{HELP}/{req['id']}/assign", json={"member_id": world.a_members[0].sid}
            )
        assert r.status_code == 403


class TestClaimHelpRequest:
    async def test_member_claims_from_the_open_list(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        req = await make_request(admin, world)
        async with as_role("member", member_id=world.b_members[0].id) as c:
            assert (await c.post(f"{HELP}/{req['id']}/claim")).status_code == 404
        async with as_role("member", member_id=world.a_members[0].id) as c:
            r = await c.post(f"{HELP}/{req['id']}/claim")
        assert r.status_code == 200 and r.json()["member_id"] == world.a_members[0].sid
        async with as_role("member", member_id=world.a_members[1].id) as c:
            assert (await c.post(f"{HELP}/{req['id']}/claim")).status_code == 409
        assert (await admin.post(f"{HELP}/{req['id']}/claim")).status_code == 403


class TestCompleteHelpRequest:
    async def test_complete_logs_hours_and_close_confirms(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        m = world.a_members[0]
        req = await make_request(admin, world)
        async with as_role("member", member_id=m.id) as c:
            # Not holding it (yet): not theirs to complete.
            assert (
                await c.post(f"{HELP}/{req['id']}/complete", json={"hours": "1"})
            ).status_code == 403
            await c.post(f"{HELP}/{req['id']}/claim")
            r = await c.post(
                f"{HELP}/{req['id']}/complete", json={"hours": "1.5", "on": "2026-05-04"}
            )
            assert r.status_code == 200 and r.json()["status"] == "done"
            assert r.json()["hours"] == "1.50"
            hours = (await c.get(f"{BASE}/service-hours")).json()["items"]
            assert (await c.post(f"{HELP}/{req['id']}/close")).status_code == 403
        assert [(h["help_request_id"], h["hours"], h["verified"]) for h in hours] == [
            (req["id"], "1.50", False)
        ]
        closed = await admin.post(f"{HELP}/{req['id']}/close")
        assert closed.status_code == 200 and closed.json()["status"] == "closed"
        assert (await admin.post(f"{HELP}/{req['id']}/close")).status_code == 409

    async def test_another_member_cannot_complete_and_bad_hours(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        req = await make_request(admin, world)
        await admin.post(f"{HELP}/{req['id']}/assign", json={"member_id": world.a_members[0].sid})
        async with as_role("member", member_id=world.a_members[1].id) as c:
            r = await c.post(f"{HELP}/{req['id']}/complete", json={"hours": "1"})
        assert r.status_code == 403
        assert (
            await admin.post(f"{HELP}/{req['id']}/complete", json={"hours": "0"})
        ).status_code == 422


class TestCloseHelpRequest:
    async def test_only_done_requests_close(self, admin: httpx.AsyncClient, world: World) -> None:
        req = await make_request(admin, world)
        assert (await admin.post(f"{HELP}/{req['id']}/close")).status_code == 409
