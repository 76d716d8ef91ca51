"""OWASP API4:2023 Unrestricted Resource Consumption.

Every list caps its page (`limit` ≤ 500, more is a 422), every array a request takes has a
`maxItems` and every text a length bound (decimals aside: the body limit bounds them);
bodies past the limit are 413 at the gateway — JSON writes at `max_body_bytes`, the import
and the work-unit sync at `max_upload_bytes`, whether the size is announced or streamed;
and each caller's requests are rate limited everywhere (429 with `Retry-After`), the
gateway's own routes and the login included. `tests/gateway/test_ratelimit.py` holds the
token bucket's own tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import ADMIN_PASSWORD, ADMIN_USER, FakeClock, ServiceRouter

SNAPSHOT = Path(__file__).resolve().parents[2] / "openapi" / "lianxin.json"
DOC = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
SCHEMAS = DOC["components"]["schemas"]
BODY_LIMIT = 4096
UPLOAD_LIMIT = 16384


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].split("/")[-1]]
    return schema


def _unbounded(schema: dict[str, Any], where: str, seen: frozenset[str]) -> Iterator[str]:
    ref = schema.get("$ref")
    if ref in seen:
        return
    seen = seen | {ref} if ref else seen
    schema = _resolve(schema)
    if schema.get("type") == "array" and "maxItems" not in schema:
        yield f"{where}: an array without maxItems"
    branches = schema.get("anyOf", []) + schema.get("oneOf", [])
    is_decimal = any(_resolve(b).get("type") == "number" for b in branches)
    for branch in branches:
        b = _resolve(branch)
        if is_decimal and b.get("type") == "string":
            continue  # a decimal as text: bounded by the body limit, parsed with max digits
        yield from _unbounded(branch, where, seen)
    if schema.get("type") == "string" and not (
        {"maxLength", "enum", "format", "pattern", "const"} & set(schema)
    ):
        yield f"{where}: a text without maxLength"
    for name, sub in (schema.get("properties") or {}).items():
        yield from _unbounded(sub, f"{where}.{name}", seen)
    if isinstance(schema.get("items"), dict):
        yield from _unbounded(schema["items"], f"{where}[]", seen)


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield method, path, op


PAGINATED = sorted(
    path
    for method, path, op in _operations()
    if method == "get" and any(p["name"] == "cursor" for p in op.get("parameters", []))
)


class TestTheContractBoundsEveryInput:
    def test_every_page_is_capped_at_500(self) -> None:
        assert len(PAGINATED) >= 15
        for method, path, op in _operations():
            for p in op.get("parameters", []):
                if p["name"] == "limit":
                    assert p["schema"].get("maximum", 10**9) <= 500, f"{method} {path}"
                    assert p["schema"].get("minimum", 0) >= 1, f"{method} {path}"

    def test_every_array_and_text_a_request_takes_is_bounded(self) -> None:
        found = []
        for method, path, op in _operations():
            content = (op.get("requestBody") or {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            if schema:
                found += list(_unbounded(schema, f"{method.upper()} {path}", frozenset()))
            for p in op.get("parameters", []):
                found += [
                    f"{method.upper()} {path} ?{p['name']}" + w.split(":", 1)[1]
                    for w in _unbounded(p.get("schema", {}), "", frozenset())
                ]
        assert not found, found


async def test_a_page_past_500_is_422_everywhere(
    admin_client: httpx.AsyncClient, as_user: Any
) -> None:
    auditor = await as_user("auditor")  # the audit trail is the auditor's
    wrong = {}
    for path in PAGINATED:
        c = auditor if path == "/api/v1/audit" else admin_client
        r = await c.get(path, params={"limit": 501})
        if r.status_code != 422 or r.headers["content-type"] != "application/problem+json":
            wrong[path] = r.status_code
    assert not wrong, wrong


@pytest.fixture
async def small_limits(
    gateway_settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    upstream: ServiceRouter,
    clock: FakeClock,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings.model_copy(
        update={"max_body_bytes": BODY_LIMIT, "max_upload_bytes": UPLOAD_LIMIT}
    )
    app = create_app(settings, transport=upstream, sessionmaker=db, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        r = await c.post(
            "/api/v1/auth/token", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD}
        )
        c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield c


WRITES = [
    ("POST", "/api/v1/registry/orgs"),
    ("POST", "/api/v1/mobility/links"),
    ("PUT", "/api/v1/activities/points/rules"),
    ("POST", "/api/v1/auth/users"),
    ("POST", "/api/v1/webhooks"),
]


def _json_of(size: int) -> bytes:
    return json.dumps({"name": "x" * size}).encode()


class TestBodyLimits:
    @pytest.mark.parametrize(("method", "path"), WRITES)
    async def test_a_body_past_the_limit_is_413(
        self, small_limits: httpx.AsyncClient, upstream: ServiceRouter, method: str, path: str
    ) -> None:
        before = len(upstream.calls)
        r = await small_limits.request(
            method,
            path,
            content=_json_of(BODY_LIMIT),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert len(upstream.calls) == before  # refused at the edge

    @pytest.mark.parametrize("path", ["/api/v1/webhooks", "/api/v1/auth/users"])
    async def test_a_streamed_body_without_a_length_is_cut_too(
        self, small_limits: httpx.AsyncClient, path: str
    ) -> None:
        """(The gateway's own routes; a proxied one streams on to the service, which the
        in-process harness cannot show: checked against the live system by hand.)"""

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1024

        r = await small_limits.post(
            path,
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413, r.text

    async def test_the_import_has_its_own_larger_limit(
        self, small_limits: httpx.AsyncClient
    ) -> None:
        url = "/api/v1/registry/members/import"
        header = "姓名,性别,出生日期,身份证号,组织代码\n".encode()
        fits = header + b"x,male,1970-01-01,,NOPE\n" * ((BODY_LIMIT * 2) // 24)
        assert BODY_LIMIT < len(fits) < UPLOAD_LIMIT
        r = await small_limits.post(url, files={"file": ("cards.csv", fits, "text/csv")})
        assert r.status_code != 413, r.text  # past the JSON limit, within the upload's
        too_big = header + b"x" * UPLOAD_LIMIT
        r = await small_limits.post(url, files={"file": ("cards.csv", too_big, "text/csv")})
        assert r.status_code == 413, r.text

    async def test_the_sync_has_the_upload_limit(self, small_limits: httpx.AsyncClient) -> None:
        body = {"mode": "delta", "members": [{"external_id": "e" * 60, "name": "张三"}] * 300}
        r = await small_limits.put(
            "/api/v1/mobility/sync/00000000-0000-4000-8000-000000000001/members", json=body
        )
        assert r.status_code == 413, r.text


@pytest.fixture
async def limited(
    gateway_settings: GatewaySettings,
    db: async_sessionmaker[AsyncSession],
    upstream: ServiceRouter,
    clock: FakeClock,
    admin_token: str,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings.model_copy(
        update={"rate_limit_enabled": True, "rate_limit_burst": 3, "rate_limit_per_s": 0.01}
    )
    app = create_app(settings, transport=upstream, sessionmaker=db, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 50000)),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as c,
    ):
        yield c


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/registry/members"),
        ("GET", "/api/v1/mobility/links"),
        ("GET", "/api/v1/activities/activities"),
        ("GET", "/api/v1/auth/api-keys"),
        ("GET", "/api/v1/webhooks"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/reports/orgs/00000000-0000-4000-8000-000000000001"),
    ],
)
async def test_every_route_family_is_rate_limited(
    limited: httpx.AsyncClient, method: str, path: str
) -> None:
    statuses = [(await limited.request(method, path)).status_code for _ in range(5)]
    assert statuses[-1] == 429, statuses
    r = await limited.request(method, path)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.headers["content-type"] == "application/problem+json"


async def test_guessing_passwords_is_rate_limited(limited: httpx.AsyncClient) -> None:
    limited.headers.pop("Authorization")
    statuses = [
        (
            await limited.post(
                "/api/v1/auth/token", data={"username": ADMIN_USER, "password": f"guess-{n}"}
            )
        ).status_code
        for n in range(6)
    ]
    assert 429 in statuses, statuses
