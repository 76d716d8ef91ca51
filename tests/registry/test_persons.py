"""The internal bulk endpoint other services call with their own service tokens: persons as
columns in, results as columns out, in the order asked."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic_core import to_json
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from common.bulk import new_ids
from common.service_client import service_token
from services.registry import idnumber
from services.registry.events import emit_members_registered, member_data
from services.registry.models import Member, Org
from tests.helpers import PRIVATE_PEM, SERVICE_PRIVATE_PEM, client, mint
from tests.registry.factories import Tree, id_number, make_member

URL = "/api/v1/registry/persons/resolve"
FIELDS = (
    "index",
    "external_id",
    "name",
    "id_number",
    "phone",
    "residence_community_code",
    "address",
    "employer",
)


def person(index: int, community: dict[str, object], **overrides: object) -> dict[str, object]:
    return {
        "index": index,
        "external_id": f"X{index}",
        "name": f"人员{index}",
        "id_number": id_number(date(1985, 2, 3), serial=100 + index),
        "residence_community_code": community["code"],
        **overrides,
    }


def columns(persons: list[dict[str, object]]) -> dict[str, list[object]]:
    """The persons as the endpoint takes them: one array per field."""
    return {name: [p.get(name) for p in persons] for name in FIELDS}


def rows(results: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The answer's columns as one dict per person asked."""
    names = list(results)
    return [dict(zip(names, values, strict=True)) for values in zip(*results.values(), strict=True)]


def service() -> str:
    return service_token(SERVICE_PRIVATE_PEM, subject="service:mobility")


