"""Our own rules for the merged OpenAPI document (the conventions of `shared/API.md` that a
document can show). `lint(doc)` lists every violation as `"<rule>: <where>"`; the same
rules, in Spectral's terms, are in `openapi/.spectral.yaml`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PROBLEM_JSON = "application/problem+json"

# Sensitive properties and the only operations whose responses may carry them.
SENSITIVE_RESPONSE_FIELDS: dict[str, set[tuple[str, str]]] = {
    # ID numbers are write-only; the one audited read shows it in full.
    "id_number": {("get", "/api/v1/registry/members/{member_id}/id-number")},
    # Talk notes only in one talk's own page (audited), never in lists. A mobile member's
    # contacts carry `notes` too (API.md's Contact), readable only with the
    # `mobility.contact_notes` permission: those are a card's, not a talk's.
    "notes": {
        ("get", "/api/v1/activities/talks/{talk_id}"),
        ("get", "/api/v1/mobility/mobile-members"),
        ("post", "/api/v1/mobility/mobile-members"),
        ("get", "/api/v1/mobility/mobile-members/{card_id}"),
        ("post", "/api/v1/mobility/mobile-members/{card_id}/contacts"),
        ("post", "/api/v1/mobility/mobile-members/{card_id}/return"),
    },
}


def resolve(doc: Mapping[str, Any], node: Any) -> Any:
    seen: set[str] = set()
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen:
            return {}
        seen.add(ref)
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def operations(doc: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in (doc.get("paths") or {}).items():
        for method in HTTP_METHODS:
            if isinstance(item.get(method), dict):
                yield path, method, item[method]


def properties(doc: Mapping[str, Any], schema: Any) -> dict[str, Any]:
    schema = resolve(doc, schema)
    if not isinstance(schema, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            out.update(properties(doc, sub))
    out.update(schema.get("properties") or {})
    return out


def property_names(
    doc: Mapping[str, Any], node: Any, seen: frozenset[str] = frozenset()
) -> set[str]:
    """Every property name anywhere in a schema, through `$ref`s."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return set() if ref in seen else property_names(doc, resolve(doc, node), seen | {ref})
        names = set((node.get("properties") or {}).keys())
        for value in node.values():
            names |= property_names(doc, value, seen)
        return names
    if isinstance(node, list):
        return set().union(*(property_names(doc, v, seen) for v in node)) if node else set()
    return set()


def _has_example(doc: Mapping[str, Any], media: Mapping[str, Any]) -> bool:
    if media.get("example") is not None or media.get("examples"):
        return True
    schema = resolve(doc, media.get("schema") or {})
    return isinstance(schema, dict) and bool(
        schema.get("example") is not None or schema.get("examples")
    )


def lint(doc: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    seen_ids: dict[str, str] = {}
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        op_id = op.get("operationId")
        if not op_id:
            problems.append(f"operation-id: {where} has no operationId")
        elif op_id in seen_ids:
            problems.append(f"operation-id-unique: {where} reuses {op_id} of {seen_ids[op_id]}")
        else:
            seen_ids[op_id] = where
        if not str(op.get("summary") or "").strip():
            problems.append(f"summary: {where} has no summary")
        if not op.get("tags"):
            problems.append(f"tags: {where} has no tags")

        for status, response in (op.get("responses") or {}).items():
            if str(status).startswith(("1", "2", "3")):
                continue
            content = resolve(doc, response).get("content") or {}
            if list(content) != [PROBLEM_JSON]:
                problems.append(
                    f"problem-json: {where} {status} is {sorted(content) or 'without content'}"
                    f", not {PROBLEM_JSON}"
                )

        body = resolve(doc, op.get("requestBody") or {})
        for media_type, media in (body.get("content") or {}).items():
            if not _has_example(doc, media):
                problems.append(f"request-example: {where} {media_type} body has no example")

        params = {
            (p.get("in"), p.get("name"))
            for p in (resolve(doc, x) for x in op.get("parameters") or [])
        }
        for status, response in (op.get("responses") or {}).items():
            if not str(status).startswith("2"):
                continue
            for media in (resolve(doc, response).get("content") or {}).values():
                schema = media.get("schema")
                props = properties(doc, schema)
                if "items" in props and "next_cursor" in props:
                    for name in ("limit", "cursor"):
                        if ("query", name) not in params:
                            problems.append(f"list-paging: {where} is a list without ?{name}=")
                names = property_names(doc, schema)
                for field, allowed in SENSITIVE_RESPONSE_FIELDS.items():
                    if field in names and (method, path) not in allowed:
                        problems.append(f"sensitive-field: {where} {status} shows `{field}`")
    return sorted(set(problems))
