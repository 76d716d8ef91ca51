"""API keys: issued once, stored hashed, exchanged at the door for an integration token,
revocable, and managed only within one's scope."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.models import ApiKey
from tests.gateway.conftest import ServiceRouter
from tests.helpers import PUBLIC_PEM
from tests.registry.factories import Tree, make_member

KEYS = "/api/v1/auth/api-keys"
ORGS = "/api/v1/registry/orgs"

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]
Gw = Callable[..., httpx.AsyncClient]


async def _issue(
    c: httpx.AsyncClient, org_id: str, scopes: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    r = await c.post(
        KEYS, json={"name": "人事系统", "org_id": org_id, "scopes": scopes or ["read"], **extra}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


class TestCreateApiKey:
    async def test_key_is_shown_once_and_stored_hashed(
        self, admin_client: httpx.AsyncClient, tree: Tree, db: async_sessionmaker[AsyncSession]
    ) -> None:
        created = await _issue(admin_client, tree.community_a["id"], ["sync", "read"])
        key = created["key"]
        assert re.fullmatch(rf"lx_{created['prefix']}_[A-Za-z0-9_-]{{43}}", key)
        assert created["scopes"] == ["read", "sync"]
        async with db() as s:
            row = (await s.scalars(select(ApiKey).where(col(ApiKey.id) == created["id"]))).one()
        assert row.prefix == created["prefix"]
        assert key.encode() not in row.key_hash and len(row.key_hash) == 32
        listed = await admin_client.get(KEYS)
        assert listed.status_code == 200
        assert [k["id"] for k in listed.json()["items"]] == [created["id"]]
        assert "key" not in listed.json()["items"][0]
        assert key not in listed.text

    async def test_idempotent_replay_does_not_show_the_key_again(
        self, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        h = {"Idempotency-Key": "key-1"}
        body = {"name": "x", "org_id": tree.community_a["id"], "scopes": ["read"]}
        first = await admin_client.post(KEYS, json=body, headers=h)
        again = await admin_client.post(KEYS, json=body, headers=h)
        assert first.status_code == again.status_code == 201
        assert first.json()["key"] and again.json()["key"] is None
        assert first.json()["id"] == again.json()["id"]

    async def test_unknown_scope_and_field_are_422(
        self, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await admin_client.post(
            KEYS,
            json={"name": "x", "org_id": tree.community_a["id"], "scopes": ["admin"], "ttl": 1},
        )
        assert r.status_code == 422
        assert {e["field"].split(".")[0] for e in r.json()["errors"]} == {"scopes", "ttl"}
        empty = await admin_client.post(
            KEYS, json={"name": "x", "org_id": tree.community_a["id"], "scopes": []}
        )
        assert empty.status_code == 422

    async def test_org_admin_issues_within_scope_only(self, as_user: AsUser, tree: Tree) -> None:
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        await _issue(org_admin, tree.building_a1["id"])
        r = await org_admin.post(
            KEYS, json={"name": "x", "org_id": tree.community_b["id"], "scopes": ["read"]}
        )
        assert r.status_code == 404

    async def test_viewers_auditors_and_members_cannot(
        self, as_user: AsUser, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        member = await make_member(admin_client, org_id=tree.community_a["id"])
        for role, extra in [
            ("org_viewer", {"org_id": tree.community_a["id"]}),
            ("auditor", {}),
            ("member", {"member_id": member["id"]}),
        ]:
            c = await as_user(role, **extra)
            body = {"name": "x", "org_id": tree.community_a["id"], "scopes": ["read"]}
            assert (await c.post(KEYS, json=body)).status_code == 403, role
            assert (await c.get(KEYS)).status_code == 403, role


class TestListApiKeys:
    async def test_org_admin_sees_own_subtree_only(
        self, as_user: AsUser, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        a = await _issue(admin_client, tree.community_a["id"])
        a1 = await _issue(admin_client, tree.building_a1["id"])
        await _issue(admin_client, tree.community_b["id"])
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        r = await org_admin.get(KEYS)
        assert r.status_code == 200
        assert {k["id"] for k in r.json()["items"]} == {a["id"], a1["id"]}
        sibling = await org_admin.get(KEYS, params={"org_id": tree.community_b["id"]})
        assert sibling.status_code == 200 and sibling.json()["items"] == []

    async def test_pages_with_a_cursor(self, admin_client: httpx.AsyncClient, tree: Tree) -> None:
        ids = {(await _issue(admin_client, tree.community_a["id"]))["id"] for _ in range(3)}
        first = (await admin_client.get(KEYS, params={"limit": 2})).json()
        assert len(first["items"]) == 2 and first["next_cursor"]
        second = (
            await admin_client.get(KEYS, params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        assert {k["id"] for k in first["items"] + second["items"]} == ids
        assert second["next_cursor"] is None


class TestUsingApiKeys:
    async def test_reads_through_the_gateway_as_integration(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        gw: Gw,
        upstream: ServiceRouter,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        created = await _issue(admin_client, tree.community_a["id"])
        c = gw(X_API_Key=created["key"])
        r = await c.get(f"{ORGS}/{tree.community_a['id']}")
        assert r.status_code == 200, r.text
        sent = upstream.requests[-1]
        assert "x-api-key" not in sent.headers
        claims = jwt.decode(
            sent.headers["authorization"].removeprefix("Bearer "),
            PUBLIC_PEM,
            algorithms=["EdDSA"],
            audience="lianxin",
        )
        assert claims["role"] == "integration"
        assert claims["sub"] == f"apikey:{created['id']}"
        assert claims["org_id"] == tree.community_a["id"]
        assert claims["scopes"] == ["read"]
        assert claims["exp"] - claims["iat"] <= 300
        # The service scopes the key to its org's subtree.
        assert (await c.get(f"{ORGS}/{tree.community_b['id']}")).status_code == 404
        async with db() as s:
            used = await s.scalar(
                select(col(ApiKey.last_used_at)).where(col(ApiKey.id) == created["id"])
            )
        assert used is not None

    async def test_revoked_key_is_401(
        self, admin_client: httpx.AsyncClient, tree: Tree, gw: Gw
    ) -> None:
        created = await _issue(admin_client, tree.community_a["id"])
        c = gw(X_API_Key=created["key"])
        assert (await c.get(f"{ORGS}/{tree.community_a['id']}")).status_code == 200
        assert (await admin_client.delete(f"{KEYS}/{created['id']}")).status_code == 204
        r = await c.get(f"{ORGS}/{tree.community_a['id']}")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        # Revoking again is fine; the key stays listed as revoked.
        assert (await admin_client.delete(f"{KEYS}/{created['id']}")).status_code == 204
        listed = await admin_client.get(KEYS, params={"include_revoked": "true"})
        assert listed.json()["items"][0]["revoked_at"] is not None

    async def test_unknown_or_malformed_key_is_401(self, gw: Gw, tree: Tree) -> None:
        for key in ["lx_000000000000_" + "A" * 43, "nonsense", ""]:
            r = await gw(X_API_Key=key).get(f"{ORGS}/{tree.community_a['id']}")
            assert r.status_code == 401, key

    async def test_key_does_not_write_outside_sync(
        self, admin_client: httpx.AsyncClient, tree: Tree, gw: Gw
    ) -> None:
        created = await _issue(admin_client, tree.community_a["id"], ["read", "sync"])
        r = await gw(X_API_Key=created["key"]).post(
            ORGS,
            json={
                "code": "K1",
                "name": "x",
                "kind": "group",
                "area_level": "building",
                "parent_id": tree.community_a["id"],
            },
        )
        assert r.status_code == 403

    async def test_sync_only_key_does_not_read(
        self, admin_client: httpx.AsyncClient, tree: Tree, gw: Gw
    ) -> None:
        created = await _issue(admin_client, tree.community_a["id"], ["sync"])
        r = await gw(X_API_Key=created["key"]).get(f"{ORGS}/{tree.community_a['id']}")
        assert r.status_code == 403

    async def test_key_and_bearer_together_is_400(
        self, admin_client: httpx.AsyncClient, admin_token: str, tree: Tree, gw: Gw
    ) -> None:
        created = await _issue(admin_client, tree.community_a["id"])
        r = await gw(admin_token, X_API_Key=created["key"]).get(ORGS)
        assert r.status_code == 400


class TestRevokeApiKey:
    async def test_org_admin_revokes_within_scope_only(
        self, as_user: AsUser, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        mine = await _issue(admin_client, tree.building_a1["id"])
        theirs = await _issue(admin_client, tree.community_b["id"])
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        assert (await org_admin.delete(f"{KEYS}/{theirs['id']}")).status_code == 404
        assert (await org_admin.delete(f"{KEYS}/{mine['id']}")).status_code == 204

    async def test_unknown_key_is_404(self, admin_client: httpx.AsyncClient) -> None:
        r = await admin_client.delete(f"{KEYS}/00000000-0000-4000-8000-000000000000")
        assert r.status_code == 404
