"""The authorization matrix, end to end through the gateway.

1. Every operation in the registry's OpenAPI document (read from the app, so a new endpoint
   is covered the day it appears) refuses a request without credentials, with an expired
   token and with a tampered one — at the gateway and at the service directly.
2. A table of (who, what, expected): scope by org subtree, roles that may not write, members
   who see only themselves. Add rows (and `SERVICES` entries) as mobility and activities
   grow their endpoints."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.activities.app import create_app as create_activities
from services.activities.settings import ActivitiesSettings
from services.mobility.app import create_app as create_mobility
from services.mobility.settings import MobilitySettings
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from tests.activities.pump import project_registry
from tests.helpers import PUBLIC_PEM, client, mint
from tests.mobility.factories import EventPump
from tests.registry.factories import Tree, make_member, make_org, next_id_number

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]
Gw = Callable[..., httpx.AsyncClient]


# --- 1. every operation refuses bad credentials ---------------------------------------


def _operations(app: FastAPI) -> list[tuple[str, str, bool]]:
    """(method, path, takes a JSON body) of every documented operation."""
    ops = []
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            content = op.get("requestBody", {}).get("content", {})
            ops.append((method.upper(), path, "application/json" in content))
    return sorted(ops)


SERVICES: dict[str, Callable[[], FastAPI]] = {
    "registry": lambda: create_registry(RegistrySettings(jwt_public_key=PUBLIC_PEM)),
    "mobility": lambda: create_mobility(MobilitySettings(jwt_public_key=PUBLIC_PEM)),
    "activities": lambda: create_activities(ActivitiesSettings(jwt_public_key=PUBLIC_PEM)),
}
OPERATIONS = [
    (service, *op) for service, factory in SERVICES.items() for op in _operations(factory())
]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


def _tampered() -> str:
    """A real token whose payload was edited after signing (member → admin)."""
    header, payload, signature = mint("member", member_id=uuid.uuid4()).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


BAD_CREDENTIALS: dict[str, Callable[[], dict[str, str]]] = {
    "none": lambda: {},
    "expired": lambda: {"Authorization": f"Bearer {mint('admin', expires_in=-60)}"},
    "tampered": lambda: {"Authorization": f"Bearer {_tampered()}"},
    "foreign key": lambda: {
        "Authorization": f"Bearer {mint('admin', key=Ed25519PrivateKey.generate())}"
    },
    "not bearer": lambda: {"Authorization": "Basic YWRtaW46YWRtaW4="},
}


@pytest.mark.parametrize("credentials", sorted(BAD_CREDENTIALS))
@pytest.mark.parametrize(
    ("service", "method", "path", "json_body"),
    OPERATIONS,
    ids=[f"{m} {p}" for _, m, p, _ in OPERATIONS],
)
class TestEveryOperationRefusesBadCredentials:
    async def test_at_the_gateway(
        self,
        gw: Gw,
        service: str,
        method: str,
        path: str,
        json_body: bool,
        credentials: str,
    ) -> None:
        c = gw(**BAD_CREDENTIALS[credentials]())
        r = await c.request(method, _concrete(path), json={} if json_body else None)
        assert r.status_code == 401, r.text
        assert r.headers["content-type"] == "application/problem+json"

    async def test_at_the_service_directly(
        self,
        service_apps: dict[str, FastAPI],
        service: str,
        method: str,
        path: str,
        json_body: bool,
        credentials: str,
    ) -> None:
        async with client(service_apps[service], **BAD_CREDENTIALS[credentials]()) as c:
            r = await c.request(method, _concrete(path), json={} if json_body else None)
        assert r.status_code == 401, r.text
        assert r.headers["content-type"] == "application/problem+json"


def test_the_matrix_sees_the_registry_endpoints() -> None:
    paths = {(m, p) for s, m, p, _ in OPERATIONS if s == "registry"}
    assert ("GET", "/api/v1/registry/orgs/{org_id}") in paths
    assert len(paths) >= 5


# --- 2. who may do what ------------------------------------------------------------------


@dataclass
class World:
    tree: Tree
    refs: dict[str, str]
    actors: dict[str, httpx.AsyncClient]

    def fill(self, text: str) -> str:
        for name, value in self.refs.items():
            text = text.replace("{" + name + "}", value)
        return text

    def fill_body(self, body: Any) -> Any:
        if body is None:
            return None
        return json.loads(self.fill(json.dumps(body)))


@pytest.fixture
async def world(
    tree: Tree,
    admin_client: httpx.AsyncClient,
    as_user: AsUser,
    gw: Gw,
    db: async_sessionmaker[AsyncSession],
) -> World:
    a, b = tree.community_a["id"], tree.community_b["id"]
    member_a = await make_member(admin_client, org_id=a, id_number=next_id_number())
    member_a2 = await make_member(admin_client, org_id=a)
    member_b = await make_member(admin_client, org_id=b)
    key = await admin_client.post(
        "/api/v1/auth/api-keys", json={"name": "unit", "org_id": a, "scopes": ["read"]}
    )
    assert key.status_code == 201, key.text
    await EventPump(db)()  # mobility's read model of the registry
    await project_registry(db)  # activities' read model of the registry
    actors = {
        "admin": admin_client,
        "org_admin_a": await as_user("org_admin", org_id=a),
        "org_viewer_a": await as_user("org_viewer", org_id=a),
        "member_a": await as_user("member", org_id=a, member_id=member_a["id"]),
        "auditor": await as_user("auditor"),
        "key_a": gw(X_API_Key=key.json()["key"]),
    }
    refs = {
        "city": tree.city["id"],
        "community_a": a,
        "community_b": b,
        "building_a1": tree.building_a1["id"],
        "member_a": member_a["id"],
        "member_a2": member_a2["id"],
        "member_b": member_b["id"],
        "code": f"NEW-{uuid.uuid4().hex[:8]}",
    }
    return World(tree, refs, actors)


@dataclass(frozen=True)
class Case:
    actor: str
    method: str
    path: str
    expect: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # For lists: records that must not be among the items.
    absent: tuple[str, ...] = ()
    # For lists: the only records allowed among the items.
    only: tuple[str, ...] | None = None


NEW_ORG_IN_A = {
    "code": "{code}",
    "name": "新楼道党小组",
    "kind": "group",
    "area_level": "building",
    "parent_id": "{community_a}",
}
NEW_ORG_IN_B = {**NEW_ORG_IN_A, "parent_id": "{community_b}"}
NEW_MEMBER_IN_A = {
    "name": "张三",
    "gender": "male",
    "birth_date": "1980-05-01",
    "category": "retired",
    "org_id": "{community_a}",
}
ANY = {"If-Match": "*"}

R = "/api/v1/registry"
M = "/api/v1/mobility"
CARD_A = {
    "member_id": "{member_a}",
    "direction": "outflow",
    "place": "上海",
    "left_on": "2024-01-02",
    "tracker": "王书记",
}
CARD_B = {**CARD_A, "member_id": "{member_b}"}
EMPTY_SYNC = {"mode": "delta", "members": []}
AC = "/api/v1/activities"
ACTIVITY_A = {
    "org_id": "{community_a}",
    "type": "party_lecture",
    "title": "党课",
    "starts_at": "2026-07-01T19:00:00+08:00",
    "ends_at": "2026-07-01T21:00:00+08:00",
}
ACTIVITY_B = {**ACTIVITY_A, "org_id": "{community_b}"}
TALK_A = {"member_id": "{member_a}", "held_on": "2026-03-12", "talker": "李书记", "topic": "x"}
TALK_B = {**TALK_A, "member_id": "{member_b}"}
FUNDS_A = {"org_id": "{community_a}", "year": 2026, "rate_per_member": "50"}
FUNDS_B = {**FUNDS_A, "org_id": "{community_b}"}
CASES: dict[str, Case] = {
    # orgs: single records outside the subtree are 404, lists leave them out
    "org admin reads own community": Case("org_admin_a", "GET", f"{R}/orgs/{{community_a}}", 200),
    "org admin reads sibling community": Case(
        "org_admin_a", "GET", f"{R}/orgs/{{community_b}}", 404
    ),
    "org admin reads the parent street": Case("org_admin_a", "GET", f"{R}/orgs/{{city}}", 404),
    "viewer reads sibling community": Case("org_viewer_a", "GET", f"{R}/orgs/{{community_b}}", 404),
    "viewer reads own building group": Case(
        "org_viewer_a", "GET", f"{R}/orgs/{{building_a1}}", 200
    ),
    "key reads its org": Case("key_a", "GET", f"{R}/orgs/{{community_a}}", 200),
    "key reads sibling community": Case("key_a", "GET", f"{R}/orgs/{{community_b}}", 404),
    "admin reads anything": Case("admin", "GET", f"{R}/orgs/{{community_b}}", 200),
    "org admin lists orgs": Case(
        "org_admin_a", "GET", f"{R}/orgs", 200, absent=("community_b", "city")
    ),
    "viewer lists sibling subtree": Case(
        "org_viewer_a", "GET", f"{R}/orgs?org_id={{community_b}}", 200, only=()
    ),
    "key lists orgs": Case("key_a", "GET", f"{R}/orgs", 200, absent=("community_b",)),
    "auditor lists orgs": Case("auditor", "GET", f"{R}/orgs", 403),
    # orgs: writes
    "org admin creates in own community": Case(
        "org_admin_a", "POST", f"{R}/orgs", 201, body=NEW_ORG_IN_A
    ),
    "org admin creates in sibling community": Case(
        "org_admin_a", "POST", f"{R}/orgs", 404, body=NEW_ORG_IN_B
    ),
    "viewer creates an org": Case("org_viewer_a", "POST", f"{R}/orgs", 403, body=NEW_ORG_IN_A),
    "viewer changes an org": Case(
        "org_viewer_a",
        "PATCH",
        f"{R}/orgs/{{community_a}}",
        403,
        body={"name": "改名"},
        headers=ANY,
    ),
    "member creates an org": Case("member_a", "POST", f"{R}/orgs", 403, body=NEW_ORG_IN_A),
    "key creates an org": Case("key_a", "POST", f"{R}/orgs", 403, body=NEW_ORG_IN_A),
    "org admin changes own community": Case(
        "org_admin_a",
        "PATCH",
        f"{R}/orgs/{{community_a}}",
        200,
        body={"name": "如意社区党总支"},
        headers=ANY,
    ),
    "org admin changes sibling community": Case(
        "org_admin_a",
        "PATCH",
        f"{R}/orgs/{{community_b}}",
        404,
        body={"name": "x"},
        headers=ANY,
    ),
    # members
    "org admin reads a member of own community": Case(
        "org_admin_a", "GET", f"{R}/members/{{member_a}}", 200
    ),
    "org admin reads a member of sibling community": Case(
        "org_admin_a", "GET", f"{R}/members/{{member_b}}", 404
    ),
    "viewer reads a member of own community": Case(
        "org_viewer_a", "GET", f"{R}/members/{{member_a}}", 200
    ),
    "viewer reads a member of sibling community": Case(
        "org_viewer_a", "GET", f"{R}/members/{{member_b}}", 404
    ),
    "org admin lists members": Case(
        "org_admin_a", "GET", f"{R}/members", 200, absent=("member_b",)
    ),
    "viewer lists members": Case("org_viewer_a", "GET", f"{R}/members", 200, absent=("member_b",)),
    "member reads own record": Case("member_a", "GET", f"{R}/members/{{member_a}}", 200),
    "member reads another member": Case("member_a", "GET", f"{R}/members/{{member_a2}}", 404),
    "member reads a member elsewhere": Case("member_a", "GET", f"{R}/members/{{member_b}}", 404),
    "member lists members": Case("member_a", "GET", f"{R}/members", 200, only=("member_a",)),
    "org admin registers a member": Case(
        "org_admin_a", "POST", f"{R}/members", 201, body=NEW_MEMBER_IN_A
    ),
    "viewer registers a member": Case(
        "org_viewer_a", "POST", f"{R}/members", 403, body=NEW_MEMBER_IN_A
    ),
    "member registers a member": Case(
        "member_a", "POST", f"{R}/members", 403, body=NEW_MEMBER_IN_A
    ),
    "viewer changes a member": Case(
        "org_viewer_a",
        "PATCH",
        f"{R}/members/{{member_a}}",
        403,
        body={"address": "x"},
        headers=ANY,
    ),
    "org admin reads an ID number in scope": Case(
        "org_admin_a", "GET", f"{R}/members/{{member_a}}/id-number", 200
    ),
    "org admin reads an ID number elsewhere": Case(
        "org_admin_a", "GET", f"{R}/members/{{member_b}}/id-number", 404
    ),
    "viewer reads an ID number": Case(
        "org_viewer_a", "GET", f"{R}/members/{{member_a}}/id-number", 403
    ),
    "key reads an ID number": Case("key_a", "GET", f"{R}/members/{{member_a}}/id-number", 403),
    # mobility: cards and alerts by subtree, the sync only with the unit's own `sync` key
    "org admin opens a card for own member": Case(
        "org_admin_a", "POST", f"{M}/mobile-members", 201, body=CARD_A
    ),
    "org admin opens a card for a sibling's member": Case(
        "org_admin_a", "POST", f"{M}/mobile-members", 422, body=CARD_B
    ),
    "viewer opens a card": Case("org_viewer_a", "POST", f"{M}/mobile-members", 403, body=CARD_A),
    "member opens a card": Case("member_a", "POST", f"{M}/mobile-members", 403, body=CARD_A),
    "key opens a card": Case("key_a", "POST", f"{M}/mobile-members", 403, body=CARD_A),
    "org admin reads an unknown card": Case(
        "org_admin_a", "GET", f"{M}/mobile-members/{{member_a}}", 404
    ),
    "viewer lists cards": Case("org_viewer_a", "GET", f"{M}/mobile-members", 200),
    "auditor lists cards": Case("auditor", "GET", f"{M}/mobile-members", 403),
    "key lists links": Case("key_a", "GET", f"{M}/links", 200),
    "viewer reads alerts of own subtree": Case("org_viewer_a", "GET", f"{M}/alerts", 200),
    "viewer reads alerts of a sibling": Case(
        "org_viewer_a", "GET", f"{M}/alerts?org_id={{community_b}}", 404
    ),
    "member reads alerts": Case("member_a", "GET", f"{M}/alerts", 403),
    "auditor reads statistics": Case("auditor", "GET", f"{M}/statistics", 403),
    "viewer reads statistics": Case("org_viewer_a", "GET", f"{M}/statistics", 200),
    "read key syncs": Case(
        "key_a", "PUT", f"{M}/sync/{{community_a}}/members", 403, body=EMPTY_SYNC
    ),
    "org admin syncs": Case(
        "org_admin_a", "PUT", f"{M}/sync/{{community_a}}/members", 403, body=EMPTY_SYNC
    ),
    "admin syncs": Case("admin", "PUT", f"{M}/sync/{{community_a}}/members", 403, body=EMPTY_SYNC),
    "viewer reads a unit's changes": Case(
        "org_viewer_a", "GET", f"{M}/sync/{{community_a}}/changes", 403
    ),
    # activities: writes by org admins in their subtree only, viewers and members read
    "org admin schedules in own community": Case(
        "org_admin_a", "POST", f"{AC}/activities", 201, body=ACTIVITY_A
    ),
    "org admin schedules in a sibling community": Case(
        "org_admin_a", "POST", f"{AC}/activities", 404, body=ACTIVITY_B
    ),
    "viewer schedules an activity": Case(
        "org_viewer_a", "POST", f"{AC}/activities", 403, body=ACTIVITY_A
    ),
    "member schedules an activity": Case(
        "member_a", "POST", f"{AC}/activities", 403, body=ACTIVITY_A
    ),
    "key schedules an activity": Case("key_a", "POST", f"{AC}/activities", 403, body=ACTIVITY_A),
    "auditor lists activities": Case("auditor", "GET", f"{AC}/activities", 403),
    "viewer lists a sibling's activities": Case(
        "org_viewer_a", "GET", f"{AC}/activities?org_id={{community_b}}", 200, only=()
    ),
    "org admin records a talk for own member": Case(
        "org_admin_a", "POST", f"{AC}/talks", 201, body=TALK_A
    ),
    "org admin records a talk for a sibling's member": Case(
        "org_admin_a", "POST", f"{AC}/talks", 404, body=TALK_B
    ),
    "viewer records a talk": Case("org_viewer_a", "POST", f"{AC}/talks", 403, body=TALK_A),
    "member records a talk": Case("member_a", "POST", f"{AC}/talks", 403, body=TALK_A),
    "member lists talks": Case("member_a", "GET", f"{AC}/talks", 200, only=()),
    "member reads own points": Case("member_a", "GET", f"{AC}/members/{{member_a}}/points", 200),
    "member reads another's points": Case(
        "member_a", "GET", f"{AC}/members/{{member_a2}}/points", 404
    ),
    "org admin reads a sibling's member's pledge": Case(
        "org_admin_a", "GET", f"{AC}/members/{{member_b}}/pledges/2026", 404
    ),
    "member logs own hours": Case(
        "member_a", "POST", f"{AC}/service-hours", 201, body={"on": "2026-05-04", "hours": "1"}
    ),
    "viewer logs hours": Case(
        "org_viewer_a",
        "POST",
        f"{AC}/service-hours",
        403,
        body={"member_id": "{member_a}", "on": "2026-05-04", "hours": "1"},
    ),
    "org admin allocates own funds": Case(
        "org_admin_a", "POST", f"{AC}/funds/allocations", 201, body=FUNDS_A
    ),
    "org admin allocates a sibling's funds": Case(
        "org_admin_a", "POST", f"{AC}/funds/allocations", 404, body=FUNDS_B
    ),
    "viewer allocates funds": Case(
        "org_viewer_a", "POST", f"{AC}/funds/allocations", 403, body=FUNDS_A
    ),
    "viewer reads a sibling's fund summary": Case(
        "org_viewer_a", "GET", f"{AC}/funds/summary?org_id={{community_b}}&year=2026", 404
    ),
    "key reads own statistics": Case(
        "key_a", "GET", f"{AC}/stats?org_id={{community_a}}&year=2026", 200
    ),
    "member reads statistics": Case(
        "member_a", "GET", f"{AC}/stats?org_id={{community_a}}&year=2026", 403
    ),
    "viewer reads a sibling's training coverage": Case(
        "org_viewer_a", "GET", f"{AC}/training/coverage?org_id={{community_b}}", 404
    ),
    "admin reads activities' raw audit log": Case("admin", "GET", f"{AC}/audit-log", 404),
    # internal paths are not public, whoever asks
    "admin resolves persons": Case(
        "admin", "POST", f"{R}/persons/resolve", 404, body={"persons": []}
    ),
    "admin reads mobility's raw audit log": Case("admin", "GET", f"{M}/audit-log", 404),
    "admin reads a service's raw audit log": Case("admin", "GET", f"{R}/audit-log", 404),
    "auditor reads a service's raw audit log": Case("auditor", "GET", f"{R}/audit-log", 404),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_who_may_do_what(world: World, name: str) -> None:
    case = CASES[name]
    c = world.actors[case.actor]
    r = await c.request(
        case.method,
        world.fill(case.path),
        json=world.fill_body(case.body),
        headers=case.headers,
    )
    assert r.status_code == case.expect, r.text
    if case.expect >= 400:
        assert r.headers["content-type"] == "application/problem+json"
    if case.absent or case.only is not None:
        ids = {item["id"] for item in r.json()["items"]}
        if case.absent:
            assert ids, "an empty list would pass any `absent` check"
        for ref in case.absent:
            assert world.refs[ref] not in ids, ref
        if case.only is not None:
            assert ids <= {world.refs[ref] for ref in case.only}


async def test_new_orgs_inside_a_subtree_stay_in_scope(
    world: World, admin_client: httpx.AsyncClient
) -> None:
    """A group added under community A later is readable by A's viewer at once."""
    group = await make_org(
        admin_client, parent_id=world.refs["community_a"], kind="group", area_level="building"
    )
    r = await world.actors["org_viewer_a"].get(f"{R}/orgs/{group['id']}")
    assert r.status_code == 200
