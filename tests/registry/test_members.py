from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.auth import Principal, Role
from services.registry import idnumber
from services.registry.app import create_app
from services.registry.schemas.members import MemberCreate
from services.registry.service import members as member_service
from services.registry.settings import RegistrySettings
from tests.helpers import client, mint
from tests.registry.factories import (
    Tree,
    id_number,
    make_member,
    make_org,
    next_id_number,
)

MEMBERS = "/api/v1/registry/members"
AUDIT = "/api/v1/registry/audit-log"

Sessions = async_sessionmaker[AsyncSession]
AsRole = Callable[..., httpx.AsyncClient]


def url(member: dict[str, Any] | str, suffix: str = "") -> str:
    mid = member["id"] if isinstance(member, dict) else member
    return f"{MEMBERS}/{mid}{suffix}"


async def count(db: Sessions, sql: str, **params: Any) -> int:
    async with db() as s:
        return int((await s.execute(text(sql), params)).scalar_one())


async def all_ids(c: httpx.AsyncClient, **params: Any) -> set[str]:
    r = await c.get(MEMBERS, params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return {m["id"] for m in r.json()["items"]}


async def patch(
    c: httpx.AsyncClient, member: dict[str, Any], body: dict[str, Any]
) -> httpx.Response:
    etag = (await c.get(url(member))).headers["ETag"]
    return await c.patch(url(member), json=body, headers={"If-Match": etag})


def field_names(r: httpx.Response) -> set[str]:
    assert r.headers["content-type"] == "application/problem+json", r.text
    return {e["field"] for e in r.json()["errors"]}


class TestCreateMember:
    async def test_admin_registers_a_card(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        number = id_number(date(1958, 3, 9), serial=135)
        r = await admin.post(
            MEMBERS,
            json={
                "name": "王秀英",
                "gender": "male",
                "birth_date": "1958-03-09",
                "id_number": number,
                "phone": "13812341234",
                "ethnicity": "汉族",
                "education": "senior_high",
                "joined_on": "1985-07-01",
                "membership": "full",
                "category": "retired",
                "org_id": tree.community_a["id"],
                "group_id": tree.building_a1["id"],
                "address": "如意小区3幢101",
                "employer": "嘉兴毛纺厂",
                "skills": ["书法"],
                "resume": [{"from": "1976-09-01", "to": "2013-03-31", "text": "毛纺厂工人"}],
            },
        )
        assert r.status_code == 201, r.text
        m = r.json()
        assert r.headers["Location"] == url(m)
        assert "id_number" not in m
        assert m["id_number_masked"] == idnumber.mask(number)
        assert m["phone"] == "13812341234" and m["phone_masked"] == "138****1234"
        assert m["relation"] == "enrolled" and m["status"] == "active"
        assert m["resume"] == [{"from": "1976-09-01", "to": "2013-03-31", "text": "毛纺厂工人"}]
        assert m["age"] == idnumber.age_on(date(1958, 3, 9), date.today())
        assert m["group_id"] == tree.building_a1["id"]

    async def test_relation_follows_the_category(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        resident = await make_member(
            admin, residence_org_id=tree.community_a["id"], category="in_service_resident"
        )
        assert resident["relation"] == "resident"
        other = await make_member(admin, org_id=tree.community_a["id"], category="other")
        assert other["relation"] == "enrolled"

    async def test_id_number_is_optional(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"])
        assert m["id_number_masked"] is None and m["phone"] is None

    async def test_skills_are_trimmed_and_deduplicated(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        m = await make_member(
            admin, org_id=tree.community_a["id"], skills=[" 书法 ", "书法", "Plumbing", "plumbing"]
        )
        assert m["skills"] == ["书法", "Plumbing"]

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            pytest.param({"name": 42}, "name", id="wrong-type"),
            pytest.param({"birth_date": "yesterday"}, "birth_date", id="bad-date"),
            pytest.param({"name": "   "}, "name", id="blank-name"),
            pytest.param({"address": "1号\x00楼"}, "address", id="nul-character"),
            pytest.param({"nickname": "老王"}, "nickname", id="unknown-field"),
            pytest.param({"category": "student"}, "category", id="unknown-category"),
            pytest.param({"education": "phd"}, "education", id="unknown-education"),
            pytest.param({"id_number": "330402197001011232"}, "id_number", id="bad-checksum"),
            pytest.param(
                {"id_number": id_number(date(1971, 1, 1))}, "id_number", id="birth-mismatch"
            ),
            pytest.param({"id_number": id_number(serial=124)}, "id_number", id="gender-mismatch"),
            pytest.param({"phone": "12345678"}, "phone", id="bad-phone"),
            pytest.param({"org_id": str(uuid.uuid4())}, "org_id", id="unknown-org"),
            pytest.param({"relation": "resident"}, "relation", id="relation-vs-category"),
            pytest.param({"org_id": None}, "org_id", id="enrolled-without-org"),
            pytest.param({"group_id": "community_b"}, "group_id", id="group-not-a-group"),
            pytest.param({"joined_on": "1987-12-31"}, "joined_on", id="joined-before-18"),
            pytest.param(
                {"joined_on": str(date.today() + timedelta(days=1))},
                "joined_on",
                id="joined-in-future",
            ),
            pytest.param(
                {"birth_date": str(date.today() + timedelta(days=1)), "id_number": None},
                "birth_date",
                id="born-in-future",
            ),
            pytest.param(
                {"resume": [{"from": "2001-01-01", "to": "2000-01-01", "text": "x"}]},
                "resume.0",
                id="resume-backwards",
            ),
            pytest.param({"skills": [f"技能{i}" for i in range(33)]}, "skills", id="33-skills"),
        ],
    )
    async def test_bad_input_is_422_with_field_errors_and_writes_nothing(
        self,
        admin: httpx.AsyncClient,
        tree: Tree,
        db: Sessions,
        change: dict[str, Any],
        field: str,
    ) -> None:
        body: dict[str, Any] = {
            "name": "李四",
            "gender": "male",
            "birth_date": "1970-01-01",
            "id_number": id_number(),
            "category": "retired",
            "org_id": tree.community_a["id"],
        }
        body.update(change)
        if body.get("group_id") == "community_b":
            body["group_id"] = tree.community_b["id"]
        before = await count(db, "SELECT count(*) FROM registry.members")
        r = await admin.post(MEMBERS, json=body)
        assert r.status_code == 422, r.text
        assert field in field_names(r)
        assert await count(db, "SELECT count(*) FROM registry.members") == before

    async def test_group_must_sit_under_the_members_org(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await admin.post(
            MEMBERS,
            json={
                "name": "赵六",
                "gender": "female",
                "birth_date": "1980-05-05",
                "category": "retired",
                "org_id": tree.community_b["id"],
                "group_id": tree.building_a1["id"],
            },
        )
        assert r.status_code == 422
        assert field_names(r) == {"group_id"}

    async def test_same_person_twice_is_409_naming_the_existing_record(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        number = next_id_number()
        first = await make_member(admin, org_id=tree.community_a["id"], id_number=number)
        async with as_role("org_admin", org_id=tree.community_b["id"]) as c:
            r = await c.post(
                MEMBERS,
                json={
                    "name": "又一个",
                    "gender": "male",
                    "birth_date": "1970-01-01",
                    "id_number": number.lower(),
                    "category": "retired",
                    "org_id": tree.community_b["id"],
                },
            )
        assert r.status_code == 409
        assert r.json()["existing_id"] == first["id"]
        assert number not in r.text

    async def test_idempotency_key_replays_the_first_response(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        body = {
            "name": "钱七",
            "gender": "male",
            "birth_date": "1970-01-01",
            "phone": "13912345678",
            "category": "retired",
            "org_id": tree.community_a["id"],
        }
        h = {"Idempotency-Key": "member-1"}
        first = await admin.post(MEMBERS, json=body, headers=h)
        again = await admin.post(MEMBERS, json=body, headers=h)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        named = "SELECT count(*) FROM registry.members WHERE name = '钱七'"
        assert await count(db, named) == 1
        other = await admin.post(MEMBERS, json={**body, "name": "孙八"}, headers=h)
        assert other.status_code == 422

    @pytest.mark.parametrize("role", ["org_viewer", "member", "integration", "auditor"])
    async def test_roles_that_do_not_write_get_403(
        self, tree: Tree, as_role: AsRole, role: str
    ) -> None:
        async with as_role(role, org_id=tree.community_a["id"]) as c:
            await make_member(c, org_id=tree.community_a["id"], expect=403)

    async def test_org_admin_registers_only_into_own_scope(
        self, tree: Tree, as_role: AsRole
    ) -> None:
        async with as_role("org_admin", org_id=tree.community_a["id"]) as c:
            await make_member(c, org_id=tree.community_a["id"])
            r = await c.post(
                MEMBERS,
                json={
                    "name": "越界",
                    "gender": "male",
                    "birth_date": "1970-01-01",
                    "category": "retired",
                    "org_id": tree.community_b["id"],
                },
            )
            assert r.status_code == 422
            assert field_names(r) == {"org_id"}

    @pytest.mark.committed
    async def test_concurrent_registration_of_one_person_is_409(
        self, committed_db: Sessions, registry_settings: RegistrySettings
    ) -> None:
        app = create_app(registry_settings, sessionmaker=committed_db)
        number = next_id_number()
        async with client(app, mint("admin")) as c:
            org = await make_org(c, kind="committee", area_level="city")
            body = {
                "name": "先到",
                "gender": "male",
                "birth_date": "1970-01-01",
                "id_number": number,
                "category": "retired",
                "org_id": org["id"],
            }
            async with committed_db() as holder:
                # The first registration is written but not yet committed …
                first = await member_service.create_member(
                    holder,
                    data=MemberCreate.model_validate(body),
                    principal=Principal(subject="test", role=Role.admin),
                    crypto=app.state.crypto,
                )
                # … so the second passes the duplicate check and waits on the unique index.
                racing = asyncio.create_task(c.post(MEMBERS, json={**body, "name": "后到"}))
                waited = await wait_for_lock(committed_db, racing)
                await holder.commit()
            r = await racing
        assert waited, "the second insert never waited on the first one"
        assert r.status_code == 409, r.text
        assert r.json()["existing_id"] == str(first.id)


class TestListMembers:
    async def test_org_id_means_the_subtree(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        in_a = await make_member(admin, org_id=tree.community_a["id"])
        in_a1 = await make_member(admin, org_id=tree.building_a1["id"])
        in_b = await make_member(admin, org_id=tree.community_b["id"])
        at_street = await make_member(admin, org_id=tree.street["id"])
        assert await all_ids(admin, org_id=tree.community_a["id"]) == {in_a["id"], in_a1["id"]}
        assert await all_ids(admin, org_id=tree.street["id"]) == {
            in_a["id"],
            in_a1["id"],
            in_b["id"],
            at_street["id"],
        }

    async def test_residence_org_id_means_the_subtree(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        lives_a = await make_member(admin, residence_org_id=tree.community_a["id"])
        lives_a1 = await make_member(admin, residence_org_id=tree.building_a1["id"])
        await make_member(admin, residence_org_id=tree.community_b["id"])
        await make_member(admin, org_id=tree.community_a["id"])
        found = await all_ids(admin, residence_org_id=tree.community_a["id"])
        assert found == {lives_a["id"], lives_a1["id"]}

    async def test_enum_filters(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        a = tree.community_a["id"]
        retired = await make_member(admin, org_id=a, education="college")
        staff = await make_member(admin, org_id=a, category="community_staff")
        resident = await make_member(admin, residence_org_id=a, education="college")
        r = await patch(admin, staff, {"status": "deceased"})
        assert r.status_code == 200
        assert await all_ids(admin, category="retired") == {retired["id"]}
        assert await all_ids(admin, relation="resident") == {resident["id"]}
        assert await all_ids(admin, status="deceased") == {staff["id"]}
        assert await all_ids(admin, education="college") == {retired["id"], resident["id"]}
        assert await all_ids(admin, education="college", relation="enrolled") == {retired["id"]}
        bad = await admin.get(MEMBERS, params={"status": "asleep"})
        assert bad.status_code == 422 and field_names(bad) == {"query.status"}

    async def test_age_bands_at_their_boundaries(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        today = date.today()
        born = {
            "34": idnumber.years_before(today, 35) + timedelta(days=1),
            "35 today": idnumber.years_before(today, 35),
            "35, 36 tomorrow": idnumber.years_before(today, 36) + timedelta(days=1),
            "36 today": idnumber.years_before(today, 36),
        }
        ids = {}
        for label, birth in born.items():
            m = await make_member(admin, org_id=tree.community_a["id"], birth_date=str(birth))
            ids[label] = m["id"]
        assert await all_ids(admin, age_max=35) == {
            ids["34"],
            ids["35 today"],
            ids["35, 36 tomorrow"],
        }
        assert await all_ids(admin, age_min=36) == {ids["36 today"]}
        assert await all_ids(admin, age_min=35, age_max=35) == {
            ids["35 today"],
            ids["35, 36 tomorrow"],
        }
        assert await all_ids(admin, age_min=35) == {
            ids["35 today"],
            ids["35, 36 tomorrow"],
            ids["36 today"],
        }
        got = (await admin.get(url(ids["35, 36 tomorrow"]))).json()
        assert got["age"] == 35

    async def test_age_min_above_age_max_is_422(self, admin: httpx.AsyncClient) -> None:
        r = await admin.get(MEMBERS, params={"age_min": 40, "age_max": 30})
        assert r.status_code == 422 and field_names(r) == {"age_max"}

    async def test_q_matches_part_of_the_name(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        a = tree.community_a["id"]
        zhang = await make_member(admin, org_id=a, name="张建国")
        await make_member(admin, org_id=a, name="李建华")
        percent = await make_member(admin, org_id=a, name="百分之%百")
        assert await all_ids(admin, q="张建") == {zhang["id"]}
        assert len(await all_ids(admin, q="建")) == 2
        assert await all_ids(admin, q="%") == {percent["id"]}
        nul = await admin.get(MEMBERS, params={"q": "张\x00"})
        assert nul.status_code == 422 and field_names(nul) == {"query.q"}

    async def test_pages_cover_every_row_once(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        made = {(await make_member(admin, org_id=tree.community_a["id"]))["id"] for _ in range(7)}
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, "org_id": tree.community_a["id"]}
            if cursor:
                params["cursor"] = cursor
            r = await admin.get(MEMBERS, params=params)
            assert r.status_code == 200
            page = [m["id"] for m in r.json()["items"]]
            assert page == sorted(page, key=uuid.UUID)
            seen += page
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)) == 7 and set(seen) == made

    async def test_scope_hides_the_sibling_community(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        in_a = await make_member(admin, org_id=tree.community_a["id"])
        lives_a = await make_member(admin, residence_org_id=tree.community_a["id"])
        in_b = await make_member(admin, org_id=tree.community_b["id"], phone="13800001111")
        async with as_role("org_viewer", org_id=tree.community_b["id"]) as c:
            r = await c.get(MEMBERS)
            assert {m["id"] for m in r.json()["items"]} == {in_b["id"]}
            assert r.json()["items"][0]["phone"] is None
            assert r.json()["items"][0]["phone_masked"] == "138****1111"
        async with as_role("org_admin", org_id=tree.community_a["id"]) as c:
            assert await all_ids(c) == {in_a["id"], lives_a["id"]}
            assert await all_ids(c, org_id=tree.community_b["id"]) == set()

    async def test_member_sees_only_themself(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        me = await make_member(admin, org_id=tree.community_a["id"])
        await make_member(admin, org_id=tree.community_a["id"])
        async with as_role("member", member_id=me["id"], org_id=tree.community_a["id"]) as c:
            assert await all_ids(c) == {me["id"]}

    async def test_auditor_gets_403(self, as_role: AsRole) -> None:
        async with as_role("auditor") as c:
            r = await c.get(MEMBERS)
            assert r.status_code == 403


class TestGetMember:
    async def test_read_carries_an_etag(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"])
        r = await admin.get(url(m))
        assert r.status_code == 200 and r.headers["ETag"] == '"1"'
        assert r.json()["id"] == m["id"] and "Content-Location" not in r.headers

    async def test_sibling_community_gets_404(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"])
        for role in ("org_viewer", "org_admin", "integration"):
            async with as_role(role, org_id=tree.community_b["id"]) as c:
                r = await c.get(url(m))
                assert r.status_code == 404
                assert r.headers["content-type"] == "application/problem+json"

    async def test_unknown_and_malformed_ids(self, admin: httpx.AsyncClient) -> None:
        assert (await admin.get(url(str(uuid.uuid4())))).status_code == 404
        assert (await admin.get(url("not-a-uuid"))).status_code == 422

    async def test_residence_community_reads_its_residents(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        m = await make_member(
            admin,
            org_id=tree.community_b["id"],
            residence_org_id=tree.community_a["id"],
            category="other",
            relation="resident",
        )
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as c:
            assert (await c.get(url(m))).status_code == 200

    async def test_phone_in_full_only_for_admins_and_the_member(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"], phone="0573-82345678")
        other = await make_member(admin, org_id=tree.community_a["id"])
        claims = {"org_id": tree.community_a["id"]}
        expected = {
            "org_admin": "0573-82345678",
            "org_viewer": None,
            "integration": None,
        }
        for role, phone in expected.items():
            async with as_role(role, **claims) as c:
                r = await c.get(url(m))
                assert r.json()["phone"] == phone, role
                assert r.json()["phone_masked"] == "0573-****5678"
        async with as_role("member", member_id=m["id"], **claims) as c:
            assert (await c.get(url(m))).json()["phone"] == "0573-82345678"
            assert (await c.get(url(other))).status_code == 404

    async def test_auditor_gets_403(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"])
        async with as_role("auditor") as c:
            assert (await c.get(url(m))).status_code == 403


class TestUpdateMember:
    async def test_patch_requires_a_current_if_match(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"])
        assert (await admin.patch(url(m), json={"name": "新名"})).status_code == 428
        stale = await admin.patch(url(m), json={"name": "新名"}, headers={"If-Match": '"9"'})
        assert stale.status_code == 412
        etag = (await admin.get(url(m))).headers["ETag"]
        ok = await admin.patch(url(m), json={"name": "新名"}, headers={"If-Match": etag})
        assert ok.status_code == 200 and ok.json()["name"] == "新名"
        assert ok.headers["ETag"] == '"2"'
        again = await admin.patch(url(m), json={"name": "再改"}, headers={"If-Match": etag})
        assert again.status_code == 412

    async def test_patch_changes_fields_and_is_audited(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"], phone="13812341234")
        number = next_id_number()
        r = await patch(
            admin,
            m,
            {
                "id_number": number,
                "phone": None,
                "education": "bachelor",
                "skills": ["电脑", "电脑 "],
                "group_id": tree.building_a1["id"],
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id_number_masked"] == idnumber.mask(number)
        assert body["phone"] is None and body["phone_masked"] is None
        assert body["education"] == "bachelor" and body["skills"] == ["电脑"]
        actions = await count(
            db,
            "SELECT count(*) FROM registry.audit_log WHERE action = 'member.update' "
            "AND record_id = :id AND subject_member_id = :id",
            id=uuid.UUID(m["id"]),
        )
        assert actions == 1

    async def test_null_is_refused_for_required_fields(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"])
        r = await patch(admin, m, {"name": None, "category": None, "unknown": 1})
        assert r.status_code == 422
        assert field_names(r) == {"name", "category", "unknown"}

    async def test_status_set_by_the_system_is_refused(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"])
        for status in ("mobile", "lost_contact", "transferred_out"):
            r = await patch(admin, m, {"status": status})
            assert r.status_code == 422 and field_names(r) == {"status"}
        r = await patch(admin, m, {"status": "removed"})
        assert r.status_code == 200 and r.json()["status"] == "removed"

    async def test_enrolled_members_org_changes_only_by_transfer(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"])
        r = await patch(admin, m, {"org_id": tree.community_b["id"]})
        assert r.status_code == 409
        assert "transfer" in r.json()["detail"]
        resident = await make_member(admin, residence_org_id=tree.community_a["id"])
        moved = await patch(admin, resident, {"residence_org_id": tree.community_b["id"]})
        assert moved.status_code == 200
        assert moved.json()["residence_org_id"] == tree.community_b["id"]

    async def test_id_number_of_another_live_record_is_409(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        number = next_id_number()
        holder = await make_member(admin, org_id=tree.community_a["id"], id_number=number)
        m = await make_member(admin, org_id=tree.community_b["id"])
        r = await patch(admin, m, {"id_number": number})
        assert r.status_code == 409 and r.json()["existing_id"] == holder["id"]
        same = await patch(admin, holder, {"id_number": number, "name": "本人"})
        assert same.status_code == 200

    async def test_card_rules_hold_against_the_stored_record(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"], id_number=next_id_number())
        r = await patch(admin, m, {"birth_date": "1971-01-01"})
        assert r.status_code == 422 and field_names(r) == {"birth_date"}
        r = await patch(admin, m, {"gender": "female"})
        assert r.status_code == 422 and field_names(r) == {"gender"}
        r = await patch(admin, m, {"category": "in_service_resident"})
        assert r.status_code == 422 and "relation" in field_names(r)
        r = await patch(admin, m, {"joined_on": "1980-01-01"})
        assert r.status_code == 422 and field_names(r) == {"joined_on"}
        r = await patch(admin, m, {"group_id": tree.community_b["id"]})
        assert r.status_code == 422 and field_names(r) == {"group_id"}
        assert (await admin.get(url(m))).headers["ETag"] == '"1"'

    async def test_viewer_cannot_write_and_sibling_admin_gets_404(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"])
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as c:
            r = await patch(c, m, {"name": "x"})
            assert r.status_code == 403
        async with as_role("org_admin", org_id=tree.community_b["id"]) as c:
            r = await c.patch(url(m), json={"name": "x"}, headers={"If-Match": '"1"'})
            assert r.status_code == 404
        async with as_role("org_admin", org_id=tree.community_a["id"]) as c:
            assert (await patch(c, m, {"name": "本社区改"})).status_code == 200


class TestReadIdNumber:
    async def test_admins_of_the_member_read_it_and_each_read_is_audited(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        number = "11010519491231002X"
        m = await make_member(
            admin,
            org_id=tree.community_a["id"],
            birth_date="1949-12-31",
            gender="female",
            id_number=number.lower(),
        )
        r = await admin.get(url(m, "/id-number"))
        assert r.status_code == 200
        assert r.json() == {"member_id": m["id"], "id_number": number}
        assert r.headers["Cache-Control"] == "no-store"
        async with as_role("org_admin", org_id=tree.street["id"], username="street-admin") as c:
            assert (await c.get(url(m, "/id-number"))).json()["id_number"] == number
        async with as_role("auditor") as c:
            log = await c.get(
                AUDIT, params={"action": "member.read_id_number", "subject_member_id": m["id"]}
            )
        assert log.status_code == 200, log.text
        entries = log.json()["items"]
        assert sorted(e["actor"] for e in entries) == ["root-admin", "street-admin"]
        assert all(e["record_id"] == m["id"] for e in entries)
        assert number not in log.text

    @pytest.mark.parametrize(
        ("role", "home", "status"),
        [
            ("org_viewer", "community_a", 403),
            ("integration", "community_a", 403),
            ("org_viewer", "community_b", 404),
            ("org_admin", "community_b", 404),
            ("auditor", None, 403),
        ],
    )
    async def test_other_roles_are_refused(
        self,
        admin: httpx.AsyncClient,
        tree: Tree,
        as_role: AsRole,
        db: Sessions,
        role: str,
        home: str | None,
        status: int,
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"], id_number=next_id_number())
        claims = {"org_id": getattr(tree, home)["id"]} if home else {}
        async with as_role(role, **claims) as c:
            r = await c.get(url(m, "/id-number"))
        assert r.status_code == status
        audited = await count(
            db,
            "SELECT count(*) FROM registry.audit_log WHERE action = 'member.read_id_number' "
            "AND subject_member_id = :id",
            id=uuid.UUID(m["id"]),
        )
        assert audited == 0

    async def test_the_member_themself_is_refused(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        m = await make_member(admin, org_id=tree.community_a["id"], id_number=next_id_number())
        async with as_role("member", member_id=m["id"]) as c:
            assert (await c.get(url(m, "/id-number"))).status_code == 403

    async def test_the_number_appears_in_no_other_response(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        number = next_id_number()
        responses = [
            await admin.post(
                MEMBERS,
                json={
                    "name": "周九",
                    "gender": "male",
                    "birth_date": "1970-01-01",
                    "id_number": number,
                    "category": "retired",
                    "org_id": tree.community_a["id"],
                },
                headers={"Idempotency-Key": "no-leak"},
            )
        ]
        m = responses[0].json()
        dup = await make_member(admin, org_id=tree.community_b["id"], name="周九")
        responses += [
            await admin.get(url(m)),
            await admin.get(MEMBERS),
            await admin.get(MEMBERS, params={"q": "周"}),
            await patch(admin, m, {"address": "新地址"}),
            await admin.post(
                MEMBERS,
                json={
                    "name": "周九",
                    "gender": "male",
                    "birth_date": "1970-01-01",
                    "id_number": number,
                    "category": "retired",
                    "org_id": tree.community_b["id"],
                },
            ),
            await admin.post(url(m, "/merge"), json={"duplicate_id": dup["id"], "reason": "重"}),
            await admin.get(url(dup)),
        ]
        async with as_role("auditor") as c:
            responses.append(await c.get(AUDIT))
        for r in responses:
            assert r.status_code < 500
            assert number not in r.text


class TestMergeMembers:
    async def test_survivor_absorbs_the_duplicate(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        number = next_id_number()
        survivor = await make_member(
            admin,
            org_id=tree.community_a["id"],
            skills=["书法"],
            resume=[{"from": "1990-01-01", "to": "2000-01-01", "text": "甲厂"}],
        )
        duplicate = await make_member(
            admin,
            org_id=tree.community_b["id"],
            id_number=number,
            phone="13812341234",
            address="凤凰小区1幢",
            skills=["书法", "烹饪"],
            resume=[
                {"from": "1990-01-01", "to": "2000-01-01", "text": "甲厂"},
                {"from": "2000-02-01", "to": None, "text": "乙厂"},
            ],
        )
        r = await admin.post(
            url(survivor, "/merge"), json={"duplicate_id": duplicate["id"], "reason": "重复登记"}
        )
        assert r.status_code == 200, r.text
        merged = r.json()
        assert merged["id"] == survivor["id"] and r.headers["ETag"] == '"2"'
        assert merged["id_number_masked"] == idnumber.mask(number)
        assert merged["phone"] == "13812341234" and merged["address"] == "凤凰小区1幢"
        assert merged["skills"] == ["书法", "烹饪"]
        assert [e["text"] for e in merged["resume"]] == ["甲厂", "乙厂"]
        assert merged["org_id"] == tree.community_a["id"]

        old = await admin.get(url(duplicate))
        assert old.status_code == 200 and old.json()["id"] == survivor["id"]
        assert old.headers["Content-Location"] == url(survivor)
        assert duplicate["id"] not in await all_ids(admin)
        assert survivor["id"] in await all_ids(admin)
        number_read = await admin.get(url(survivor, "/id-number"))
        assert number_read.json()["id_number"] == number

        async with db() as s:
            row = (
                await s.execute(
                    text(
                        "SELECT merged_into, id_number_cipher, id_number_hash "
                        "FROM registry.members WHERE id = :id"
                    ),
                    {"id": uuid.UUID(duplicate["id"])},
                )
            ).one()
            assert row.merged_into == uuid.UUID(survivor["id"])
            assert row.id_number_cipher is None and row.id_number_hash is None
            merges = (
                await s.execute(text("SELECT from_id, into_id, reason FROM registry.member_merges"))
            ).all()
            assert [(str(a), str(b), c) for a, b, c in merges] == [
                (duplicate["id"], survivor["id"], "重复登记")
            ]
            audited = (
                await s.execute(
                    text(
                        "SELECT record_id FROM registry.audit_log WHERE action = 'member.merge' "
                        "AND subject_member_id IN (:a, :b)"
                    ),
                    {"a": uuid.UUID(survivor["id"]), "b": uuid.UUID(duplicate["id"])},
                )
            ).all()
            assert {str(a) for (a,) in audited} == {survivor["id"], duplicate["id"]}

    async def test_merged_id_number_can_no_longer_register_twice(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        number = next_id_number()
        survivor = await make_member(admin, org_id=tree.community_a["id"])
        duplicate = await make_member(admin, org_id=tree.community_b["id"], id_number=number)
        await admin.post(
            url(survivor, "/merge"), json={"duplicate_id": duplicate["id"], "reason": "x"}
        )
        r = await make_member(admin, org_id=tree.community_b["id"], id_number=number, expect=409)
        assert r["existing_id"] == survivor["id"]

    async def test_transfers_follow_the_survivor(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        survivor = await make_member(admin, org_id=tree.community_a["id"])
        duplicate = await make_member(admin, org_id=tree.community_b["id"])
        transfer_id = await insert_transfer(db, duplicate["id"], tree)
        r = await admin.post(
            url(survivor, "/merge"), json={"duplicate_id": duplicate["id"], "reason": "x"}
        )
        assert r.status_code == 200
        owner = await count(
            db,
            "SELECT count(*) FROM registry.transfers WHERE id = :t AND member_id = :m",
            t=transfer_id,
            m=uuid.UUID(survivor["id"]),
        )
        assert owner == 1

    async def test_two_open_transfers_are_409(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        survivor = await make_member(admin, org_id=tree.community_a["id"])
        duplicate = await make_member(admin, org_id=tree.community_b["id"])
        await insert_transfer(db, survivor["id"], tree)
        await insert_transfer(db, duplicate["id"], tree)
        r = await admin.post(
            url(survivor, "/merge"), json={"duplicate_id": duplicate["id"], "reason": "x"}
        )
        assert r.status_code == 409
        assert (await admin.get(url(duplicate))).json()["id"] == duplicate["id"]

    async def test_refusals(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        a = await make_member(admin, org_id=tree.community_a["id"], id_number=next_id_number())
        b = await make_member(admin, org_id=tree.community_b["id"], id_number=next_id_number())
        c = await make_member(admin, org_id=tree.community_b["id"])
        itself = await admin.post(url(a, "/merge"), json={"duplicate_id": a["id"], "reason": "x"})
        assert itself.status_code == 422 and field_names(itself) == {"duplicate_id"}
        two_numbers = await admin.post(
            url(a, "/merge"), json={"duplicate_id": b["id"], "reason": "x"}
        )
        assert two_numbers.status_code == 409
        unknown = await admin.post(
            url(a, "/merge"), json={"duplicate_id": str(uuid.uuid4()), "reason": "x"}
        )
        assert unknown.status_code == 422 and field_names(unknown) == {"duplicate_id"}
        no_reason = await admin.post(url(a, "/merge"), json={"duplicate_id": c["id"]})
        assert no_reason.status_code == 422 and field_names(no_reason) == {"reason"}
        ok = await admin.post(url(a, "/merge"), json={"duplicate_id": c["id"], "reason": "x"})
        assert ok.status_code == 200
        again = await admin.post(url(b, "/merge"), json={"duplicate_id": c["id"], "reason": "x"})
        assert again.status_code == 409

    async def test_merge_needs_write_access_to_both(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        a = await make_member(admin, org_id=tree.community_a["id"])
        a2 = await make_member(admin, org_id=tree.community_a["id"])
        b = await make_member(admin, org_id=tree.community_b["id"])
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as c:
            r = await c.post(url(a, "/merge"), json={"duplicate_id": a2["id"], "reason": "x"})
            assert r.status_code == 403
        async with as_role("org_admin", org_id=tree.community_a["id"]) as c:
            r = await c.post(url(a, "/merge"), json={"duplicate_id": b["id"], "reason": "x"})
            assert r.status_code == 422
            r = await c.post(url(b, "/merge"), json={"duplicate_id": a["id"], "reason": "x"})
            assert r.status_code == 404
            r = await c.post(url(a, "/merge"), json={"duplicate_id": a2["id"], "reason": "x"})
            assert r.status_code == 200


class TestStorage:
    async def test_database_holds_no_plaintext_id_number_or_phone(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        number = next_id_number()
        phone = "13987654321"
        m = await make_member(
            admin,
            org_id=tree.community_a["id"],
            id_number=number,
            phone=phone,
        )
        await admin.post(
            MEMBERS,
            json={
                "name": "幂等",
                "gender": "male",
                "birth_date": "1970-01-01",
                "phone": phone,
                "category": "retired",
                "org_id": tree.community_a["id"],
            },
            headers={"Idempotency-Key": "stored"},
        )
        await admin.get(url(m, "/id-number"))
        async with db() as s:
            rows = [
                str(v)
                for (v,) in (
                    await s.execute(
                        text(
                            "SELECT t::text FROM registry.members t UNION ALL "
                            "SELECT t::text FROM registry.idempotency_keys t UNION ALL "
                            "SELECT t::text FROM registry.audit_log t"
                        )
                    )
                ).all()
            ]
            raw = (
                await s.execute(
                    text(
                        "SELECT id_number_cipher, id_number_hash, phone_cipher, "
                        "id_number_masked, phone_masked FROM registry.members WHERE id = :id"
                    ),
                    {"id": uuid.UUID(m["id"])},
                )
            ).one()
        dump = "\n".join(rows)
        for secret in (number, phone):
            assert secret not in dump
            assert secret.encode().hex() not in dump
        for blob in raw[:3]:
            assert number.encode() not in blob and phone.encode() not in blob
        assert raw.id_number_masked == idnumber.mask(number)
        assert raw.phone_masked == "139****4321"


async def wait_for_lock(db: Sessions, task: asyncio.Task[Any]) -> bool:
    """Until another backend waits on a lock (True) or `task` ends (False). Each check is a
    round trip to the server, which lets the task run meanwhile."""
    async with db() as watcher:
        for _ in range(5000):
            waiting = await watcher.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
            # Activity statistics are a snapshot per transaction: end it to see news.
            await watcher.rollback()
            if waiting:
                return True
            if task.done():
                return False
    return False


async def insert_transfer(db: Sessions, member_id: str, tree: Tree) -> uuid.UUID:
    transfer_id = uuid.uuid4()
    async with db() as s:
        await s.execute(
            text(
                "INSERT INTO registry.transfers (id, shard_key, member_id, from_org_id, "
                "to_org_id, requested_by) VALUES (:id, (SELECT shard_key FROM registry.members "
                "WHERE id = :m), :m, :f, :t, 'test')"
            ),
            {
                "id": transfer_id,
                "m": uuid.UUID(member_id),
                "f": uuid.UUID(tree.community_b["id"]),
                "t": uuid.UUID(tree.community_a["id"]),
            },
        )
        await s.commit()
    return transfer_id
