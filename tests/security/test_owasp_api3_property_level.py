"""OWASP API3:2023 Broken Object Property Level Authorization.

Mass assignment: no request body of the contract declares a server-owned property (ids,
timestamps, versions, verification, secrets), every request body refuses unknown
properties, and a create or update that smuggles one in (`id`, `created_at`, `status`,
`role`, `version`, …) is a 422 naming it, with nothing written.

Over-exposure: with a member whose ID number, phone and talk notes are known, every GET of
the contract (lists, single reads, statistics, reports, exports as csv and xlsx), every
event in the outboxes (the webhook bodies are built from them) and the error answers are
searched for them. The full values appear only where the contract puts them, for whom it
puts them: the ID number in the audited `/id-number` read, the notes in the admin's
`GET /talks/{id}`, the phone in single reads for those in charge."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.registry.factories import Tree, make_member
from tests.security.owasp_world import (
    AC,
    ID_NUMBER_B,
    PHONE_B,
    TALK_NOTES_B,
    AsUser,
    Gw,
    M,
    R,
    World,
    build_world,
)

SNAPSHOT = Path(__file__).resolve().parents[2] / "openapi" / "lianxin.json"
WRITES = {"post", "put", "patch"}
# Properties only the server sets. (`status` is writable where it is the change asked
# for, e.g. an attendance's; `role` where it is the thing assigned, e.g. a new account's.)
SERVER_OWNED = {
    "id",
    "created_at",
    "updated_at",
    "version",
    "created_by",
    "updated_by",
    "verified",
    "verified_at",
    "verified_by",
    "secret",
    "key_hash",
    "password_hash",
    "id_number_masked",
    "phone_masked",
    "merged_into",
    "revoked_at",
    "aggregate_version",
}


def _doc() -> dict[str, Any]:
    return dict(json.loads(SNAPSHOT.read_text(encoding="utf-8")))


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].split("/")[-1]]
    return schema


def _objects(doc: dict[str, Any], schema: dict[str, Any], seen: set[str]) -> list[dict[str, Any]]:
    """Every object schema reachable from `schema` (through refs, arrays, anyOf)."""
    ref = schema.get("$ref")
    if ref:
        if ref in seen:
            return []
        seen.add(ref)
    schema = _resolve(doc, schema)
    out = [schema] if schema.get("type") == "object" or "properties" in schema else []
    for sub in [
        *(schema.get("properties") or {}).values(),
        *([schema["items"]] if isinstance(schema.get("items"), dict) else []),
        *schema.get("anyOf", []),
        *schema.get("oneOf", []),
        *schema.get("allOf", []),
    ]:
        out += _objects(doc, sub, seen)
    return out


def _request_bodies() -> list[tuple[str, dict[str, Any]]]:
    doc = _doc()
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in WRITES:
                continue
            schema = (
                (op.get("requestBody") or {})
                .get("content", {})
                .get("application/json", {})
                .get("schema")
            )
            if schema:
                out.append((f"{method.upper()} {path}", schema))
    return sorted(out, key=lambda x: x[0])


BODIES = _request_bodies()


class TestNoRequestBodyTakesServerOwnedProperties:
    def test_there_are_bodies_to_check(self) -> None:
        assert len(BODIES) >= 30

    @pytest.mark.parametrize(("label", "schema"), BODIES, ids=[b[0] for b in BODIES])
    def test_closed_and_without_server_owned_properties(
        self, label: str, schema: dict[str, Any]
    ) -> None:
        doc = _doc()
        for obj in _objects(doc, schema, set()):
            if obj.get("properties") is None and "additionalProperties" in obj:
                continue  # a map (`{str: ...}`), not a record
            assert obj.get("additionalProperties") is False, (
                f"{label}: {obj.get('title')} accepts unknown properties"
            )
            owned = SERVER_OWNED & set(obj.get("properties") or {})
            assert not owned, f"{label}: {obj.get('title')} takes {owned}"


@pytest.fixture
async def world(
    tree: Tree,
    admin_client: httpx.AsyncClient,
    as_user: AsUser,
    gw: Gw,
    db: async_sessionmaker[AsyncSession],
) -> World:
    return await build_world(tree, admin_client, as_user, gw, db)


NEW_ORG = {"code": "{code}", "name": "新党小组", "kind": "group", "area_level": "building"}
SMUGGLED: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
    # (resource, method, path, valid body, smuggled field)
    ("org", "POST", f"{R}/orgs", {**NEW_ORG, "parent_id": "{community_a}"}, {"id": "{new}"}),
    ("org", "POST", f"{R}/orgs", {**NEW_ORG, "parent_id": "{community_a}"}, {"path": "1"}),
    ("org", "PATCH", f"{R}/orgs/{{community_a}}", {"name": "x"}, {"version": 9}),
    (
        "member",
        "POST",
        f"{R}/members",
        {
            "name": "李四",
            "gender": "male",
            "birth_date": "1980-05-01",
            "category": "retired",
            "org_id": "{community_a}",
        },
        {"status": "deceased"},
    ),
    (
        "member",
        "POST",
        f"{R}/members",
        {
            "name": "李四",
            "gender": "male",
            "birth_date": "1980-05-01",
            "category": "retired",
            "org_id": "{community_a}",
        },
        {"created_at": "2001-01-01T00:00:00Z"},
    ),
    ("member", "PATCH", f"{R}/members/{{member_a}}", {"address": "x"}, {"id": "{new}"}),
    (
        "member",
        "PATCH",
        f"{R}/members/{{member_a}}",
        {"address": "x"},
        {"merged_into": "{member_b}"},
    ),
    (
        "transfer",
        "POST",
        f"{R}/transfers",
        {"member_id": "{member_a}", "to_org_id": "{community_b}"},
        {"status": "completed"},
    ),
    (
        "mobile card",
        "POST",
        f"{M}/mobile-members",
        {
            "member_id": "{member_a}",
            "direction": "outflow",
            "place": "上海",
            "left_on": "2024-01-02",
            "tracker": "王书记",
        },
        {"status": "returned"},
    ),
    (
        "link",
        "POST",
        f"{M}/links",
        {
            "mode": "direct",
            "member_id": "{member_a}",
            "residence_org_id": "{community_a}",
            "workplace_external": {"name": "x", "code": "y"},
        },
        {"status": "reported"},
    ),
    (
        "activity",
        "POST",
        f"{AC}/activities",
        {
            "org_id": "{community_a}",
            "type": "party_lecture",
            "title": "党课",
            "starts_at": "2026-07-01T19:00:00+08:00",
            "ends_at": "2026-07-01T21:00:00+08:00",
        },
        {"created_by": "{new}"},
    ),
    (
        "talk",
        "POST",
        f"{AC}/talks",
        {"member_id": "{member_a}", "held_on": "2026-03-12", "talker": "李书记", "topic": "x"},
        {"id": "{new}"},
    ),
    (
        "service hours",
        "POST",
        f"{AC}/service-hours",
        {"member_id": "{member_a}", "on": "2026-05-04", "hours": "1"},
        {"verified": True},
    ),
    (
        "help request",
        "POST",
        f"{AC}/help-requests",
        {"org_id": "{community_a}", "title": "x", "needed_skills": []},
        {"status": "done"},
    ),
    (
        "funds",
        "POST",
        f"{AC}/funds/allocations",
        {"org_id": "{community_a}", "year": 2027, "rate_per_member": "50"},
        {"amount": "99999"},
    ),
    (
        "webhook",
        "POST",
        "/api/v1/webhooks",
        {"url": "http://127.0.0.1:9/x", "events": ["*"], "allow_private": True},
        {"secret": "whsec_mine"},
    ),
    (
        "api key",
        "POST",
        "/api/v1/auth/api-keys",
        {"name": "x", "org_id": "{community_a}", "scopes": ["read"]},
        {"key": "mine"},
    ),
    (
        "user",
        "POST",
        "/api/v1/auth/users",
        {
            "username": "{username}",
            "password": "Correct-horse-42",
            "role": "org_viewer",
            "org_id": "{community_a}",
        },
        {"is_admin": True},
    ),
]


class TestMassAssignment:
    @pytest.mark.parametrize(
        ("resource", "method", "path", "body", "smuggled"),
        SMUGGLED,
        ids=[f"{s[0]} {s[1]} +{next(iter(s[4]))}" for s in SMUGGLED],
    )
    async def test_smuggled_property_is_422_and_writes_nothing(
        self,
        world: World,
        resource: str,
        method: str,
        path: str,
        body: dict[str, Any],
        smuggled: dict[str, Any],
    ) -> None:
        world.refs["new"] = str(uuid.uuid4())
        world.refs["username"] = f"u-{uuid.uuid4().hex[:8]}"
        world.refs["code"] = f"MA-{uuid.uuid4().hex[:8]}"
        admin = world.actors["admin"]
        url = world.fill(path)
        listing = url if method == "POST" else None
        before = (await admin.get(listing, params={"limit": 500})).text if listing else None

        def fill(value: dict[str, Any]) -> dict[str, Any]:
            return dict(json.loads(world.fill(json.dumps(value))))

        r = await admin.request(
            method, url, json={**fill(body), **fill(smuggled)}, headers={"If-Match": "*"}
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        field = next(iter(smuggled))
        assert any(e["field"] == field for e in r.json()["errors"]), r.json()
        if listing and resource not in ("user",):
            after = (await admin.get(listing, params={"limit": 500})).text
            assert after == before, f"{resource}: the refused create wrote something"
        # The same body without the smuggled property is fine: the 422 was for it alone.
        ok = await admin.request(method, url, json=fill(body), headers={"If-Match": "*"})
        assert ok.status_code in (200, 201), ok.text

    async def test_member_logs_hours_only_for_themselves(self, world: World) -> None:
        r = await world.actors["member_a"].post(
            f"{AC}/service-hours",
            json={"member_id": world.refs["member_b"], "on": "2026-05-04", "hours": "1"},
        )
        assert r.status_code in (403, 404), r.text

    async def test_org_admin_cannot_make_an_admin(self, world: World) -> None:
        for role in ("admin", "auditor"):
            r = await world.actors["org_admin_a"].post(
                "/api/v1/auth/users",
                json={
                    "username": f"x-{role}",
                    "password": "Correct-horse-42",
                    "role": role,
                    "org_id": world.refs["community_a"],
                },
            )
            assert r.status_code == 403, r.text


# --- over-exposure -----------------------------------------------------------------------

PATH_REFS = {
    "activity_id": "activity_b",
    "request_id": "help_b",
    "member_id": "member_b",
    "program_id": "program_b",
    "talk_id": "talk_b",
    "link_id": "link_b",
    "card_id": "card_b",
    "org_id": "community_b",
    "transfer_id": "transfer_b",
    "webhook_id": "webhook_b",
}
# Where the contract puts a full value, and for whom ("admin" reads them all there).
ALLOWED: dict[str, set[str]] = {
    ID_NUMBER_B: {"/api/v1/registry/members/{member_id}/id-number"},
    # "In full for admins, org admins of the member and the member" (`MemberPublic.phone`),
    # in the member's reads and the export (services/registry/service/exports.py).
    PHONE_B: {
        "/api/v1/registry/members",
        "/api/v1/registry/members/{member_id}",
        "/api/v1/registry/members/export",
    },
    TALK_NOTES_B: {"/api/v1/activities/talks/{talk_id}"},
}


def _get_operations() -> list[tuple[str, list[str]]]:
    out = []
    for path, item in _doc()["paths"].items():
        op = item.get("get")
        if op and path.startswith("/api/"):
            required = [p["name"] for p in op.get("parameters", []) if p.get("required")]
            out.append((path, required))
    return sorted(out)


def _concrete(world: World, path: str, required: list[str]) -> tuple[str, dict[str, Any]]:
    url = path
    params: dict[str, Any] = {}
    for name in required:
        value = "2026" if name == "year" else world.refs[PATH_REFS[name]]
        if "{" + name + "}" in url:
            url = url.replace("{" + name + "}", value)
        else:
            params[name] = value
    return url, params


def _readable(r: httpx.Response) -> str:
    if "spreadsheetml" in r.headers.get("content-type", ""):
        book = openpyxl.load_workbook(io.BytesIO(r.content), read_only=True)
        return "\n".join(
            str(cell)
            for sheet in book.worksheets
            for row in sheet.iter_rows(values_only=True)
            for cell in row
            if cell is not None
        )
    return r.content.decode("utf-8-sig", errors="replace")


SECRETS = {"ID number": ID_NUMBER_B, "phone": PHONE_B, "talk notes": TALK_NOTES_B}


async def _crawl(
    world: World, c: httpx.AsyncClient, allowed: dict[str, set[str]]
) -> dict[str, list[str]]:
    leaks: dict[str, list[str]] = {}
    answered = 0
    for path, required in _get_operations():
        url, params = _concrete(world, path, required)
        variants = [params]
        if path.endswith("/export"):
            variants = [{**params, "format": "csv"}, {**params, "format": "xlsx"}]
        if path.startswith("/api/v1/reports/"):
            variants = [{"year": 2026}, {"year": 2026, "format": "xlsx"}]
        for query in variants:
            r = await c.get(
                url,
                params={
                    **query,
                    **(
                        {"limit": 500}
                        if "cursor" in str(_doc()["paths"][path]["get"].get("parameters"))
                        else {}
                    ),
                },
            )
            answered += r.status_code == 200
            body = _readable(r)
            for kind, value in SECRETS.items():
                if value in body and path not in allowed.get(value, set()):
                    leaks.setdefault(kind, []).append(f"{path} {query} → {r.status_code}")
    assert answered >= 30, f"only {answered} reads answered 200: the crawl saw little"
    return leaks


OUTBOXES = {
    "registry": "SELECT payload::text FROM registry.outbox",
    "mobility": "SELECT payload::text FROM mobility.outbox",
    "activities": "SELECT payload::text FROM activities.outbox",
}


OUTBOXES = {
    "registry": "SELECT payload::text FROM registry.outbox",
    "mobility": "SELECT payload::text FROM mobility.outbox",
    "activities": "SELECT payload::text FROM activities.outbox",
}


class TestNoOverExposure:
    async def test_admin_sees_full_values_only_where_the_contract_puts_them(
        self, world: World
    ) -> None:
        assert not await _crawl(world, world.actors["admin"], ALLOWED)

    async def test_viewer_and_key_of_the_member_org_see_none(
        self, world: World, as_user: AsUser, gw: Gw, admin_client: httpx.AsyncClient
    ) -> None:
        b = world.refs["community_b"]
        viewer = await as_user("org_viewer", org_id=b)
        key = await admin_client.post(
            "/api/v1/auth/api-keys", json={"name": "b", "org_id": b, "scopes": ["read"]}
        )
        for c in (viewer, gw(X_API_Key=key.json()["key"])):
            leaks = await _crawl(world, c, {})
            assert not leaks, leaks

    async def test_events_never_carry_them(
        self, world: World, db: async_sessionmaker[AsyncSession]
    ) -> None:
        async with db() as session:
            for schema, query in OUTBOXES.items():
                rows = (await session.execute(text(query))).all()
                assert rows or schema != "registry"
                for (data,) in rows:
                    for kind, value in SECRETS.items():
                        assert value not in data, f"{kind} in a {schema} event"

    async def test_errors_never_echo_them(
        self, world: World, admin_client: httpx.AsyncClient
    ) -> None:
        a = world.refs["community_a"]
        base = {
            "name": "重复",
            "gender": "male",
            "birth_date": "1970-01-01",
            "category": "retired",
            "org_id": a,
        }
        duplicate = await admin_client.post(f"{R}/members", json={**base, "id_number": ID_NUMBER_B})
        assert duplicate.status_code == 409, duplicate.text
        wrong_digit = ID_NUMBER_B[:-1] + ("0" if ID_NUMBER_B[-1] != "0" else "1")
        invalid = await admin_client.post(f"{R}/members", json={**base, "id_number": wrong_digit})
        assert invalid.status_code == 422, invalid.text
        bad_phone = await admin_client.post(
            f"{R}/members", json={**base, "phone": PHONE_B + "99999"}
        )
        assert bad_phone.status_code == 422, bad_phone.text
        for r, value in ((duplicate, ID_NUMBER_B), (invalid, wrong_digit), (bad_phone, PHONE_B)):
            assert value not in r.text, r.text
        await make_member(admin_client, org_id=a)  # the session still works after them
