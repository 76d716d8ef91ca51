"""Test-only credentials: a signing key pair made per run, and tokens minted with it the way
the gateway mints them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from common.auth import ALGORITHM

_PRIVATE = Ed25519PrivateKey.generate()
PRIVATE_PEM = _PRIVATE.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC_PEM = (
    _PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)

# The services' own pair (service-to-service calls, issuer `lianxin-services`).
_SERVICE_PRIVATE = Ed25519PrivateKey.generate()
SERVICE_PRIVATE_PEM = _SERVICE_PRIVATE.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
SERVICE_PUBLIC_PEM = (
    _SERVICE_PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def mint(
    role: str,
    *,
    org_id: uuid.UUID | str | None = None,
    org_path: str | None = None,
    member_id: uuid.UUID | str | None = None,
    sub: str | None = None,
    username: str | None = None,
    scopes: list[str] | None = None,
    expires_in: int = 600,
    key: Any = None,
    **extra: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub or f"user-{uuid.uuid4().hex[:8]}",
        "role": role,
        "typ": "access",
        "iss": "lianxin-gateway",
        "aud": "lianxin",
        "iat": now,
        "exp": now + expires_in,
        "username": username or role,
    }
    if org_id is not None:
        claims["org_id"] = str(org_id)
    if org_path is not None:
        claims["org_path"] = org_path
    if member_id is not None:
        claims["member_id"] = str(member_id)
    if scopes is not None:
        claims["scopes"] = scopes
    claims.update(extra)
    return jwt.encode(claims, key or _PRIVATE, algorithm=ALGORITHM)


def client(app: FastAPI, token: str | None = None, **headers: str) -> httpx.AsyncClient:
    h = dict(headers)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=h
    )


def keys_by_rule(tree: Mapping[Any, tuple[Any, str | None]]) -> dict[Any, Any]:
    """Each org's distribution key from `{org: (parent, area_level)}`, recomputed the way
    the tests see the rule (common/sharding.py), independently of the code under test: an
    org under a city-level org, or at the root, is its own key; below any other org it
    takes its parent's. A parent missing from `tree` counts as the root."""
    keys: dict[Any, Any] = {}

    def key(org: Any) -> Any:
        if org not in keys:
            parent = tree[org][0]
            own = parent not in tree or tree[parent][1] == "city"
            keys[org] = org if own else key(parent)
        return keys[org]

    for org in tree:
        key(org)
    return keys
