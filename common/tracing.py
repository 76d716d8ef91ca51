"""OpenTelemetry tracing, on when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`
or `LIANXIN_OTEL_EXPORTER_OTLP_ENDPOINT`), off otherwise — and then nothing of it is
installed: no middleware, no hooks, no exporter thread.

On, each app has its own `TracerProvider` (service name `lianxin-<app>`) whose spans a
`BatchSpanProcessor` sends to `<endpoint>/v1/traces` over OTLP/HTTP, and:
- `TracingMiddleware` opens a server span per request, continuing the caller's trace from
  a W3C `traceparent` header. Its name is the method and the route template
  (`GET /api/v1/registry/members/{member_id}`); its attributes are `http.request.method`,
  `http.route`, `http.response.status_code`, `url.scheme` and `lianxin.request_id` — never
  the path, the query string, a header or a body (they may carry an ID number);
- `inject_trace` puts the current span into outgoing headers (`traceparent`): the gateway's
  upstream client and `common.service_client` call it, so a request through the gateway
  is one trace with the service's span a child of the gateway's;
- `instrument_engine` adds a client span per SQL statement (`db.system.name`,
  `db.operation.name`: the statement's first word — never its text or parameters)."""

from __future__ import annotations

import time
from collections.abc import Collection, MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.context import request_id_var
from common.metrics import UNCOUNTED, route_label

TRACES_PATH = "/v1/traces"
_DB_SPAN = "_lianxin_span"
# Whether any app of this process traces: until one does, no span can be current, and
# `trace_headers` (per proxied request) need not look.
_tracing_on = False


@dataclass
class Tracing:
    provider: TracerProvider
    tracer: trace.Tracer

    def shutdown(self) -> None:
        """Sends what is buffered and stops the exporter (the app's shutdown calls it)."""
        self.provider.shutdown()


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a base endpoint (`http://collector:4318`)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def setup_tracing(
    app_name: str, endpoint: str | None, *, exporter: SpanExporter | None = None
) -> Tracing | None:
    """The app's tracing, or None when no endpoint is configured. `exporter` replaces the
    OTLP one (tests)."""
    global _tracing_on
    if not endpoint:
        return None
    _tracing_on = True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": f"lianxin-{app_name}"}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter or OTLPSpanExporter(endpoint=traces_url(endpoint)))
    )
    return Tracing(provider, provider.get_tracer("lianxin"))


def inject_trace(headers: MutableMapping[str, str]) -> None:
    """Adds `traceparent` for the current span (nothing when no span is recording)."""
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)


def trace_headers() -> list[tuple[bytes, bytes]]:
    """`traceparent` (and `tracestate`) of the current span as raw headers; none when no
    span is recording (no app of this process traces: nothing to read)."""
    if not _tracing_on or not trace.get_current_span().get_span_context().is_valid:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]


async def inject_into_request(request: Any) -> None:
    """An httpx `request` event hook: the current trace goes along."""
    inject_trace(request.headers)


class TracingMiddleware:
    """A server span per HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, tracer: trace.Tracer, services: Collection[str] = ()):
        self.app = app
        self.tracer = tracer
        self.services = frozenset(services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED:
            await self.app(scope, receive, send)
            return
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers") or []
            if k in (b"traceparent", b"tracestate")
        }
        parent = propagate.extract(carrier) if carrier else None
        method = scope["method"]
        status = 500
        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:

            async def observe(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, observe)
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                route = route_label(scope, self.services)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                rid = request_id_var.get()
                if rid:
                    span.set_attribute("lianxin.request_id", rid)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def instrument_engine(engine: AsyncEngine, tracer: trace.Tracer) -> None:
    """A client span per statement, child of the current span (SQLAlchemy runs the
    statement in a greenlet that keeps the request's context)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _start(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        if not trace.get_current_span().get_span_context().is_valid:
            return  # background work outside a request: no trace to join
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer.start_span(
            operation,
            kind=SpanKind.CLIENT,
            context=otel_context.get_current(),
            attributes={"db.system.name": "postgresql", "db.operation.name": operation},
            start_time=time.time_ns(),
        )
        setattr(ctx, _DB_SPAN, span)

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _end(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        span = getattr(ctx, _DB_SPAN, None)
        if span is not None:
            span.end()

    @event.listens_for(sync_engine, "handle_error")
    def _failed(exception_context: Any) -> None:
        ctx = exception_context.execution_context
        span = getattr(ctx, _DB_SPAN, None) if ctx is not None else None
        if span is not None:
            span.set_status(
                Status(StatusCode.ERROR, type(exception_context.original_exception).__name__)
            )
            span.end()
