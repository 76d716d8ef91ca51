"""The activities service: activities and attendance, talks, service hours, programs and
pledges, points, help requests, funds, training and the statistics for reports; plus the
audit trail and the read model of the registry kept by its consumers."""

from __future__ import annotations

import functools

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import create_service_app, serving
from common.audit import audit_router
from services.activities import consumers
from services.activities.dependencies import NotesCipher
from services.activities.models import audit_log
from services.activities.routes import ROUTERS
from services.activities.settings import ActivitiesSettings

PREFIX = "/api/v1/activities"


def create_app(
    settings: ActivitiesSettings | None = None,
    *,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
) -> FastAPI:
    settings = settings or ActivitiesSettings()
    app = create_service_app(
        title="Lianxin activities",
        description="Organizational life, talks, service hours, programs, points, help "
        "requests and funds.",
        settings=settings,
        routers=[*ROUTERS, audit_router(audit_log, service="activities")],
        prefix=PREFIX,
        sessionmaker=sessionmaker,
        on_startup=consumers.on_startup,
        on_shutdown=consumers.on_shutdown,
    )
    app.state.notes_cipher = NotesCipher.from_settings(settings)
    return app


@functools.cache
def _default_app() -> FastAPI:
    return serving(create_app())


def __getattr__(name: str) -> FastAPI:
    # `uvicorn services.activities.app:app` builds the app once, on first access.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
