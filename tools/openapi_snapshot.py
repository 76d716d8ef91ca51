"""The merged OpenAPI document, built in-process (the gateway's own merge over every service
app's document; no database, no network), and the committed snapshot `openapi/lianxin.json`.

    python -m tools.openapi_snapshot           # (re)write the snapshot  (`make openapi`)
    python -m tools.openapi_snapshot --check   # exit 1 if the snapshot is out of date

`breaking_changes(old, new)` lists what a client written against `old` would trip over in
`new`; `tests/contract/test_snapshot.py` fails on those unless `CHANGELOG.md` announces them."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "openapi" / "lianxin.json"
SERVICES = ("registry", "mobility", "activities")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Settings only have to be valid: the document does not depend on them.
_DUMMY_DB = "postgresql://lianxin@127.0.0.1:1/openapi-snapshot"
_PUBLIC_URL = "https://lianxin.example.org"


def _pems() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _settings_class(service: str) -> Any:
    from common.settings import BaseAppSettings

    module = importlib.import_module(f"services.{service}.settings")
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, BaseAppSettings)
            and value is not BaseAppSettings
            and value.__module__ == module.__name__
        ):
            return value
    raise LookupError(f"no settings class in services.{service}.settings")


def service_documents() -> dict[str, dict[str, Any]]:
    private, public = _pems()
    docs: dict[str, dict[str, Any]] = {}
    for service in SERVICES:
        module = importlib.import_module(f"services.{service}.app")
        settings = _settings_class(service)(
            database_url=_DUMMY_DB,
            jwt_public_key=public,
            service_public_key=public,
            service_private_key=private,
            environment="test",
        )
        docs[service] = module.create_app(settings).openapi()
    return docs


def build() -> dict[str, Any]:
    """The document `GET /api/v1/openapi.json` serves when every service is up."""
    from gateway.app import create_app
    from gateway.openapi import DESCRIPTION, gateway_document, merge_documents
    from gateway.settings import GatewaySettings

    private, public = _pems()
    gateway = create_app(
        GatewaySettings(
            database_url=_DUMMY_DB,
            environment="test",
            jwt_private_key=private,
            jwt_public_key=public,
            public_url=_PUBLIC_URL,
        )
    )
    return merge_documents(
        gateway_document(gateway),
        service_documents(),
        title="Lianxin API",
        version=gateway.version,
        description=DESCRIPTION,
        servers=[{"url": _PUBLIC_URL, "description": "The Lianxin gateway"}],
    )


def render(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


# --- breaking changes -------------------------------------------------------------------


def _resolve(doc: Mapping[str, Any], node: Any, seen: frozenset[str] = frozenset()) -> Any:
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen or not ref.startswith("#/"):
            return {}
        seen = seen | {ref}
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
        node = target
    return node


def _types(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return set(kind)
    out: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            if isinstance(sub, dict):
                if "$ref" in sub:
                    out.add("object")
                out |= _types(sub)
    return out


def _enum(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> set[Any] | None:
    values: set[Any] = set()
    found = False
    if isinstance(schema.get("enum"), list):
        values |= {json.dumps(v) for v in schema["enum"]}
        found = True
    if "const" in schema:
        values.add(json.dumps(schema["const"]))
        found = True
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            sub_enum = _enum(doc, _resolve(doc, sub))
            if sub_enum is not None:
                values |= sub_enum
                found = True
    return values if found else None


def _properties(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    props = dict(schema.get("properties") or {})
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            sub = _resolve(doc, sub)
            if isinstance(sub, dict):
                props.update(_properties(doc, sub))
    return props


def _required(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> set[str]:
    req = set(schema.get("required") or [])
    for sub in schema.get("allOf") or []:
        sub = _resolve(doc, sub)
        if isinstance(sub, dict):
            req |= _required(doc, sub)
    return req


def _compare(
    old_doc: Mapping[str, Any],
    new_doc: Mapping[str, Any],
    old: Any,
    new: Any,
    where: str,
    *,
    response: bool,
    depth: int = 0,
) -> Iterator[str]:
    """Schema changes that break a client: a removed enum value, a changed type; in a
    request a property newly required, in a response a property removed."""
    old = _resolve(old_doc, old)
    new = _resolve(new_doc, new)
    if not isinstance(old, dict) or not isinstance(new, dict) or depth > 12:
        return
    old_types, new_types = _types(old), _types(new)
    # A response may narrow its types (clients still cope), a request may widen them.
    compatible = new_types <= old_types if response else old_types <= new_types
    if old_types and new_types and not compatible:
        yield f"{where}: type changed from {sorted(old_types)} to {sorted(new_types)}"
    old_enum, new_enum = _enum(old_doc, old), _enum(new_doc, new)
    if old_enum is not None and new_enum is not None:
        removed = sorted(old_enum - new_enum)
        if removed:
            yield f"{where}: enum value(s) removed: {', '.join(removed)}"
    old_props, new_props = _properties(old_doc, old), _properties(new_doc, new)
    for name, old_prop in sorted(old_props.items()):
        if name not in new_props:
            if response:
                yield f"{where}.{name}: response field removed"
            continue
        yield from _compare(
            old_doc,
            new_doc,
            old_prop,
            new_props[name],
            f"{where}.{name}",
            response=response,
            depth=depth + 1,
        )
    if not response:
        for name in sorted(_required(new_doc, new) - _required(old_doc, old)):
            yield f"{where}.{name}: request field newly required"
    old_items, new_items = old.get("items"), new.get("items")
    if isinstance(old_items, dict) and isinstance(new_items, dict):
        yield from _compare(
            old_doc, new_doc, old_items, new_items, f"{where}[]", response=response, depth=depth + 1
        )


def _json_schema(doc: Mapping[str, Any], holder: Any) -> Any:
    holder = _resolve(doc, holder)
    if not isinstance(holder, dict):
        return None
    content = holder.get("content") or {}
    for media in ("application/json", *sorted(content)):
        if media in content and isinstance(content[media], dict):
            return content[media].get("schema")
    return None


def breaking_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`(path, description)` of every change in `new` that breaks a client of `old`."""
    out: list[tuple[str, str]] = []
    new_paths = new.get("paths") or {}
    for path, old_item in sorted((old.get("paths") or {}).items()):
        new_item = new_paths.get(path)
        if new_item is None:
            out.append((path, f"{path}: path removed"))
            continue
        for method in HTTP_METHODS:
            old_op = old_item.get(method)
            if not isinstance(old_op, dict):
                continue
            new_op = new_item.get(method)
            label = f"{method.upper()} {path}"
            if not isinstance(new_op, dict):
                out.append((path, f"{label}: operation removed"))
                continue
            # Parameters: one newly required, or a removed/changed enum or type.
            old_params = {
                (p.get("in"), p.get("name")): p
                for p in (_resolve(old, x) for x in old_op.get("parameters") or [])
            }
            for p in (_resolve(new, x) for x in new_op.get("parameters") or []):
                key = (p.get("in"), p.get("name"))
                where = f"{label} {p.get('in')} parameter {p.get('name')}"
                if key not in old_params:
                    if p.get("required"):
                        out.append((path, f"{where}: newly required"))
                    continue
                if p.get("required") and not old_params[key].get("required"):
                    out.append((path, f"{where}: newly required"))
                out += [
                    (path, d)
                    for d in _compare(
                        old,
                        new,
                        old_params[key].get("schema"),
                        p.get("schema"),
                        where,
                        response=False,
                    )
                ]
            # Request body.
            old_body = _resolve(old, old_op.get("requestBody"))
            new_body = _resolve(new, new_op.get("requestBody"))
            if isinstance(new_body, dict) and new_body:
                if new_body.get("required") and not (old_body or {}).get("required"):
                    out.append((path, f"{label} request body: newly required"))
                if old_body:
                    out += [
                        (path, d)
                        for d in _compare(
                            old,
                            new,
                            _json_schema(old, old_body),
                            _json_schema(new, new_body),
                            f"{label} request body",
                            response=False,
                        )
                    ]
            # Success responses: what clients read.
            new_responses = new_op.get("responses") or {}
            for status, old_resp in sorted((old_op.get("responses") or {}).items()):
                if not str(status).startswith("2"):
                    continue
                if status not in new_responses:
                    out.append((path, f"{label} response {status}: removed"))
                    continue
                out += [
                    (path, d)
                    for d in _compare(
                        old,
                        new,
                        _json_schema(old, old_resp),
                        _json_schema(new, new_responses[status]),
                        f"{label} response {status}",
                        response=True,
                    )
                ]
    return out


CHANGELOG = ROOT / "CHANGELOG.md"


def top_section(changelog: str) -> str:
    """The newest section of a changelog: from its first `## ` heading to the next."""
    sections = re.split(r"^## ", changelog, flags=re.MULTILINE)
    return sections[1] if len(sections) > 1 else ""


def unannounced(breaks: list[tuple[str, str]], changelog: str) -> list[str]:
    """The breaking changes whose path the changelog's newest section does not name."""
    top = top_section(changelog)
    return [what for path, what in breaks if path not in top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the snapshot is stale")
    parser.add_argument("--output", type=Path, default=SNAPSHOT)
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
