"""`/api/v1/webhooks`: who registers what, the secret shown once, scope like everywhere
else, and URLs that may not be targets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.webhooks.ssrf import AddressRefused, check_target, system_resolver
from tests.registry.factories import Tree
from tests.webhooks.conftest import PUBLIC_URL, Dns
from tests.webhooks.helpers import HOOKS, issue_key, register

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]
Gw = Callable[..., httpx.AsyncClient]
Sessions = async_sessionmaker[AsyncSession]


class TestCreateWebhook:
    async def test_secret_is_shown_once_and_stored_encrypted(
        self, admin_client: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        hook = await register(admin_client, PUBLIC_URL, org_id=tree.city["id"])
        assert hook["secret"].startswith("whsec_") and hook["org_id"] == tree.city["id"]
        got = await admin_client.get(f"{HOOKS}/{hook['id']}")
        assert got.status_code == 200 and "secret" not in got.json()
        async with db() as session:
            stored = await session.scalar(
                text("SELECT secret_encrypted FROM gateway.webhooks WHERE id = CAST(:i AS uuid)"),
                {"i": hook["id"]},
            )
        assert hook["secret"].encode() not in stored and hook["secret"][6:].encode() not in stored

    async def test_org_admin_registers_for_its_subtree_only(
        self, as_user: AsUser, tree: Tree
    ) -> None:
        c = await as_user("org_admin", org_id=tree.community_a["id"])
        hook = await register(c, PUBLIC_URL)
        assert hook["org_id"] == tree.community_a["id"]
        assert (await register(c, PUBLIC_URL, org_id=tree.building_a1["id"]))["org_id"]
        r = await c.post(
            HOOKS, json={"url": PUBLIC_URL, "events": ["*"], "org_id": tree.community_b["id"]}
        )
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")

    async def test_api_key_registers_for_its_org(
        self, admin_client: httpx.AsyncClient, gw: Gw, tree: Tree
    ) -> None:
        key = await issue_key(admin_client, tree.community_a["id"])
        hook = await register(gw(X_API_Key=key), PUBLIC_URL, events=["member.*"])
        assert hook["org_id"] == tree.community_a["id"] and hook["events"] == ["member.*"]
        assert hook["created_by"].startswith("apikey:")

    async def test_sync_only_key_is_403(
        self, admin_client: httpx.AsyncClient, gw: Gw, tree: Tree
    ) -> None:
        key = await issue_key(admin_client, tree.community_a["id"], scopes=["sync"])
        r = await gw(X_API_Key=key).post(HOOKS, json={"url": PUBLIC_URL, "events": ["*"]})
        assert r.status_code == 403

    async def test_only_an_admin_allows_private_targets(
        self, admin_client: httpx.AsyncClient, as_user: AsUser, tree: Tree
    ) -> None:
        c = await as_user("org_admin", org_id=tree.community_a["id"])
        body = {"url": "http://127.0.0.1:9/hook", "events": ["*"], "allow_private": True}
        assert (await c.post(HOOKS, json=body)).status_code == 403
        hook = await register(admin_client, **body)  # type: ignore[arg-type]
        assert hook["allow_private"] is True

    @pytest.mark.parametrize("role", ["org_viewer", "auditor"])
    async def test_other_roles_are_403(self, as_user: AsUser, tree: Tree, role: str) -> None:
        org = {"org_id": tree.community_a["id"]} if role == "org_viewer" else {}
        c = await as_user(role, **org)
        r = await c.post(HOOKS, json={"url": PUBLIC_URL, "events": ["*"]})
        assert r.status_code == 403

    async def test_anonymous_is_401(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get(HOOKS)
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")

    @pytest.mark.parametrize(
        "body",
        [
            {"url": PUBLIC_URL, "events": ["*"], "secret": "mine"},
            {"url": PUBLIC_URL, "events": []},
            {"url": PUBLIC_URL, "events": ["DROP TABLE"]},
            {"url": "x" * 3000, "events": ["*"]},
            {"events": ["*"]},
        ],
    )
    async def test_invalid_body_is_422(
        self, admin_client: httpx.AsyncClient, body: dict[str, object]
    ) -> None:
        r = await admin_client.post(HOOKS, json=body)
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")


class TestUrlGuard:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1/hook",
            "http://127.1.2.3:8080/hook",
            "http://localhost/hook",
            "http://api.localhost/hook",
            "http://10.1.2.3/hook",
            "http://172.20.0.5/hook",
            "http://192.168.1.10/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.100.100.200/latest/meta-data/",
            "http://[::1]/hook",
            "http://[fe80::1]/hook",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://[::ffff:127.0.0.1]/hook",
            "http://0.0.0.0/hook",
            "http://224.0.0.1/hook",
            "https://loopback.example.com/hook",  # resolves to 127.0.0.1
            "https://mixed.example.com/hook",  # one public address, one private
            "https://nowhere.example.com/hook",  # does not resolve
            "ftp://hooks.example.com/hook",
            "https://user:pw@hooks.example.com/hook",
            "not a url",
        ],
    )
    async def test_internal_or_unusable_targets_are_refused(
        self, admin_client: httpx.AsyncClient, dns: Dns, url: str
    ) -> None:
        dns.table["loopback.example.com"] = ["127.0.0.1"]
        dns.table["mixed.example.com"] = ["93.184.215.14", "10.0.0.7"]
        r = await admin_client.post(HOOKS, json={"url": url, "events": ["*"]})
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["type"].endswith("webhook-url-refused")
        assert problem["errors"][0]["field"] == "url"

    async def test_admin_may_allow_a_loopback_target(self, admin_client: httpx.AsyncClient) -> None:
        hook = await register(admin_client, "http://localhost:9/hook", allow_private=True)
        assert hook["allow_private"] is True

    async def test_localhost_resolves_to_loopback_and_is_refused(
        self,
    ) -> None:
        assert set(await system_resolver("localhost", 80)) & {"127.0.0.1", "::1"}
        with pytest.raises(AddressRefused, match="internal"):
            await check_target(
                "http://localhost/x", allow_http=True, allow_private=False, resolver=system_resolver
            )

    async def test_production_takes_https_only(self, dns: Dns) -> None:
        with pytest.raises(AddressRefused, match="https"):
            await check_target(
                "http://hooks.example.com/x", allow_http=False, allow_private=False, resolver=dns
            )
        target = await check_target(
            "https://hooks.example.com/x", allow_http=False, allow_private=False, resolver=dns
        )
        assert target.address == "93.184.215.14"


class TestListAndDelete:
    async def test_each_sees_only_its_subtree(
        self, admin_client: httpx.AsyncClient, as_user: AsUser, gw: Gw, tree: Tree
    ) -> None:
        a = await register(admin_client, PUBLIC_URL, org_id=tree.community_a["id"])
        b = await register(admin_client, PUBLIC_URL, org_id=tree.community_b["id"])
        everything = await register(admin_client, PUBLIC_URL)
        street_admin = await as_user("org_admin", org_id=tree.street["id"])
        a_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        key_b = gw(X_API_Key=await issue_key(admin_client, tree.community_b["id"]))

        async def ids(c: httpx.AsyncClient) -> set[str]:
            r = await c.get(HOOKS)
            assert r.status_code == 200, r.text
            return {h["id"] for h in r.json()["items"]}

        assert await ids(admin_client) >= {a["id"], b["id"], everything["id"]}
        assert await ids(street_admin) == {a["id"], b["id"]}
        assert await ids(a_admin) == {a["id"]}
        assert await ids(key_b) == {b["id"]}
        for c, hidden in ((a_admin, b), (a_admin, everything), (key_b, a)):
            assert (await c.get(f"{HOOKS}/{hidden['id']}")).status_code == 404
            assert (await c.delete(f"{HOOKS}/{hidden['id']}")).status_code == 404

    async def test_delete_removes_the_webhook(
        self, admin_client: httpx.AsyncClient, as_user: AsUser, tree: Tree
    ) -> None:
        c = await as_user("org_admin", org_id=tree.community_a["id"])
        hook = await register(c, PUBLIC_URL)
        assert (await c.delete(f"{HOOKS}/{hook['id']}")).status_code == 204
        assert (await c.get(f"{HOOKS}/{hook['id']}")).status_code == 404
        assert (await admin_client.delete(f"{HOOKS}/{hook['id']}")).status_code == 404

    async def test_unknown_or_malformed_id_is_404_or_422(
        self, admin_client: httpx.AsyncClient
    ) -> None:
        r = await admin_client.get(f"{HOOKS}/00000000-0000-0000-0000-000000000000")
        assert r.status_code == 404
        assert (await admin_client.get(f"{HOOKS}/nope")).status_code == 422

    async def test_pages_through_webhooks(self, admin_client: httpx.AsyncClient) -> None:
        made = {(await register(admin_client, PUBLIC_URL))["id"] for _ in range(3)}
        seen: set[str] = set()
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await admin_client.get(HOOKS, params=params)).json()
            seen |= {h["id"] for h in page["items"]}
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert made <= seen
