"""The internal bulk endpoint other services call with their own service tokens."""

from __future__ import annotations

from datetime import date

import httpx
from fastapi import FastAPI

from common.service_client import service_token
from tests.helpers import PRIVATE_PEM, SERVICE_PRIVATE_PEM, client, mint
from tests.registry.factories import Tree, id_number, make_member

URL = "/api/v1/registry/persons/resolve"


def person(index: int, community: dict[str, object], **overrides: object) -> dict[str, object]:
    return {
        "index": index,
        "external_id": f"X{index}",
        "name": f"人员{index}",
        "id_number": id_number(date(1985, 2, 3), serial=100 + index),
        "residence_community_code": community["code"],
        **overrides,
    }


class TestResolvePersons:
    async def test_only_services_may_call_it(self, app: FastAPI, tree: Tree) -> None:
        body = {"persons": [person(0, tree.community_a)]}
        for role in ("admin", "org_admin", "integration"):
            async with client(app, mint(role, org_id=tree.city["id"])) as c:
                assert (await c.post(URL, json=body)).status_code == 403

    async def test_a_service_token_signed_with_another_key_or_role_is_refused(
        self, app: FastAPI, tree: Tree
    ) -> None:
        body = {"persons": [person(0, tree.community_a)]}
        forged = service_token(PRIVATE_PEM, subject="service:mobility")
        async with client(app, forged) as c:
            assert (await c.post(URL, json=body)).status_code == 401
        as_admin = mint("admin", iss="lianxin-services", key=None)
        async with client(app, as_admin) as c:
            assert (await c.post(URL, json=body)).status_code == 401

    async def test_matches_across_the_registry_and_creates_the_missing_once(
        self, app: FastAPI, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        known = await make_member(
            admin,
            org_id=tree.community_b["id"],
            birth_date="1985-02-03",
            id_number=id_number(date(1985, 2, 3), serial=101),
        )
        persons = [
            person(0, tree.community_a),
            person(1, tree.community_a),  # already registered elsewhere
            person(2, tree.community_a, id_number="123"),
            person(3, tree.community_a, residence_community_code="NOPE"),
            person(4, tree.community_a, id_number=id_number(date(1985, 2, 3), serial=100)),
        ]
        token = service_token(SERVICE_PRIVATE_PEM, subject="service:mobility")
        async with client(app, token) as c:
            r = await c.post(URL, json={"persons": persons})
            again = await c.post(URL, json={"persons": persons[:1]})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [(x["index"], x["created"], x["error"] is None) for x in results] == [
            (0, True, True),
            (1, False, True),
            (2, False, False),
            (3, False, False),
            (4, False, True),
        ]
        assert results[1]["member_id"] == known["id"]
        assert results[4]["member_id"] == results[0]["member_id"]
        assert again.json()["results"][0] == {**results[0], "created": False}
        card = (await admin.get(f"/api/v1/registry/members/{results[0]['member_id']}")).json()
        assert (card["category"], card["relation"], card["org_id"]) == (
            "in_service_resident",
            "resident",
            None,
        )
        # serial 100: an even 17th digit
        assert card["gender"] == "female" and card["birth_date"] == "1985-02-03"
