"""Activities end to end through the gateway: registry members reach the activities read
model through the registry's events (skills and building included), and talk notes never
leave `GET /talks/{id}` — not in lists, not in the outbox that feeds consumers and
webhooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.activities.pump import project_registry
from tests.registry.factories import Tree, make_member

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]
A = "/api/v1/activities"
SECRET = "家中困难，情绪低落；已联系街道救助。"


class TestTalkNotesThroughTheGateway:
    async def test_notes_only_in_the_single_read_by_the_members_own_admin(
        self,
        tree: Tree,
        admin_client: httpx.AsyncClient,
        as_user: AsUser,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        a, b = tree.community_a["id"], tree.community_b["id"]
        member = await make_member(admin_client, org_id=a)
        await project_registry(db)
        admin_a = await as_user("org_admin", org_id=a)
        admin_b = await as_user("org_admin", org_id=b)
        viewer_a = await as_user("org_viewer", org_id=a)
        r = await admin_a.post(
            f"{A}/talks",
            json={
                "member_id": member["id"],
                "held_on": "2026-03-12",
                "talker": "李书记",
                "topic": "生活困难",
                "notes": SECRET,
            },
        )
        assert r.status_code == 201, r.text
        talk_id = r.json()["id"]
        assert SECRET not in r.text
        for c in (admin_client, admin_a, viewer_a):
            listed = await c.get(f"{A}/talks")
            assert listed.status_code == 200 and SECRET not in listed.text
            assert [t["id"] for t in listed.json()["items"]] == [talk_id]
        assert SECRET not in (await viewer_a.get(f"{A}/talks/{talk_id}")).text
        assert (await admin_b.get(f"{A}/talks/{talk_id}")).status_code == 404
        single = await admin_a.get(f"{A}/talks/{talk_id}")
        assert single.json()["notes"] == SECRET
        async with db() as s:
            outbox = await s.scalar(
                text("SELECT coalesce(string_agg(payload::text, ''), '') FROM activities.outbox")
            )
            reads = await s.scalar(
                text(
                    "SELECT count(*) FROM activities.audit_log WHERE action = 'read_notes' "
                    "AND record_id = CAST(:t AS uuid)"
                ),
                {"t": talk_id},
            )
        assert SECRET not in outbox
        assert reads == 1


class TestHelpMatchingFromRegistryCards:
    async def test_skills_and_building_come_from_the_registry(
        self,
        tree: Tree,
        admin_client: httpx.AsyncClient,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        a, a1 = tree.community_a["id"], tree.building_a1["id"]
        handy = await make_member(admin_client, org_id=a, group_id=a1, skills=["水电维修"])
        await make_member(admin_client, org_id=a, skills=["书法"])
        await project_registry(db)
        req = await admin_client.post(
            f"{A}/help-requests",
            json={
                "org_id": a,
                "building_id": a1,
                "title": "水管漏水",
                "needed_skills": ["水电维修"],
            },
        )
        assert req.status_code == 201, req.text
        items = (await admin_client.get(f"{A}/help-requests/{req.json()['id']}/candidates")).json()[
            "items"
        ]
        assert items[0]["member_id"] == handy["id"]
        assert items[0]["reasons"] == ["skill: 水电维修", "same building", "load 0"]
