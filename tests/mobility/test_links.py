from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.mobility.factories import EventPump, make_link, work_unit
from tests.registry.factories import Tree, make_member

URL = "/api/v1/mobility/links"
AsRole = Callable[..., httpx.AsyncClient]


async def resident(registry: httpx.AsyncClient, tree: Tree, pump: EventPump) -> dict[str, Any]:
    member = await make_member(
        registry, residence_org_id=tree.community_a["id"], category="in_service_resident"
    )
    await pump()
    return member


class TestCreateLink:
    async def test_link_with_a_workplace_org_starts_pending(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        unit = await work_unit(registry, tree.city["id"])
        await pump()
        member = await resident(registry, tree, pump)
        link = await make_link(
            admin,
            member_id=member["id"],
            workplace_org_id=unit["id"],
            residence_org_id=tree.community_a["id"],
        )
        assert link["status"] == "pending" and link["reported_on"] is None
        assert link["member_name"] == member["name"]

    async def test_outside_unit_by_name_and_code(
        self, as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        member = await resident(registry, tree, pump)
        async with as_role("org_admin", org_id=tree.community_a["id"]) as community:
            link = await make_link(
                community,
                member_id=member["id"],
                residence_org_id=tree.community_a["id"],
                workplace_external={"name": "嘉兴电力局", "code": "91330400X"},
                mode="assisted",
            )
        assert link["workplace_external"] == {"name": "嘉兴电力局", "code": "91330400X"}
        assert link["mode"] == "assisted"

    async def test_both_or_neither_workplace_is_422_and_a_second_open_link_409(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        unit = await work_unit(registry, tree.city["id"])
        await pump()
        member = await resident(registry, tree, pump)
        base = {"member_id": member["id"], "residence_org_id": tree.community_a["id"]}
        r = await admin.post(URL, json=base)
        assert r.status_code == 422
        r = await admin.post(
            URL, json={**base, "workplace_org_id": unit["id"], "workplace_external": {"name": "x"}}
        )
        assert r.status_code == 422
        await make_link(admin, **base, workplace_org_id=unit["id"])
        r = await admin.post(URL, json={**base, "workplace_org_id": unit["id"]})
        assert r.status_code == 409

    async def test_an_org_outside_both_sides_cannot_link(
        self, as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        unit = await work_unit(registry, tree.city["id"])
        await pump()
        member = await resident(registry, tree, pump)
        async with as_role("org_admin", org_id=tree.community_b["id"]) as other:
            r = await other.post(
                URL,
                json={
                    "member_id": member["id"],
                    "residence_org_id": tree.community_a["id"],
                    "workplace_org_id": unit["id"],
                    "mode": "proxy",
                },
            )
        assert r.status_code == 422


class Sides:
    def __init__(self, link: dict[str, Any], unit: dict[str, Any], member: dict[str, Any]) -> None:
        self.link, self.unit, self.member = link, unit, member


async def sides(
    admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
) -> Sides:
    unit = await work_unit(registry, tree.city["id"])
    await pump()
    member = await resident(registry, tree, pump)
    link = await make_link(
        admin,
        member_id=member["id"],
        workplace_org_id=unit["id"],
        residence_org_id=tree.community_a["id"],
    )
    return Sides(link, unit, member)


class TestReportLink:
    async def test_member_reports_to_the_community(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        s = await sides(admin, registry, tree, pump)
        async with as_role("member", member_id=s.member["id"]) as me:
            r = await me.post(f"{URL}/{s.link['id']}/report", json={"on": "2024-04-01"})
        assert r.status_code == 200
        assert r.json()["status"] == "reported" and r.json()["reported_on"] == "2024-04-01"
        again = await admin.post(f"{URL}/{s.link['id']}/report", json={})
        assert again.status_code == 409

    async def test_viewer_cannot_report(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        s = await sides(admin, registry, tree, pump)
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as viewer:
            r = await viewer.post(f"{URL}/{s.link['id']}/report", json={})
        assert r.status_code == 403


class TestGiveLinkFeedback:
    async def test_community_rates_and_the_workplace_reads_it(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        s = await sides(admin, registry, tree, pump)
        async with as_role("org_admin", org_id=tree.community_a["id"]) as community:
            r = await community.post(
                f"{URL}/{s.link['id']}/feedback",
                json={"year": 2024, "rating": "good", "comment": "积极"},
            )
            assert r.status_code == 200
            r = await community.post(
                f"{URL}/{s.link['id']}/feedback", json={"year": 2024, "rating": "excellent"}
            )
            assert r.json()["rating"] == "excellent"
        async with as_role("org_viewer", org_id=s.unit["id"]) as workplace:
            body = (await workplace.get(f"{URL}/{s.link['id']}")).json()
        assert [(f["year"], f["rating"]) for f in body["feedback"]] == [(2024, "excellent")]

    async def test_the_workplace_cannot_rate(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        s = await sides(admin, registry, tree, pump)
        async with as_role("org_admin", org_id=s.unit["id"]) as workplace:
            r = await workplace.post(
                f"{URL}/{s.link['id']}/feedback", json={"year": 2024, "rating": "poor"}
            )
        assert r.status_code == 403


class TestGetLink:
    async def test_each_side_sees_it_and_nobody_else(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        s = await sides(admin, registry, tree, pump)
        path = f"{URL}/{s.link['id']}"
        for org in (tree.community_a["id"], s.unit["id"], tree.city["id"]):
            async with as_role("org_viewer", org_id=org) as c:
                assert (await c.get(path)).status_code == 200
        async with as_role("org_viewer", org_id=tree.community_b["id"]) as other:
            assert (await other.get(path)).status_code == 404
        async with as_role("integration", org_id=s.unit["id"], scopes=["read"]) as key:
            assert (await key.get(path)).status_code == 200
        async with as_role("integration", org_id=tree.community_a["id"], scopes=["read"]) as key:
            assert (await key.get(path)).status_code == 404


class TestListLinks:
    async def test_community_cannot_see_feedback_of_other_communities(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        s = await sides(admin, registry, tree, pump)
        other = await make_member(
            registry, residence_org_id=tree.community_b["id"], category="in_service_resident"
        )
        await pump()
        b_link = await make_link(
            admin,
            member_id=other["id"],
            workplace_org_id=s.unit["id"],
            residence_org_id=tree.community_b["id"],
        )
        await admin.post(f"{URL}/{b_link['id']}/feedback", json={"year": 2024, "rating": "fair"})
        async with as_role("org_admin", org_id=tree.community_a["id"]) as community:
            listed = (await community.get(URL)).json()["items"]
            assert [i["id"] for i in listed] == [s.link["id"]]
            assert (await community.get(f"{URL}/{b_link['id']}")).status_code == 404
        async with as_role("org_viewer", org_id=s.unit["id"]) as workplace:
            listed = (await workplace.get(URL, params={"status": "pending"})).json()["items"]
        assert {i["id"] for i in listed} == {s.link["id"], b_link["id"]}


class TestEndLink:
    async def test_ending_closes_the_link(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        s = await sides(admin, registry, tree, pump)
        async with as_role("member", member_id=s.member["id"]) as me:
            assert (await me.post(f"{URL}/{s.link['id']}/end", json={})).status_code == 403
        r = await admin.post(f"{URL}/{s.link['id']}/end", json={"on": "2025-01-01"})
        assert r.status_code == 200 and r.json()["status"] == "ended"
        assert (await admin.post(f"{URL}/{s.link['id']}/end", json={})).status_code == 409
        assert (await admin.post(f"{URL}/{s.link['id']}/report", json={})).status_code == 409
