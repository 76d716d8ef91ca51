"""Who is calling: verifies the gateway-issued access token (Ed25519 JWT, verified with the
public key only) and yields a typed `Principal`. Every service does this itself, so a
request that bypasses the gateway gets nothing."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from common.errors import Forbidden, Unauthorized

ALGORITHM = "EdDSA"
SERVICE_ISSUER = "lianxin-services"


class Role(StrEnum):
    admin = "admin"
    org_admin = "org_admin"
    org_viewer = "org_viewer"
    member = "member"
    auditor = "auditor"  # reads the audit log, nothing else
    security_admin = "security_admin"  # accounts, roles and API keys; no records, no audit
    integration = "integration"  # an API key of a work-unit org or an integrator
    service = "service"  # another Lianxin service


WRITERS = frozenset({Role.admin, Role.org_admin})
READERS = frozenset({Role.admin, Role.org_admin, Role.org_viewer, Role.integration})
# Separate duties: the roles that read no party records at all (the audit log's reader and
# the keeper of the accounts). An admin, in turn, reads no audit log and grants no role
# above an org admin's.
NO_RECORDS = frozenset({Role.auditor, Role.security_admin})


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    org_id: UUID | None = None
    org_path: str | None = None
    member_id: UUID | None = None
    username: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.role in (Role.admin, Role.service)

    @property
    def can_write(self) -> bool:
        return self.role in WRITERS or self.role is Role.service

    @property
    def reads_org_data(self) -> bool:
        """Roles that read records of an org subtree (as opposed to self or the audit log)."""
        return self.role in READERS or self.role is Role.service


def _ed25519_public(pem: str) -> Ed25519PublicKey:
    key = load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the token verification key must be an Ed25519 public key")
    return key


# Verified tokens remembered per verifier: a client sends the same token for minutes, and an
# Ed25519 check plus JWT decoding is most of what a proxied read costs the gateway.
TOKEN_CACHE_SIZE = 4096


class TokenVerifier:
    """Verifies the gateway's access tokens and, when a service key is given, the tokens
    other Lianxin services sign for themselves (issuer `lianxin-services`, role `service`
    only).

    A token that verified is remembered (raw token → its `Principal`, least recently used
    first out, at most `cache_size`) until its own `exp`, never longer: access tokens are
    not revocable before they expire, so the answer cannot change meanwhile. Failures are
    never cached."""

    def __init__(
        self,
        public_key_pem: str,
        *,
        issuer: str,
        audience: str,
        service_public_key_pem: str | None = None,
        cache_size: int = TOKEN_CACHE_SIZE,
    ) -> None:
        # Parse the PEM once: PyJWT would otherwise load it again on every verification.
        self._key = _ed25519_public(public_key_pem)
        self._issuer = issuer
        self._audience = audience
        self._service_key = (
            _ed25519_public(service_public_key_pem) if service_public_key_pem else None
        )
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._cache_size = max(0, cache_size)

    def verify(self, token: str) -> Principal:
        hit = self._cache.get(token)
        if hit is not None:
            if time.time() < hit[0]:
                self._cache.move_to_end(token)
                return hit[1]
            del self._cache[token]
        principal, expires = self._verify(token)
        if self._cache_size:
            self._cache[token] = (expires, principal)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        key, issuer = self._key, self._issuer
        if self._service_key is not None:
            try:
                unverified = jwt.decode(token, options={"verify_signature": False})
            except jwt.PyJWTError as exc:
                raise Unauthorized("The access token is not valid.") from exc
            if unverified.get("iss") == SERVICE_ISSUER:
                key, issuer = self._service_key, SERVICE_ISSUER
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=issuer,
                audience=self._audience,
                options={"require": ["exp", "iat", "sub", "role"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is not valid.") from exc
        if claims.get("typ") != "access":
            raise Unauthorized("Not an access token.")
        if issuer == SERVICE_ISSUER and claims.get("role") != Role.service.value:
            raise Unauthorized("A service token carries the role `service` only.")
        try:
            principal = Principal(
                subject=str(claims["sub"]),
                role=Role(claims["role"]),
                org_id=UUID(claims["org_id"]) if claims.get("org_id") else None,
                org_path=claims.get("org_path"),
                member_id=UUID(claims["member_id"]) if claims.get("member_id") else None,
                username=claims.get("username"),
                scopes=frozenset(claims.get("scopes") or ()),
            )
            expires = float(claims["exp"])
        except (ValueError, TypeError) as exc:
            raise Unauthorized("The access token's claims are not valid.") from exc
        return principal, expires


_bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/v1/auth/token")


# The OpenAPI `security` of a route that resolves its caller with `bearer_principal`
# (what declaring `PrincipalDep` gives a route).
BEARER_SECURITY: dict[str, Any] = {"security": [{_bearer.scheme_name: []}]}


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Credentials are required.")
    return _verified(request, credentials.credentials)


def bearer_principal(request: Request) -> Principal:
    """What `PrincipalDep` resolves, for a hot route that resolves its caller itself
    (FastAPI's dependency solving costs more than the rest of such a read): the caller of
    the request's `Authorization: Bearer` token, read as `HTTPBearer` reads it; 401
    without one. Such a route declares `BEARER_SECURITY` for its OpenAPI."""
    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    if not token or scheme.lower() != "bearer":
        raise Unauthorized("Credentials are required.")
    return _verified(request, token)


def _verified(request: Request, token: str) -> Principal:
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = verifier.verify(token)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_roles(*roles: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    allowed = frozenset(roles) | {Role.admin}

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise Forbidden("Your role may not do this.")
        return principal

    return check


WriterDep = Annotated[Principal, Depends(require_roles(Role.org_admin, Role.service))]
