"""OpenTelemetry tracing across the gateway and the services (common/tracing.py).

With an OTLP endpoint configured, real processes (`tests/contract/system.py`) send their
spans over OTLP/HTTP to a tiny receiver this test runs: a request through the gateway is
one trace, the service's server span a child of the gateway's, with SQL spans below it; a
caller's `traceparent` is continued; no span carries the path's values or the query string.
Without an endpoint nothing of it is installed."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from common.tracing import TracingMiddleware, traces_url
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from tests.contract.system import ADMIN_PASSWORD, ADMIN_USER, System, running_system
from tests.helpers import PRIVATE_PEM
from tests.registry.factories import id_number

WAIT_S = 30.0
SERVER, CLIENT = 2, 3  # OTLP span kinds


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, str(kind))


class Receiver:
    """An OTLP/HTTP traces endpoint on a loopback port, keeping what it receives."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                found = []
                for rs in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            found.append(
                                Span(
                                    service=str(resource.get("service.name")),
                                    name=s.name,
                                    trace_id=s.trace_id.hex(),
                                    span_id=s.span_id.hex(),
                                    parent_id=s.parent_span_id.hex(),
                                    kind=s.kind,
                                    attributes={a.key: _value(a.value) for a in s.attributes},
                                )
                            )
                with receiver.lock:
                    receiver.spans.extend(found)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@pytest.fixture(scope="module")
def system(server_url: str, receiver: Receiver) -> Iterator[System]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with running_system(server_url, service_env=env, gateway_env=env) as running:
        yield running


@pytest.fixture
async def gw(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.gateway_url, trust_env=False) as c:
        r = await c.post(
            "/api/v1/auth/token", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD}
        )
        assert r.status_code == 200, r.text
        c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield c


async def spans_of(receiver: Receiver, trace_id: str, *, services: set[str]) -> list[Span]:
    """The trace's spans once each of `services` sent its server span (bounded wait:
    the processes export in batches every 100 ms)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        spans = [s for s in receiver.snapshot() if s.trace_id == trace_id]
        if services <= {s.service for s in spans if s.kind == SERVER}:
            return spans
        assert time.monotonic() < deadline, f"spans of {trace_id}: {spans}"
        await asyncio.sleep(0.1)  # polling the receiver, bounded by the deadline


async def test_a_request_through_the_gateway_is_one_trace(
    gw: httpx.AsyncClient, receiver: Receiver
) -> None:
    secret = id_number(serial=17)
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    r = await gw.get(
        "/api/v1/registry/members",
        params={"id_number": secret, "limit": 5},
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01", "X-Request-ID": "trace-1"},
    )
    assert r.status_code == 200, r.text
    spans = await spans_of(receiver, trace_id, services={"lianxin-gateway", "lianxin-registry"})
    [gateway] = [s for s in spans if s.service == "lianxin-gateway" and s.kind == SERVER]
    [service] = [s for s in spans if s.service == "lianxin-registry" and s.kind == SERVER]
    # The caller's trace goes on; the service's span is the gateway's child.
    assert gateway.parent_id == caller_span
    assert service.parent_id == gateway.span_id
    assert gateway.name == "GET /api/v1/registry/{path}"
    assert service.name == "GET /api/v1/registry/members"
    assert service.attributes["http.route"] == "/api/v1/registry/members"
    for span in (gateway, service):
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["lianxin.request_id"] == "trace-1"
    # The registry's SQL statements are client spans under its server span.
    statements = [s for s in spans if s.service == "lianxin-registry" and s.kind == CLIENT]
    assert statements and all(s.parent_id == service.span_id for s in statements)
    assert {s.attributes["db.system.name"] for s in statements} == {"postgresql"}
    assert "SELECT" in {s.attributes["db.operation.name"] for s in statements}
    # Never the query string or a value: not in names, not in attributes.
    for span in spans:
        text = repr(span)
        assert secret not in text and "id_number=" not in text, span


async def test_a_request_without_a_caller_trace_starts_one(
    gw: httpx.AsyncClient, receiver: Receiver
) -> None:
    before = {s.trace_id for s in receiver.snapshot()}
    r = await gw.get("/api/v1/activities/activities", headers={"X-Request-ID": "trace-2"})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + WAIT_S
    while True:
        mine = [
            s
            for s in receiver.snapshot()
            if s.attributes.get("lianxin.request_id") == "trace-2" and s.kind == SERVER
        ]
        if len(mine) == 2:
            break
        assert time.monotonic() < deadline, mine
        await asyncio.sleep(0.1)  # polling the receiver, bounded by the deadline
    gateway = next(s for s in mine if s.service == "lianxin-gateway")
    service = next(s for s in mine if s.service == "lianxin-activities")
    assert gateway.parent_id == "" and gateway.trace_id not in before
    assert (service.trace_id, service.parent_id) == (gateway.trace_id, gateway.span_id)


def _middlewares(app: FastAPI) -> list[type]:
    return [m.cls for m in app.user_middleware]  # type: ignore[misc]


def test_tracing_is_off_without_an_endpoint(settings_env: dict[str, object]) -> None:
    registry = create_registry(RegistrySettings(**settings_env))  # type: ignore[arg-type]
    gateway = create_gateway(
        GatewaySettings(**settings_env, jwt_private_key=PRIVATE_PEM)  # type: ignore[arg-type]
    )
    for app in (registry, gateway):
        assert app.state.tracing is None
        assert TracingMiddleware not in _middlewares(app)


def test_the_traces_url_of_an_endpoint() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


async def test_service_calls_carry_the_current_trace() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from common.service_client import call_service
    from tests.helpers import SERVICE_PRIVATE_PEM

    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent"))
        return httpx.Response(200, json={})

    async def call() -> None:
        await call_service(
            "POST",
            "http://registry/api/v1/registry/persons/resolve",
            json={},
            private_key_pem=SERVICE_PRIVATE_PEM,
            subject="mobility",
            transport=httpx.MockTransport(answer),
        )

    await call()  # no span: nothing added
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("sync") as span:
        await call()
    context = span.get_span_context()
    assert seen[0] is None
    assert seen[1] is not None
    assert seen[1].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
