"""The gateway's own `/metrics`: proxied calls counted per service, its own routes by
template; nothing of it in the merged OpenAPI; the services' `/metrics` not reachable
through it."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


async def test_proxied_calls_are_counted_per_service(
    admin_client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    for _ in range(2):
        assert (await admin_client.get("/api/v1/registry/orgs")).status_code == 200
    assert (await admin_client.get("/api/v1/nosuchservice/x")).status_code == 404
    r = await anon.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        value(
            text,
            "lianxin_http_requests_total",
            method="GET",
            route="/api/v1/registry/{path}",
            status="200",
        )
        == 2
    )
    # An unknown service name never becomes a label of its own.
    assert "nosuchservice" not in text
    assert (
        value(
            text,
            "lianxin_http_requests_total",
            method="GET",
            route="/api/v1/{service}/{path}",
            status="404",
        )
        == 1
    )
    # The login the fixture made, by the gateway's own route template.
    assert (
        value(
            text,
            "lianxin_http_requests_total",
            method="POST",
            route="/api/v1/auth/token",
            status="200",
        )
        >= 1
    )
    assert value(text, "lianxin_app_info", app="gateway") == 1
    assert value(text, "lianxin_db_pool_size") >= 1


async def test_not_in_the_merged_openapi_and_services_metrics_stay_inside(
    admin_client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    doc = (await anon.get("/api/v1/openapi.json")).json()
    assert not [p for p in doc["paths"] if p.endswith("/metrics")]
    r = await admin_client.get("/api/v1/registry/metrics")
    assert r.status_code == 404 and "lianxin_http_requests" not in r.text
