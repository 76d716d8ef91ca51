"""The audit trail: the merged `GET /api/v1/audit`, the gateway's own events, the
append-only tables, and a member's access log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.gateway.conftest import ADMIN_USER, SERVICES
from tests.registry.factories import Tree, make_member, make_org, next_id_number

AUDIT = "/api/v1/audit"
ACCESS_LOG = "/api/v1/auth/me/access-log"

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]


def _missing(service_apps: dict[str, FastAPI]) -> list[str]:
    """The services the harness does not run: the merged log names them as incomplete."""
    return sorted(s for s in SERVICES if s not in service_apps)


async def _all_pages(c: httpx.AsyncClient, url: str, **params: Any) -> list[dict[str, Any]]:
    """Every page to the end. The trail holds what earlier tests committed too, so the
    number of pages is not known here: a cursor that comes back is the failure."""
    items: list[dict[str, Any]] = []
    cursor = None
    seen: set[str] = set()
    while True:
        r = await c.get(url, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        items.extend(r.json()["items"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items
        assert cursor not in seen, "the cursor did not move on"
        seen.add(cursor)


@pytest.fixture
async def auditor_client(as_user: AsUser) -> httpx.AsyncClient:
    """An auditor (made by the security admin): the only role reading the trail."""
    return await as_user("auditor")


class TestMergedAuditLog:
    async def test_a_write_shows_who_when_from_where_with_the_request_id(
        self, admin_client: httpx.AsyncClient, as_user: AsUser, tree: Tree
    ) -> None:
        r = await admin_client.post(
            "/api/v1/registry/orgs",
            json={
                "code": "AUD-1",
                "name": "审计楼",
                "kind": "group",
                "area_level": "building",
                "parent_id": tree.community_a["id"],
            },
            headers={"X-Request-ID": "audit-write-1"},
        )
        assert r.status_code == 201
        auditor = await as_user("auditor")
        log = await auditor.get(AUDIT, params={"action": "org.create", "actor": ADMIN_USER})
        assert log.status_code == 200
        entries = [e for e in log.json()["items"] if e["record_id"] == r.json()["id"]]
        assert len(entries) == 1
        entry = entries[0]
        assert entry["service"] == "registry"
        assert entry["actor"] == ADMIN_USER and entry["role"] == "admin"
        assert entry["request_id"] == "audit-write-1"
        assert entry["client_addr"] == "203.0.113.7"  # the client, not the gateway
        assert entry["at"]

    async def test_gateway_events_are_merged_in(
        self,
        auditor_client: httpx.AsyncClient,
        anon: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
    ) -> None:
        await anon.post("/api/v1/auth/token", data={"username": ADMIN_USER, "password": "x"})
        r = await auditor_client.get(AUDIT, params={"action": "auth.login"})
        outcomes = {(e["service"], e["outcome"]) for e in r.json()["items"]}
        assert {("gateway", "failure"), ("gateway", "success")} <= outcomes

    async def test_missing_services_are_named_not_fatal(
        self,
        auditor_client: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
        service_apps: dict[str, FastAPI],
    ) -> None:
        r = await auditor_client.get(AUDIT)
        assert r.status_code == 200
        assert r.json()["incomplete"] == _missing(service_apps)

    async def test_a_stopped_registry_is_named_too(
        self,
        auditor_client: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
        upstream: Any,
        service_apps: dict[str, FastAPI],
    ) -> None:
        del upstream._transports["registry"]
        r = await auditor_client.get(AUDIT)
        assert r.status_code == 200
        assert "registry" in r.json()["incomplete"]
        assert all(e["service"] == "gateway" for e in r.json()["items"])

    async def test_pages_merge_exactly(
        self,
        auditor_client: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
        anon: httpx.AsyncClient,
        tree: Tree,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        # This test's records (the shared log holds what earlier tests committed too): the
        # database stamps them with the start of the transaction every app here shares,
        # which came before this test's fixtures, however long they took.
        async with db() as session:
            since = (await session.execute(text("SELECT now()"))).scalar_one().isoformat()
        for i in range(4):
            await make_org(
                admin_client,
                parent_id=tree.community_a["id"],
                kind="group",
                area_level="building",
                name=f"楼{i}",
            )
            await anon.post("/api/v1/auth/token", data={"username": ADMIN_USER, "password": "x"})
        whole = (await auditor_client.get(AUDIT, params={"limit": 500, "since": since})).json()
        whole = whole["items"]
        assert 8 <= len(whole) < 500
        paged = await _all_pages(auditor_client, AUDIT, limit=3, since=since)
        assert [e["id"] for e in paged] == [e["id"] for e in whole]
        assert len({e["service"] for e in whole}) == 2
        keys = [(e["at"], e["id"]) for e in whole]
        assert keys == sorted(keys, reverse=True)

    async def test_filters_apply_to_every_source(
        self, auditor_client: httpx.AsyncClient, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        items = await _all_pages(auditor_client, AUDIT, actor=ADMIN_USER, limit=2)
        assert items and all(e["actor"] == ADMIN_USER for e in items)
        assert {e["service"] for e in items} == {"gateway", "registry"}

    async def test_a_cursor_from_other_filters_is_422(
        self, auditor_client: httpx.AsyncClient, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        first = (await auditor_client.get(AUDIT, params={"limit": 1})).json()
        r = await auditor_client.get(
            AUDIT, params={"limit": 1, "cursor": first["next_cursor"], "actor": "x"}
        )
        assert r.status_code == 422
        bad = await auditor_client.get(AUDIT, params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422

    async def test_naive_times_are_422(
        self, auditor_client: httpx.AsyncClient, admin_client: httpx.AsyncClient
    ) -> None:
        r = await auditor_client.get(AUDIT, params={"since": "2026-01-01T00:00:00"})
        assert r.status_code == 422
        ok = await auditor_client.get(AUDIT, params={"since": "2026-01-01T00:00:00+08:00"})
        assert ok.status_code == 200

    async def test_admins_and_security_admins_get_403(
        self, admin_client: httpx.AsyncClient, as_user: AsUser
    ) -> None:
        """Separate duties: whoever does the work, or keeps the accounts, reads no trail."""
        for c in (admin_client, await as_user("security_admin")):
            r = await c.get(AUDIT)
            assert r.status_code == 403
            assert r.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize("role", ["org_admin", "org_viewer"])
    async def test_org_roles_get_403(self, as_user: AsUser, tree: Tree, role: str) -> None:
        c = await as_user(role, org_id=tree.community_a["id"])
        r = await c.get(AUDIT)
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"

    async def test_members_get_403(
        self, as_user: AsUser, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        member = await make_member(admin_client, org_id=tree.community_a["id"])
        c = await as_user("member", member_id=member["id"])
        assert (await c.get(AUDIT)).status_code == 403

    async def test_anonymous_gets_401(self, anon: httpx.AsyncClient) -> None:
        assert (await anon.get(AUDIT)).status_code == 401

    async def test_services_raw_logs_are_not_public(self, admin_client: httpx.AsyncClient) -> None:
        for path in [
            "/api/v1/registry/audit-log",
            "/api/v1/registry/audit-log/",
            "/api/v1/registry//audit-log",
            "/api/v1/registry/Audit-Log",
        ]:
            r = await admin_client.get(path)
            assert r.status_code == 404, path


class TestGatewayEvents:
    async def test_user_and_key_events_are_recorded(
        self, auditor_client: httpx.AsyncClient, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        user = await admin_client.post(
            "/api/v1/auth/users",
            json={
                "username": "ev-user",
                "password": "Correct-horse-42",
                "role": "org_viewer",
                "org_id": tree.community_a["id"],
            },
        )
        key = await admin_client.post(
            "/api/v1/auth/api-keys",
            json={"name": "k", "org_id": tree.community_a["id"], "scopes": ["read"]},
        )
        await admin_client.delete(f"/api/v1/auth/api-keys/{key.json()['id']}")
        r = await auditor_client.get(AUDIT, params={"actor": ADMIN_USER, "limit": 500})
        seen = {(e["action"], e["record_id"]) for e in r.json()["items"]}
        assert ("user.create", user.json()["id"]) in seen
        assert ("api_key.create", key.json()["id"]) in seen
        assert ("api_key.revoke", key.json()["id"]) in seen


COUNT_SQL = "SELECT count(*) FROM {schema}.audit_log"


class TestAppendOnly:
    @pytest.mark.parametrize("schema", ["gateway", "registry"])
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE {schema}.audit_log SET actor = 'someone else'",
            "DELETE FROM {schema}.audit_log",
            "TRUNCATE {schema}.audit_log",
        ],
    )
    async def test_the_log_refuses_changes(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        db: async_sessionmaker[AsyncSession],
        schema: str,
        statement: str,
    ) -> None:
        async with db() as s:
            count = await s.scalar(text(COUNT_SQL.format(schema=schema)))
            assert count
            with pytest.raises(DBAPIError, match="append-only"):
                async with s.begin_nested():
                    await s.execute(text(statement.format(schema=schema)))
            assert await s.scalar(text(COUNT_SQL.format(schema=schema))) == count


class TestAccessLog:
    async def test_a_member_sees_who_read_their_id_number(
        self, as_user: AsUser, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        member = await make_member(
            org_admin, org_id=tree.community_a["id"], id_number=next_id_number()
        )
        other = await make_member(org_admin, org_id=tree.community_a["id"])
        r = await org_admin.get(f"/api/v1/registry/members/{member['id']}/id-number")
        assert r.status_code == 200
        await org_admin.get(f"/api/v1/registry/members/{other['id']}/id-number")
        me = await as_user("member", member_id=member["id"])
        log = await me.get(ACCESS_LOG)
        assert log.status_code == 200, log.text
        body = log.json()
        reads = [e for e in body["items"] if e["action"] == "member.read_id_number"]
        assert len(reads) == 1
        assert reads[0]["role"] == "org_admin"
        assert reads[0]["service"] == "registry"
        assert reads[0]["record_id"] == member["id"]
        # About them only, and never where anyone did it from.
        assert all("client_addr" not in e for e in body["items"])
        assert other["id"] not in {e["record_id"] for e in body["items"]}
        # Their account's creation and their own login are in it too.
        gateway_actions = {e["action"] for e in body["items"] if e["service"] == "gateway"}
        assert {"user.create", "auth.login"} <= gateway_actions

    async def test_pages(
        self, as_user: AsUser, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        member = await make_member(
            admin_client, org_id=tree.community_a["id"], id_number=next_id_number()
        )
        for _ in range(3):
            await admin_client.get(f"/api/v1/registry/members/{member['id']}/id-number")
        me = await as_user("member", member_id=member["id"])
        whole = (await me.get(ACCESS_LOG, params={"limit": 500})).json()["items"]
        paged = await _all_pages(me, ACCESS_LOG, limit=2)
        assert paged == whole and len(whole) >= 5

    async def test_other_roles_get_403(self, as_user: AsUser, tree: Tree) -> None:
        c = await as_user("org_admin", org_id=tree.community_a["id"])
        assert (await c.get(ACCESS_LOG)).status_code == 403
