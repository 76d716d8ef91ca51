"""The frame every Lianxin app shares: lifespan with the engine, error handlers, request
context and body limits, token verification, `/healthz`, `/readyz`, and `/metrics` with the
access log (common/metrics.py)."""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from common.auth import TokenVerifier
from common.db import app_engine, make_sessionmaker
from common.errors import install_error_handlers, problem_openapi, problem_responses
from common.lane import Lane, bodyless
from common.logs import configure_logging
from common.metrics import install_metrics
from common.middleware import BodyLimitMiddleware, DeprecationMiddleware, RequestContextMiddleware
from common.scheduling import ProcessSettings, apply_cpu_policy
from common.settings import BaseAppSettings
from common.tracing import TracingMiddleware, instrument_engine, setup_tracing


def create_service_app(
    *,
    title: str,
    description: str,
    settings: BaseAppSettings,
    routers: Sequence[APIRouter],
    prefix: str,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    on_startup: Callable[[FastAPI], Any] | None = None,
    on_shutdown: Callable[[FastAPI], Any] | None = None,
    upload_paths: Sequence[str] = (),
) -> ServiceApp:
    configure_logging(settings.log_level)
    name = title.split()[-1].lower()
    tracing = setup_tracing(name, settings.otel_exporter_otlp_endpoint)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = None
        if getattr(app.state, "sessionmaker", None) is None:
            engine = app_engine(settings, application_name=title.lower())
            app.state.sessionmaker = make_sessionmaker(engine)
            if tracing is not None:
                instrument_engine(engine, tracing.tracer)
        if on_startup is not None:
            await on_startup(app)
        settle_process(app, settings)
        try:
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown(app)
            if engine is not None:
                await engine.dispose()
                app.state.sessionmaker = None
            if tracing is not None:
                tracing.shutdown()

    app = ServiceApp(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        openapi_url=f"{prefix}/openapi.json",
        docs_url=f"{prefix}/docs",
        redoc_url=None,
        responses=problem_responses(401, 422),
    )
    app.state.settings = settings
    app.state.sessionmaker = sessionmaker
    app.state.token_verifier = TokenVerifier(
        settings.public_key_pem(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        service_public_key_pem=settings.service_public_key_pem(),
    )
    install_error_handlers(app)

    def limit_for(path: str) -> int:
        if any(path.endswith(p) for p in upload_paths):
            return settings.max_upload_bytes
        return settings.max_body_bytes

    app.add_middleware(DeprecationMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    recorder = install_metrics(app, name, schema=name)  # inside the request id
    app.state.tracing = tracing
    if tracing is not None:  # a span around the metrics, inside the request id
        app.add_middleware(TracingMiddleware, tracer=tracing.tracer)
    else:  # a traced request takes the stack, whose middleware makes its span
        app.lane = Lane(app, recorder, trust_forwarded=True)
    app.add_middleware(RequestContextMiddleware)

    for router in routers:
        app.include_router(router, prefix=prefix)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        try:
            async with request.app.state.sessionmaker() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            logging.getLogger("lianxin").warning("readiness check failed: database")
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "up"})

    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_openapi(fastapi_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


HotEndpoint = Callable[[uuid.UUID, Request], Awaitable[Response]]


class ServiceApp(FastAPI):
    """A service's app: the reads registered with `hot_read` take the lane
    (`common.lane`) when tracing is off; every other request, the whole stack."""

    lane: Lane | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot: dict[str, tuple[str, HotEndpoint]] = {}

    def hot_read(self, template: str, endpoint: HotEndpoint) -> None:
        """`GET <prefix>{name}` — an id as the last segment — answered by
        `endpoint(id, request)` through the lane. The same endpoint stays declared as a
        route (the document, and every request the lane does not take: a traced one, an
        id not in the canonical form, which the route's validation answers); it must not
        be a deprecated route (the stack announces those)."""
        prefix, _, last = template.rpartition("/")
        if not (last.startswith("{") and last.endswith("}")):
            raise ValueError(f"a hot read ends in one path parameter: {template!r}")
        self.hot[prefix + "/"] = (template, endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane
        if lane is not None and self.hot and scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            cut = path.rfind("/") + 1
            target = self.hot.get(path[:cut])
            if target is not None and len(path) - cut == 36 and bodyless(scope):
                try:
                    key = uuid.UUID(path[cut:])
                except ValueError:
                    pass
                else:
                    template, endpoint = target
                    await lane.serve(scope, receive, send, template, partial(endpoint, key))
                    return
        await super().__call__(scope, receive, send)


def serving(app: FastAPI) -> FastAPI:
    """Marks the app a server process serves for its whole life (`uvicorn <module>:app`),
    as opposed to the many a test process makes: see `settle_process`."""
    app.state.one_per_process = True
    return app


def settle_process(app: FastAPI, settings: ProcessSettings) -> None:
    """Once an app that has its process to itself has started: what it made until then
    (routes, models, schemas: most of the heap, kept for the process's life) leaves the
    cyclic garbage collector's generations (`gc.freeze`), so the collections that the
    requests' garbage triggers no longer walk all of it; and the process takes the CPU
    policy of Lianxin's servers (`settings.cpu_batch`: `common.scheduling`). Not for an app
    of a test process: the apps it drops would never be collected, and the process is
    not a server's."""
    if getattr(app.state, "one_per_process", False):
        gc.collect()
        gc.freeze()
        apply_cpu_policy(settings=settings)
