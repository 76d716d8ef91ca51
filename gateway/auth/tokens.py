"""What the gateway hands out: Ed25519-signed access tokens (the claims `common.auth`
verifies), opaque refresh tokens and API keys, and the keyed hashes they are stored as."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.auth import ALGORITHM, Role
from common.crypto import Lookup

API_KEY_RE = re.compile(r"^lx_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
REFRESH_PREFIX = "lxr_"


@dataclass(frozen=True)
class TokenClaims:
    """Who an access token speaks for."""

    subject: str
    role: Role
    username: str
    org_id: uuid.UUID | None = None
    member_id: uuid.UUID | None = None
    scopes: tuple[str, ...] = ()


class TokenIssuer:
    def __init__(
        self, private_key: Ed25519PrivateKey, *, issuer: str, audience: str, lookup: Lookup
    ) -> None:
        self._key = private_key
        self._issuer = issuer
        self._audience = audience
        self._lookup = lookup

    def public_key_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def access_token(self, who: TokenClaims, *, now: datetime, ttl_s: int) -> str:
        iat = int(now.timestamp())
        claims: dict[str, Any] = {
            "sub": who.subject,
            "role": who.role.value,
            "typ": "access",
            "iss": self._issuer,
            "aud": self._audience,
            "iat": iat,
            "exp": iat + ttl_s,
            "jti": uuid.uuid4().hex,
            "username": who.username,
            "org_id": str(who.org_id) if who.org_id else None,
            "member_id": str(who.member_id) if who.member_id else None,
            "scopes": list(who.scopes),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    # Refresh tokens and API keys: random secrets, stored only as keyed hashes.

    def new_refresh_token(self) -> tuple[str, bytes]:
        token = REFRESH_PREFIX + secrets.token_urlsafe(32)
        return token, self.refresh_hash(token)

    def refresh_hash(self, token: str) -> bytes:
        return self._lookup.digest(token, purpose="refresh-token")

    def new_api_key(self) -> tuple[str, str, bytes]:
        """(prefix, the full key shown once, its hash)."""
        prefix = secrets.token_hex(6)
        key = f"lx_{prefix}_{secrets.token_urlsafe(32)}"
        return prefix, key, self.api_key_hash(key)

    def api_key_hash(self, key: str) -> bytes:
        return self._lookup.digest(key, purpose="api-key")

    def secret_fingerprint(self, value: str) -> str:
        """A keyed digest standing in for a secret where one must be compared later (an
        idempotent request's body) without being kept."""
        return self._lookup.digest(value, purpose="fingerprint").hex()
