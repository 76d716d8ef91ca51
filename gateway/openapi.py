"""`GET /api/v1/openapi.json`: one OpenAPI 3.1 document for every public path.

Each service's own document is fetched through the upstream client (cached for a short
while; a service that cannot be reached is left out, or served from its last good copy)
and merged with the gateway's own routes. Paths keep their public prefixes; components are
de-duplicated (identical schemas shared, clashing names namespaced with the service's name
and their `$ref`s rewritten); the gateway's two ways in (`bearerAuth`, `apiKey`) are
declared and applied; operationIds stay unique. `GET /docs` is Swagger UI over it."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from pydantic.json_schema import models_json_schema

from common.errors import PROBLEM_JSON, Problem, problem_openapi

log = logging.getLogger("lianxin.gateway.openapi")

OPENAPI_PATH = "/api/v1/openapi.json"
DOCS_PATH = "/docs"
REF_PREFIX = "#/components/"
SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Access token from `POST /api/v1/auth/token`.",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Key of a work-unit org or an integrator (`POST /api/v1/auth/api-keys`).",
    },
}
BOTH_WAYS_IN: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKey": []}]
PROBLEM_REF = "#/components/schemas/Problem"
BOTH_CREDENTIALS_400: dict[str, Any] = {
    "description": "Bad request",
    "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
}
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Never public, whoever declares them.
_INTERNAL = re.compile(r"(/audit-log$|/docs(/.*)?$|/openapi\.json$)")


class ServiceDocs:
    """Each service's document, fetched at most once per `ttl_s`; the last good copy
    stands in while a service is unreachable."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        upstreams: Mapping[str, httpx.URL | str],
        *,
        ttl_s: float,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._upstreams = {name: httpx.URL(str(url)) for name, url in upstreams.items()}
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        # A service that did not answer is asked again only after a while, not per request.
        self._failed_at: dict[str, float] = {}
        self._retry_s = min(ttl_s, 5.0)
        self._lock = asyncio.Lock()

    def _due(self, name: str, now: float) -> bool:
        failed = self._failed_at.get(name)
        if failed is not None and now - failed < self._retry_s:
            return False
        cached = self._cache.get(name)
        return cached is None or now - cached[0] >= self._ttl_s

    async def get(self) -> dict[str, dict[str, Any]]:
        async with self._lock:  # one refresh at a time; the others wait and share it
            now = self._clock()
            due = [name for name in self._upstreams if self._due(name, now)]
            fetched = await asyncio.gather(*(self._fetch(name) for name in due))
            for name, doc in zip(due, fetched, strict=True):
                if doc is None:
                    self._failed_at[name] = now
                else:
                    self._failed_at.pop(name, None)
                    self._cache[name] = (now, doc)
            return {name: self._cache[name][1] for name in self._upstreams if name in self._cache}

    async def _fetch(self, name: str) -> dict[str, Any] | None:
        url = self._upstreams[name].join(f"/api/v1/{name}/openapi.json")
        try:
            response = await self._client.get(url, timeout=self._timeout_s)
            if response.status_code != 200:
                raise ValueError(f"status {response.status_code}")
            doc = response.json()
            if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
                raise ValueError("not an OpenAPI document")
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("OpenAPI document of %s not available: %s", name, exc)
            return None
        return doc


# --- merging ----------------------------------------------------------------------------


def _walk_refs(node: Any, rename: Callable[[str], str]) -> Any:
    """A copy of `node` with every `$ref` passed through `rename`."""
    if isinstance(node, dict):
        return {
            k: (rename(v) if k == "$ref" and isinstance(v, str) else _walk_refs(v, rename))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_walk_refs(v, rename) for v in node]
    return node


def iter_refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from iter_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from iter_refs(v)


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name))


