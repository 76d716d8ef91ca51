"""The mobility service: mobile members' tracking cards, dual management, the work-unit
sync, alerts and flow statistics; the read models of the registry and of activities kept
by its consumers."""

from __future__ import annotations

import functools

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import create_service_app, serving
from common.audit import audit_router
from services.mobility import consumers
from services.mobility.dependencies import FieldCrypto
from services.mobility.models import audit_log
from services.mobility.routes import alerts, cards, links, sync
from services.mobility.settings import MobilitySettings

PREFIX = "/api/v1/mobility"


def create_app(
    settings: MobilitySettings | None = None,
    *,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
) -> FastAPI:
    settings = settings or MobilitySettings()
    app = create_service_app(
        title="Lianxin mobility",
        description="Mobile members' tracking cards and dual management of in-service members.",
        settings=settings,
        routers=[
            cards.router,
            links.router,
            sync.router,
            alerts.router,
            audit_router(audit_log, service="mobility"),
        ],
        prefix=PREFIX,
        sessionmaker=sessionmaker,
        on_startup=consumers.on_startup,
        on_shutdown=consumers.on_shutdown,
        upload_paths=("/members",),
    )
    app.state.crypto = FieldCrypto.from_settings(settings)
    # Tests route the registry calls to an in-process app here; otherwise `registry_url`.
    app.state.registry_transport = None
    return app


@functools.cache
def _default_app() -> FastAPI:
    return serving(create_app())


def __getattr__(name: str) -> FastAPI:
    # `uvicorn services.mobility.app:app` builds the app once, on first access.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
