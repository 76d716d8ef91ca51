"""`POST /api/v1/auth/users`: who may create which accounts, in which scope, with which
passwords."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import PASSWORD
from tests.registry.factories import Tree, make_member, next_id_number

USERS = "/api/v1/auth/users"

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]


def _body(role: str, username: str = "new-user", **extra: Any) -> dict[str, Any]:
    return {"username": username, "password": PASSWORD, "role": role, **extra}


class TestCreateUserByAdmin:
    """(Auditor accounts here come from the security admin: an admin grants none.)"""

    async def test_creates_an_org_admin(self, admin_client: httpx.AsyncClient, tree: Tree) -> None:
        r = await admin_client.post(USERS, json=_body("org_admin", org_id=tree.community_a["id"]))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["role"] == "org_admin"
        assert body["org_id"] == tree.community_a["id"]
        assert "password" not in body and "password_hash" not in body

    async def test_creates_a_member_account_for_a_record(
        self, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        member = await make_member(admin_client, org_id=tree.community_a["id"])
        r = await admin_client.post(USERS, json=_body("member", member_id=member["id"]))
        assert r.status_code == 201, r.text
        again = await admin_client.post(
            USERS, json=_body("member", username="second-login", member_id=member["id"])
        )
        assert again.status_code == 409

    async def test_unknown_org_is_404(self, admin_client: httpx.AsyncClient) -> None:
        r = await admin_client.post(
            USERS, json=_body("org_viewer", org_id="00000000-0000-4000-8000-000000000000")
        )
        assert r.status_code == 404

    async def test_duplicate_username_is_409_whatever_the_case(
        self, security_client: httpx.AsyncClient
    ) -> None:
        assert (await security_client.post(USERS, json=_body("auditor"))).status_code == 201
        r = await security_client.post(USERS, json=_body("auditor", username="NEW-USER"))
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"

    async def test_org_roles_need_an_org_and_members_a_record(
        self, admin_client: httpx.AsyncClient
    ) -> None:
        r = await admin_client.post(USERS, json=_body("org_admin"))
        assert r.status_code == 422
        assert {e["field"] for e in r.json()["errors"]} == {"org_id"}
        r = await admin_client.post(USERS, json=_body("member"))
        assert {e["field"] for e in r.json()["errors"]} == {"member_id"}

    async def test_unknown_field_and_role_are_422(self, admin_client: httpx.AsyncClient) -> None:
        r = await admin_client.post(USERS, json=_body("superuser", shoe_size=42))
        assert r.status_code == 422
        assert {e["field"] for e in r.json()["errors"]} == {"role", "shoe_size"}

    async def test_idempotency_key_replays_the_creation(
        self, security_client: httpx.AsyncClient
    ) -> None:
        h = {"Idempotency-Key": "user-1"}
        first = await security_client.post(USERS, json=_body("auditor"), headers=h)
        again = await security_client.post(USERS, json=_body("auditor"), headers=h)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        other = await security_client.post(
            USERS, json={**_body("auditor"), "password": "Another-pass-77"}, headers=h
        )
        assert other.status_code == 422


class TestPasswordPolicy:
    @pytest.mark.parametrize(
        ("password", "reason"),
        [
            ("Short-1", "at least 10"),
            ("only-letters-here", "letters and digits"),
            ("12345678901234", "letters and digits"),
            ("password1234", "too common"),
            ("policy-user-1", "username"),
            ("aaaaaaaaaa1", "too common"),
        ],
    )
    async def test_weak_password_is_422_with_field_errors(
        self, security_client: httpx.AsyncClient, password: str, reason: str
    ) -> None:
        r = await security_client.post(
            USERS, json=_body("auditor", username="policy-user-1", password=password)
        )
        assert r.status_code == 422
        errors = r.json()["errors"]
        assert all(e["field"] == "password" for e in errors)
        assert any(reason in e["message"] for e in errors), errors


class TestCreateUserByOrgAdmin:
    async def test_creates_inside_own_subtree(self, as_user: AsUser, tree: Tree) -> None:
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        r = await org_admin.post(USERS, json=_body("org_viewer", org_id=tree.building_a1["id"]))
        assert r.status_code == 201, r.text

    async def test_sibling_community_is_404(self, as_user: AsUser, tree: Tree) -> None:
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        r = await org_admin.post(USERS, json=_body("org_viewer", org_id=tree.community_b["id"]))
        assert r.status_code == 404

    async def test_parent_org_is_404(self, as_user: AsUser, tree: Tree) -> None:
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        r = await org_admin.post(USERS, json=_body("org_admin", org_id=tree.street["id"]))
        assert r.status_code == 404

    @pytest.mark.parametrize("role", ["admin", "auditor"])
    async def test_cannot_create_admins_or_auditors(
        self, as_user: AsUser, tree: Tree, role: str
    ) -> None:
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        r = await org_admin.post(USERS, json=_body(role))
        assert r.status_code == 403

    async def test_must_name_the_org(self, as_user: AsUser, tree: Tree) -> None:
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        member = await make_member(org_admin, org_id=tree.community_a["id"])
        r = await org_admin.post(USERS, json=_body("member", member_id=member["id"]))
        assert r.status_code == 422
        assert {e["field"] for e in r.json()["errors"]} == {"org_id"}

    async def test_member_account_only_for_a_record_in_scope(
        self, as_user: AsUser, admin_client: httpx.AsyncClient, tree: Tree
    ) -> None:
        org_admin = await as_user("org_admin", org_id=tree.community_a["id"])
        mine = await make_member(
            org_admin, org_id=tree.community_a["id"], id_number=next_id_number()
        )
        theirs = await make_member(admin_client, org_id=tree.community_b["id"])
        ok = await org_admin.post(
            USERS,
            json=_body("member", org_id=tree.community_a["id"], member_id=mine["id"]),
        )
        assert ok.status_code == 201, ok.text
        r = await org_admin.post(
            USERS,
            json=_body(
                "member",
                username="not-mine",
                org_id=tree.community_a["id"],
                member_id=theirs["id"],
            ),
        )
        assert r.status_code == 404


class TestCreateUserByOthers:
    @pytest.mark.parametrize("role", ["org_viewer", "auditor", "member"])
    async def test_is_403(
        self, as_user: AsUser, admin_client: httpx.AsyncClient, tree: Tree, role: str
    ) -> None:
        extra: dict[str, Any] = {}
        if role == "org_viewer":
            extra["org_id"] = tree.community_a["id"]
        if role == "member":
            extra["member_id"] = (await make_member(admin_client, org_id=tree.community_a["id"]))[
                "id"
            ]
        c = await as_user(role, **extra)
        r = await c.post(USERS, json=_body("org_viewer", org_id=tree.community_a["id"]))
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"

    async def test_anonymous_is_401(self, anon: httpx.AsyncClient) -> None:
        assert (await anon.post(USERS, json=_body("auditor"))).status_code == 401