class _Merger:
    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}
        self.paths: dict[str, Any] = {}
        self.tags: dict[str, dict[str, Any]] = {}
        self.operation_ids: set[str] = set()

    def add(
        self,
        source: str,
        doc: Mapping[str, Any],
        *,
        keep: Callable[[str], bool],
        through_gateway: bool,
    ) -> None:
        """`through_gateway`: the document is a service's, whose callers may also come
        with an API key (the gateway exchanges it for a token)."""
        schemes = _scheme_names((doc.get("components") or {}).get("securitySchemes") or {})
        renames = self._component_names(source, doc.get("components") or {})

        def rename(ref: str) -> str:
            if not ref.startswith(REF_PREFIX):
                return ref
            section, _, name = ref[len(REF_PREFIX) :].partition("/")
            return f"{REF_PREFIX}{section}/{renames.get((section, name), name)}"

        for section, entries in (doc.get("components") or {}).items():
            if section == "securitySchemes" or not isinstance(entries, dict):
                continue
            target = self.components.setdefault(section, {})
            for name, value in entries.items():
                final: str = renames.get((section, name)) or name
                moved = _walk_refs(value, rename)
                if final != name and isinstance(moved, dict) and moved.get("title") == name:
                    # Generated clients name models after titles: a namespaced schema's
                    # title follows its new name, or two models would clash.
                    moved["title"] = final
                target.setdefault(final, moved)

        for path, item in (doc.get("paths") or {}).items():
            if not keep(path) or _INTERNAL.search(path):
                continue
            item = _walk_refs(copy.deepcopy(item), rename)
            for method in HTTP_METHODS:
                operation = item.get(method)
                if isinstance(operation, dict):
                    self._operation(source, operation, schemes, through_gateway)
                    for tag in operation.get("tags") or []:
                        if isinstance(tag, str):
                            self.tags.setdefault(tag, {"name": tag})
            self.paths[path] = item
        for tag in doc.get("tags") or []:
            bare = {"name": tag.get("name")} if isinstance(tag, dict) else None
            if bare and bare["name"] and self.tags.get(bare["name"], bare) == bare:
                self.tags[bare["name"]] = tag  # a declared tag (described) wins

    def _component_names(
        self, source: str, components: Mapping[str, Any]
    ) -> dict[tuple[str, str], str]:
        """Which of this document's component names must be namespaced: those already
        taken by different content (compared after this document's own renames, so a
        schema whose referenced schema had to move differs too) — repeated to a fixpoint."""
        renames: dict[tuple[str, str], str] = {}

        def rename(ref: str) -> str:
            if not ref.startswith(REF_PREFIX):
                return ref
            section, _, name = ref[len(REF_PREFIX) :].partition("/")
            return f"{REF_PREFIX}{section}/{renames.get((section, name), name)}"

        changed = True
        while changed:
            changed = False
            for section, entries in components.items():
                if section == "securitySchemes" or not isinstance(entries, dict):
                    continue
                existing = self.components.get(section, {})
                for name, value in entries.items():
                    if (section, name) in renames or name not in existing:
                        continue
                    if existing[name] != _walk_refs(value, rename):
                        renames[(section, name)] = self._free_name(
                            section, f"{_pascal(source)}{name}"
                        )
                        changed = True
        return renames

    def _free_name(self, section: str, name: str) -> str:
        taken = self.components.get(section, {})
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name}{n}", n + 1
        return candidate

    def _operation(
        self,
        source: str,
        operation: dict[str, Any],
        schemes: Mapping[str, str],
        through_gateway: bool,
    ) -> None:
        op_id = operation.get("operationId")
        if isinstance(op_id, str):
            if op_id in self.operation_ids:
                op_id = f"{source}{op_id[:1].upper()}{op_id[1:]}"
                while op_id in self.operation_ids:
                    op_id += "_"
                operation["operationId"] = op_id
            self.operation_ids.add(op_id)
        # However a document names its schemes, callers use the gateway's two ways in.
        security = operation.get("security")
        if not isinstance(security, list) or not security:
            return
        if through_gateway:
            operation["security"] = copy.deepcopy(BOTH_WAYS_IN)
            # The gateway refuses a bearer token and an API key sent together
            # (`authorize_upstream`), before the service sees the request.
            responses = operation.setdefault("responses", {})
            responses.setdefault("400", copy.deepcopy(BOTH_CREDENTIALS_400))
            return
        mapped: list[dict[str, list[str]]] = []
        for requirement in security:
            entry: dict[str, list[str]] = {schemes.get(name, name): [] for name in requirement}
            if entry and entry not in mapped:
                mapped.append(entry)
        operation["security"] = mapped


def _scheme_names(declared: Mapping[str, Any]) -> dict[str, str]:
    """A document's security scheme names → `bearerAuth` or `apiKey`."""
    out = {}
    for name, scheme in declared.items():
        if not isinstance(scheme, dict):
            continue
        kind = scheme.get("type")
        if kind in ("oauth2", "openIdConnect") or (
            kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer"
        ):
            out[name] = "bearerAuth"
        elif kind == "apiKey" and str(scheme.get("name", "")).lower() == "x-api-key":
            out[name] = "apiKey"
    return out


