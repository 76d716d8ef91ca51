"""Prometheus metrics and access logs for every app.

`install_metrics(app, name)` mounts `MetricsMiddleware` (one request counter and latency
histogram per method, route template and status; a counter of 5xx answers and unhandled
errors; requests in flight), a collector for the database pool (size, checked out,
overflow; read at scrape time from `app.state.sessionmaker`), and `GET /metrics` in the text
exposition format, left out of the OpenAPI document. With the app's schema given, each
scrape also reads how far its event consumers are behind their sources' outboxes. Each app
has its own registry, so several apps in one process (the tests) don't share counters.

Labels are route *templates* (`/api/v1/registry/members/{member_id}`), never raw paths, so
the number of series stays bounded; a path no route matches counts as `<unmatched>`.

The same middleware writes one access log line per request (logger `lianxin.access`): the
method, route template, path (never the query string, which may carry search terms), status
and duration, with the request id the JSON formatter adds; never a body or a header."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from bisect import bisect_left
from collections.abc import Collection, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("lianxin.access")

UNMATCHED = "<unmatched>"
# Seconds; the API's budget is tens of milliseconds, imports and syncs take seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Paths that are not counted (scrapes and probes would dominate every rate).
UNCOUNTED = frozenset({"/metrics", "/healthz", "/readyz"})


class Metrics:
    """One app's registry and its HTTP metrics."""

    def __init__(self, app_name: str) -> None:
        self.app_name = app_name
        self.registry = CollectorRegistry(auto_describe=True)
        # The request counter and latency histogram (`RequestSeries`).
        self.requests = RequestSeries()
        self.registry.register(self.requests)
        self.errors = Counter(
            "lianxin_http_errors",
            "Requests that ended in a 5xx answer or an unhandled exception.",
            ["method", "route"],
            registry=self.registry,
        )
        # Counted in a plain integer (requests start and end on the event loop's thread)
        # and read when scraped: a gauge's `inc` and `dec` are a lock and four calls each.
        self.in_flight_now = 0
        self.in_flight = Gauge(
            "lianxin_http_requests_in_flight",
            "Requests being handled now.",
            registry=self.registry,
        )
        self.in_flight.set_function(lambda: self.in_flight_now)
        info = Gauge(
            "lianxin_app_info", "The app this process runs.", ["app"], registry=self.registry
        )
        info.labels(app=app_name).set(1)
        self.consumer_lag = Gauge(
            "lianxin_consumer_lag_events",
            "Events in a source's outbox after a consumer's cursor (by outbox id: approximate "
            "while transactions commit out of order), read at scrape time.",
            ["consumer", "source"],
            registry=self.registry,
        )

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestSeries(Collector):
    """`lianxin_http_requests` (by method, route template and status) and
    `lianxin_http_request_duration_seconds` (by method and route, `LATENCY_BUCKETS`), as
    prometheus_client's `Counter` and `Histogram` expose them, counted in plain numbers:
    requests are counted on the event loop's thread, and the library's children take a
    lock per count and walk the buckets in Python per observation (on the gateway's
    relayed read, 1.4 µs of its 22: here 0.56)."""

    _BOUNDS = (*LATENCY_BUCKETS, float("inf"))
    # `le` as the library writes it for these bounds (`0.005`, `1.0`, `+Inf`).
    _LE = (*(repr(b) for b in LATENCY_BUCKETS), "+Inf")

    def __init__(self) -> None:
        # (method, route, status) → [count, created]
        self.counts: dict[tuple[str, str, int], list[float]] = {}
        # (method, route) → [count per bucket (not cumulative)..., sum, created]
        self.latencies: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route, status)
        count = self.counts.get(key)
        if count is None:
            count = self.counts[key] = [0, time.time()]
        count[0] += 1
        series = self.latencies.get(key[:2])
        if series is None:
            series = self.latencies[key[:2]] = [0] * len(self._BOUNDS) + [0.0, time.time()]
        series[bisect_left(self._BOUNDS, elapsed)] += 1
        series[-2] += elapsed

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        return self._families()

    def _families(self) -> Iterator[Metric]:
        requests = Metric(
            "lianxin_http_requests",
            "HTTP requests answered, by method, route template and status.",
            "counter",
        )
        for (method, route, status), (count, created) in list(self.counts.items()):
            labels = {"method": method, "route": route, "status": str(status)}
            requests.add_sample("lianxin_http_requests_total", labels, count)
            requests.add_sample("lianxin_http_requests_created", labels, created)
        yield requests
        name = "lianxin_http_request_duration_seconds"
        latency = Metric(
            name, "Time from request start to the end of the response body.", "histogram"
        )
        for (method, route), series in list(self.latencies.items()):
            labels = {"method": method, "route": route}
            total = 0.0
            for le, n in zip(self._LE, series, strict=False):
                total += n
                latency.add_sample(f"{name}_bucket", {**labels, "le": le}, total)
            latency.add_sample(f"{name}_count", labels, total)
            latency.add_sample(f"{name}_sum", labels, series[-2])
            latency.add_sample(f"{name}_created", labels, series[-1])
        yield latency


