"""Wiring auth into the gateway app: state, routes, and the first admin at startup."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from gateway.auth.routes import router
from gateway.auth.service.users import ensure_first_admin
from gateway.auth.state import AuthState, Clock
from gateway.settings import GatewaySettings

log = logging.getLogger("lianxin.gateway.auth")


def install_auth(app: FastAPI, settings: GatewaySettings, *, clock: Clock | None = None) -> None:
    """Puts `AuthState` on `app.state.auth` (and its verifier where `common.auth` looks)
    and mounts `/api/v1/auth`. Call before the proxy's catch-all route is added."""
    state = AuthState.build(settings, clock=clock)
    app.state.auth = state
    app.state.token_verifier = state.verifier
    app.include_router(router)


async def bootstrap(app: FastAPI) -> None:
    """Creates the first admin from `LIANXIN_ADMIN_USER`/`LIANXIN_ADMIN_PASSWORD` when no
    admin exists; runs in the lifespan once the sessionmaker is there."""
    state: AuthState = app.state.auth
    username, password = state.settings.admin_user, state.settings.admin_password
    if not username or not password:
        log.info("first admin: LIANXIN_ADMIN_USER/LIANXIN_ADMIN_PASSWORD not set, skipped")
        return
    async with app.state.sessionmaker() as session, session.begin():
        created = await ensure_first_admin(
            session, username=username, password=password, hasher=state.hasher
        )
    if created:
        log.info("first admin %r created", username)
