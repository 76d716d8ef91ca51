"""OWASP API5:2023 Broken Function Level Authorization.

Every operation that writes — each create of the contract and each change or action on a
record (`PROBES` of API1, here on community B's own records, so scope is no excuse) — is
refused with 403 to the roles that only read: the org viewer and the API key (scope `read`)
of community B, the auditor, and a member of B (except what a member does for themselves:
sign up, claim a help request, log own hours, report to the community, mark a pledge item;
and a key's own webhooks). The admin may do them (the same bodies pass the schema for the
admin, so the 403s are not 422s in disguise).
`tests/gateway/test_authz_matrix.py` and each service's tests hold more rows."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.registry.factories import Tree
from tests.security.owasp_world import AsUser, Gw, World, build_world
from tests.security.test_owasp_api1_object_level import PROBES
from tests.security.test_owasp_api3_property_level import SMUGGLED

# What a member of B does for themselves (their own record, their org's requests), and
# what a `read` key does for its own org (webhooks, README "Webhooks").
MAY = {
    "member_b": {
        "activity signup",
        "help request claim",
        "create service hours",
        "link report",  # 报到: "by the member or the community"
        "pledge item",  # "the member themself or an org admin in scope"
    },
    "key_b": {"create webhook", "webhook replay", "webhook delete"},
}


def expected(actor: str, path: str) -> set[int]:
    if actor == "key_b" and path.startswith("/api/v1/auth/"):
        return {401}  # the account and key routes take a person's bearer token only
    if actor == "auditor":
        return {403, 404}  # no org scope at all: every record is out of sight
    return {403}


# Read-only probes (the lower roles may read) and the ones about scope, not role.
NOT_WRITES = {name for name, p in PROBES.items() if p.method == "GET"} | {"sync", "sync changes"}

WRITES: dict[str, tuple[str, str, Any]] = {
    name: (p.method, p.path, p.body)
    for name, p in PROBES.items()
    if name not in NOT_WRITES and p.method != "GET"
}
for resource, method, path, body, _ in SMUGGLED:
    if method == "POST":
        WRITES.setdefault(f"create {resource}", (method, path, body))


@pytest.fixture
async def world(
    tree: Tree,
    admin_client: httpx.AsyncClient,
    as_user: AsUser,
    gw: Gw,
    db: async_sessionmaker[AsyncSession],
) -> World:
    w = await build_world(tree, admin_client, as_user, gw, db)
    b = w.refs["community_b"]
    key = await admin_client.post(
        "/api/v1/auth/api-keys", json={"name": "B 读", "org_id": b, "scopes": ["read"]}
    )
    assert key.status_code == 201, key.text
    w.actors |= {
        "org_viewer_b": await as_user("org_viewer", org_id=b),
        "member_b": await as_user("member", org_id=b, member_id=w.refs["member_b"]),
        "key_b": gw(X_API_Key=key.json()["key"]),
    }
    # The bodies name community A and its member: here, everything is B's.
    w.refs |= {"community_a": b, "member_a": w.refs["member_b"]}
    return w


def _body(world: World, body: Any) -> Any:
    world.refs["new"] = str(uuid.uuid4())
    world.refs["username"] = f"u-{uuid.uuid4().hex[:8]}"
    world.refs["code"] = f"FL-{uuid.uuid4().hex[:8]}"
    return None if body is None else json.loads(world.fill(json.dumps(body)))


@pytest.mark.parametrize("actor", ["org_viewer_b", "key_b", "auditor", "member_b"])
async def test_lower_roles_are_refused_every_write(world: World, actor: str) -> None:
    c = world.actors[actor]
    wrong = {}
    for name, (method, path, body) in sorted(WRITES.items()):
        if name in MAY.get(actor, set()):
            continue
        r = await c.request(
            method, world.fill(path), json=_body(world, body), headers={"If-Match": "*"}
        )
        if r.status_code not in expected(actor, path):
            wrong[name] = (r.status_code, r.json().get("detail") if r.content else None)
    assert not wrong, wrong


async def test_the_admin_may_create_with_the_same_bodies(world: World) -> None:
    """The bodies above are valid: what the lower roles got was about their role."""
    admin = world.actors["admin"]
    failed = {}
    for name, (method, path, body) in sorted(WRITES.items()):
        if not name.startswith("create "):
            continue
        r = await admin.request(method, world.fill(path), json=_body(world, body))
        # Created, or refused by a business rule (the world already holds an open card for
        # the member): past the schema and the role checks either way.
        schema_error = r.json().get("detail") == "The request does not match the schema."
        if r.status_code >= 500 or r.status_code in (401, 403, 404) or schema_error:
            failed[name] = (r.status_code, r.json().get("detail"))
    assert not failed, failed
