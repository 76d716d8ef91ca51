from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.outbox import emit, source_outbox
from services.mobility.models import links, transfers
from tests.mobility.factories import EventPump, make_link, open_card, work_unit
from tests.registry.factories import Tree, make_member

URL = "/api/v1/mobility/alerts"
AsRole = Callable[..., httpx.AsyncClient]


async def alerts(c: httpx.AsyncClient, type: str, org_id: str) -> list[dict[str, Any]]:
    r = await c.get(URL, params={"type": type, "org_id": org_id})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def attend(
    db: async_sessionmaker[AsyncSession], member_id: str, activity_type: str, days_ago: int
) -> None:
    """An attendance as the activities service publishes it."""
    async with db() as s:
        await emit(
            s,
            source_outbox("activities"),
            type="attendance.recorded",
            aggregate_type="activity",
            aggregate_id=uuid.uuid4(),
            aggregate_version=1,
            payload={
                "activity_id": str(uuid.uuid4()),
                "org_id": None,
                "member_id": member_id,
                "status": "present",
                "activity_type": activity_type,
                "starts_at": (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(),
            },
        )
        await s.commit()


class TestListMobilityAlerts:
    async def test_duplicate_person_appears_and_clears_on_merge(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        one = await make_member(registry, org_id=tree.community_a["id"], name="张三")
        two = await make_member(
            registry,
            residence_org_id=tree.community_b["id"],
            category="in_service_resident",
            name="张三",
        )
        await make_member(
            registry, org_id=tree.community_a["id"], name="张三", birth_date="1971-01-01"
        )
        await pump()
        found = await alerts(admin, "duplicate_person", tree.community_a["id"])
        assert [a["record_id"] for a in found] == [one["id"]]
        assert two["id"] in found[0]["reason"]
        r = await registry.post(
            f"/api/v1/registry/members/{one['id']}/merge",
            json={"duplicate_id": two["id"], "reason": "同一人"},
        )
        assert r.status_code == 200, r.text
        await pump()
        assert await alerts(admin, "duplicate_person", tree.street["id"]) == []

    async def test_pocket_member_from_an_expired_letter_clears_on_receipt(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        t = await registry.post(
            "/api/v1/registry/transfers",
            json={"member_id": member["id"], "to_org_id": tree.community_b["id"], "reason": "搬家"},
        )
        assert t.status_code == 201, t.text
        tid = t.json()["id"]
        r = await registry.post(
            f"/api/v1/registry/transfers/{tid}/issue",
            json={"letter_no": "JX-2024-001", "valid_until": str(date.today())},
        )
        assert r.status_code == 200, r.text
        await pump()
        assert await alerts(admin, "pocket_member", tree.community_a["id"]) == []
        async with db() as s:  # a day later: the letter is past its last valid day
            await s.execute(update(transfers).values(valid_until=date.today() - timedelta(days=1)))
            await s.commit()
        found = await alerts(admin, "pocket_member", tree.street["id"])
        assert [a["member_id"] for a in found] == [member["id"]]
        assert "JX" not in found[0]["reason"] and "expired" in found[0]["reason"]
        r = await registry.post(f"/api/v1/registry/transfers/{tid}/receive", json={})
        assert r.status_code == 200, r.text
        await pump()
        assert await alerts(admin, "pocket_member", tree.street["id"]) == []

    async def test_unreported_resident_after_30_days_clears_on_report(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        unit = await work_unit(registry, tree.city["id"])
        member = await make_member(
            registry, residence_org_id=tree.community_a["id"], category="in_service_resident"
        )
        await pump()
        link = await make_link(
            admin,
            member_id=member["id"],
            workplace_org_id=unit["id"],
            residence_org_id=tree.community_a["id"],
        )
        assert await alerts(admin, "unreported_resident", tree.community_a["id"]) == []
        async with db() as s:
            await s.execute(
                update(links)
                .where(links.c.id == link["id"])
                .values(created_at=datetime.now(UTC) - timedelta(days=31))
            )
            await s.commit()
        found = await alerts(admin, "unreported_resident", tree.community_a["id"])
        assert [a["record_id"] for a in found] == [link["id"]]
        assert [a["record_id"] for a in await alerts(admin, "unreported_resident", unit["id"])] == [
            link["id"]
        ]
        assert await alerts(admin, "unreported_resident", tree.community_b["id"]) == []
        await admin.post(f"/api/v1/mobility/links/{link['id']}/report", json={})
        assert await alerts(admin, "unreported_resident", tree.community_a["id"]) == []

    async def test_lost_contact_appears_and_clears_on_contact(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        card = await open_card(admin, member["id"], left_on=str(date.today() - timedelta(days=181)))
        found = await alerts(admin, "lost_contact", tree.community_a["id"])
        assert [a["record_id"] for a in found] == [card["id"]]
        await admin.post(
            f"/api/v1/mobility/mobile-members/{card['id']}/contacts",
            json={"on": str(date.today()), "channel": "phone"},
        )
        assert await alerts(admin, "lost_contact", tree.community_a["id"]) == []

    async def test_no_org_life_clears_with_a_recent_branch_assembly(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        member = await make_member(registry, org_id=tree.community_b["id"])
        await pump()
        found = await alerts(admin, "no_org_life", tree.community_b["id"])
        assert [a["member_id"] for a in found] == [member["id"]]
        await attend(db, member["id"], "volunteer_service", 1)  # not organizational life
        await attend(db, member["id"], "branch_assembly", 200)  # too long ago
        await pump()
        assert len(await alerts(admin, "no_org_life", tree.community_b["id"])) == 1
        await attend(db, member["id"], "party_lecture", 3)
        await pump()
        assert await alerts(admin, "no_org_life", tree.community_b["id"]) == []

    async def test_scope_outside_subtree_is_404_and_viewers_read_alerts(
        self, as_role: AsRole, tree: Tree
    ) -> None:
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as viewer:
            assert (
                await viewer.get(URL, params={"org_id": tree.community_b["id"]})
            ).status_code == 404
            assert (await viewer.get(URL)).status_code == 200
            assert (await viewer.get(URL, params={"type": "nope"})).status_code == 422
        async with as_role("member", member_id=str(uuid.uuid4())) as member:
            assert (await member.get(URL)).status_code == 403


class TestGetMobilityStatistics:
    async def test_flows_links_and_mobile_by_status(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        unit = await work_unit(registry, tree.city["id"])
        out1 = await make_member(registry, org_id=tree.community_a["id"])
        out2 = await make_member(registry, org_id=tree.community_a["id"])
        inflow = await make_member(registry, org_id=tree.community_b["id"])
        res = [
            await make_member(
                registry, residence_org_id=tree.community_a["id"], category="in_service_resident"
            )
            for _ in range(2)
        ]
        await pump()
        this_year = date.today()
        await open_card(admin, out1["id"], left_on=str(this_year))
        await open_card(admin, out2["id"], left_on=str(date.today() - timedelta(days=400)))
        await open_card(
            admin,
            inflow["id"],
            direction="inflow",
            host_org_id=tree.community_b["id"],
            left_on=str(this_year),
        )
        links_ = [
            await make_link(
                admin,
                member_id=m["id"],
                workplace_org_id=unit["id"],
                residence_org_id=tree.community_a["id"],
            )
            for m in res
        ]
        await admin.post(f"/api/v1/mobility/links/{links_[0]['id']}/report", json={})
        r = await admin.get(
            "/api/v1/mobility/statistics",
            params={"org_id": tree.street["id"], "year": this_year.year},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["flows"] == {"inflow": 1, "outflow": 1}
        assert body["dual_management"] == {"links": 2, "reported": 1, "report_rate": 0.5}
        assert [(c["org_id"], c["report_rate"]) for c in body["by_community"]] == [
            (tree.community_a["id"], 0.5)
        ]
        by_status = {k: v["count"] for k, v in body["mobile"]["by_status"].items()}
        assert (
            by_status["lost_contact"] == 1
            and by_status["active"] == 2
            and by_status["returned"] == 0
        )
