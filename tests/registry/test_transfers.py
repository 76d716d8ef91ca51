from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from common.auth import Principal, Role
from common.pagination import encode_cursor
from services.registry.app import create_app
from services.registry.models import Member, Transfer, audit_log
from services.registry.service import transfers as service
from services.registry.settings import RegistrySettings
from tests.helpers import client, mint
from tests.registry.factories import Tree, build_tree, make_org
from tests.registry.transfer_factories import (
    TRANSFERS,
    Sessions,
    age_transfer,
    audit_entries,
    db_today,
    incoming_body,
    issue,
    make_member,
    member_row,
    request_transfer,
    set_transfer,
)

PROBLEM = "application/problem+json"

RoleClient = Callable[..., httpx.AsyncClient]


def admin_of(as_role: RoleClient, org: dict[str, object]) -> httpx.AsyncClient:
    return as_role("org_admin", org_id=org["id"], username=f"admin-{org['id']}")


@pytest.fixture
async def admin_a(tree: Tree, as_role: RoleClient) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_of(as_role, tree.community_a) as c:
        yield c


@pytest.fixture
async def admin_b(tree: Tree, as_role: RoleClient) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_of(as_role, tree.community_b) as c:
        yield c


@pytest.fixture
async def member_a(tree: Tree, db: Sessions) -> str:
    """An active member of community A, in its building group A1."""
    return await make_member(db, org_id=tree.community_a["id"], group_id=tree.building_a1["id"])


def assert_problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status
    return dict(body)


