"""Separate duties: the admin (party work: orgs, members, activities…), the security admin
(accounts, roles, API keys) and the auditor (the audit log) are separate roles. None of
them can do another's job: an admin grants no role above an org admin's and reads no audit
trail; a security admin reads no member record and changes no party data; an auditor reads
the trail and nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.settings import GatewaySettings
from tests.gateway.conftest import PASSWORD
from tests.registry.factories import Tree, make_member

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]
USERS = "/api/v1/auth/users"
KEYS = "/api/v1/auth/api-keys"
AUDIT = "/api/v1/audit"

_n = iter(range(10**6))


def account(role: str, **extra: Any) -> dict[str, Any]:
    return {"username": f"duty-{role}-{next(_n)}", "password": PASSWORD, "role": role, **extra}


async def test_only_the_security_admin_grants_the_powerful_roles(
    admin_client: httpx.AsyncClient, security_client: httpx.AsyncClient, tree: Tree
) -> None:
    for role in ("admin", "security_admin", "auditor"):
        r = await admin_client.post(USERS, json=account(role))
        assert r.status_code == 403, (role, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        r = await security_client.post(USERS, json=account(role))
        assert r.status_code == 201, (role, r.text)
        assert r.json()["role"] == role
    # Org-level accounts: the admin (anywhere) and the security admin both.
    for client in (admin_client, security_client):
        for role in ("org_admin", "org_viewer"):
            r = await client.post(USERS, json=account(role, org_id=tree.community_a["id"]))
            assert r.status_code == 201, r.text


async def test_member_accounts_come_from_whoever_may_see_the_record(
    admin_client: httpx.AsyncClient, security_client: httpx.AsyncClient, tree: Tree
) -> None:
    member = await make_member(admin_client, org_id=tree.community_a["id"])
    r = await security_client.post(USERS, json=account("member", member_id=member["id"]))
    assert r.status_code == 403, r.text
    r = await admin_client.post(USERS, json=account("member", member_id=member["id"]))
    assert r.status_code == 201, r.text


async def test_the_security_admin_reads_no_member_data_and_changes_no_party_data(
    admin_client: httpx.AsyncClient, security_client: httpx.AsyncClient, tree: Tree
) -> None:
    member = await make_member(admin_client, org_id=tree.community_a["id"])
    for path in (
        "/api/v1/registry/members",
        f"/api/v1/registry/members/{member['id']}",
        f"/api/v1/registry/members/{member['id']}/id-number",
        "/api/v1/registry/members/export",
        "/api/v1/activities/talks",
        "/api/v1/mobility/mobile-members",
        f"/api/v1/reports/orgs/{tree.city['id']}?year=2026",
        AUDIT,
    ):
        r = await security_client.get(path)
        assert r.status_code in (403, 404), (path, r.status_code, r.text)
        assert member["name"] not in r.text, path
    r = await security_client.post(
        "/api/v1/registry/orgs",
        json={"code": "SEC-X", "name": "不该建", "kind": "branch", "area_level": "community"},
    )
    assert r.status_code == 403, r.text
    r = await security_client.post(
        "/api/v1/registry/members",
        json={
            "name": "不该建",
            "gender": "male",
            "birth_date": "1970-01-01",
            "category": "retired",
            "org_id": tree.community_a["id"],
        },
    )
    assert r.status_code == 403, r.text


async def test_the_security_admin_manages_api_keys_of_any_org(
    security_client: httpx.AsyncClient, tree: Tree
) -> None:
    """It sees the org tree (names, codes) to place keys and accounts; no member in it."""
    assert (await security_client.get(f"/api/v1/registry/orgs/{tree.community_b['id']}")).is_success
    created = await security_client.post(
        KEYS, json={"name": "人事系统", "org_id": tree.community_b["id"], "scopes": ["sync"]}
    )
    assert created.status_code == 201, created.text
    listed = await security_client.get(KEYS)
    assert created.json()["id"] in {k["id"] for k in listed.json()["items"]}
    revoked = await security_client.delete(f"{KEYS}/{created.json()['id']}")
    assert revoked.status_code == 204, revoked.text


async def test_the_auditor_reads_the_trail_and_nothing_else(
    admin_client: httpx.AsyncClient, as_user: AsUser, tree: Tree
) -> None:
    member = await make_member(admin_client, org_id=tree.community_a["id"])
    auditor = await as_user("auditor")
    trail = await auditor.get(AUDIT, params={"action": "member.create"})
    assert trail.status_code == 200, trail.text
    assert member["id"] in {e["record_id"] for e in trail.json()["items"]}
    for path in (
        f"/api/v1/registry/members/{member['id']}",
        f"/api/v1/registry/members/{member['id']}/id-number",
        "/api/v1/activities/talks",
    ):
        r = await auditor.get(path)
        assert r.status_code in (403, 404), (path, r.status_code)
    r = await auditor.post(USERS, json=account("auditor"))
    assert r.status_code == 403
    r = await auditor.post(
        KEYS, json={"name": "x", "org_id": tree.community_a["id"], "scopes": ["read"]}
    )
    assert r.status_code == 403


async def test_admins_read_no_audit_trail(
    admin_client: httpx.AsyncClient, as_user: AsUser, tree: Tree
) -> None:
    await make_member(admin_client, org_id=tree.community_a["id"])
    r = await admin_client.get(AUDIT)
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("password", "problem"),
    [("lianxin-security", "default security admin password"), ("short-1", "at least 12")],
)
def test_production_refuses_a_weak_first_security_admin_password(
    password: str, problem: str
) -> None:
    settings = GatewaySettings.model_construct(security_admin_password=password)
    assert any(problem in p for p in settings.production_problems())