class PoolCollector(Collector):
    """The SQLAlchemy pool behind `app.state.sessionmaker`, read at each scrape."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        return []  # values exist only once the lifespan made the engine

    def collect(self) -> Iterator[Metric]:
        pool = _pool_of(getattr(self.app.state, "sessionmaker", None))
        if pool is None:
            return
        for name, doc, getter in (
            ("lianxin_db_pool_size", "Connections the pool keeps.", "size"),
            ("lianxin_db_pool_checked_out", "Connections in use now.", "checkedout"),
            ("lianxin_db_pool_overflow", "Connections beyond the pool size.", "overflow"),
        ):
            method = getattr(pool, getter, None)
            if method is None:
                continue
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], float(method()))
            yield family


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LAG_TIMEOUT_S = 2.0


async def update_consumer_lag(metrics: Metrics, sessionmaker: Any, schema: str) -> None:
    """`<schema>.consumer_cursors` against the sources' outboxes (the newest id: an index
    lookup). Skipped when the tables don't exist or the database is slow or down."""
    if sessionmaker is None or not _IDENT.match(schema):
        return
    try:
        async with asyncio.timeout(LAG_TIMEOUT_S), sessionmaker() as session:
            exists = await session.scalar(
                text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{schema}.consumer_cursors"}
            )
            if not exists:
                return
            rows = (
                await session.execute(
                    text(f"SELECT consumer, source, id FROM {schema}.consumer_cursors")  # noqa: S608 - checked identifier
                )
            ).all()
            newest: dict[str, int | None] = {}
            for _, source, _ in rows:
                if source in newest or not _IDENT.match(source):
                    continue
                table = f"{source}.outbox"
                if await session.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}):
                    newest[source] = await session.scalar(
                        text(f"SELECT coalesce(max(id), 0) FROM {table}")  # noqa: S608 - checked identifier
                    )
            for consumer, source, position in rows:
                top = newest.get(source)
                if top is not None:
                    metrics.consumer_lag.labels(consumer=consumer, source=source).set(
                        max(0, int(top) - int(position))
                    )
    except Exception:  # a scrape never fails because of this
        logging.getLogger("lianxin.metrics").warning("consumer lag not read", exc_info=True)


def _pool_of(sessionmaker: Any) -> Any:
    bind = getattr(sessionmaker, "kw", {}).get("bind") if sessionmaker is not None else None
    engine = getattr(bind, "sync_engine", bind)
    return getattr(engine, "pool", None)


def route_label(scope: Scope, services: Collection[str] = ()) -> str:
    """The matched route's full template. A route of an included router knows only its own
    part (`/{member_id}`); the prefix in front of it is literal, so it is the request path
    minus as many segments as the route's template has."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if template is None:
        template = getattr(route, "path", None)
    if template is None:
        return UNMATCHED
    path = str(scope.get("path", ""))
    # `{path:path}` spans any number of segments (`path_format` shows it as `{path}`).
    if ":path}" not in template and ":path}" not in str(getattr(route, "path", "")):
        depth = template.count("/")
        segments = path.split("/")
        prefix = "/".join(segments[: len(segments) - depth]) if depth else path
        template = prefix + template
    # The gateway's catch-all names the service it forwards to (a bounded set).
    service = (scope.get("path_params") or {}).get("service")
    if "{service}" in template and service in services:
        template = template.replace("{service}", service)
    return str(template)


class RequestRecorder:
    """Counts, times and logs one HTTP request once it has its answer."""

    def __init__(self, metrics: Metrics, services: Collection[str] = ()) -> None:
        self.metrics = metrics
        self.services = frozenset(services)

    def record(
        self, method: str, route: str, status: int, elapsed: float, *, failed: bool, path: str
    ) -> None:
        self.metrics.requests.observe(method, route, status, elapsed)
        if failed or status >= 500:
            self.metrics.errors.labels(method=method, route=route).inc()
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "fields": {
                        "method": method,
                        "route": route,
                        "path": path,  # never the query string
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    }
                },
            )


class MetricsMiddleware:
    """Counts, times and logs every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, recorder: RequestRecorder) -> None:
        self.app = app
        self.metrics = recorder.metrics
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        failed = False
        self.metrics.in_flight_now += 1

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observe)
        except BaseException:
            failed = True
            raise
        finally:
            self.metrics.in_flight_now -= 1
            self.recorder.record(
                scope["method"],
                route_label(scope, self.recorder.services),
                status,
                time.perf_counter() - start,
                failed=failed,
                path=scope["path"],
            )


def install_metrics(
    app: FastAPI,
    app_name: str,
    *,
    services: Collection[str] = (),
    schema: str | None = None,
) -> RequestRecorder:
    """Mount the middleware and `/metrics` on an app; call before the app starts. `schema`:
    the app's own schema, whose `consumer_cursors` give the consumer lag. Returns the
    recorder the middleware counts with (an app's lane counts with the same one)."""
    metrics = Metrics(app_name)
    metrics.register(PoolCollector(app))
    app.state.metrics = metrics
    recorder = RequestRecorder(metrics, services)
    app.add_middleware(MetricsMiddleware, recorder=recorder)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        if schema is not None:
            sessionmaker = getattr(request.app.state, "sessionmaker", None)
            await update_consumer_lag(metrics, sessionmaker, schema)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return recorder