class TestCreateTransfer:
    async def test_request_to_an_org_in_the_system_starts_requested(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        r = await admin_a.post(
            TRANSFERS,
            json={"member_id": member_a, "to_org_id": tree.community_b["id"], "reason": "迁居"},
        )
        assert r.status_code == 201, r.text
        t = r.json()
        assert t["status"] == "requested"
        assert t["from_org_id"] == tree.community_a["id"]
        assert t["to_org_id"] == tree.community_b["id"]
        assert t["from_external"] is None and t["to_external"] is None
        assert t["letter_no"] is None and t["valid_until"] is None
        assert t["requested_by"] == f"admin-{tree.community_a['id']}"
        assert t["reason"] == "迁居"
        # In transit the member is still counted by the old org.
        assert str((await member_row(db, member_a)).org_id) == tree.community_a["id"]

    async def test_request_to_outside_the_system(
        self, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        r = await admin_a.post(
            TRANSFERS,
            json={"member_id": member_a, "to_external": {"name": "上海市某街道党工委"}},
        )
        assert r.status_code == 201, r.text
        assert r.json()["to_external"] == {"name": "上海市某街道党工委", "code": None}
        assert r.json()["to_org_id"] is None

    async def test_incoming_from_outside_starts_issued(
        self, tree: Tree, admin_b: httpx.AsyncClient, db: Sessions
    ) -> None:
        newcomer = await make_member(db, org_id=None, residence_org_id=tree.community_b["id"])
        today = await db_today(db)
        body = incoming_body(newcomer, tree.community_b["id"], valid_until=today + timedelta(30))
        r = await admin_b.post(TRANSFERS, json=body)
        assert r.status_code == 201, r.text
        t = r.json()
        assert t["status"] == "issued"
        assert t["from_org_id"] is None
        assert t["from_external"] == {"name": "杭州市某机关党委", "code": "HZ-001"}
        assert t["letter_no"] == body["letter_no"]
        assert t["valid_until"] == body["valid_until"]
        assert t["issued_at"] is not None

    async def test_incoming_into_an_org_outside_scope_is_403(
        self, tree: Tree, admin_a: httpx.AsyncClient, db: Sessions
    ) -> None:
        newcomer = await make_member(db, org_id=None, residence_org_id=tree.community_a["id"])
        today = await db_today(db)
        body = incoming_body(newcomer, tree.community_b["id"], valid_until=today + timedelta(30))
        assert_problem(await admin_a.post(TRANSFERS, json=body), 403)

    async def test_incoming_for_a_member_held_by_another_org_is_409(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        today = await db_today(db)
        body = incoming_body(member_a, tree.community_b["id"], valid_until=today + timedelta(30))
        problem = assert_problem(await admin.post(TRANSFERS, json=body), 409)
        assert problem["org_id"] == tree.community_a["id"]

    async def test_member_of_a_sibling_community_is_404(
        self, tree: Tree, admin_b: httpx.AsyncClient, member_a: str
    ) -> None:
        r = await admin_b.post(
            TRANSFERS, json={"member_id": member_a, "to_org_id": tree.community_b["id"]}
        )
        assert_problem(r, 404)

    async def test_unknown_member_is_404(self, tree: Tree, admin: httpx.AsyncClient) -> None:
        r = await admin.post(
            TRANSFERS, json={"member_id": str(uuid.uuid4()), "to_org_id": tree.community_b["id"]}
        )
        assert_problem(r, 404)

    async def test_resident_not_enrolled_here_is_403(
        self, tree: Tree, admin_b: httpx.AsyncClient, db: Sessions
    ) -> None:
        resident = await make_member(
            db, org_id=tree.community_a["id"], residence_org_id=tree.community_b["id"]
        )
        r = await admin_b.post(
            TRANSFERS, json={"member_id": resident, "to_org_id": tree.city["id"]}
        )
        assert_problem(r, 403)

    async def test_viewer_cannot_request(
        self, tree: Tree, as_role: RoleClient, member_a: str
    ) -> None:
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as c:
            r = await c.post(
                TRANSFERS, json={"member_id": member_a, "to_org_id": tree.community_b["id"]}
            )
            assert_problem(r, 403)

    async def test_second_open_transfer_is_409_naming_the_first(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        first = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        r = await admin_a.post(
            TRANSFERS, json={"member_id": member_a, "to_external": {"name": "外地"}}
        )
        problem = assert_problem(r, 409)
        assert problem["type"] == "urn:lianxin:problem:open-transfer"
        assert problem["transfer_id"] == first["id"]

    async def test_transfer_to_the_current_org_is_422(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        r = await admin_a.post(
            TRANSFERS, json={"member_id": member_a, "to_org_id": tree.community_a["id"]}
        )
        problem = assert_problem(r, 422)
        assert [e["field"] for e in problem["errors"]] == ["to_org_id"]  # type: ignore[attr-defined]

    @pytest.mark.parametrize("status", ["transferred_out", "deceased", "removed"])
    async def test_member_who_left_is_409(
        self, tree: Tree, admin_a: httpx.AsyncClient, db: Sessions, status: str
    ) -> None:
        gone = await make_member(db, org_id=tree.community_a["id"], status=status)
        r = await admin_a.post(
            TRANSFERS, json={"member_id": gone, "to_org_id": tree.community_b["id"]}
        )
        problem = assert_problem(r, 409)
        assert problem["member_status"] == status

    async def test_unknown_destination_org_is_422_field_error(
        self, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        r = await admin_a.post(
            TRANSFERS, json={"member_id": member_a, "to_org_id": str(uuid.uuid4())}
        )
        problem = assert_problem(r, 422)
        assert problem["errors"] == [{"field": "to_org_id", "message": "no such organization"}]

    async def test_both_or_neither_destination_is_422(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        both = {
            "member_id": member_a,
            "to_org_id": tree.community_b["id"],
            "to_external": {"name": "外地", "code": "W-1"},
        }
        for body in (both, {"member_id": member_a}):
            problem = assert_problem(await admin_a.post(TRANSFERS, json=body), 422)
            fields = {e["field"] for e in problem["errors"]}  # type: ignore[attr-defined]
            assert fields == {"to_org_id", "to_external"}

    async def test_letter_fields_on_a_request_are_422(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        r = await admin_a.post(
            TRANSFERS,
            json={"member_id": member_a, "to_org_id": tree.community_b["id"], "letter_no": "1"},
        )
        assert [e["field"] for e in assert_problem(r, 422)["errors"]] == ["letter_no"]  # type: ignore[attr-defined]

    async def test_incoming_without_letter_is_422(
        self, tree: Tree, admin_b: httpx.AsyncClient, db: Sessions
    ) -> None:
        newcomer = await make_member(db, org_id=None, residence_org_id=tree.community_b["id"])
        r = await admin_b.post(
            TRANSFERS,
            json={"member_id": newcomer, "from_external": {"name": "外地"}},
        )
        fields = {e["field"] for e in assert_problem(r, 422)["errors"]}  # type: ignore[attr-defined]
        assert fields == {"to_org_id", "letter_no", "valid_until"}

    async def test_incoming_letter_already_expired_is_422(
        self, tree: Tree, admin_b: httpx.AsyncClient, db: Sessions
    ) -> None:
        newcomer = await make_member(db, org_id=None, residence_org_id=tree.community_b["id"])
        today = await db_today(db)
        body = incoming_body(newcomer, tree.community_b["id"], valid_until=today - timedelta(1))
        problem = assert_problem(await admin_b.post(TRANSFERS, json=body), 422)
        assert [e["field"] for e in problem["errors"]] == ["valid_until"]  # type: ignore[attr-defined]

    async def test_unknown_field_and_bad_values_are_422(
        self, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        r = await admin_a.post(
            TRANSFERS,
            json={"member_id": "not-a-uuid", "to_external": {"name": ""}, "priority": "high"},
        )
        fields = {e["field"] for e in assert_problem(r, 422)["errors"]}  # type: ignore[attr-defined]
        assert {"member_id", "to_external.name", "priority"} <= fields

    async def test_idempotency_key_replays_the_first_response(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        body = {"member_id": member_a, "to_org_id": tree.community_b["id"]}
        h = {"Idempotency-Key": "transfer-1"}
        first = await admin_a.post(TRANSFERS, json=body, headers=h)
        again = await admin_a.post(TRANSFERS, json=body, headers=h)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        other = await admin_a.post(TRANSFERS, json={**body, "reason": "另一"}, headers=h)
        assert_problem(other, 422)
        # Without the key, the same request is a second transfer: refused.
        assert_problem(await admin_a.post(TRANSFERS, json=body), 409)


class TestListTransfers:
    async def _three(
        self, tree: Tree, admin: httpx.AsyncClient, db: Sessions
    ) -> dict[str, dict[str, object]]:
        """A→B (requested), B→outside (issued), outside→A (issued)."""
        m1 = await make_member(db, org_id=tree.community_a["id"])
        m2 = await make_member(db, org_id=tree.community_b["id"])
        m3 = await make_member(db, org_id=None, residence_org_id=tree.community_a["id"])
        today = await db_today(db)
        a_to_b = await request_transfer(admin, m1, to_org_id=tree.community_b["id"])
        b_out = await request_transfer(admin, m2, to_external={"name": "外地"})
        b_out = await issue(admin, str(b_out["id"]))
        r = await admin.post(
            TRANSFERS,
            json=incoming_body(m3, tree.community_a["id"], valid_until=today + timedelta(9)),
        )
        assert r.status_code == 201, r.text
        return {"a_to_b": a_to_b, "b_out": b_out, "in_a": r.json()}

    async def test_filters(self, tree: Tree, admin: httpx.AsyncClient, db: Sessions) -> None:
        t = await self._three(tree, admin, db)

        async def ids(**params: str) -> set[object]:
            r = await admin.get(TRANSFERS, params=params)
            assert r.status_code == 200, r.text
            return {x["id"] for x in r.json()["items"]}

        assert await ids(status="issued") == {t["b_out"]["id"], t["in_a"]["id"]}
        assert await ids(member_id=str(t["a_to_b"]["member_id"])) == {t["a_to_b"]["id"]}
        assert await ids(from_org_id=tree.community_b["id"]) == {t["b_out"]["id"]}
        assert await ids(to_org_id=tree.community_a["id"]) == {t["in_a"]["id"]}
        # org_id: either side within the subtree.
        assert await ids(org_id=tree.community_b["id"]) == {t["a_to_b"]["id"], t["b_out"]["id"]}
        assert len(await ids(org_id=tree.city["id"])) == 3
        # direction relative to the org_id subtree…
        a = tree.community_a["id"]
        assert await ids(org_id=a, direction="incoming") == {t["in_a"]["id"]}
        assert await ids(org_id=a, direction="outgoing") == {t["a_to_b"]["id"]}
        # …or to the whole system for an admin: from outside / to outside.
        assert await ids(direction="incoming") == {t["in_a"]["id"]}
        assert await ids(direction="outgoing") == {t["b_out"]["id"]}

    async def test_direction_is_relative_to_the_callers_scope(
        self, tree: Tree, admin: httpx.AsyncClient, as_role: RoleClient, db: Sessions
    ) -> None:
        t = await self._three(tree, admin, db)
        async with as_role("org_viewer", org_id=tree.community_b["id"]) as c:
            incoming = await c.get(TRANSFERS, params={"direction": "incoming"})
            assert {x["id"] for x in incoming.json()["items"]} == {t["a_to_b"]["id"]}
            outgoing = await c.get(TRANSFERS, params={"direction": "outgoing"})
            assert {x["id"] for x in outgoing.json()["items"]} == {t["b_out"]["id"]}
        async with as_role("org_viewer", org_id=tree.street["id"]) as c:
            # A→B stays inside the street: neither in nor out.
            incoming = await c.get(TRANSFERS, params={"direction": "incoming"})
            assert {x["id"] for x in incoming.json()["items"]} == {t["in_a"]["id"]}

    async def test_scope_hides_transfers_of_other_communities(
        self, tree: Tree, admin: httpx.AsyncClient, as_role: RoleClient, db: Sessions
    ) -> None:
        other = await make_org(admin, parent_id=tree.street["id"], name="南湖社区")
        m = await make_member(db, org_id=tree.community_a["id"])
        t = await request_transfer(admin, m, to_external={"name": "外地"})
        async with as_role("org_viewer", org_id=other["id"]) as c:
            r = await c.get(TRANSFERS)
            assert r.status_code == 200 and r.json()["items"] == []
        async with as_role("org_viewer", org_id=tree.street["id"]) as c:
            r = await c.get(TRANSFERS)
            assert [x["id"] for x in r.json()["items"]] == [t["id"]]

    async def test_member_sees_only_their_own(
        self, tree: Tree, admin: httpx.AsyncClient, as_role: RoleClient, db: Sessions
    ) -> None:
        mine = await make_member(db, org_id=tree.community_a["id"])
        theirs = await make_member(db, org_id=tree.community_a["id"])
        t = await request_transfer(admin, mine, to_org_id=tree.community_b["id"])
        await request_transfer(admin, theirs, to_org_id=tree.community_b["id"])
        async with as_role("member", org_id=tree.community_a["id"], member_id=mine) as c:
            r = await c.get(TRANSFERS)
            assert [x["id"] for x in r.json()["items"]] == [t["id"]]

    async def test_auditor_is_403(self, as_role: RoleClient) -> None:
        async with as_role("auditor") as c:
            assert_problem(await c.get(TRANSFERS), 403)

    async def test_keyset_pages_cover_everything_once(
        self, tree: Tree, admin: httpx.AsyncClient, db: Sessions
    ) -> None:
        made = set()
        for _ in range(5):
            m = await make_member(db, org_id=tree.community_a["id"])
            made.add((await request_transfer(admin, m, to_org_id=tree.community_b["id"]))["id"])
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 2, "org_id": tree.community_a["id"]}
            if cursor:
                params["cursor"] = cursor
            r = await admin.get(TRANSFERS, params=params)
            assert r.status_code == 200, r.text
            seen += [x["id"] for x in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)) == 5 and set(seen) == made
        bad = await admin.get(TRANSFERS, params={"limit": 2, "cursor": "garbage"})
        assert_problem(bad, 422)

    async def test_hand_made_cursor_is_422_not_500(self, admin: httpx.AsyncClient) -> None:
        for key in (["yesterday", "x"], [1], [True, str(uuid.uuid4())]):
            r = await admin.get(TRANSFERS, params={"cursor": encode_cursor(key, {})})
            assert_problem(r, 422)
        queue = encode_cursor(["0", "now", "x"], {"queue": True})
        assert_problem(await admin.get(f"{TRANSFERS}/queue", params={"cursor": queue}), 422)

    async def test_bad_filters_are_422(self, admin: httpx.AsyncClient) -> None:
        for params in ({"status": "lost"}, {"direction": "sideways"}, {"org_id": "x"}):
            assert_problem(await admin.get(TRANSFERS, params=params), 422)


class TestGetTransfer:
    async def test_carries_etag(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        r = await admin_a.get(f"{TRANSFERS}/{t['id']}")
        assert r.status_code == 200
        assert r.json() == t
        assert r.headers["ETag"] == '"1"'

    async def test_both_sides_see_it_a_sibling_does_not(
        self, tree: Tree, admin: httpx.AsyncClient, as_role: RoleClient, member_a: str
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        other = await make_org(admin, parent_id=tree.street["id"], name="南湖社区")
        for org, status in ((tree.community_a, 200), (tree.community_b, 200), (other, 404)):
            async with as_role("org_viewer", org_id=org["id"]) as c:
                assert (await c.get(f"{TRANSFERS}/{t['id']}")).status_code == status

    async def test_unknown_or_malformed_id(self, admin: httpx.AsyncClient) -> None:
        assert_problem(await admin.get(f"{TRANSFERS}/{uuid.uuid4()}"), 404)
        assert_problem(await admin.get(f"{TRANSFERS}/12"), 422)


class TestIssue:
    async def test_sending_org_issues_with_default_validity(
        self,
        tree: Tree,
        admin_a: httpx.AsyncClient,
        member_a: str,
        db: Sessions,
        registry_settings: RegistrySettings,
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        r = await admin_a.post(f"{TRANSFERS}/{t['id']}/issue", json={"letter_no": "嘉组转57号"})
        assert r.status_code == 200, r.text
        today = await db_today(db)
        days = registry_settings.letter_validity_days
        assert r.json()["status"] == "issued"
        assert r.json()["letter_no"] == "嘉组转57号"
        assert r.json()["valid_until"] == (today + timedelta(days)).isoformat()
        assert r.json()["issued_at"] is not None
        assert r.headers["ETag"] == '"2"'

    async def test_valid_until_from_today_to_180_days(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        url = f"{TRANSFERS}/{t['id']}/issue"
        today = await db_today(db)
        for bad in (today - timedelta(1), today + timedelta(181)):
            r = await admin_a.post(url, json={"letter_no": "1", "valid_until": bad.isoformat()})
            assert [e["field"] for e in assert_problem(r, 422)["errors"]] == ["valid_until"]  # type: ignore[attr-defined]
        last = (today + timedelta(180)).isoformat()
        r = await admin_a.post(url, json={"letter_no": "1", "valid_until": last})
        assert r.status_code == 200 and r.json()["valid_until"] == last

    async def test_issuing_twice_is_409_naming_the_status(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        await issue(admin_a, t["id"])
        r = await admin_a.post(f"{TRANSFERS}/{t['id']}/issue", json={"letter_no": "2"})
        problem = assert_problem(r, 409)
        assert problem["type"] == "urn:lianxin:problem:transfer-state"
        assert problem["current_status"] == "issued"

    async def test_receiving_org_cannot_issue(
        self, tree: Tree, admin_a: httpx.AsyncClient, admin_b: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        r = await admin_b.post(f"{TRANSFERS}/{t['id']}/issue", json={"letter_no": "1"})
        assert_problem(r, 403)

    async def test_viewer_403_sibling_404(
        self, tree: Tree, admin: httpx.AsyncClient, as_role: RoleClient, member_a: str
    ) -> None:
        t = await request_transfer(admin, member_a, to_external={"name": "外地"})
        url = f"{TRANSFERS}/{t['id']}/issue"
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as c:
            assert_problem(await c.post(url, json={"letter_no": "1"}), 403)
        async with admin_of(as_role, tree.community_b) as c:
            assert_problem(await c.post(url, json={"letter_no": "1"}), 404)

    async def test_if_match_is_optional_but_checked(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        url = f"{TRANSFERS}/{t['id']}/issue"
        stale = await admin_a.post(url, json={"letter_no": "1"}, headers={"If-Match": '"7"'})
        assert_problem(stale, 412)
        etag = (await admin_a.get(f"{TRANSFERS}/{t['id']}")).headers["ETag"]
        ok = await admin_a.post(url, json={"letter_no": "1"}, headers={"If-Match": etag})
        assert ok.status_code == 200, ok.text

    async def test_bad_body_is_422(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        url = f"{TRANSFERS}/{t['id']}/issue"
        r = await admin_a.post(url, json={"letter_no": " ", "valid_until": "soon", "x": 1})
        fields = {e["field"] for e in assert_problem(r, 422)["errors"]}  # type: ignore[attr-defined]
        assert fields == {"letter_no", "valid_until", "x"}


class TestReceive:
    async def test_receiving_moves_the_member_and_leaves_the_group(
        self,
        tree: Tree,
        admin_a: httpx.AsyncClient,
        admin_b: httpx.AsyncClient,
        member_a: str,
        db: Sessions,
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        await issue(admin_a, t["id"])
        r = await admin_b.post(f"{TRANSFERS}/{t['id']}/receive")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"
        assert r.json()["completed_at"] is not None and r.json()["closed_at"] is not None
        assert r.headers["ETag"] == '"3"'
        member = await member_row(db, member_a)
        assert str(member.org_id) == tree.community_b["id"]
        assert member.group_id is None
        assert member.status == "active"
        # B now holds the relation; A no longer sees the member's transfer as open work.
        assert (await admin_b.get(f"{TRANSFERS}/{t['id']}")).status_code == 200

    async def test_group_kept_when_it_lies_under_the_new_org(
        self, tree: Tree, admin: httpx.AsyncClient, db: Sessions
    ) -> None:
        m = await make_member(db, org_id=tree.building_a1["id"], group_id=tree.building_a1["id"])
        t = await request_transfer(admin, m, to_org_id=tree.community_a["id"])
        await issue(admin, t["id"])
        assert (await admin.post(f"{TRANSFERS}/{t['id']}/receive")).status_code == 200
        member = await member_row(db, m)
        assert str(member.org_id) == tree.community_a["id"]
        assert str(member.group_id) == tree.building_a1["id"]

    async def test_status_and_member_change_in_one_transaction(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        await issue(admin, t["id"])
        principal = Principal(subject="s", role=Role.admin)
        async with db() as s:
            await service.receive_transfer(
                s, transfer_id=uuid.UUID(t["id"]), if_match=None, principal=principal
            )
            row = (
                await s.execute(
                    select(Transfer.status, Member.org_id)
                    .join(Member, Member.id == Transfer.member_id)
                    .where(Transfer.id == uuid.UUID(t["id"]))
                )
            ).one()
            assert (row.status, str(row.org_id)) == ("completed", tree.community_b["id"])
            await s.rollback()
        # Rolled back together: the letter is still open and the member still in A.
        assert (await admin.get(f"{TRANSFERS}/{t['id']}")).json()["status"] == "issued"
        assert str((await member_row(db, member_a)).org_id) == tree.community_a["id"]

    async def test_transfer_out_of_the_system_is_received_by_the_sender(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_external={"name": "外地", "code": "W"})
        await issue(admin_a, t["id"])
        r = await admin_a.post(f"{TRANSFERS}/{t['id']}/receive")
        assert r.status_code == 200, r.text
        member = await member_row(db, member_a)
        assert member.status == "transferred_out"
        assert str(member.org_id) == tree.community_a["id"]  # the last org, as history

    async def test_incoming_from_outside_enrols_the_member(
        self, tree: Tree, admin_b: httpx.AsyncClient, db: Sessions
    ) -> None:
        # A member who once left the system comes back into B.
        back = await make_member(
            db,
            org_id=tree.community_a["id"],
            status="transferred_out",
            residence_org_id=tree.community_b["id"],
        )
        today = await db_today(db)
        body = incoming_body(back, tree.community_b["id"], valid_until=today + timedelta(10))
        t = (await admin_b.post(TRANSFERS, json=body)).json()
        r = await admin_b.post(f"{TRANSFERS}/{t['id']}/receive")
        assert r.status_code == 200, r.text
        member = await member_row(db, back)
        assert str(member.org_id) == tree.community_b["id"]
        assert member.status == "active"

    async def test_skipping_the_letter_is_409(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        problem = assert_problem(await admin.post(f"{TRANSFERS}/{t['id']}/receive"), 409)
        assert problem["current_status"] == "requested"

    async def test_receiving_twice_is_409(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        await issue(admin, t["id"])
        assert (await admin.post(f"{TRANSFERS}/{t['id']}/receive")).status_code == 200
        problem = assert_problem(await admin.post(f"{TRANSFERS}/{t['id']}/receive"), 409)
        assert problem["current_status"] == "completed"
        for action, body in (("issue", {"letter_no": "1"}), ("reject", {"reason": "x"})):
            r = await admin.post(f"{TRANSFERS}/{t['id']}/{action}", json=body)
            assert assert_problem(r, 409)["current_status"] == "completed"

    async def test_expired_letter_is_409(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        await issue(admin, t["id"])
        await set_transfer(db, t["id"], valid_until=await db_today(db) - timedelta(1))
        problem = assert_problem(await admin.post(f"{TRANSFERS}/{t['id']}/receive"), 409)
        assert problem["current_status"] == "expired"
        assert str((await member_row(db, member_a)).org_id) == tree.community_a["id"]

    async def test_sender_cannot_receive_viewer_cannot_sibling_cannot_see(
        self, tree: Tree, admin: httpx.AsyncClient, as_role: RoleClient, member_a: str
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        await issue(admin, t["id"])
        url = f"{TRANSFERS}/{t['id']}/receive"
        other = await make_org(admin, parent_id=tree.street["id"], name="南湖社区")
        async with admin_of(as_role, tree.community_a) as c:
            assert_problem(await c.post(url), 403)
        async with as_role("org_viewer", org_id=tree.community_b["id"]) as c:
            assert_problem(await c.post(url), 403)
        async with admin_of(as_role, other) as c:
            assert_problem(await c.post(url), 404)

    async def test_stale_if_match_is_412(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        await issue(admin, t["id"])
        r = await admin.post(f"{TRANSFERS}/{t['id']}/receive", headers={"If-Match": '"1"'})
        assert_problem(r, 412)
        r = await admin.post(f"{TRANSFERS}/{t['id']}/receive", headers={"If-Match": '"2"'})
        assert r.status_code == 200

    async def test_deceased_member_cannot_be_received(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        await issue(admin, t["id"])
        async with db() as s:
            await s.execute(
                text("UPDATE registry.members SET status = 'deceased' WHERE id = :id"),
                {"id": member_a},
            )
            await s.commit()
        problem = assert_problem(await admin.post(f"{TRANSFERS}/{t['id']}/receive"), 409)
        assert problem["member_status"] == "deceased"


class TestReject:
    async def test_sending_org_rejects_a_request_and_the_member_is_free_again(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        r = await admin_a.post(f"{TRANSFERS}/{t['id']}/reject", json={"reason": "信息有误"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "rejected"
        assert r.json()["reject_reason"] == "信息有误"
        assert r.json()["closed_at"] is not None
        await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])

    async def test_receiving_org_cannot_reject_a_request(
        self, tree: Tree, admin_a: httpx.AsyncClient, admin_b: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        r = await admin_b.post(f"{TRANSFERS}/{t['id']}/reject", json={"reason": "不接收"})
        assert_problem(r, 403)

    @pytest.mark.parametrize("side", ["sender", "receiver"])
    async def test_either_side_rejects_an_issued_letter(
        self,
        tree: Tree,
        admin_a: httpx.AsyncClient,
        admin_b: httpx.AsyncClient,
        member_a: str,
        db: Sessions,
        side: str,
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        await issue(admin_a, t["id"])
        c = admin_a if side == "sender" else admin_b
        r = await c.post(f"{TRANSFERS}/{t['id']}/reject", json={"reason": "不接收"})
        assert r.status_code == 200, r.text
        assert str((await member_row(db, member_a)).org_id) == tree.community_a["id"]

    async def test_rejecting_twice_is_409(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        url = f"{TRANSFERS}/{t['id']}/reject"
        assert (await admin_a.post(url, json={"reason": "x"})).status_code == 200
        problem = assert_problem(await admin_a.post(url, json={"reason": "x"}), 409)
        assert problem["current_status"] == "rejected"
        r = await admin_a.post(f"{TRANSFERS}/{t['id']}/issue", json={"letter_no": "1"})
        assert assert_problem(r, 409)["current_status"] == "rejected"

    async def test_reason_is_required(
        self, tree: Tree, admin_a: httpx.AsyncClient, member_a: str
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        url = f"{TRANSFERS}/{t['id']}/reject"
        assert_problem(await admin_a.post(url, json={}), 422)
        assert_problem(await admin_a.post(url, json={"reason": "  "}), 422)
        assert_problem(await admin_a.post(url), 422)


class TestStateMachineInTheDatabase:
    @pytest.mark.parametrize(
        ("prepare", "new_status"),
        [
            ("requested", "completed"),  # skipping the letter
            ("requested", "expired"),
            ("rejected", "issued"),  # reopening
            ("completed", "requested"),
        ],
    )
    async def test_trigger_refuses_a_direct_update(
        self,
        tree: Tree,
        admin: httpx.AsyncClient,
        member_a: str,
        db: Sessions,
        prepare: str,
        new_status: str,
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        if prepare == "rejected":
            await admin.post(f"{TRANSFERS}/{t['id']}/reject", json={"reason": "x"})
        if prepare == "completed":
            await issue(admin, t["id"])
            await admin.post(f"{TRANSFERS}/{t['id']}/receive")
        async with db() as s:
            with pytest.raises(IntegrityError, match="cannot go from"):
                async with s.begin_nested():
                    await s.execute(
                        text(
                            "UPDATE registry.transfers SET status = :s, "
                            "letter_no = 'x', valid_until = current_date WHERE id = :id"
                        ),
                        {"s": new_status, "id": t["id"]},
                    )
            status = await s.scalar(
                text("SELECT status FROM registry.transfers WHERE id = :id"), {"id": t["id"]}
            )
            assert status == prepare

    async def test_trigger_refuses_inserting_a_finished_transfer(
        self, tree: Tree, member_a: str, db: Sessions
    ) -> None:
        async with db() as s:
            with pytest.raises(IntegrityError, match="starts as requested or issued"):
                async with s.begin_nested():
                    s.add(
                        Transfer(
                            member_id=uuid.UUID(member_a),
                            shard_key=(await member_row(db, member_a)).shard_key,
                            from_org_id=uuid.UUID(tree.community_a["id"]),
                            to_org_id=uuid.UUID(tree.community_b["id"]),
                            status="completed",
                            letter_no="1",
                            valid_until=await db_today(db),
                            requested_by="sql",
                        )
                    )

    async def test_unique_index_refuses_a_second_open_transfer(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        async with db() as s:
            with pytest.raises(IntegrityError, match="uq_transfers_open_member"):
                async with s.begin_nested():
                    s.add(
                        Transfer(
                            member_id=uuid.UUID(member_a),
                            shard_key=(await member_row(db, member_a)).shard_key,
                            from_org_id=uuid.UUID(tree.community_a["id"]),
                            to_external_name="外地",
                            status="requested",
                            requested_by="sql",
                        )
                    )


class TestExpiry:
    async def _issued(
        self, tree: Tree, admin: httpx.AsyncClient, member: str, db: Sessions
    ) -> dict[str, object]:
        t = await request_transfer(admin, member, to_org_id=tree.community_b["id"])
        await issue(admin, t["id"])
        await age_transfer(db, t["id"], days=100)
        await set_transfer(db, t["id"], valid_until=await db_today(db) - timedelta(1))
        return t

    async def test_reads_are_right_before_the_sweep(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        t = await self._issued(tree, admin, member_a, db)
        principal = Principal(subject="s", role=Role.admin)
        async with db() as s:
            today = await service.db_today(s)
            stored = await service.get_transfer(
                s, transfer_id=uuid.UUID(str(t["id"])), principal=principal
            )
            assert stored.status == "issued"  # not swept yet
            assert service.to_public(stored, today=today).status == "expired"
            rows, _ = await service.list_transfers(
                s, principal=principal, limit=10, cursor=None, filters={"status": "expired"}
            )
            assert [r.id for r in rows] == [stored.id]

    async def test_sweep_stores_expiry_and_audits_it_as_system(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        t = await self._issued(tree, admin, member_a, db)
        async with db() as s:
            assert await service.expire_overdue(s) == [uuid.UUID(str(t["id"]))]
            assert await service.expire_overdue(s) == []
            await s.commit()
        r = await admin.get(f"{TRANSFERS}/{t['id']}")
        assert r.json()["status"] == "expired" and r.json()["closed_at"] is not None
        entries = await audit_entries(db, t["id"])
        assert ("transfer.expire", "system", "service") in entries

    async def test_each_transfers_request_sweeps_first(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        t = await self._issued(tree, admin, member_a, db)
        await admin.get(TRANSFERS, params={"limit": 1})
        async with db() as s:
            stored = await s.scalar(
                text("SELECT status FROM registry.transfers WHERE id = :id"), {"id": t["id"]}
            )
        assert stored == "expired"

    async def test_expired_letter_leaves_a_pocket_member(
        self,
        tree: Tree,
        admin: httpx.AsyncClient,
        as_role: RoleClient,
        member_a: str,
        db: Sessions,
    ) -> None:
        bystander = await make_member(db, org_id=tree.community_a["id"])
        await request_transfer(admin, bystander, to_org_id=tree.community_b["id"])
        await self._issued(tree, admin, member_a, db)
        admin_p = Principal(subject="s", role=Role.admin)
        a_admin = Principal(
            subject="a", role=Role.org_admin, org_id=uuid.UUID(tree.community_a["id"])
        )
        b_admin = Principal(
            subject="b", role=Role.org_admin, org_id=uuid.UUID(tree.community_b["id"])
        )
        async with db() as s:
            # Right even before the sweep; the member is still counted by A.
            pockets = await service.pocket_member_ids(s, principal=admin_p)
            assert pockets == [uuid.UUID(member_a)]
            await service.expire_overdue(s)
            assert await service.pocket_member_ids(s, principal=admin_p) == pockets
            assert await service.pocket_member_ids(s, principal=a_admin) == pockets
            assert await service.pocket_member_ids(s, principal=b_admin) == []
            flags = dict(
                (
                    await s.execute(
                        select(Member.id, service.pocket_member_clause()).where(
                            Member.org_id == uuid.UUID(tree.community_a["id"])
                        )
                    )
                ).all()
            )
            assert flags == {uuid.UUID(member_a): True, uuid.UUID(bystander): False}
        # A new transfer takes the member out of the pocket.
        await request_transfer(admin, member_a, to_external={"name": "外地"})
        async with db() as s:
            assert await service.pocket_member_ids(s, principal=admin_p) == []


class TestQueue:
    async def test_overdue_first_then_oldest_with_what_each_waits_on(
        self, tree: Tree, admin: httpx.AsyncClient, as_role: RoleClient, db: Sessions
    ) -> None:
        a, b = tree.community_a["id"], tree.community_b["id"]
        today = await db_today(db)
        members = [await make_member(db, org_id=a) for _ in range(5)]
        # fresh request A→B (waits on A to issue)
        fresh = await request_transfer(admin, members[0], to_org_id=b)
        await age_transfer(db, fresh["id"], days=1)
        # old request A→B: overdue after 14 days
        old = await request_transfer(admin, members[1], to_org_id=b)
        await age_transfer(db, old["id"], days=20)
        # letter A→outside issued, far from expiry: waits on A to record the receipt
        out = await request_transfer(admin, members[2], to_external={"name": "外地"})
        await issue(admin, out["id"], valid_until=today + timedelta(60))
        await age_transfer(db, out["id"], days=3)
        # letter A→B expiring in 5 days: overdue, waits on B
        soon = await request_transfer(admin, members[3], to_org_id=b)
        await issue(admin, soon["id"], valid_until=today + timedelta(5))
        # a finished one is no work for anyone
        done = await request_transfer(admin, members[4], to_org_id=b)
        await admin.post(f"{TRANSFERS}/{done['id']}/reject", json={"reason": "x"})

        async with as_role("org_viewer", org_id=tree.street["id"]) as c:
            r = await c.get(f"{TRANSFERS}/queue")
        assert r.status_code == 200, r.text
        got = [(x["id"], x["waiting_on"], x["overdue"]) for x in r.json()["items"]]
        assert got == [
            (old["id"], "issue", True),  # overdue, waiting 20 days
            (soon["id"], "receive", True),  # overdue, issued today
            (out["id"], "receive", False),  # waiting 3 days
            (fresh["id"], "issue", False),  # waiting 1 day
        ]

        async with as_role("org_viewer", org_id=b) as c:
            r = await c.get(f"{TRANSFERS}/queue")
        assert [x["id"] for x in r.json()["items"]] == [soon["id"]]
        r = await admin.get(f"{TRANSFERS}/queue", params={"org_id": a})
        assert [x["id"] for x in r.json()["items"]] == [old["id"], out["id"], fresh["id"]]

        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 1, "org_id": tree.street["id"]}
            if cursor:
                params["cursor"] = cursor
            page = await admin.get(f"{TRANSFERS}/queue", params=params)
            assert page.status_code == 200, page.text
            seen += [x["id"] for x in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if not cursor:
                break
        assert seen == [old["id"], soon["id"], out["id"], fresh["id"]]

    async def test_expired_letters_are_no_longer_waiting(
        self, tree: Tree, admin: httpx.AsyncClient, member_a: str, db: Sessions
    ) -> None:
        t = await request_transfer(admin, member_a, to_org_id=tree.community_b["id"])
        await issue(admin, t["id"])
        await set_transfer(db, t["id"], valid_until=await db_today(db) - timedelta(1))
        r = await admin.get(f"{TRANSFERS}/queue")
        assert r.json()["items"] == []

    async def test_org_outside_scope_is_404_member_is_403(
        self, tree: Tree, as_role: RoleClient, member_a: str
    ) -> None:
        async with as_role("org_viewer", org_id=tree.community_b["id"]) as c:
            r = await c.get(f"{TRANSFERS}/queue", params={"org_id": tree.community_a["id"]})
            assert_problem(r, 404)
        async with as_role("member", org_id=tree.community_a["id"], member_id=member_a) as c:
            assert_problem(await c.get(f"{TRANSFERS}/queue"), 403)


class TestAudit:
    async def test_every_transition_is_recorded(
        self,
        tree: Tree,
        admin_a: httpx.AsyncClient,
        admin_b: httpx.AsyncClient,
        member_a: str,
        db: Sessions,
    ) -> None:
        t = await request_transfer(admin_a, member_a, to_org_id=tree.community_b["id"])
        await issue(admin_a, t["id"])
        await admin_b.post(f"{TRANSFERS}/{t['id']}/receive")
        second = await make_member(db, org_id=tree.community_a["id"])
        r = await request_transfer(admin_a, second, to_external={"name": "外地"})
        await admin_a.post(f"{TRANSFERS}/{r['id']}/reject", json={"reason": "撤回"})
        a, b = f"admin-{tree.community_a['id']}", f"admin-{tree.community_b['id']}"
        assert await audit_entries(db, t["id"]) == [
            ("transfer.create", a, "org_admin"),
            ("transfer.issue", a, "org_admin"),
            ("transfer.receive", b, "org_admin"),
        ]
        assert [e[0] for e in await audit_entries(db, r["id"])] == [
            "transfer.create",
            "transfer.reject",
        ]
        async with db() as s:
            subjects = await s.scalars(
                select(audit_log.c.subject_member_id).where(
                    audit_log.c.record_id == uuid.UUID(t["id"])
                )
            )
            assert set(subjects) == {uuid.UUID(member_a)}


@pytest.mark.committed
class TestConcurrency:
    @pytest.fixture
    def apps(
        self, committed_db: Sessions, registry_settings: RegistrySettings
    ) -> tuple[FastAPI, FastAPI]:
        return (
            create_app(registry_settings, sessionmaker=committed_db),
            create_app(registry_settings, sessionmaker=committed_db),
        )

    @pytest.fixture
    async def setup(
        self, apps: tuple[FastAPI, FastAPI], committed_db: Sessions
    ) -> tuple[Tree, str]:
        async with client(apps[0], mint("admin")) as c:
            tree = await build_tree(c)
        member = await make_member(committed_db, org_id=tree.community_a["id"])
        return tree, member

    async def test_two_creates_at_once_make_one_transfer(
        self, apps: tuple[FastAPI, FastAPI], setup: tuple[Tree, str], committed_db: Sessions
    ) -> None:
        tree, member = setup
        body = {"member_id": member, "to_org_id": tree.community_b["id"]}
        async with client(apps[0], mint("admin")) as c1, client(apps[1], mint("admin")) as c2:
            r1, r2 = await asyncio.gather(
                c1.post(TRANSFERS, json=body), c2.post(TRANSFERS, json=body)
            )
        assert sorted([r1.status_code, r2.status_code]) == [201, 409]
        async with committed_db() as s:
            count = await s.scalar(
                text("SELECT count(*) FROM registry.transfers WHERE member_id = :m"),
                {"m": member},
            )
        assert count == 1

    async def test_unique_index_decides_a_race_the_check_missed(
        self, apps: tuple[FastAPI, FastAPI], setup: tuple[Tree, str], committed_db: Sessions
    ) -> None:
        tree, member = setup
        key = (await member_row(committed_db, member)).shard_key
        async with committed_db() as holder:
            # An uncommitted open transfer: invisible to the API's check, not to the index.
            holder.add(
                Transfer(
                    member_id=uuid.UUID(member),
                    shard_key=key,
                    from_org_id=uuid.UUID(tree.community_a["id"]),
                    to_external_name="外地",
                    status="requested",
                    requested_by="holder",
                )
            )
            await holder.flush()
            async with client(apps[0], mint("admin")) as c:
                body = {"member_id": member, "to_org_id": tree.community_b["id"]}
                pending = asyncio.ensure_future(c.post(TRANSFERS, json=body))
                await _until_blocked_on_a_lock(committed_db, pending)
                await holder.commit()
                r = await pending
        problem = assert_problem(r, 409)
        assert problem["type"] == "urn:lianxin:problem:open-transfer"
        assert "transfer_id" not in problem  # decided by the index, not by the check

    async def test_two_receives_at_once_one_wins(
        self, apps: tuple[FastAPI, FastAPI], setup: tuple[Tree, str], committed_db: Sessions
    ) -> None:
        tree, member = setup
        async with client(apps[0], mint("admin")) as c:
            t = await request_transfer(c, member, to_org_id=tree.community_b["id"])
            await issue(c, t["id"])
        url = f"{TRANSFERS}/{t['id']}/receive"
        async with client(apps[0], mint("admin")) as c1, client(apps[1], mint("admin")) as c2:
            r1, r2 = await asyncio.gather(c1.post(url), c2.post(url))
        assert sorted([r1.status_code, r2.status_code]) == [200, 409]
        loser = r1 if r1.status_code == 409 else r2
        assert loser.json()["current_status"] == "completed"
        async with committed_db() as s:
            version = await s.scalar(
                text("SELECT version FROM registry.members WHERE id = :m"), {"m": member}
            )
        assert version == 2  # moved exactly once
        assert str((await member_row(committed_db, member)).org_id) == tree.community_b["id"]

    async def test_receive_and_reject_at_once_one_wins(
        self, apps: tuple[FastAPI, FastAPI], setup: tuple[Tree, str], committed_db: Sessions
    ) -> None:
        tree, member = setup
        async with client(apps[0], mint("admin")) as c:
            t = await request_transfer(c, member, to_org_id=tree.community_b["id"])
            await issue(c, t["id"])
        async with client(apps[0], mint("admin")) as c1, client(apps[1], mint("admin")) as c2:
            r1, r2 = await asyncio.gather(
                c1.post(f"{TRANSFERS}/{t['id']}/receive"),
                c2.post(f"{TRANSFERS}/{t['id']}/reject", json={"reason": "x"}),
            )
        assert sorted([r1.status_code, r2.status_code]) == [200, 409]
        org_id = str((await member_row(committed_db, member)).org_id)
        expected = tree.community_b["id"] if r1.status_code == 200 else tree.community_a["id"]
        assert org_id == expected


async def _until_blocked_on_a_lock(sessions: Sessions, pending: asyncio.Future[object]) -> None:
    """Wait (by polling the server, no sleeping) until some backend waits on a lock."""
    for _ in range(10_000):
        assert not pending.done(), "the request finished without waiting"
        async with sessions() as s:
            waiting = await s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
    raise AssertionError("no request ever waited on the lock")