def _under(service: str) -> Callable[[str], bool]:
    prefix = f"/api/v1/{service}/"
    return lambda path: path.startswith(prefix)


def merge_documents(
    gateway_doc: Mapping[str, Any],
    service_docs: Mapping[str, Mapping[str, Any]],
    *,
    title: str,
    version: str,
    description: str,
    servers: list[dict[str, str]],
) -> dict[str, Any]:
    merger = _Merger()
    merger.add("gateway", gateway_doc, keep=lambda path: True, through_gateway=False)
    for name in sorted(service_docs):
        merger.add(name, service_docs[name], keep=_under(name), through_gateway=True)
    components: dict[str, Any] = {k: v for k, v in merger.components.items() if v}
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": servers,
        "paths": dict(sorted(merger.paths.items())),
        "components": components,
        "tags": list(merger.tags.values()),
    }
    add_links(doc)
    _ensure_problem_schema(doc)
    return doc


def _ensure_problem_schema(doc: dict[str, Any]) -> None:
    """The `Problem` schema the gateway's own 400s refer to, if no document brought it."""
    schemas = doc["components"].setdefault("schemas", {})
    if "Problem" in schemas or PROBLEM_REF not in set(iter_refs(doc["paths"])):
        return
    _, defs = models_json_schema(
        [(Problem, "serialization")], ref_template="#/components/schemas/{model}"
    )
    for name, schema in defs.get("$defs", {}).items():
        schemas.setdefault(name, schema)


# OpenAPI links of the main flows: what a client (or a stateful fuzzer) does next with the
# `id` of a record it just created. Creating operationId → {link name: (operationId, path
# parameter)}; a link whose operations are not in the document is left out.
LINKS: dict[str, dict[str, tuple[str, str]]] = {
    "createOrg": {
        "GetOrg": ("getOrg", "org_id"),
        "UpdateOrg": ("updateOrg", "org_id"),
        "ListOrgChildren": ("listOrgChildren", "org_id"),
        "GetOrgReport": ("getOrgReport", "org_id"),
    },
    "createMember": {
        "GetMember": ("getMember", "member_id"),
        "UpdateMember": ("updateMember", "member_id"),
        "GetMemberIdNumber": ("getMemberIdNumber", "member_id"),
        "GetMemberPoints": ("getMemberPoints", "member_id"),
    },
    "createTransfer": {
        "GetTransfer": ("getTransfer", "transfer_id"),
        "IssueTransferLetter": ("issueTransferLetter", "transfer_id"),
        "ReceiveTransfer": ("receiveTransfer", "transfer_id"),
        "RejectTransfer": ("rejectTransfer", "transfer_id"),
    },
    "createMobileMember": {
        "GetMobileMember": ("getMobileMember", "card_id"),
        "AddMobileMemberContact": ("addMobileMemberContact", "card_id"),
        "ReturnMobileMember": ("returnMobileMember", "card_id"),
    },
    "createLink": {
        "GetLink": ("getLink", "link_id"),
        "ReportLink": ("reportLink", "link_id"),
        "GiveLinkFeedback": ("giveLinkFeedback", "link_id"),
        "EndLink": ("endLink", "link_id"),
    },
    "createActivity": {
        "GetActivity": ("getActivity", "activity_id"),
        "UpdateActivity": ("updateActivity", "activity_id"),
        "ListActivityAttendance": ("listActivityAttendance", "activity_id"),
        "SetActivityAttendance": ("setActivityAttendance", "activity_id"),
        "SignUpForActivity": ("signUpForActivity", "activity_id"),
    },
    "createHelpRequest": {
        "GetHelpRequest": ("getHelpRequest", "request_id"),
        "ListHelpRequestCandidates": ("listHelpRequestCandidates", "request_id"),
        "AssignHelpRequest": ("assignHelpRequest", "request_id"),
        "ClaimHelpRequest": ("claimHelpRequest", "request_id"),
        "CompleteHelpRequest": ("completeHelpRequest", "request_id"),
        "CloseHelpRequest": ("closeHelpRequest", "request_id"),
    },
    "createTalk": {"GetTalk": ("getTalk", "talk_id")},
    "logServiceHours": {"VerifyServiceHours": ("verifyServiceHours", "entry_id")},
    "createProgram": {
        "GetProgram": ("getProgram", "program_id"),
        "AdoptProgram": ("adoptProgram", "program_id"),
    },
    "createRoleAssignment": {"EndRoleAssignment": ("endRoleAssignment", "assignment_id")},
    "createApiKey": {"RevokeApiKey": ("revokeApiKey", "key_id")},
    "createWebhook": {
        "GetWebhook": ("getWebhook", "webhook_id"),
        "ListWebhookDeliveries": ("listWebhookDeliveries", "webhook_id"),
        "ReplayWebhookEvents": ("replayWebhookEvents", "webhook_id"),
        "DeleteWebhook": ("deleteWebhook", "webhook_id"),
    },
}


