"""What the auth code needs from the app, built once at startup: the token issuer and
verifier, the password hasher, the clock (injectable, so tests move time instead of
sleeping) and the settings. Lives on `app.state.auth`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from common.auth import TokenVerifier
from common.crypto import Lookup
from gateway.auth.passwords import Hasher
from gateway.auth.tokens import TokenIssuer
from gateway.settings import GatewaySettings

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class AuthState:
    settings: GatewaySettings
    issuer: TokenIssuer
    verifier: TokenVerifier
    hasher: Hasher
    clock: Clock

    @classmethod
    def build(cls, settings: GatewaySettings, *, clock: Clock | None = None) -> AuthState:
        issuer = TokenIssuer(
            settings.private_key(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            lookup=Lookup(settings.lookup_key),
        )
        # The gateway verifies with the public half of its own signing key.
        verifier = TokenVerifier(
            issuer.public_key_pem(), issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        hasher = Hasher(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        return cls(settings, issuer, verifier, hasher, clock or system_clock)

    def now(self) -> datetime:
        return self.clock()


def get_auth_state(request: Request) -> AuthState:
    state: AuthState = request.app.state.auth
    return state


AuthStateDep = Annotated[AuthState, Depends(get_auth_state)]
