"""What the fuzzer found, pinned in-process (fast, and named for what a client relies on):

- a bearer token and an API key together are a 400 the contract now documents on every
  proxied operation (it was undocumented);
- a JSON body that is not UTF-8 is a 422 validation problem, like malformed JSON (it was
  FastAPI's undocumented 400 "There was an error parsing the body");
- the contract links each created record to the operations that take its id (the
  stateful phase follows them)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from gateway.openapi import LINKS

SNAPSHOT = Path(__file__).resolve().parents[2] / "openapi" / "lianxin.json"
DOC = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
OPERATIONS = {
    op["operationId"]: (method, path, op)
    for path, item in DOC["paths"].items()
    for method, op in item.items()
    if isinstance(op, dict) and "operationId" in op
}
NOT_UTF8 = b'{"name": "\xff\xfe"}'


def test_every_operation_taking_both_ways_in_documents_the_400() -> None:
    for op_id, (method, path, op) in OPERATIONS.items():
        if {"apiKey": []} in (op.get("security") or []) and path.startswith("/api/v1/"):
            assert "400" in op["responses"], f"{method.upper()} {path} ({op_id})"


async def test_both_ways_in_at_once_is_the_documented_400(
    admin_client: httpx.AsyncClient,
) -> None:
    r = await admin_client.get("/api/v1/registry/orgs", headers={"X-API-Key": "lx_whatever"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path", ["/api/v1/registry/orgs", "/api/v1/mobility/links", "/api/v1/webhooks"]
)
async def test_a_body_that_is_not_utf8_is_422(admin_client: httpx.AsyncClient, path: str) -> None:
    r = await admin_client.post(
        path, content=NOT_UTF8, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == "body"


@pytest.mark.parametrize("source", sorted(LINKS))
def test_created_records_link_to_what_takes_their_id(source: str) -> None:
    _, _, op = OPERATIONS[source]
    success = next(r for s, r in sorted(op["responses"].items()) if s.startswith("2"))
    links = success["links"]
    assert set(links) == set(LINKS[source])
    for name, link in links.items():
        _, target_path, _ = OPERATIONS[link["operationId"]]
        (parameter,) = link["parameters"]
        assert f"{{{parameter}}}" in target_path, (name, target_path)
        assert link["parameters"][parameter] == "$response.body#/id"
