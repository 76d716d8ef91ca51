from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.mobility.models import mobile_cards
from services.mobility.service.cards import publish_lost_contacts
from tests.mobility.factories import EventPump, card_body, open_card
from tests.registry.factories import Tree, make_member

URL = "/api/v1/mobility/mobile-members"
AsRole = Callable[..., httpx.AsyncClient]


def days_ago(n: int) -> str:
    return str(date.today() - timedelta(days=n))


async def member_status(registry: httpx.AsyncClient, member_id: str) -> str:
    r = await registry.get(f"/api/v1/registry/members/{member_id}")
    return str(r.json()["status"])


class TestCreateMobileMember:
    async def test_outflow_card_is_active_and_the_member_becomes_mobile(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        card = await open_card(admin, member["id"])
        assert card["status"] == "active"
        assert card["org_id"] == tree.community_a["id"]
        assert card["place"] is None and card["contact_phone"] is None
        assert card["contact_phone_masked"] == "138****8000"
        await pump()
        assert await member_status(registry, member["id"]) == "mobile"

    async def test_whereabouts_are_encrypted_at_rest(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        card = await open_card(admin, member["id"])
        async with db() as s:
            raw = await s.scalar(
                select(mobile_cards.c.place_cipher).where(mobile_cards.c.id == card["id"])
            )
        assert raw is not None and "深圳".encode() not in bytes(raw)

    async def test_a_second_open_card_is_a_conflict(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        await open_card(admin, member["id"])
        r = await admin.post(URL, json=card_body(member["id"]))
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"

    async def test_unknown_member_and_unknown_fields_are_422(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await admin.post(URL, json=card_body("00000000-0000-4000-8000-000000000000"))
        assert r.status_code == 422
        r = await admin.post(URL, json={**card_body(tree.city["id"]), "colour": "red"})
        assert r.status_code == 422

    async def test_viewer_cannot_open_a_card(
        self, as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as viewer:
            r = await viewer.post(URL, json=card_body(member["id"]))
        assert r.status_code == 403

    async def test_sibling_community_admin_cannot_open_a_card_for_my_member(
        self, as_role: AsRole, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        async with as_role("org_admin", org_id=tree.community_b["id"]) as other:
            r = await other.post(URL, json=card_body(member["id"]))
        assert r.status_code == 422

    async def test_same_idempotency_key_replays_the_first_card(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        body = card_body(member["id"])
        first = await admin.post(URL, json=body, headers={"Idempotency-Key": "k1"})
        again = await admin.post(URL, json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()


class TestGetMobileMember:
    async def test_single_read_shows_whereabouts_and_contacts_and_is_audited(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        card = await open_card(admin, member["id"])
        await admin.post(
            f"{URL}/{card['id']}/contacts",
            json={
                "on": days_ago(1),
                "channel": "phone",
                "attended_org_life": True,
                "notes": "在厂里",
            },
        )
        r = await admin.get(f"{URL}/{card['id']}")
        assert r.status_code == 200
        assert r.headers["etag"] == '"2"' and r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["place"] == "广东省深圳市宝安区"
        assert body["contact_phone"] == "13800138000"
        assert [c["notes"] for c in body["contacts"]] == ["在厂里"]
        async with db() as s:
            n = await s.scalar(
                text(
                    "SELECT count(*) FROM mobility.audit_log "
                    "WHERE action = 'mobile.read' AND record_id = :id"
                ),
                {"id": card["id"]},
            )
        assert n == 1

    async def test_other_community_gets_404_and_member_sees_own_card(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        card = await open_card(admin, member["id"])
        async with as_role("org_admin", org_id=tree.community_b["id"]) as other:
            assert (await other.get(f"{URL}/{card['id']}")).status_code == 404
        async with as_role("member", member_id=member["id"]) as me:
            assert (await me.get(f"{URL}/{card['id']}")).status_code == 200
        async with as_role("auditor") as auditor:
            assert (await auditor.get(f"{URL}/{card['id']}")).status_code == 403


class TestListMobileMembers:
    async def test_lists_omit_whereabouts_and_never_leak_other_subtrees(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
    ) -> None:
        a = await make_member(registry, org_id=tree.community_a["id"])
        b = await make_member(registry, org_id=tree.community_b["id"])
        await pump()
        await open_card(admin, a["id"])
        await open_card(admin, b["id"])
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as viewer:
            items = (await viewer.get(URL)).json()["items"]
        assert [i["member_id"] for i in items] == [a["id"]]
        assert items[0]["place"] is None
        async with as_role("org_viewer", org_id=tree.street["id"]) as street:
            assert len((await street.get(URL, params={"limit": 1})).json()["items"]) == 1
            page = (await street.get(URL, params={"limit": 1})).json()
            rest = (
                await street.get(URL, params={"limit": 1, "cursor": page["next_cursor"]})
            ).json()
        assert {page["items"][0]["member_id"], rest["items"][0]["member_id"]} == {a["id"], b["id"]}

    async def test_silent_card_reads_lost_contact_at_once_and_filters_agree(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        quiet = await make_member(registry, org_id=tree.community_a["id"])
        fresh = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        await open_card(admin, quiet["id"], left_on=days_ago(181))
        await open_card(admin, fresh["id"], left_on=days_ago(179))
        lost = (await admin.get(URL, params={"status": "lost_contact"})).json()["items"]
        assert [c["member_id"] for c in lost] == [quiet["id"]]
        active = (
            await admin.get(URL, params={"status": "active", "org_id": tree.community_a["id"]})
        ).json()
        assert [c["member_id"] for c in active["items"]] == [fresh["id"]]


class TestAddMobileMemberContact:
    async def test_contact_brings_a_lost_member_back_and_the_registry_follows(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        card = await open_card(admin, member["id"], left_on=days_ago(200))
        await pump()
        assert await member_status(registry, member["id"]) == "mobile"
        async with db() as s:
            assert await publish_lost_contacts(s, days=180) == 1
            assert await publish_lost_contacts(s, days=180) == 0
            await s.commit()
        await pump()
        assert await member_status(registry, member["id"]) == "lost_contact"
        r = await admin.post(
            f"{URL}/{card['id']}/contacts",
            json={"on": days_ago(0), "channel": "visit", "attended_org_life": False},
        )
        assert r.status_code == 201
        assert r.json()["status"] == "active"
        assert r.json()["last_contact_on"] == days_ago(0)
        await pump()
        assert await member_status(registry, member["id"]) == "mobile"

    async def test_contact_before_leaving_or_in_the_future_is_422(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        card = await open_card(admin, member["id"], left_on=days_ago(5))
        for on in (days_ago(6), str(date.today() + timedelta(days=1))):
            r = await admin.post(
                f"{URL}/{card['id']}/contacts", json={"on": on, "channel": "phone"}
            )
            assert r.status_code == 422
        r = await admin.post(
            f"{URL}/{card['id']}/contacts", json={"on": days_ago(1), "channel": "fax"}
        )
        assert r.status_code == 422


class TestReturnMobileMember:
    async def test_return_ends_the_card_and_the_member_is_active_again(
        self, admin: httpx.AsyncClient, registry: httpx.AsyncClient, tree: Tree, pump: EventPump
    ) -> None:
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        card = await open_card(admin, member["id"], left_on=days_ago(300))
        r = await admin.post(f"{URL}/{card['id']}/return", json={})
        assert r.status_code == 200
        assert r.json()["status"] == "returned"
        assert r.json()["returned_on"] == days_ago(0)
        await pump()
        assert await member_status(registry, member["id"]) == "active"
        again = await admin.post(f"{URL}/{card['id']}/return", json={})
        assert again.status_code == 409
        contact = await admin.post(
            f"{URL}/{card['id']}/contacts", json={"on": days_ago(0), "channel": "phone"}
        )
        assert contact.status_code == 409
        # A returned member may leave again with a new card.
        await open_card(admin, member["id"])
