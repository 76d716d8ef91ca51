"""The gateway: the one door clients use."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from common.app import serving, settle_process
from common.db import app_engine, make_sessionmaker
from common.errors import install_error_handlers
from common.logs import configure_logging
from common.metrics import install_metrics, route_label
from common.middleware import BodyLimitMiddleware, DeprecationMiddleware, RequestContextMiddleware
from common.tracing import (
    TracingMiddleware,
    inject_into_request,
    instrument_engine,
    setup_tracing,
)
from gateway import health, openapi
from gateway.audit.routes import router as audit_router
from gateway.auth.credentials import authorize_upstream
from gateway.auth.setup import bootstrap as bootstrap_auth
from gateway.auth.setup import install_auth
from gateway.dashboard.routes import router as dashboard_router
from gateway.lane import FastRelay, ProxyLane
from gateway.middleware import EdgeHeaders, SecurityHeadersMiddleware
from gateway.openapi import ServiceDocs
from gateway.proxy import PROXIED_METHODS, Proxy, make_client
from gateway.ratelimit import make_limiter
from gateway.reports.routes import router as reports_router
from gateway.settings import GatewaySettings
from gateway.webhooks import state as webhooks
from gateway.webhooks.routes import router as webhooks_router
from gateway.webhooks.ssrf import Resolver

# Uploads may be larger than ordinary JSON bodies.
UPLOAD_PATHS = ("/api/v1/registry/members/import",)
UPLOAD_PREFIXES = ("/api/v1/mobility/sync/",)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    clock: Callable[[], datetime] | None = None,
    webhook_transport: httpx.AsyncBaseTransport | None = None,
    webhook_resolver: Resolver | None = None,
) -> FastAPI:
    """`transport` replaces the upstream network (tests route service hosts to in-process
    apps), `sessionmaker` the gateway's own database, `clock` the time auth decisions and
    webhook deliveries use; `webhook_transport` and `webhook_resolver` replace the network
    and DNS that webhook deliveries see."""
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level)
    tracing = setup_tracing("gateway", settings.otel_exporter_otlp_endpoint)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = None
        if sessionmaker is None:
            engine = app_engine(settings, application_name="gateway")
            if tracing is not None:
                instrument_engine(engine, tracing.tracer)
        app.state.sessionmaker = sessionmaker or make_sessionmaker(engine)
        await bootstrap_auth(app)
        async with make_client(settings, transport) as client:
            if tracing is not None:  # every call to a service carries the trace
                client.event_hooks = {
                    **client.event_hooks,
                    "request": [*client.event_hooks["request"], inject_into_request],
                }
            app.state.proxy = Proxy.from_settings(settings, client, authorize=authorize_upstream)
            app.state.service_docs = ServiceDocs(
                client, settings.upstreams(), ttl_s=settings.openapi_cache_ttl_s
            )
            limiter = None
            if settings.rate_limit_enabled:
                limiter = make_limiter(
                    redis_url=settings.redis_url,
                    rate_per_s=settings.rate_limit_per_s,
                    burst=settings.rate_limit_burst,
                )
            app.state.limiter = limiter
            hooks = await webhooks.setup(
                app,
                settings,
                transport=webhook_transport,
                resolver=webhook_resolver,
                clock=clock,
            )
            settle_process(app, settings)
            try:
                yield
            finally:
                await app.state.proxy.aclose()
                await hooks.stop()
                if limiter is not None:
                    await limiter.aclose()
                if engine is not None:
                    await engine.dispose()
                if tracing is not None:
                    tracing.shutdown()

    app = GatewayApp(
        title="Lianxin",
        version="1.0.0",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)

    def limit_for(path: str) -> int:
        if path in UPLOAD_PATHS or path.startswith(UPLOAD_PREFIXES):
            return settings.max_upload_bytes
        return settings.max_body_bytes

    # Outermost last: request id, then security headers, CORS, the body limit, and the
    # `Deprecation`/`Sunset` headers of the gateway's own deprecated routes (a service's
    # come through the proxy with its response).
    app.add_middleware(DeprecationMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=list(PROXIED_METHODS),
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-API-Key",
                "X-Request-ID",
                "Idempotency-Key",
                "If-Match",
                "If-None-Match",
            ],
            expose_headers=[
                "X-Request-ID",
                "ETag",
                "Location",
                "Retry-After",
                "Deprecation",
                "Sunset",
            ],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware, hsts_max_age_s=settings.hsts_max_age_s)
    # `/metrics` (the gateway's own; the services' stay on the internal network) and the
    # access log, inside the request id.
    recorder = install_metrics(app, "gateway", services=settings.upstreams(), schema="gateway")
    app.state.tracing = tracing
    if tracing is not None:  # a span around the metrics, inside the request id
        app.add_middleware(TracingMiddleware, tracer=tracing.tracer, services=settings.upstreams())
    app.add_middleware(RequestContextMiddleware, trust_forwarded=False)

    # Each service's own prefix first (none of the gateway's routes lives under one): a
    # proxied request then matches at once instead of after every gateway route, and as a
    # plain Starlette route it skips FastAPI's parameter solving (it has none to solve).
    labels: dict[str, str] = {}
    for name in settings.upstreams():
        route = _ProxyRoute(
            f"/api/v1/{name}/{{path:path}}",
            _forward_to(name),
            methods=list(PROXIED_METHODS),
            include_in_schema=False,
        )
        app.router.routes.append(route)
        labels[name] = route_label({"route": route, "path": route.path})
    if tracing is None:  # a traced request takes the stack, whose middleware makes its span
        edge = EdgeHeaders(hsts_max_age_s=settings.hsts_max_age_s)
        app.lane = ProxyLane(
            app, labels, recorder=recorder, edge=edge, cors=bool(settings.cors_origins)
        )
        app.fast_relay = FastRelay(app.lane, edge)
    app.include_router(health.router)
    app.include_router(openapi.router)
    install_auth(app, settings, clock=clock)  # /api/v1/auth
    app.include_router(audit_router)  # /api/v1/audit, /api/v1/auth/me/access-log
    app.include_router(webhooks_router)  # /api/v1/webhooks
    app.include_router(reports_router)  # /api/v1/reports
    app.include_router(dashboard_router)  # /dashboard (a web page, not in the OpenAPI)

    # The catch-all goes last: the gateway's own `/api/v1/...` routes match first.
    @app.api_route(
        "/api/v1/{service}/{path:path}",
        methods=list(PROXIED_METHODS),
        operation_id="forwardToService",
        summary="Forward to the service that owns the path",
        include_in_schema=False,
    )
    async def forward(request: Request, service: str, path: str) -> Response:
        proxy: Proxy = request.app.state.proxy
        return await proxy.forward(request, service, path)

    return app


class GatewayApp(FastAPI):
    """The gateway's app: a proxied request without a body takes the lane (`gateway.lane`)
    once the proxy is up; every other request, the whole stack."""

    lane: ProxyLane | None = None
    fast_relay: FastRelay | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane
        if lane is not None and scope["type"] == "http" and hasattr(self.state, "proxy"):
            target = lane.takes(scope)
            if target is not None:
                scope["app"] = self
                await lane(scope, receive, send, target)
                return
        await super().__call__(scope, receive, send)


class _ProxyRoute(Route):
    """A plain route that names itself in the scope, as FastAPI's routes do (the metrics
    label requests by the matched route's template)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def _forward_to(service: str) -> Callable[[Request], Awaitable[Response]]:
    async def forward(request: Request) -> Response:
        proxy: Proxy = request.app.state.proxy
        return await proxy.forward(request, service, request.path_params["path"])

    return forward


@functools.cache
def _default_app() -> FastAPI:
    return serving(create_app())


def __getattr__(name: str) -> FastAPI:
    # `uvicorn gateway.app:app` builds the app once, on first access.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
