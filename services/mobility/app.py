"""The mobility service. Business routes come with their issues; what is here is the frame,
the audit trail and the read model of the registry kept by its consumers."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import create_service_app
from common.audit import audit_router
from services.mobility import consumers
from services.mobility.models import audit_log
from services.mobility.settings import MobilitySettings

PREFIX = "/api/v1/mobility"


def create_app(
    settings: MobilitySettings | None = None,
    *,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
) -> FastAPI:
    settings = settings or MobilitySettings()
    return create_service_app(
        title="Lianxin mobility",
        description="Mobile members' tracking cards and dual management of in-service members.",
        settings=settings,
        routers=[audit_router(audit_log, service="mobility")],
        prefix=PREFIX,
        sessionmaker=sessionmaker,
        on_startup=consumers.on_startup,
        on_shutdown=consumers.on_shutdown,
    )


def __getattr__(name: str) -> FastAPI:
    # `uvicorn services.mobility.app:app` builds the app on first access only.
    if name == "app":
        return create_app()
    raise AttributeError(name)
