"""The proxy in-process: what reaches a service, what comes back, and the problems the
gateway answers itself. The stand-in service (`upstream_app`) plays mobility here."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from gateway.settings import GatewaySettings
from tests.gateway import upstream_app
from tests.gateway.conftest import ServiceRouter
from tests.helpers import mint

ECHO = "/api/v1/mobility/echo/headers"
PEER = "203.0.113.7"  # the address the harness's client connects from
STOPPED = "stopped-service"  # a host the harness refuses connections to


@pytest.fixture
def service_apps(service_apps: dict[str, FastAPI]) -> dict[str, FastAPI]:
    return {**service_apps, "mobility": upstream_app.create_app()}


@pytest.fixture
def gateway_settings(gateway_settings: GatewaySettings) -> GatewaySettings:
    return gateway_settings.model_copy(
        update={
            "upstream_retries": 2,
            "max_body_bytes": 1000,
            "max_upload_bytes": 5000,
            "activities_url": f"http://{STOPPED}",  # every connect refused
        }
    )


def received(response: httpx.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


async def raw_asgi_get(app: FastAPI, raw_path: bytes) -> tuple[int, dict[bytes, bytes]]:
    """A GET whose path reaches the app exactly as given, as a server would pass it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path.decode()),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gateway")],
        "client": (PEER, 51000),
        "server": ("gateway", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"])


def rid_of(problem: httpx.Response) -> str:
    instance = problem.json()["instance"]
    match = re.fullmatch(r"urn:lianxin:request:(.+)", instance)
    assert match, instance
    return match.group(1)


class TestRequestId:
    async def test_given_id_is_passed_upstream_and_echoed(
        self, gw: Callable[..., httpx.AsyncClient]
    ) -> None:
        r = await gw().get(ECHO, headers={"X-Request-ID": "trace-42"})
        assert r.status_code == 200
        assert r.headers["x-request-id"] == "trace-42"
        assert received(r)["x-request-id"] == ["trace-42"]

    async def test_missing_id_is_made_and_the_service_sees_the_same(
        self, anon: httpx.AsyncClient
    ) -> None:
        r = await anon.get(ECHO)
        rid = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert received(r)["x-request-id"] == [rid]

    async def test_gateway_problem_names_the_request(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/api/v1/nowhere/x", headers={"X-Request-ID": "r-404"})
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        assert rid_of(r) == "r-404" == r.headers["x-request-id"]

    async def test_service_problem_names_the_same_request(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/api/v1/registry/orgs")  # no credentials: the registry's 401
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert rid_of(r) == r.headers["x-request-id"]
        assert len(r.headers.get_list("x-request-id")) == 1


class TestRequestHeaders:
    async def test_forwarded_for_is_the_peer_not_what_the_client_claims(
        self, anon: httpx.AsyncClient
    ) -> None:
        r = await anon.get(ECHO, headers={"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6"})
        seen = received(r)
        assert seen["x-forwarded-for"] == [PEER]
        assert seen["x-forwarded-proto"] == ["http"]
        assert seen["x-forwarded-host"] == ["gateway"]
        assert "forwarded" not in seen

    async def test_hop_by_hop_headers_stay_at_the_gateway(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get(
            ECHO,
            headers={
                "Connection": "x-private-hop",
                "X-Private-Hop": "secret",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Upgrade": "h2c",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                "X-Kept": "yes",
            },
        )
        seen = received(r)
        for name in ("x-private-hop", "keep-alive", "te", "upgrade", "proxy-authorization"):
            assert name not in seen, name
        assert seen["x-kept"] == ["yes"]
        assert seen["host"] == ["mobility"]

    async def test_path_and_query_arrive_as_sent(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/api/v1/mobility/echo/head%65rs?q=a%20b&q=%E8%BF%9E&x=")
        assert r.status_code == 200
        assert r.json()["raw_path"] == "/api/v1/mobility/echo/head%65rs"
        assert r.json()["query"] == "q=a%20b&q=%E8%BF%9E&x="

    async def test_bearer_token_reaches_the_service(
        self, gw: Callable[..., httpx.AsyncClient]
    ) -> None:
        token = mint("admin")
        r = await gw(token).get("/api/v1/registry/orgs")
        assert r.status_code == 200
        assert r.json() == {"items": [], "next_cursor": None}


class TestResponseHeaders:
    async def test_connection_specific_and_duplicate_stamps_are_dropped(
        self, anon: httpx.AsyncClient
    ) -> None:
        r = await anon.get("/api/v1/mobility/connection-headers")
        assert r.status_code == 200
        names = [k.lower() for k, _ in r.headers.multi_items()]
        for name in ("x-private-hop", "keep-alive", "proxy-authenticate", "upgrade"):
            assert name not in names, name
        # The upstream's own stamps go; the gateway's server adds one of each itself.
        assert "date" not in names
        assert "server" not in names
        assert r.headers["x-kept"] == "yes"
        assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
        assert names.count("content-length") == 1

    async def test_status_and_body_pass_through(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/api/v1/mobility/status/418")
        assert r.status_code == 418
        assert r.json() == {"code": 418}


class TestRouting:
    async def test_unknown_service_is_a_404_problem(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/api/v1/payroll/employees")
        assert r.status_code == 404
        assert r.json()["type"] == "urn:lianxin:problem:not-found"

    @pytest.mark.parametrize(
        "raw_path",
        [
            b"/api/v1/mobility/../registry/orgs",
            b"/api/v1/mobility/%2e%2e/registry/orgs",
            b"/api/v1/mobility/./echo/headers",
        ],
    )
    async def test_dot_segments_cannot_leave_the_service(
        self, gateway_app: FastAPI, upstream: ServiceRouter, raw_path: bytes
    ) -> None:
        # Sent as raw ASGI: HTTP clients (httpx too) remove dot segments before sending.
        before = len(upstream.calls)
        status, headers = await raw_asgi_get(gateway_app, raw_path)
        assert status == 404
        assert headers[b"content-type"] == b"application/problem+json"
        assert len(upstream.calls) == before

    @pytest.mark.parametrize("method", ["PUT", "POST"])
    async def test_bodies_are_forwarded(self, anon: httpx.AsyncClient, method: str) -> None:
        r = await anon.request(method, "/api/v1/mobility/echo/digest", content=b"x" * 900)
        assert r.status_code == 200
        assert r.json()["bytes"] == 900


class TestRetries:
    """`activities` points at a stopped service here: every connect is refused."""

    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
    async def test_idempotent_methods_retry_connect_errors(
        self, anon: httpx.AsyncClient, upstream: ServiceRouter, method: str
    ) -> None:
        r = await anon.request(method, "/api/v1/activities/activities")
        assert r.status_code == 503
        assert r.json()["type"] == "urn:lianxin:problem:unavailable"
        assert [c for c in upstream.calls if c[0] == STOPPED] == [
            (STOPPED, method, "/api/v1/activities/activities")
        ] * 3

    @pytest.mark.parametrize("method", ["POST", "PATCH"])
    async def test_post_and_patch_are_never_retried(
        self, anon: httpx.AsyncClient, upstream: ServiceRouter, method: str
    ) -> None:
        r = await anon.request(method, "/api/v1/activities/activities", json={"title": "x"})
        assert r.status_code == 503
        assert len([c for c in upstream.calls if c[0] == STOPPED]) == 1


class TestBodyLimit:
    async def test_declared_oversize_body_is_413_before_the_service(
        self, anon: httpx.AsyncClient, upstream: ServiceRouter
    ) -> None:
        r = await anon.post("/api/v1/mobility/echo/digest", content=b"x" * 1001)
        assert r.status_code == 413
        assert r.json()["type"] == "urn:lianxin:problem:payload-too-large"
        assert rid_of(r) == r.headers["x-request-id"]
        assert not [c for c in upstream.calls if c[0] == "mobility"]

    async def test_streamed_oversize_body_is_413(self, anon: httpx.AsyncClient) -> None:
        async def chunks() -> object:
            for _ in range(4):
                yield b"x" * 400

        r = await anon.post("/api/v1/mobility/echo/digest", content=chunks())
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"

    async def test_upload_paths_get_the_larger_limit(self, anon: httpx.AsyncClient) -> None:
        # Past the gateway (the stand-in has no such route: its 404, not a 413).
        r = await anon.put("/api/v1/mobility/sync/org-1/members", content=b"x" * 4000)
        assert r.status_code == 404
        r = await anon.put("/api/v1/mobility/sync/org-1/members", content=b"x" * 5001)
        assert r.status_code == 413
