"""OWASP API1:2023 Broken Object Level Authorization.

An org admin of community A (and A's viewer, member and API key) asks for each record of
community B by its id — reads, changes and actions: every answer is 404 (not 403, so ids
cannot be probed), and lists never carry B's records. `tests/gateway/test_authz_matrix.py`
holds more rows (orgs, members, pledges, funds, stats); `TestEveryResourceIsCovered` checks
that, between the two, every operation of the contract that takes an id is tried across
org scopes (or is named in `NOT_ORG_SCOPED` with the reason)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.gateway.test_authz_matrix import CASES as MATRIX_CASES
from tests.registry.factories import Tree
from tests.security.owasp_world import AC, AsUser, Gw, M, R, World, build_world

SNAPSHOT = Path(__file__).resolve().parents[2] / "openapi" / "lianxin.json"
ANY = {"If-Match": "*"}


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    expect: int = 404
    actor: str = "org_admin_a"  # member-only actions are probed by A's member


# Single records of community B, by id: 404 to A's org admin.
PROBES: dict[str, Probe] = {
    "org": Probe("GET", f"{R}/orgs/{{community_b}}"),
    "org children": Probe("GET", f"{R}/orgs/{{community_b}}/children"),
    "org update": Probe("PATCH", f"{R}/orgs/{{community_b}}", {"name": "x"}, (("If-Match", "*"),)),
    "member": Probe("GET", f"{R}/members/{{member_b}}"),
    "member update": Probe(
        "PATCH", f"{R}/members/{{member_b}}", {"address": "x"}, (("If-Match", "*"),)
    ),
    "member id number": Probe("GET", f"{R}/members/{{member_b}}/id-number"),
    "member merge": Probe(
        "POST",
        f"{R}/members/{{member_b}}/merge",
        {"duplicate_id": "{member_a}", "reason": "重复登记"},
    ),
    "transfer": Probe("GET", f"{R}/transfers/{{transfer_b}}"),
    "transfer issue": Probe("POST", f"{R}/transfers/{{transfer_b}}/issue", {"letter_no": "x-1"}),
    "transfer receive": Probe("POST", f"{R}/transfers/{{transfer_b}}/receive", {}),
    "transfer reject": Probe("POST", f"{R}/transfers/{{transfer_b}}/reject", {"reason": "x"}),
    "mobile card": Probe("GET", f"{M}/mobile-members/{{card_b}}"),
    "mobile card contact": Probe(
        "POST",
        f"{M}/mobile-members/{{card_b}}/contacts",
        {"on": "2026-05-01", "channel": "phone", "attended_org_life": False},
    ),
    "mobile card return": Probe(
        "POST", f"{M}/mobile-members/{{card_b}}/return", {"on": "2026-05-02"}
    ),
    "link": Probe("GET", f"{M}/links/{{link_b}}"),
    "link report": Probe("POST", f"{M}/links/{{link_b}}/report", {"on": "2026-05-02"}),
    "link feedback": Probe(
        "POST", f"{M}/links/{{link_b}}/feedback", {"year": 2026, "rating": "good"}
    ),
    "link end": Probe("POST", f"{M}/links/{{link_b}}/end", {"on": "2026-05-02"}),
    "activity": Probe("GET", f"{AC}/activities/{{activity_b}}"),
    "activity update": Probe(
        "PATCH", f"{AC}/activities/{{activity_b}}", {"title": "x"}, (("If-Match", "*"),)
    ),
    "attendance": Probe("GET", f"{AC}/activities/{{activity_b}}/attendance"),
    "attendance set": Probe(
        "PUT",
        f"{AC}/activities/{{activity_b}}/attendance",
        [{"member_id": "{member_b}", "status": "absent"}],
    ),
    "activity signup": Probe(
        "POST", f"{AC}/activities/{{activity_b}}/signups", {}, actor="member_a"
    ),
    "talk": Probe("GET", f"{AC}/talks/{{talk_b}}"),
    "service hours verify": Probe("POST", f"{AC}/service-hours/{{hours_b}}/verify", {}),
    "help request": Probe("GET", f"{AC}/help-requests/{{help_b}}"),
    "help request candidates": Probe("GET", f"{AC}/help-requests/{{help_b}}/candidates"),
    "help request assign": Probe(
        "POST", f"{AC}/help-requests/{{help_b}}/assign", {"member_id": "{member_a}"}
    ),
    "help request claim": Probe(
        "POST", f"{AC}/help-requests/{{help_b}}/claim", {}, actor="member_a"
    ),
    "help request complete": Probe(
        "POST", f"{AC}/help-requests/{{help_b}}/complete", {"hours": "1"}
    ),
    "help request close": Probe("POST", f"{AC}/help-requests/{{help_b}}/close", {}),
    "points": Probe("GET", f"{AC}/members/{{member_b}}/points"),
    "points redemption": Probe(
        "POST", f"{AC}/members/{{member_b}}/points/redemptions", {"reward": "毛巾", "points": 1}
    ),
    "pledge": Probe("GET", f"{AC}/members/{{member_b}}/pledges/2026"),
    "pledge item": Probe(
        "POST",
        f"{AC}/members/{{member_b}}/pledges/2026/items/1",
        {"evidence_type": "service_hours", "evidence_id": "{hours_b}"},
    ),
    "program": Probe("GET", f"{AC}/programs/{{program_b}}"),
    "program adopt": Probe(
        "POST", f"{AC}/programs/{{program_b}}/adopt", {"org_id": "{community_a}"}
    ),
    "role assignment end": Probe(
        "POST", f"{AC}/role-assignments/{{role_b}}/end", {"ended_on": "2026-01-01"}
    ),
    "funds summary": Probe("GET", f"{AC}/funds/summary?org_id={{community_b}}&year=2026"),
    "funds expense": Probe(
        "POST",
        f"{AC}/funds/expenses",
        {"org_id": "{community_b}", "year": 2026, "amount": "1.00", "purpose": "x"},
    ),
    "webhook": Probe("GET", "/api/v1/webhooks/{webhook_b}"),
    "webhook deliveries": Probe("GET", "/api/v1/webhooks/{webhook_b}/deliveries"),
    "webhook replay": Probe("POST", "/api/v1/webhooks/{webhook_b}/replay", {}),
    "webhook delete": Probe("DELETE", "/api/v1/webhooks/{webhook_b}"),
    "api key revoke": Probe("DELETE", "/api/v1/auth/api-keys/{key_b}"),
    "user in B": Probe(
        "POST",
        "/api/v1/auth/users",
        {
            "username": "b-admin-x",
            "password": "Correct-horse-42",
            "role": "org_admin",
            "org_id": "{community_b}",
        },
    ),
    "report": Probe("GET", "/api/v1/reports/orgs/{community_b}?year=2026"),
    "registry stats": Probe("GET", f"{R}/stats?org_id={{community_b}}"),
    "mobility statistics": Probe("GET", f"{M}/statistics?org_id={{community_b}}"),
    "alerts": Probe("GET", f"{M}/alerts?org_id={{community_b}}"),
    "transfer queue": Probe("GET", f"{R}/transfers/queue?org_id={{community_b}}"),
    "activities stats": Probe("GET", f"{AC}/stats?org_id={{community_b}}&year=2026"),
    "training coverage": Probe("GET", f"{AC}/training/coverage?org_id={{community_b}}"),
    "leaderboard": Probe("GET", f"{AC}/points/leaderboard?org_id={{community_b}}&year=2026"),
    "sync changes": Probe("GET", f"{M}/sync/{{community_b}}/changes", expect=403),
    "sync": Probe(
        "PUT", f"{M}/sync/{{community_b}}/members", {"mode": "delta", "members": []}, expect=403
    ),
}

# Lists: B's record is never among A's org admin's items.
LISTS: dict[str, tuple[str, str]] = {
    "transfers": (f"{R}/transfers", "transfer_b"),
    "mobile cards": (f"{M}/mobile-members", "card_b"),
    "links": (f"{M}/links", "link_b"),
    "activities": (f"{AC}/activities", "activity_b"),
    "talks": (f"{AC}/talks", "talk_b"),
    "service hours": (f"{AC}/service-hours", "hours_b"),
    "help requests": (f"{AC}/help-requests", "help_b"),
    "fund allocations": (f"{AC}/funds/allocations", "allocation_b"),
    "programs": (f"{AC}/programs", "program_b"),
    "role assignments": (f"{AC}/role-assignments", "role_b"),
    "webhooks": ("/api/v1/webhooks", "webhook_b"),
    "api keys": ("/api/v1/auth/api-keys", "key_b"),
    "members": (f"{R}/members", "member_b"),
    "orgs": (f"{R}/orgs", "community_b"),
}


@pytest.fixture
async def world(
    tree: Tree,
    admin_client: httpx.AsyncClient,
    as_user: AsUser,
    gw: Gw,
    db: async_sessionmaker[AsyncSession],
) -> World:
    return await build_world(tree, admin_client, as_user, gw, db)


def _fill(world: World, value: Any) -> Any:
    return None if value is None else json.loads(world.fill(json.dumps(value)))


def _ids(r: httpx.Response) -> set[str]:
    """The ids of a page (`{items, next_cursor}`) or of a plain list (programs, roles)."""
    body = r.json()
    return {i["id"] for i in (body["items"] if isinstance(body, dict) else body)}


class TestOrgAdminOfAnotherCommunity:
    async def test_every_record_of_b_is_404_by_id(self, world: World) -> None:
        """One world, every probe (the world is costly): a failure names all that leak."""
        wrong = {}
        for name, probe in PROBES.items():
            r = await world.actors[probe.actor].request(
                probe.method,
                world.fill(probe.path),
                json=_fill(world, probe.body),
                headers=dict(probe.headers),
            )
            if r.status_code != probe.expect or (
                r.headers.get("content-type") != "application/problem+json"
            ):
                wrong[name] = (r.status_code, r.json().get("detail"))
        assert not wrong, wrong

    async def test_lists_leave_b_out(self, world: World) -> None:
        c = world.actors["org_admin_a"]
        admin = world.actors["admin"]
        leaked = {}
        for name, (path, ref) in LISTS.items():
            everything = await admin.get(path, params={"limit": 500})
            assert everything.status_code == 200, (name, everything.text)
            assert world.refs[ref] in _ids(everything), name
            r = await c.get(path, params={"limit": 500})
            assert r.status_code == 200, (name, r.text)
            if world.refs[ref] in _ids(r):
                leaked[name] = ref
        assert not leaked, leaked

    async def test_b_records_stay_unchanged(self, world: World) -> None:
        """The refused writes wrote nothing: B's transfer is still requested, its card and
        link open, its help request open, its webhook and key alive."""
        admin = world.actors["admin"]
        for probe in PROBES.values():
            if probe.method != "GET":
                await world.actors[probe.actor].request(
                    probe.method,
                    world.fill(probe.path),
                    json=_fill(world, probe.body),
                    headers=dict(probe.headers),
                )
        assert (await admin.get(world.fill(f"{R}/transfers/{{transfer_b}}"))).json()[
            "status"
        ] == "requested"
        assert (await admin.get(world.fill(f"{M}/mobile-members/{{card_b}}"))).json()[
            "status"
        ] == "active"
        assert (await admin.get(world.fill(f"{M}/links/{{link_b}}"))).json()["status"] == "pending"
        assert (await admin.get(world.fill(f"{AC}/help-requests/{{help_b}}"))).json()[
            "status"
        ] == "open"
        assert (await admin.get(world.fill("/api/v1/webhooks/{webhook_b}"))).status_code == 200
        keys = (await admin.get("/api/v1/auth/api-keys", params={"limit": 500})).json()["items"]
        assert any(k["id"] == world.refs["key_b"] and not k.get("revoked_at") for k in keys)


@pytest.mark.parametrize("actor", ["org_viewer_a", "member_a", "key_a"])
async def test_lower_roles_of_a_get_404_for_b_records_too(world: World, actor: str) -> None:
    c = world.actors[actor]
    wrong = {}
    for name in (
        "member",
        "transfer",
        "mobile card",
        "link",
        "activity",
        "talk",
        "help request",
        "points",
        "webhook",
    ):
        probe = PROBES[name]
        r = await c.request(probe.method, world.fill(probe.path))
        if r.status_code not in (403, 404):
            wrong[name] = (r.status_code, r.text[:200])
        elif r.status_code == 403 and name in ("member", "transfer", "activity"):
            # Records these roles may read in their own scope are hidden, not forbidden.
            wrong[name] = (r.status_code, "403 tells the id exists")
    assert not wrong, wrong


# --- every operation that takes an id is tried across org scopes ------------------------

# Operations with a path parameter that are not an org-scoped record, with the reason.
NOT_ORG_SCOPED: dict[str, str] = {
    "POST /api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay": (
        "found through its webhook: the webhook id is probed (`webhook deliveries`)"
    ),
}


def _id_operations() -> list[tuple[str, str]]:
    doc = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    return sorted(
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete"} and "{" in path
    )


def _covered(method: str, template: str, probes: list[tuple[str, str]]) -> bool:
    pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
    return any(m == method and pattern.match(p.split("?")[0]) for m, p in probes)


class TestEveryResourceIsCovered:
    def test_every_operation_with_an_id_is_probed_across_org_scopes(self) -> None:
        probes = [(p.method, p.path) for p in PROBES.values()]
        probes += [
            (c.method, c.path)
            for c in MATRIX_CASES.values()
            if c.expect in (403, 404) and c.actor != "admin"
        ]
        missing = [
            f"{m} {p}"
            for m, p in _id_operations()
            if f"{m} {p}" not in NOT_ORG_SCOPED and not _covered(m, p, probes)
        ]
        assert not missing, f"no cross-org probe for: {missing}"

    def test_every_listed_resource_type_is_probed(self) -> None:
        doc = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
        paginated = {
            path
            for path, item in doc["paths"].items()
            if "get" in item
            and "{" not in path
            and any(p.get("name") == "cursor" for p in item["get"].get("parameters", []))
        }
        probed = {path for path, _ in LISTS.values()}
        # Lists probed with `?org_id=` of B in `PROBES` (alerts, the transfer queue), and
        # lists that are not an org's records (the audit trail is the auditor's, the access
        # log the caller's own; training sessions and expenses have their own scope tests).
        assert paginated - probed <= {
            f"{M}/alerts",
            f"{R}/transfers/queue",
            "/api/v1/audit",
            "/api/v1/auth/me/access-log",
            f"{AC}/training/sessions",
            f"{AC}/funds/expenses",
        }, paginated - probed