class TestResolvePersons:
    async def test_only_services_may_call_it(self, app: FastAPI, tree: Tree) -> None:
        body = {"persons": columns([person(0, tree.community_a)])}
        for role in ("admin", "org_admin", "integration"):
            async with client(app, mint(role, org_id=tree.city["id"])) as c:
                assert (await c.post(URL, json=body)).status_code == 403

    async def test_a_service_token_signed_with_another_key_or_role_is_refused(
        self, app: FastAPI, tree: Tree
    ) -> None:
        body = {"persons": columns([person(0, tree.community_a)])}
        forged = service_token(PRIVATE_PEM, subject="service:mobility")
        async with client(app, forged) as c:
            assert (await c.post(URL, json=body)).status_code == 401
        as_admin = mint("admin", iss="lianxin-services", key=None)
        async with client(app, as_admin) as c:
            assert (await c.post(URL, json=body)).status_code == 401

    async def test_matches_across_the_registry_and_creates_the_missing_once(
        self,
        app: FastAPI,
        admin: httpx.AsyncClient,
        tree: Tree,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        known = await make_member(
            admin,
            org_id=tree.community_b["id"],
            birth_date="1985-02-03",
            id_number=id_number(date(1985, 2, 3), serial=101),
        )
        persons = [
            person(0, tree.community_a, employer="某单位", address="3幢"),
            person(1, tree.community_a),  # already registered elsewhere
            person(2, tree.community_a, id_number="123"),
            person(3, tree.community_a, residence_community_code="NOPE"),
            person(4, tree.community_a, id_number=id_number(date(1985, 2, 3), serial=100)),
            person(5, tree.community_a, phone="12345"),
            person(6, tree.community_a, name="  "),
        ]
        async with client(app, service()) as c:
            r = await c.post(URL, json={"persons": columns(persons)})
            again = await c.post(URL, json={"persons": columns(persons[:1])})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert set(results) == {"member_id", "created", "residence_org_id", "error"}
        found = rows(results)
        assert [(x["created"], x["error"]) for x in found] == [
            (True, None),
            (False, None),
            (False, "id_number: must be 18 characters"),
            (False, "residence_community_code: no such community"),
            (False, None),
            (
                False,
                "phone: must be a mainland mobile (1[3-9] and 9 digits) or 0area-number landline",
            ),
            (False, "name: is blank"),
        ]
        assert found[1]["member_id"] == known["id"]
        assert found[4]["member_id"] == found[0]["member_id"]
        assert found[0]["residence_org_id"] == tree.community_a["id"]
        assert found[3]["residence_org_id"] is None and found[3]["member_id"] is None
        assert rows(again.json()["results"]) == [{**found[0], "created": False}]
        card = (await admin.get(f"/api/v1/registry/members/{found[0]['member_id']}")).json()
        assert (card["category"], card["relation"], card["org_id"]) == (
            "in_service_resident",
            "resident",
            None,
        )
        assert (card["employer"], card["address"]) == ("某单位", "3幢")
        # serial 100: an even 17th digit
        assert card["gender"] == "female" and card["birth_date"] == "1985-02-03"
        # One `member.registered` for the one record created, with the member's state.
        async with db() as s:
            events = (
                await s.execute(
                    text(
                        "SELECT aggregate_id, aggregate_version, payload, org_paths "
                        "FROM registry.outbox WHERE type = 'member.registered' "
                        "AND aggregate_id = :id"
                    ),
                    {"id": found[0]["member_id"]},
                )
            ).all()
            path = (
                await s.execute(
                    text("SELECT path::text FROM registry.orgs WHERE id = :id"),
                    {"id": tree.community_a["id"]},
                )
            ).scalar_one()
        assert len(events) == 1
        payload = events[0].payload
        assert payload["member_id"] == found[0]["member_id"]
        assert payload["residence_org_id"] == tree.community_a["id"]
        assert payload["residence_path"] == path
        assert (payload["org_id"], payload["org_path"], payload["group_id"]) == (None, None, None)
        assert (payload["status"], payload["version"], payload["skills"]) == ("active", 1, [])
        assert events[0].org_paths == [path]
        assert not {"id_number", "phone", "address"} & set(payload)

    async def test_each_registered_person_has_its_audit_entry(
        self, app: FastAPI, tree: Tree, db: async_sessionmaker[AsyncSession]
    ) -> None:
        """One `member.create` entry per record created (none for one found), naming the
        calling service, the member as record and subject, and the request."""
        persons = [person(i, tree.community_a) for i in (20, 21)]
        async with client(app, service()) as c:
            first = await c.post(URL, json={"persons": columns(persons[:1])})
            r = await c.post(
                URL, json={"persons": columns(persons)}, headers={"X-Request-ID": "bulk-audit-1"}
            )
        assert first.status_code == r.status_code == 200, r.text
        found = rows(r.json()["results"])
        async with db() as s:
            entries = (
                await s.execute(
                    text(
                        "SELECT actor, role, action, resource, record_id, subject_member_id, "
                        "outcome, request_id FROM registry.audit_log "
                        "WHERE record_id = ANY(CAST(:ids AS uuid[]))"
                    ),
                    {"ids": [f["member_id"] for f in found]},
                )
            ).all()
        assert [f["created"] for f in found] == [False, True]
        new, old = uuid.UUID(found[1]["member_id"]), uuid.UUID(found[0]["member_id"])
        by_record = {e.record_id: e for e in entries}
        assert len(entries) == 2 and set(by_record) == {old, new}
        for member in (old, new):
            assert tuple(by_record[member])[:7] == (
                "service:mobility",
                "service",
                "member.create",
                "member",
                member,
                member,
                "success",
            )
        assert by_record[new].request_id == "bulk-audit-1"
        assert by_record[old].request_id != "bulk-audit-1"  # made by the first call

    async def test_without_create_missing_unknown_numbers_are_an_error(
        self, app: FastAPI, tree: Tree
    ) -> None:
        body = {"persons": columns([person(0, tree.community_a)]), "create_missing": False}
        async with client(app, service()) as c:
            r = await c.post(URL, json=body)
        assert r.status_code == 200, r.text
        assert rows(r.json()["results"]) == [
            {
                "member_id": None,
                "created": False,
                "residence_org_id": tree.community_a["id"],
                "error": "no record holds this ID number",
            }
        ]

    async def test_optional_columns_may_be_left_out_and_an_empty_call_is_fine(
        self, app: FastAPI, tree: Tree
    ) -> None:
        one = person(0, tree.community_a)
        body = {
            "persons": {
                "index": [7],
                "name": [one["name"]],
                "id_number": [one["id_number"]],
                "residence_community_code": [one["residence_community_code"]],
            }
        }
        empty = {"persons": {"index": [], "name": [], "id_number": []}}
        async with client(app, service()) as c:
            r = await c.post(URL, json=body)
            nothing = await c.post(URL, json=empty)
        assert r.status_code == 200, r.text
        assert r.json()["results"]["created"] == [True]
        assert nothing.status_code == 200, nothing.text
        assert nothing.json() == {
            "results": {"member_id": [], "created": [], "residence_org_id": [], "error": []}
        }

    @pytest.mark.parametrize(
        ("change", "where"),
        [
            ({"name": []}, "persons"),  # a column shorter than the others
            ({"phone": [None, None]}, "persons"),  # or longer
            ({"nickname": ["x"]}, "persons.nickname"),  # no such column
            ({"index": [-1]}, "persons.index.0"),
            ({"name": [""]}, "persons.name.0"),
            ({"id_number": ["1" * 33]}, "persons.id_number.0"),
            ({"external_id": ["x" * 101]}, "persons.external_id.0"),
            ({"address": ["x" * 301]}, "persons.address.0"),
            ({"employer": ["x" * 201]}, "persons.employer.0"),
            ({"residence_community_code": ["x" * 65]}, "persons.residence_community_code.0"),
            ({"name": None}, "persons.name"),
        ],
    )
    async def test_a_malformed_call_is_a_422_naming_the_column(
        self, app: FastAPI, tree: Tree, change: dict[str, object], where: str
    ) -> None:
        persons: dict[str, object] = {**columns([person(0, tree.community_a)]), **change}
        async with client(app, service()) as c:
            r = await c.post(URL, json={"persons": persons})
        assert r.status_code == 422, r.text
        assert where in [e["field"] for e in r.json()["errors"]], r.text

    async def test_the_old_list_of_objects_is_refused(self, app: FastAPI, tree: Tree) -> None:
        async with client(app, service()) as c:
            r = await c.post(URL, json={"persons": [person(0, tree.community_a)]})
        assert r.status_code == 422, r.text


async def test_a_bulk_registration_payload_is_the_members_own(
    admin: httpx.AsyncClient, tree: Tree, db: async_sessionmaker[AsyncSession]
) -> None:
    """`member.registered` made by the database for bulk writes carries, for the same
    member, the JSON `member_data` gives one event at a time, and the same org paths: a
    member enrolled in one org and living in another, with skills and an education, and
    one living where they are enrolled (one path). In the order given."""
    two = await make_member(
        admin,
        org_id=tree.community_b["id"],
        residence_org_id=tree.community_a["id"],
        skills=["电工", "水工"],
        education="college",
    )
    one = await make_member(
        admin, org_id=tree.community_a["id"], residence_org_id=tree.community_a["id"]
    )
    ids = [uuid.UUID(one["id"]), uuid.UUID(two["id"])]
    async with db() as s:
        before = await s.scalar(text("SELECT coalesce(max(id), 0) FROM registry.outbox"))
        await emit_members_registered(s, ids)
        events = (
            await s.execute(
                text(
                    "SELECT type, aggregate_id, aggregate_version, shard_key, org_paths, payload "
                    "FROM registry.outbox WHERE id > :before ORDER BY id"
                ),
                {"before": before},
            )
        ).all()
        members = {m.id: m for m in await s.scalars(select(Member).where(col(Member.id).in_(ids)))}
        paths = {
            org.id: str(org.path)
            for org in await s.scalars(
                select(Org).where(
                    col(Org.id).in_(
                        [uuid.UUID(tree.community_a["id"]), uuid.UUID(tree.community_b["id"])]
                    )
                )
            )
        }
    assert [(e.type, e.aggregate_id) for e in events] == [("member.registered", i) for i in ids]
    for event in events:
        member = members[event.aggregate_id]
        payload, org_paths = member_data(member, paths)
        assert event.payload == json.loads(to_json(payload))
        assert event.org_paths == sorted(set(filter(None, org_paths)))
        assert (event.aggregate_version, event.shard_key) == (member.version, member.shard_key)
    assert len(events[0].org_paths) == 1 and len(events[1].org_paths) == 2
    assert events[1].payload["skills"] == ["电工", "水工"]


def test_bulk_ids_are_fresh_version_4_uuids() -> None:
    ids = new_ids(5_000)
    assert len(set(ids)) == 5_000 and new_ids(0) == []
    assert all(isinstance(i, uuid.UUID) for i in ids)
    assert {(i.version, i.variant) for i in ids} == {(4, uuid.RFC_4122)}
    assert [uuid.UUID(str(i)) for i in ids] == ids


def test_the_check_character_of_a_parsed_number_is_the_one_gb_11643_gives() -> None:
    for serial in range(1_000):
        body = id_number(date(1950 + serial % 60, 1 + serial % 12, 1 + serial % 28), serial)[:17]
        assert idnumber._check_of(body + "0") == idnumber.check_character(body)
        assert idnumber.parse(body + idnumber.check_character(body)).number.endswith(
            idnumber.check_character(body)
        )
    # Digits outside ASCII: weighed as `check_character` weighs them.
    arabic = "".join(chr(0x660 + int(d)) for d in "33040219800101123")
    assert idnumber._check_of(arabic + "0") == idnumber.check_character(arabic)
