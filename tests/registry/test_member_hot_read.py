"""The member card read on the app's own asyncpg pool (`service/member_read.py`), as a
deployed app runs it (sessions bound to an engine, real commits): the same card, ETag and
scope as the ORM path the other tests go through."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry.app import create_app
from services.registry.service import member_read, scope
from services.registry.settings import RegistrySettings
from tests.helpers import client, mint
from tests.registry.factories import build_tree, make_member, make_org, next_id_number


@pytest.fixture
async def live_app(
    committed_db: async_sessionmaker[AsyncSession], registry_settings: RegistrySettings
) -> AsyncIterator[FastAPI]:
    app = create_app(registry_settings, sessionmaker=committed_db)
    async with app.router.lifespan_context(app):
        yield app
    assert member_read.hot_reads(app) is None  # the lifespan closed the pool


async def test_the_card_by_role(live_app: FastAPI) -> None:
    async with client(live_app, mint("admin", username="root")) as admin:
        tree = await build_tree(admin)
        card = await make_member(
            admin, org_id=tree.community_a["id"], id_number=next_id_number(), phone="13812345678"
        )
        path = f"/api/v1/registry/members/{card['id']}"
        r = await admin.get(path)
        assert r.status_code == 200
        assert r.headers["etag"] == '"1"'
        assert r.json() == card
    assert live_app.state.hot_reads is not None  # the pool, not the session, answered

    async with client(live_app, mint("org_admin", org_id=tree.street["id"])) as above:
        r = await above.get(path)
        assert r.status_code == 200 and r.json()["phone"] == "13812345678"
    async with client(live_app, mint("org_viewer", org_id=tree.community_a["id"])) as viewer:
        r = await viewer.get(path)
        assert r.status_code == 200 and r.json()["phone"] is None
    async with client(live_app, mint("org_admin", org_id=tree.community_b["id"])) as other:
        assert (await other.get(path)).status_code == 404
    async with client(live_app, mint("member", member_id=card["id"])) as me:
        r = await me.get(path)
        assert r.status_code == 200 and r.json()["phone"] == "13812345678"
    async with client(live_app, mint("auditor")) as auditor:
        assert (await auditor.get(path)).status_code == 403


@pytest.mark.parametrize("small_orgs", [64, 0])  # through the org index / in id order
async def test_a_subtree_page_by_page(
    live_app: FastAPI, small_orgs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scope, "SMALL_SUBTREE_ORGS", small_orgs)
    async with client(live_app, mint("admin", username="root")) as admin:
        tree = await build_tree(admin)
        created = {}
        for org in (tree.community_a, tree.community_b, tree.building_a1):
            for _ in range(3):
                card = await make_member(admin, org_id=org["id"], phone="13912345678")
                created[card["id"]] = card
        ids = set(created)
        outside = await make_member(admin, org_id=tree.city["id"])
        seen: list[str] = []
        cursor = None
        while True:
            params = {"org_id": tree.street["id"], "limit": 4}
            if cursor:
                params["cursor"] = cursor
            r = await admin.get("/api/v1/registry/members", params=params)
            assert r.status_code == 200
            seen += [m["id"] for m in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(ids) and outside["id"] not in seen
        # Each item is the member's card as its own read (and its creation) gives it.
        r = await admin.get("/api/v1/registry/members", params={"org_id": tree.street["id"]})
        for item in r.json()["items"][:3]:
            assert item == (await admin.get(f"/api/v1/registry/members/{item['id']}")).json()
            assert item == created[item["id"]]
        assert live_app.state.hot_reads is not None
    # An org role sees its own subtree only, through the same path.
    async with client(live_app, mint("org_viewer", org_id=tree.community_b["id"])) as viewer:
        r = await viewer.get(
            "/api/v1/registry/members", params={"org_id": tree.street["id"], "limit": 50}
        )
        assert r.status_code == 200
        assert len(r.json()["items"]) == 3
        assert all(m["org_id"] == tree.community_b["id"] for m in r.json()["items"])
        bad = await viewer.get(
            "/api/v1/registry/members", params={"org_id": tree.street["id"], "cursor": "x"}
        )
        assert bad.status_code == 422


async def test_a_subtree_page_shows_what_was_added_after_the_last_page(
    live_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The subtree's size (which picks the plan) is remembered for a while; its rows never
    # are: a community and members added after a page show on the next one.
    monkeypatch.setattr(scope, "SMALL_SUBTREE_ORGS", 4)
    monkeypatch.setattr(scope, "SMALL_SUBTREE_SHARE", 0.0)
    async with client(live_app, mint("admin", username="root")) as admin:
        tree = await build_tree(admin)
        first = await make_member(admin, org_id=tree.community_a["id"])
        params = {"org_id": tree.street["id"], "limit": 50}
        r = await admin.get("/api/v1/registry/members", params=params)
        assert [m["id"] for m in r.json()["items"]] == [first["id"]]
        # The street now has more orgs than a small subtree: its size as counted before
        # is stale, the page is not.
        for n in range(3):
            community = await make_org(admin, parent_id=tree.street["id"], name=f"新社区{n}")
            await make_member(admin, org_id=community["id"])
        later = await make_member(admin, org_id=tree.building_a1["id"])
        r = await admin.get("/api/v1/registry/members", params=params)
        assert r.status_code == 200
        ids = [m["id"] for m in r.json()["items"]]
        assert len(ids) == 5 and first["id"] in ids and later["id"] in ids
        assert ids == sorted(ids)
        # And once the remembered size expires, the same rows in the other form.
        monkeypatch.setattr(scope, "_sizes", {})
        again = await admin.get("/api/v1/registry/members", params=params)
        assert again.json() == r.json()


async def test_a_subtree_page_needs_no_session(
    live_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hot list reads on the app's pool; a page by other filters still takes the ORM
    # path, with a session of its own.
    async with client(live_app, mint("admin", username="root")) as admin:
        tree = await build_tree(admin)
        card = await make_member(admin, org_id=tree.community_a["id"])
        opened: list[object] = []
        maker = live_app.state.sessionmaker

        def counting() -> AsyncSession:
            session = maker()
            opened.append(session)
            return session

        monkeypatch.setattr(live_app.state, "sessionmaker", counting)
        r = await admin.get("/api/v1/registry/members", params={"org_id": tree.street["id"]})
        assert r.status_code == 200 and [m["id"] for m in r.json()["items"]] == [card["id"]]
        assert opened == []
        r = await admin.get(
            "/api/v1/registry/members",
            params={"org_id": tree.street["id"], "category": card["category"]},
        )
        assert r.status_code == 200 and [m["id"] for m in r.json()["items"]] == [card["id"]]
        assert len(opened) == 1
