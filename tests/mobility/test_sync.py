from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.mobility.models import links
from services.mobility.models import orgs as mobility_orgs
from services.registry.models import Member
from tests.mobility.factories import EventPump, work_unit
from tests.registry.factories import Tree, id_number, make_member, next_id_number

AsRole = Callable[..., httpx.AsyncClient]


def url(org_id: str) -> str:
    return f"/api/v1/mobility/sync/{org_id}/members"


def row(n: int, community: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "external_id": f"E-{n:04d}",
        "name": f"职工{n}",
        "id_number": id_number(date(1980, 1, 1), serial=n),
        "phone": "13900139000",
        "residence_community_code": community["code"],
        "address": f"{n}幢",
        **overrides,
    }


async def unit_key(
    as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
) -> tuple[dict[str, Any], httpx.AsyncClient]:
    unit = await work_unit(registry, tree.city["id"])
    await pump()
    return unit, as_role("integration", org_id=unit["id"], scopes=["sync"])


async def members_holding(db: async_sessionmaker[AsyncSession], name: str) -> int:
    async with db() as s:
        return int(await s.scalar(select(func.count()).where(Member.name == name)) or 0)


class TestSyncWorkUnitMembers:
    async def test_good_and_bad_rows(
        self, as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        unit, key = await unit_key(as_role, registry, tree, pump)
        rows = [
            row(1, tree.community_a),
            row(2, tree.community_a, id_number="330402198001011234"),  # bad check digit
            row(3, tree.community_b),
            {"external_id": "E-0004", "name": "缺身份证"},
            row(5, tree.community_a, residence_community_code="NO-SUCH"),
            row(1, tree.community_a, name="重复"),  # external_id repeated
        ]
        async with key:
            r = await key.put(url(unit["id"]), json={"mode": "delta", "members": rows})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["created"], body["updated"], body["unchanged"], body["ended"]) == (2, 0, 0, 0)
        assert [(e["index"], e["external_id"]) for e in body["errors"]] == [
            (1, "E-0002"),
            (3, "E-0004"),
            (4, "E-0005"),
            (5, "E-0001"),
        ]
        assert "check digit" in body["errors"][0]["message"]
        assert "id_number" in body["errors"][1]["message"]
        await pump()
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as community:
            links = (await community.get("/api/v1/mobility/links")).json()["items"]
        assert [(i["external_id"], i["status"]) for i in links] == [("E-0001", "pending")]
        created = await registry.get(f"/api/v1/registry/members/{links[0]['member_id']}")
        card = created.json()
        assert card["category"] == "in_service_resident" and card["relation"] == "resident"
        assert card["residence_org_id"] == tree.community_a["id"] and card["org_id"] is None
        assert card["birth_date"] == "1980-01-01" and card["employer"] == unit["name"]
        assert card["id_number_masked"].endswith(id_number(date(1980, 1, 1), serial=1)[-4:])

    async def test_a_repeated_call_with_the_same_key_is_a_no_op(
        self,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        unit, key = await unit_key(as_role, registry, tree, pump)
        body = {"mode": "delta", "members": [row(11, tree.community_a)]}
        headers = {"Idempotency-Key": "sync-2024-01"}
        async with key:
            first = await key.put(url(unit["id"]), json=body, headers=headers)
            again = await key.put(url(unit["id"]), json=body, headers=headers)
            other = await key.put(url(unit["id"]), json={**body, "mode": "full"}, headers=headers)
        assert first.json() == again.json() and first.json()["created"] == 1
        assert other.status_code == 422
        assert await members_holding(db, "职工11") == 1

    async def test_without_a_key_a_second_call_changes_nothing(
        self, as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        unit, key = await unit_key(as_role, registry, tree, pump)
        body = {"mode": "delta", "members": [row(21, tree.community_a)]}
        async with key:
            await key.put(url(unit["id"]), json=body)
            again = (await key.put(url(unit["id"]), json=body)).json()
            moved = (
                await key.put(
                    url(unit["id"]),
                    json={"mode": "delta", "members": [row(21, tree.community_b)]},
                )
            ).json()
        assert (again["created"], again["unchanged"]) == (0, 1)
        assert (moved["created"], moved["updated"]) == (0, 1)

    async def test_each_link_created_or_ended_has_its_event_with_the_links_state(
        self,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        """The events the database makes for a sync's links, in the order of the file:
        the link as written, and the paths of its two orgs (sorted, no repeats)."""
        unit, key = await unit_key(as_role, registry, tree, pump)
        listed = [row(41, tree.community_b), row(42, tree.community_a), row(43, tree.community_a)]
        async with key:
            await key.put(url(unit["id"]), json={"mode": "full", "members": listed})
            await key.put(url(unit["id"]), json={"mode": "full", "members": listed[1:]})
        async with db() as s:
            events = (
                await s.execute(
                    text(
                        "SELECT e.type, e.aggregate_id, e.aggregate_version, e.shard_key, "
                        "e.org_paths, e.payload FROM mobility.outbox e "
                        "JOIN mobility.links l ON l.id = e.aggregate_id "
                        "WHERE l.workplace_org_id = :unit ORDER BY e.id"
                    ),
                    {"unit": unit["id"]},
                )
            ).all()
            written = {
                r.id: r
                for r in await s.execute(
                    select(links).where(links.c.workplace_org_id == uuid.UUID(unit["id"]))
                )
            }
            paths = {
                str(r.org_id): str(r.path)
                for r in await s.execute(select(mobility_orgs.c.org_id, mobility_orgs.c.path))
            }
        assert [(e.type, e.payload["member_id"]) for e in events] == [
            ("link.created", str(written[e.aggregate_id].member_id)) for e in events[:3]
        ] + [("link.ended", str(written[events[3].aggregate_id].member_id))]
        assert [written[e.aggregate_id].external_id for e in events] == [
            "E-0041",
            "E-0042",
            "E-0043",
            "E-0041",
        ]
        for event in events:
            link = written[event.aggregate_id]
            status, version = (("pending", 1), ("ended", 2))[event.type == "link.ended"]
            assert event.payload == {
                "link_id": str(link.id),
                "member_id": str(link.member_id),
                "workplace_org_id": unit["id"],
                "residence_org_id": str(link.residence_org_id),
                "mode": "direct",
                "status": status,
                "reported_on": None,
                "ended_on": None if status == "pending" else link.ended_on.isoformat(),
                "version": version,
            }
            assert (event.aggregate_version, event.shard_key) == (version, link.shard_key)
            ends = {paths[str(link.residence_org_id)], paths[unit["id"]]}
            assert event.org_paths == sorted(ends)

    async def test_a_full_sync_ends_the_links_of_members_no_longer_listed(
        self, as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        unit, key = await unit_key(as_role, registry, tree, pump)
        async with key:
            await key.put(
                url(unit["id"]),
                json={
                    "mode": "full",
                    "members": [row(31, tree.community_a), row(32, tree.community_a)],
                },
            )
            delta = (
                await key.put(
                    url(unit["id"]), json={"mode": "delta", "members": [row(31, tree.community_a)]}
                )
            ).json()
            assert delta["ended"] == 0
            full = (
                await key.put(
                    url(unit["id"]), json={"mode": "full", "members": [row(31, tree.community_a)]}
                )
            ).json()
        assert (full["unchanged"], full["ended"]) == (1, 1)
        async with as_role("org_viewer", org_id=unit["id"]) as workplace:
            links = (await workplace.get("/api/v1/mobility/links")).json()["items"]
        assert sorted((i["external_id"], i["status"]) for i in links) == [
            ("E-0031", "pending"),
            ("E-0032", "ended"),
        ]

    async def test_a_person_already_in_the_registry_gets_a_link_not_a_copy(
        self,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        number = next_id_number(date(1975, 5, 5))
        existing = await make_member(
            registry,
            org_id=tree.community_b["id"],
            name="老党员",
            birth_date="1975-05-05",
            id_number=number,
        )
        unit, key = await unit_key(as_role, registry, tree, pump)
        async with key:
            r = await key.put(
                url(unit["id"]),
                json={
                    "mode": "delta",
                    "members": [row(41, tree.community_a, name="老党员", id_number=number)],
                },
            )
        assert (r.json()["created"], r.json()["errors"]) == (1, [])
        assert await members_holding(db, "老党员") == 1
        async with as_role("org_viewer", org_id=unit["id"]) as workplace:
            links = (await workplace.get("/api/v1/mobility/links")).json()["items"]
        assert [i["member_id"] for i in links] == [existing["id"]]

    async def test_a_unit_key_cannot_touch_another_units_members(
        self, as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        unit, key = await unit_key(as_role, registry, tree, pump)
        other = await work_unit(registry, tree.city["id"])
        await pump()
        body = {"mode": "full", "members": []}
        async with key:
            assert (await key.put(url(other["id"]), json=body)).status_code == 404
            assert (
                await key.get(f"/api/v1/mobility/sync/{other['id']}/changes")
            ).status_code == 404
            # nor read a community's residents
            r = await key.get(
                "/api/v1/mobility/links", params={"residence_org_id": tree.community_a["id"]}
            )
            assert r.json()["items"] == []
        async with as_role("integration", org_id=unit["id"], scopes=["read"]) as reader:
            assert (await reader.put(url(unit["id"]), json=body)).status_code == 403
        async with as_role("org_admin", org_id=unit["id"]) as person:
            assert (await person.put(url(unit["id"]), json=body)).status_code == 403

    async def test_invalid_mode_and_unknown_fields_are_422(
        self, as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        unit, key = await unit_key(as_role, registry, tree, pump)
        async with key:
            r = await key.put(url(unit["id"]), json={"mode": "all", "members": []})
            assert r.status_code == 422
            r = await key.put(url(unit["id"]), json={"mode": "full", "members": [], "x": 1})
            assert r.status_code == 422
            r = await key.put(
                url(unit["id"]),
                json={"mode": "full", "members": [row(1, tree.community_a, extra=1)]},
            )
            assert r.status_code == 200 and r.json()["errors"][0]["index"] == 0


class TestListWorkUnitChanges:
    async def test_report_status_and_feedback_come_back_after_the_cursor(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        unit, key = await unit_key(as_role, registry, tree, pump)
        changes = f"/api/v1/mobility/sync/{unit['id']}/changes"
        async with key:
            await key.put(
                url(unit["id"]), json={"mode": "delta", "members": [row(51, tree.community_a)]}
            )
            first = (await key.get(changes)).json()
            assert [(c["kind"], c["status"], c["external_id"]) for c in first["items"]] == [
                ("link", "pending", "E-0051")
            ]
            cursor = first["next_cursor"]
            assert (await key.get(changes, params={"cursor": cursor})).json()["items"] == []
            link_id = first["items"][0]["link_id"]
            await admin.post(f"/api/v1/mobility/links/{link_id}/report", json={"on": "2024-03-03"})
            await admin.post(
                f"/api/v1/mobility/links/{link_id}/feedback",
                json={"year": 2024, "rating": "good", "comment": "好"},
            )
            later = (await key.get(changes, params={"cursor": cursor})).json()
        assert [(c["kind"], c["status"], c["rating"]) for c in later["items"]] == [
            ("link", "reported", None),
            ("feedback", "reported", "good"),
        ]
        assert later["items"][0]["reported_on"] == "2024-03-03"
        assert later["has_more"] is False