def add_links(doc: dict[str, Any]) -> None:
    """`LINKS` onto the creating operations' success responses, in place."""
    operations: dict[str, dict[str, Any]] = {}
    for item in (doc.get("paths") or {}).values():
        for method in HTTP_METHODS:
            operation = item.get(method) if isinstance(item, dict) else None
            if isinstance(operation, dict) and isinstance(operation.get("operationId"), str):
                operations[operation["operationId"]] = operation
    for source, links in LINKS.items():
        operation = operations.get(source)
        if operation is None:
            continue
        responses = operation.get("responses") or {}
        success = next((r for s, r in sorted(responses.items()) if str(s).startswith("2")), None)
        if not isinstance(success, dict):
            continue
        found = {
            name: {
                "operationId": target,
                "parameters": {parameter: "$response.body#/id"},
                "description": f"`{parameter}` is the `id` of the created record.",
            }
            for name, (target, parameter) in links.items()
            if target in operations
        }
        if found:
            success["links"] = found


def gateway_document(app: FastAPI) -> dict[str, Any]:
    """The gateway's own routes (auth, audit, health), as FastAPI documents them, errors
    as the problem+json they are."""
    return problem_openapi(get_openapi(title=app.title, version=app.version, routes=app.routes))


# --- the routes -------------------------------------------------------------------------


def _script_hashes(html: str) -> list[str]:
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    ]


def docs_response(title: str, *, api_origin: str | None = None) -> HTMLResponse:
    """Swagger UI: its assets from the CDN FastAPI uses, its one inline script allowed by
    hash (React sets some inline styles, so styles are looser); "Try it out" may call this
    gateway (and `api_origin`, the public URL, when that is another origin)."""
    page = get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{title} — API docs")
    html = bytes(page.body).decode()
    cdn = "https://cdn.jsdelivr.net"
    connect = "'self'" + (f" {api_origin}" if api_origin else "")
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src {cdn} {' '.join(_script_hashes(html))}",
            f"style-src {cdn} 'unsafe-inline'",
            "img-src 'self' data: https://fastapi.tiangolo.com",
            f"connect-src {connect}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


def _origin(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


router = APIRouter()


@router.get(
    OPENAPI_PATH,
    operation_id="getOpenApiDocument",
    summary="The merged OpenAPI document of every public path",
    include_in_schema=False,
)
async def merged_openapi(request: Request) -> Response:
    app: FastAPI = request.app
    docs: ServiceDocs = app.state.service_docs
    settings = app.state.settings
    own = getattr(app.state, "gateway_openapi", None)
    if own is None:
        own = app.state.gateway_openapi = gateway_document(app)
    merged = merge_documents(
        own,
        await docs.get(),
        title="Lianxin API",
        version=app.version,
        description=DESCRIPTION,
        servers=[{"url": settings.public_url or "/", "description": "The Lianxin gateway"}],
    )
    return Response(dump(merged), media_type="application/json")


@router.get(
    DOCS_PATH,
    operation_id="getApiDocs",
    summary="Interactive API docs",
    include_in_schema=False,
)
async def swagger_ui(request: Request) -> HTMLResponse:
    return docs_response("Lianxin", api_origin=_origin(request.app.state.settings.public_url))


DESCRIPTION = (
    "Community party-member records: the registry (organizations, members, transfers), "
    "mobility (mobile members, dual management, work-unit sync, alerts) and activities "
    "(activities, talks, service hours, programs, points, help requests, funds), behind one "
    "gateway (auth, audit, reports). Errors are RFC 9457 `application/problem+json`; lists "
    "are keyset-paginated with `limit` and `cursor`; people authenticate with a Bearer "
    "access token, work-unit orgs and integrators with `X-API-Key`."
)
