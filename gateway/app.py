"""The gateway: the one door clients use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from starlette.responses import StreamingResponse

from common.errors import install_error_handlers
from common.logs import configure_logging
from common.middleware import RequestContextMiddleware
from gateway.proxy import Proxy
from gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings | None = None,
               *, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            transport=transport, timeout=settings.upstream_timeout_s
        ) as client:
            app.state.proxy = Proxy(settings.upstreams(), client)
            yield

    app = FastAPI(title="Lianxin", version="1.0.0", lifespan=lifespan, openapi_url=None)
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route(
        "/api/v1/{service}/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def forward(request: Request, service: str, path: str) -> StreamingResponse:
        proxy: Proxy = request.app.state.proxy
        return await proxy.forward(request, service, path)

    return app


def __getattr__(name: str) -> FastAPI:
    if name == "app":
        return create_app()
    raise AttributeError(name)
