"""The registry service: organizations, members' registration cards, transfers."""

from __future__ import annotations

import functools

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import create_service_app
from common.audit import audit_router
from common.events.runtime import lifespan_hooks
from services.registry import consumers
from services.registry.dependencies import FieldCrypto
from services.registry.models import SCHEMA, audit_log, consumer_cursors
from services.registry.routes import imports, members, orgs, persons, stats, transfers
from services.registry.settings import RegistrySettings

PREFIX = "/api/v1/registry"


def create_app(
    settings: RegistrySettings | None = None,
    *,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
) -> FastAPI:
    settings = settings or RegistrySettings()
    # Members' status follows mobility's cards; with NATS_URL set it relays its outbox too.
    on_startup, on_shutdown = lifespan_hooks(
        consumers=consumers.consumers, schema=SCHEMA, cursors=consumer_cursors
    )
    app = create_service_app(
        title="Lianxin registry",
        description="Organizations, members' registration cards and transfers of "
        "organizational relation.",
        settings=settings,
        routers=[
            orgs.router,
            # Before members: /members/import and /members/export are not member ids.
            imports.router,
            members.router,
            transfers.router,
            persons.router,
            stats.router,
            audit_router(audit_log, service="registry"),
        ],
        prefix=PREFIX,
        sessionmaker=sessionmaker,
        upload_paths=("/members/import", "/persons/resolve"),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    app.state.crypto = FieldCrypto.from_settings(settings)
    return app


@functools.cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    # `uvicorn services.registry.app:app` builds the app once, on first access.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
