"""Wiring auth into the gateway app: state, routes, and the first admin at startup."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from gateway.auth.routes import router
from gateway.auth.service.users import ensure_first_admin
from gateway.auth.state import AuthState, Clock
from gateway.models import UserRole
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
    admin exists, and the first security admin from `LIANXIN_SECURITY_ADMIN_USER`/
    `LIANXIN_SECURITY_ADMIN_PASSWORD` when none exists; runs in the lifespan once the
    sessionmaker is there."""
    state: AuthState = app.state.auth
    settings = state.settings
    for role, username, password, variables in (
        (
            UserRole.admin,
            settings.admin_user,
            settings.admin_password,
            "LIANXIN_ADMIN_USER/LIANXIN_ADMIN_PASSWORD",
        ),
        (
            UserRole.security_admin,
            settings.security_admin_user,
            settings.security_admin_password,
            "LIANXIN_SECURITY_ADMIN_USER/LIANXIN_SECURITY_ADMIN_PASSWORD",
        ),
    ):
        who = "admin" if role is UserRole.admin else "security admin"
        if not username or not password:
            log.info("first %s: %s not set, skipped", who, variables)
            continue
        async with app.state.sessionmaker() as session, session.begin():
            created = await ensure_first_admin(
                session, username=username, password=password, hasher=state.hasher, role=role
            )
        if created:
            log.info("first %s %r created", who, username)
