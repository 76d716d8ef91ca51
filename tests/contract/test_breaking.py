"""What counts as a breaking change, and how the changelog must announce it."""

from __future__ import annotations

import copy
from typing import Any

from tools.openapi_snapshot import breaking_changes, top_section, unannounced


def doc() -> dict[str, Any]:
    member = {
        "type": "object",
        "required": ["id", "name"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "status": {"type": "string", "enum": ["normal", "mobile", "lost_contact"]},
            "phone_masked": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }
    create = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "note": {"type": "string"}},
    }
    json_of = lambda ref: {"application/json": {"schema": {"$ref": ref}}}  # noqa: E731
    return {
        "openapi": "3.1.0",
        "paths": {
            "/api/v1/registry/members": {
                "get": {
                    "parameters": [
                        {"in": "query", "name": "limit", "schema": {"type": "integer"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "items": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Member"},
                                            }
                                        },
                                    }
                                }
                            },
                        }
                    },
                },
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": json_of("#/components/schemas/MemberCreate"),
                    },
                    "responses": {
                        "201": {
                            "description": "ok",
                            "content": json_of("#/components/schemas/Member"),
                        }
                    },
                },
            },
            "/api/v1/registry/orgs": {"get": {"responses": {"200": {"description": "ok"}}}},
        },
        "components": {"schemas": {"Member": member, "MemberCreate": create}},
    }


MEMBERS = "/api/v1/registry/members"


def changes(mutate: Any) -> list[str]:
    new = copy.deepcopy(doc())
    mutate(new)
    return [what for _, what in breaking_changes(doc(), new)]


def schemas(d: dict[str, Any]) -> dict[str, Any]:
    return dict(d["components"]["schemas"])


class TestBreakingChanges:
    def test_the_same_document_has_none(self) -> None:
        assert changes(lambda d: None) == []

    def test_additions_are_not_breaking(self) -> None:
        def add(d: dict[str, Any]) -> None:
            d["paths"]["/api/v1/registry/persons"] = {"get": {"responses": {}}}
            d["paths"][MEMBERS]["delete"] = {"responses": {}}
            member = d["components"]["schemas"]["Member"]
            member["properties"]["category"] = {"type": "string"}
            member["properties"]["status"]["enum"].append("deceased")
            create = d["components"]["schemas"]["MemberCreate"]
            create["properties"]["email"] = {"type": "string"}  # optional: fine
            d["paths"][MEMBERS]["get"]["parameters"].append(
                {"in": "query", "name": "cursor", "schema": {"type": "string"}}
            )

        assert changes(add) == []

    def test_removed_path(self) -> None:
        assert changes(lambda d: d["paths"].pop("/api/v1/registry/orgs")) == [
            "/api/v1/registry/orgs: path removed"
        ]

    def test_removed_operation(self) -> None:
        assert changes(lambda d: d["paths"][MEMBERS].pop("post")) == [
            f"POST {MEMBERS}: operation removed"
        ]

    def test_removed_response_field_through_refs_and_arrays(self) -> None:
        found = changes(lambda d: schemas(d)["Member"]["properties"].pop("name"))
        assert f"GET {MEMBERS} response 200.items[].name: response field removed" in found
        assert f"POST {MEMBERS} response 201.name: response field removed" in found

    def test_removed_enum_value(self) -> None:
        def drop(d: dict[str, Any]) -> None:
            schemas(d)["Member"]["properties"]["status"]["enum"].remove("lost_contact")

        assert f'POST {MEMBERS} response 201.status: enum value(s) removed: "lost_contact"' in (
            changes(drop)
        )

    def test_newly_required_request_field(self) -> None:
        def require(d: dict[str, Any]) -> None:
            schemas(d)["MemberCreate"]["required"].append("note")

        assert changes(require) == [
            f"POST {MEMBERS} request body.note: request field newly required"
        ]

    def test_newly_required_parameter(self) -> None:
        def require(d: dict[str, Any]) -> None:
            d["paths"][MEMBERS]["get"]["parameters"].append(
                {"in": "query", "name": "org_id", "required": True, "schema": {"type": "string"}}
            )

        assert changes(require) == [f"GET {MEMBERS} query parameter org_id: newly required"]

    def test_changed_type(self) -> None:
        def retype(d: dict[str, Any]) -> None:
            schemas(d)["Member"]["properties"]["id"] = {"type": "integer"}

        assert f"POST {MEMBERS} response 201.id: type changed from ['string'] to ['integer']" in (
            changes(retype)
        )

    def test_a_response_field_that_may_now_be_null_is_a_changed_type(self) -> None:
        def nullable(d: dict[str, Any]) -> None:
            schemas(d)["Member"]["properties"]["name"] = {
                "anyOf": [{"type": "string"}, {"type": "null"}]
            }

        assert any("response 201.name: type changed" in c for c in changes(nullable))

    def test_a_request_field_that_may_now_be_null_is_not(self) -> None:
        def nullable(d: dict[str, Any]) -> None:
            schemas(d)["MemberCreate"]["properties"]["note"] = {
                "anyOf": [{"type": "string"}, {"type": "null"}]
            }

        assert changes(nullable) == []


class TestChangelog:
    CHANGELOG = (
        "# Changelog\n\n## Unreleased\n\n### Removed\n\n- `/api/v1/registry/orgs` (deprecated "
        "since 0.1.0).\n\n## 0.1.0\n\n- `/api/v1/registry/members` first release.\n"
    )

    def test_top_section(self) -> None:
        top = top_section(self.CHANGELOG)
        assert top.startswith("Unreleased")
        assert "/api/v1/registry/orgs" in top
        assert "0.1.0\n" not in top

    def test_a_break_named_in_the_newest_section_is_announced(self) -> None:
        breaks = [("/api/v1/registry/orgs", "/api/v1/registry/orgs: path removed")]
        assert unannounced(breaks, self.CHANGELOG) == []

    def test_a_break_named_only_in_an_older_section_is_not(self) -> None:
        breaks = [(MEMBERS, f"POST {MEMBERS}: operation removed")]
        assert unannounced(breaks, self.CHANGELOG) == [f"POST {MEMBERS}: operation removed"]

    def test_no_changelog_section_announces_nothing(self) -> None:
        breaks = [(MEMBERS, "x")]
        assert unannounced(breaks, "# Changelog\n") == ["x"]
