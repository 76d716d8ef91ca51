"""The merged document follows our conventions (`tests/contract/lint.py`); each rule is
shown to catch what it is for."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.contract.lint import lint
from tools import openapi_snapshot as snap


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return snap.build()


def test_the_merged_document_passes(doc: dict[str, Any]) -> None:
    problems = lint(doc)
    assert not problems, "\n".join(problems)


def test_it_is_not_vacuous(doc: dict[str, Any]) -> None:
    ops = [op for item in doc["paths"].values() for op in item.values()]
    assert len(ops) > 80
    lists = [
        op
        for op in ops
        if any(p.get("name") == "cursor" for p in op.get("parameters") or [] if "name" in p)
    ]
    assert len(lists) > 15


PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def good() -> dict[str, Any]:
    page = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}},
            "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }
    return {
        "openapi": "3.1.0",
        "paths": {
            "/api/v1/registry/members": {
                "get": {
                    "operationId": "listMembers",
                    "summary": "Members",
                    "tags": ["members"],
                    "parameters": [
                        {"in": "query", "name": "limit", "schema": {"type": "integer"}},
                        {"in": "query", "name": "cursor", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"application/json": {"schema": page}},
                        },
                        "401": {"description": "no", "content": PROBLEM},
                    },
                },
                "post": {
                    "operationId": "createMember",
                    "summary": "New member",
                    "tags": ["members"],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/MemberCreate"}
                            }
                        }
                    },
                    "responses": {"201": {"description": "ok"}},
                },
            },
            "/api/v1/registry/members/{member_id}/id-number": {
                "get": {
                    "operationId": "getIdNumber",
                    "summary": "The ID number",
                    "tags": ["members"],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {
                                "application/json": {
                                    "schema": {"properties": {"id_number": {"type": "string"}}}
                                }
                            },
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Member": {
                    "type": "object",
                    "properties": {"id_number_masked": {"type": "string"}},
                },
                "MemberCreate": {
                    "type": "object",
                    "properties": {"id_number": {"type": "string"}},
                    "examples": [{"id_number": "110101199003074512"}],
                },
                "Problem": {"type": "object"},
            }
        },
    }


def broken(change: Any) -> list[str]:
    d = copy.deepcopy(good())
    change(d)
    return lint(d)


MEMBERS = "/api/v1/registry/members"


class TestRules:
    def test_a_good_document(self) -> None:
        assert lint(good()) == []

    def test_operation_id(self) -> None:
        def drop(d: dict[str, Any]) -> None:
            del d["paths"][MEMBERS]["get"]["operationId"]

        assert broken(drop) == [f"operation-id: GET {MEMBERS} has no operationId"]

        def clash(d: dict[str, Any]) -> None:
            d["paths"][MEMBERS]["post"]["operationId"] = "listMembers"

        assert [p.split(":")[0] for p in broken(clash)] == ["operation-id-unique"]

    def test_summary_and_tags(self) -> None:
        def drop(d: dict[str, Any]) -> None:
            d["paths"][MEMBERS]["get"]["summary"] = " "
            del d["paths"][MEMBERS]["get"]["tags"]

        assert broken(drop) == [
            f"summary: GET {MEMBERS} has no summary",
            f"tags: GET {MEMBERS} has no tags",
        ]

    def test_errors_are_problem_json(self) -> None:
        def plain(d: dict[str, Any]) -> None:
            d["paths"][MEMBERS]["get"]["responses"]["404"] = {
                "description": "no",
                "content": {"application/json": {}, **PROBLEM},
            }
            d["paths"][MEMBERS]["get"]["responses"]["500"] = {"description": "no"}

        assert [p.split(":")[0] for p in broken(plain)] == ["problem-json", "problem-json"]

    def test_request_bodies_have_examples(self) -> None:
        def drop(d: dict[str, Any]) -> None:
            del d["components"]["schemas"]["MemberCreate"]["examples"]

        assert broken(drop) == [
            f"request-example: POST {MEMBERS} application/json body has no example"
        ]

    def test_lists_take_limit_and_cursor(self) -> None:
        def drop(d: dict[str, Any]) -> None:
            d["paths"][MEMBERS]["get"]["parameters"].pop()

        assert broken(drop) == [f"list-paging: GET {MEMBERS} is a list without ?cursor="]

    def test_id_number_only_in_the_audited_read(self) -> None:
        def leak(d: dict[str, Any]) -> None:
            d["components"]["schemas"]["Member"]["properties"]["id_number"] = {"type": "string"}

        assert broken(leak) == [f"sensitive-field: GET {MEMBERS} 200 shows `id_number`"]

    def test_talk_notes_never_in_lists(self) -> None:
        def leak(d: dict[str, Any]) -> None:
            d["components"]["schemas"]["Member"]["properties"]["notes"] = {"type": "string"}

        assert broken(leak) == [f"sensitive-field: GET {MEMBERS} 200 shows `notes`"]
