"""The registry service: organizations, members' registration cards, transfers."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import create_service_app
from common.audit import audit_router
from services.registry.models import audit_log
from services.registry.routes import orgs
from services.registry.settings import RegistrySettings

PREFIX = "/api/v1/registry"


def create_app(
    settings: RegistrySettings | None = None,
    *,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
) -> FastAPI:
    settings = settings or RegistrySettings()
    return create_service_app(
        title="Lianxin registry",
        description="Organizations, members' registration cards and transfers of "
        "organizational relation.",
        settings=settings,
        routers=[orgs.router, audit_router(audit_log, service="registry")],
        prefix=PREFIX,
        sessionmaker=sessionmaker,
        upload_paths=("/members/import",),
    )


def __getattr__(name: str) -> FastAPI:
    # `uvicorn services.registry.app:app` builds the app on first access only.
    if name == "app":
        return create_app()
    raise AttributeError(name)
