"""The registry service: organizations, members' registration cards, transfers."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.app import create_service_app, serving
from common.audit import audit_router
from common.events.runtime import lifespan_hooks
from common.schedule import run_periodic
from services.registry import consumers
from services.registry.dependencies import FieldCrypto
from services.registry.models import SCHEMA, audit_log, consumer_cursors
from services.registry.routes import imports, members, orgs, persons, stats, transfers
from services.registry.service import member_read
from services.registry.service.transfers import expire_overdue
from services.registry.settings import RegistrySettings

PREFIX = "/api/v1/registry"


def create_app(
    settings: RegistrySettings | None = None,
    *,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
) -> FastAPI:
    settings = settings or RegistrySettings()
    # Members' status follows mobility's cards; with NATS_URL set it relays its outbox too.
    start_consumers, stop_consumers = lifespan_hooks(
        consumers=consumers.consumers, schema=SCHEMA, cursors=consumer_cursors
    )

    async def on_startup(app: FastAPI) -> None:
        member_read.open_hot_reads(app)
        await start_consumers(app)
        app.state.expiry_task = None
        if settings.consumers_enabled:
            # Reads see overdue letters as expired anyway; this stores it (and audits it)
            # once per period across every replica.
            app.state.expiry_task = asyncio.create_task(
                run_periodic(
                    app.state.sessionmaker,
                    SCHEMA,
                    "registry.transfer_expiry",
                    expire_overdue,
                    every_s=settings.transfer_expiry_sweep_s,
                ),
                name="registry.transfer_expiry",
            )

    async def on_shutdown(app: FastAPI) -> None:
        task: asyncio.Task[None] | None = getattr(app.state, "expiry_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stop_consumers(app)
        await member_read.close_hot_reads(app)

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
    # The card a phone reads most, past the middleware stack (`common.lane`).
    app.hot_read(f"{PREFIX}/members/{{member_id}}", members.get_member)
    return app


@functools.cache
def _default_app() -> FastAPI:
    return serving(create_app())


def __getattr__(name: str) -> FastAPI:
    # `uvicorn services.registry.app:app` builds the app once, on first access.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
