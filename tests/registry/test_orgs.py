from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.registry.factories import Tree, make_member, make_org

ORGS = "/api/v1/registry/orgs"


class TestCreateOrg:
    async def test_admin_creates_root_and_child(self, admin: httpx.AsyncClient) -> None:
        root = await make_org(admin, kind="committee", area_level="city")
        child = await make_org(admin, parent_id=root["id"])
        assert child["parent_id"] == root["id"]
        assert child["depth"] == 1 and root["depth"] == 0

    async def test_duplicate_code_is_409(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        r = await admin.post(
            ORGS,
            json={
                "code": tree.street["code"],
                "name": "x",
                "kind": "branch",
                "area_level": "community",
                "parent_id": tree.city["id"],
            },
        )
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"

    async def test_unknown_field_and_enum_are_422(self, admin: httpx.AsyncClient) -> None:
        r = await admin.post(
            ORGS,
            json={
                "code": "X1",
                "name": "x",
                "kind": "cell",
                "area_level": "community",
                "color": "red",
            },
        )
        assert r.status_code == 422
        fields = {e["field"] for e in r.json()["errors"]}
        assert {"kind", "color"} <= fields

    async def test_org_admin_cannot_create_outside_scope(
        self, tree: Tree, as_role: Callable[..., httpx.AsyncClient]
    ) -> None:
        async with as_role("org_admin", org_id=tree.community_a["id"]) as c:
            r = await c.post(
                ORGS,
                json={
                    "code": "Y1",
                    "name": "y",
                    "kind": "group",
                    "area_level": "building",
                    "parent_id": tree.community_b["id"],
                },
            )
            assert r.status_code == 404
            ok = await c.post(
                ORGS,
                json={
                    "code": "Y2",
                    "name": "y",
                    "kind": "group",
                    "area_level": "building",
                    "parent_id": tree.community_a["id"],
                },
            )
            assert ok.status_code == 201

    async def test_idempotency_key_replays_first_response(self, admin: httpx.AsyncClient) -> None:
        body = {"code": "IDEM-1", "name": "幂等", "kind": "committee", "area_level": "city"}
        h = {"Idempotency-Key": "k-1"}
        first = await admin.post(ORGS, json=body, headers=h)
        again = await admin.post(ORGS, json=body, headers=h)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        other = await admin.post(ORGS, json={**body, "code": "IDEM-2"}, headers=h)
        assert other.status_code == 422


class TestListOrgs:
    async def test_subtree_filter(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        r = await admin.get(ORGS, params={"org_id": tree.community_a["id"]})
        ids = {o["id"] for o in r.json()["items"]}
        assert ids == {tree.community_a["id"], tree.building_a1["id"]}

    async def test_scope_hides_sibling_community(
        self, tree: Tree, as_role: Callable[..., httpx.AsyncClient]
    ) -> None:
        async with as_role("org_viewer", org_id=tree.community_b["id"]) as c:
            r = await c.get(ORGS)
            assert {o["id"] for o in r.json()["items"]} == {tree.community_b["id"]}
            one = await c.get(f"{ORGS}/{tree.community_a['id']}")
            assert one.status_code == 404

    async def test_keyset_pages_cover_everything_once(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 2, "org_id": tree.city["id"]}
            if cursor:
                params["cursor"] = cursor
            r = await admin.get(ORGS, params=params)
            assert r.status_code == 200
            seen += [o["id"] for o in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)) == 5

    async def test_cursor_from_other_filters_is_422(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await admin.get(ORGS, params={"limit": 1})
        cursor = r.json()["next_cursor"]
        bad = await admin.get(ORGS, params={"limit": 1, "cursor": cursor, "kind": "branch"})
        assert bad.status_code == 422

    async def test_limit_over_500_is_422(self, admin: httpx.AsyncClient) -> None:
        assert (await admin.get(ORGS, params={"limit": 501})).status_code == 422


class TestUpdateOrg:
    async def test_patch_requires_if_match(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        url = f"{ORGS}/{tree.community_a['id']}"
        assert (await admin.patch(url, json={"name": "新名"})).status_code == 428
        stale = await admin.patch(url, json={"name": "新名"}, headers={"If-Match": '"999"'})
        assert stale.status_code == 412
        etag = (await admin.get(url)).headers["ETag"]
        ok = await admin.patch(url, json={"name": "新名"}, headers={"If-Match": etag})
        assert ok.status_code == 200 and ok.json()["name"] == "新名"
        assert ok.headers["ETag"] != etag

    async def test_move_carries_the_subtree(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        url = f"{ORGS}/{tree.community_a['id']}"
        etag = (await admin.get(url)).headers["ETag"]
        r = await admin.patch(
            url, json={"parent_id": tree.community_b["id"]}, headers={"If-Match": etag}
        )
        assert r.status_code == 200
        under_b = await admin.get(ORGS, params={"org_id": tree.community_b["id"]})
        ids = {o["id"] for o in under_b.json()["items"]}
        assert {tree.community_a["id"], tree.building_a1["id"]} <= ids

    async def test_cannot_move_under_own_subtree(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        url = f"{ORGS}/{tree.street['id']}"
        etag = (await admin.get(url)).headers["ETag"]
        r = await admin.patch(
            url, json={"parent_id": tree.building_a1["id"]}, headers={"If-Match": etag}
        )
        assert r.status_code == 409

    async def test_viewer_cannot_write(
        self, tree: Tree, as_role: Callable[..., httpx.AsyncClient]
    ) -> None:
        async with as_role("org_viewer", org_id=tree.street["id"]) as c:
            url = f"{ORGS}/{tree.community_a['id']}"
            etag = (await c.get(url)).headers["ETag"]
            r = await c.patch(url, json={"name": "x"}, headers={"If-Match": etag})
            assert r.status_code == 403


class TestChildren:
    async def test_lists_direct_children_only(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        r = await admin.get(f"{ORGS}/{tree.street['id']}/children")
        assert {o["id"] for o in r.json()["items"]} == {
            tree.community_a["id"],
            tree.community_b["id"],
        }


class TestAuth:
    async def test_no_token_is_401(self, app: object) -> None:
        from tests.helpers import client

        async with client(app) as c:  # type: ignore[arg-type]
            r = await c.get(ORGS)
            assert r.status_code == 401
            assert r.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize(
        "authorization",
        [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc", "bearer not-a-jwt"],
    )
    async def test_the_member_card_read_takes_only_a_valid_bearer_token(
        self, app: object, admin: httpx.AsyncClient, tree: Tree, authorization: str | None
    ) -> None:
        """The card read resolves its caller without FastAPI's dependencies: the same 401
        (problem+json) as every other route for no, another or a bad scheme or token."""
        from tests.helpers import client

        member = await make_member(admin, org_id=tree.community_a["id"])
        headers = {} if authorization is None else {"Authorization": authorization}
        async with client(app) as c:  # type: ignore[arg-type]
            r = await c.get(f"/api/v1/registry/members/{member['id']}", headers=headers)
            orgs = await c.get(ORGS, headers=headers)
        assert r.status_code == orgs.status_code == 401, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["title"] == orgs.json()["title"]
