from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.activities.factories import BASE, World, make_activity

Sessions = async_sessionmaker[AsyncSession]
AsRole = Callable[..., httpx.AsyncClient]
RULES = f"{BASE}/points/rules"


async def attend(admin: httpx.AsyncClient, world: World, type: str, *member_ids: str) -> None:
    a = await make_activity(admin, world.a, type=type)
    r = await admin.put(
        f"{BASE}/activities/{a['id']}/attendance",
        json=[{"member_id": m, "status": "present"} for m in member_ids],
    )
    assert r.status_code == 200, r.text


class TestListPointsRules:
    async def test_defaults_and_org_override_inherited_down(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        rules = {r["activity_type"]: r for r in (await admin.get(RULES)).json()}
        assert rules["patrol"]["points"] == 4 and rules["patrol"]["org_id"] is None
        assert rules[None]["source"] == "service_hour" and rules[None]["points"] == 2
        r = await admin.put(
            RULES,
            json={
                "org_id": world.street.sid,
                "source": "activity",
                "activity_type": "patrol",
                "points": 7,
            },
        )
        assert r.status_code == 200, r.text
        rules = {
            r["activity_type"]: r
            for r in (await admin.get(RULES, params={"org_id": world.a1.sid})).json()
        }
        assert rules["patrol"]["points"] == 7 and rules["patrol"]["org_id"] == world.street.sid


class TestSetPointsRule:
    async def test_rule_applies_to_attendance(self, admin: httpx.AsyncClient, world: World) -> None:
        await admin.put(
            RULES,
            json={
                "org_id": world.a.sid,
                "source": "activity",
                "activity_type": "salon",
                "points": 9,
            },
        )
        m = world.a_members[0].sid
        await attend(admin, world, "salon", m)
        assert (await admin.get(f"{BASE}/members/{m}/points")).json()["balance"] == 9

    @pytest.mark.parametrize(
        "body",
        [
            {"source": "activity", "points": 1},
            {"source": "service_hour", "activity_type": "salon", "points": 1},
            {"source": "activity", "activity_type": "salon", "points": -1},
        ],
    )
    async def test_bad_rules_are_422(
        self, admin: httpx.AsyncClient, world: World, body: dict[str, object]
    ) -> None:
        assert (await admin.put(RULES, json={"org_id": world.a.sid, **body})).status_code == 422

    async def test_viewer_is_403(self, as_role: AsRole, world: World) -> None:
        async with as_role("org_viewer", org_id=world.a.id) as c:
            r = await c.put(
                RULES, json={"org_id": world.a.sid, "source": "service_hour", "points": 3}
            )
        assert r.status_code == 403


class TestAttendancePoints:
    async def test_a_list_settles_each_member_and_a_change_takes_points_back(
        self, admin: httpx.AsyncClient, world: World, db: Sessions
    ) -> None:
        """Points of an attendance list: each present member gets the rule's points once,
        a member changed to absent gives them back, an unchanged list appends nothing;
        one `points.awarded` event per ledger entry."""
        a = await make_activity(admin, world.a, type="patrol")  # 4 points by default
        ids = [m.sid for m in world.a_members[:3]]
        url = f"{BASE}/activities/{a['id']}/attendance"

        async def put(statuses: list[str]) -> None:
            body = [{"member_id": m, "status": st} for m, st in zip(ids, statuses, strict=True)]
            r = await admin.put(url, json=body)
            assert r.status_code == 200, r.text

        async def ledger() -> list[tuple[str, int]]:
            async with db() as s:
                rows = await s.execute(
                    text(
                        "SELECT CAST(member_id AS text), points FROM activities.points_ledger "
                        "WHERE source_id = CAST(:a AS uuid) ORDER BY id"
                    ),
                    {"a": a["id"]},
                )
                return [(r[0], r[1]) for r in rows]

        async def awarded() -> int:
            async with db() as s:
                return int(
                    await s.scalar(
                        text(
                            "SELECT count(*) FROM activities.outbox WHERE type = 'points.awarded' "
                            "AND payload->>'source_id' = :a"
                        ),
                        {"a": a["id"]},
                    )
                    or 0
                )

        await put(["present", "present", "absent"])
        assert sorted(await ledger()) == sorted([(ids[0], 4), (ids[1], 4)])
        await put(["present", "absent", "absent"])
        assert (await ledger())[2:] == [(ids[1], -4)]
        await put(["present", "absent", "absent"])
        assert len(await ledger()) == 3
        assert await awarded() == 3
        for m, balance in zip(ids, [4, 0, 0], strict=True):
            assert (await admin.get(f"{BASE}/members/{m}/points")).json()["balance"] == balance


class TestGetMemberPoints:
    async def test_balance_always_equals_the_sum_of_entries(
        self, admin: httpx.AsyncClient, world: World, db: Sessions
    ) -> None:
        m = world.a_members[0].sid
        await attend(admin, world, "patrol", m)
        await attend(admin, world, "cleanup", m)
        await admin.post(
            f"{BASE}/members/{m}/points/redemptions", json={"reward": "毛巾", "points": 3}
        )
        body = (await admin.get(f"{BASE}/members/{m}/points")).json()
        assert body["balance"] == sum(e["points"] for e in body["entries"]) == 5
        async with db() as s:
            total = await s.scalar(
                text(
                    "SELECT sum(points) FROM activities.points_ledger "
                    "WHERE member_id = CAST(:m AS uuid)"
                ),
                {"m": m},
            )
        assert total == 5

    async def test_member_sees_own_only(self, as_role: AsRole, world: World) -> None:
        async with as_role("member", member_id=world.a_members[0].id) as c:
            assert (
                await c.get(f"{BASE}/members/{world.a_members[0].sid}/points")
            ).status_code == 200
            assert (
                await c.get(f"{BASE}/members/{world.a_members[1].sid}/points")
            ).status_code == 404


class TestRedeemMemberPoints:
    async def test_beyond_balance_is_409(self, admin: httpx.AsyncClient, world: World) -> None:
        m = world.a_members[0].sid
        await attend(admin, world, "patrol", m)
        url = f"{BASE}/members/{m}/points/redemptions"
        assert (await admin.post(url, json={"reward": "大米", "points": 5})).status_code == 409
        r = await admin.post(url, json={"reward": "大米", "points": 4})
        assert r.status_code == 201 and r.json()["points"] == -4 and r.json()["note"] == "大米"

    async def test_member_cannot_redeem_and_bad_input(
        self, as_role: AsRole, admin: httpx.AsyncClient, world: World
    ) -> None:
        m = world.a_members[0]
        async with as_role("member", member_id=m.id) as c:
            r = await c.post(
                f"{BASE}/members/{m.sid}/points/redemptions", json={"reward": "x", "points": 1}
            )
        assert r.status_code == 403  # a role that changes nothing, not a hidden record
        r = await admin.post(
            f"{BASE}/members/{m.sid}/points/redemptions", json={"reward": "x", "points": 0}
        )
        assert r.status_code == 422

    async def test_ledger_is_append_only(
        self, admin: httpx.AsyncClient, world: World, db: Sessions
    ) -> None:
        await attend(admin, world, "patrol", world.a_members[0].sid)
        async with db() as s:
            with pytest.raises(DBAPIError):
                await s.execute(text("UPDATE activities.points_ledger SET points = 100"))
            await s.rollback()


class TestPointsLeaderboard:
    async def test_ranks_by_points_earned_in_the_year(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        m0, m1, m2 = (m.sid for m in world.a_members)
        await attend(admin, world, "patrol", m0, m1)
        await attend(admin, world, "volunteer_service", m1)
        await attend(admin, world, "online_lesson", m2)
        await admin.post(
            f"{BASE}/members/{m1}/points/redemptions", json={"reward": "x", "points": 9}
        )
        async with as_role("org_viewer", org_id=world.a.id) as c:
            r = await c.get(
                f"{BASE}/points/leaderboard", params={"org_id": world.a.sid, "year": 2026}
            )
            out = await c.get(
                f"{BASE}/points/leaderboard", params={"org_id": world.b.sid, "year": 2026}
            )
        assert [(i["rank"], i["member_id"], i["points"]) for i in r.json()["items"]] == [
            (1, m1, 9),
            (2, m0, 4),
            (3, m2, 1),
        ]
        assert out.status_code == 404
