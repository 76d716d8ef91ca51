"""Calls from one Lianxin service to another, with a short-lived token the caller signs
with the services' key (issuer `lianxin-services`, role `service`); the callee's
`TokenVerifier` accepts it next to the gateway's tokens."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic_core import to_json

from common.auth import ALGORITHM, SERVICE_ISSUER
from common.errors import ServiceUnavailable
from common.tracing import inject_trace

TOKEN_TTL_S = 120


def service_token(private_key_pem: str, *, subject: str, audience: str = "lianxin") -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "role": "service",
        "typ": "access",
        "iss": SERVICE_ISSUER,
        "aud": audience,
        "iat": now,
        "exp": now + TOKEN_TTL_S,
        "jti": uuid.uuid4().hex,
        "username": subject,
    }
    key = load_pem_private_key(private_key_pem.encode(), password=None)
    return jwt.encode(claims, key, algorithm=ALGORITHM)  # type: ignore[arg-type]


async def call_service(
    method: str,
    url: str,
    *,
    json: Any,
    private_key_pem: str | None,
    subject: str,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 120.0,
) -> httpx.Response:
    """One request to another service; an unreachable service or missing key is a 503."""
    if not private_key_pem:
        raise ServiceUnavailable("No service key is configured for calls to other services.")
    headers = {
        "Authorization": f"Bearer {service_token(private_key_pem, subject=subject)}",
        "Content-Type": "application/json",
    }
    inject_trace(headers)  # the caller's trace goes on (nothing when tracing is off)
    # Serialized by pydantic-core (a bulk call carries tens of thousands of values: several
    # times faster than the `json` module httpx would use; the same JSON).
    body = to_json(json)
    try:
        async with httpx.AsyncClient(transport=transport, timeout=timeout_s) as client:
            return await client.request(method, url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"Another service could not be reached: {url}.") from exc
