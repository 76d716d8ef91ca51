"""Credentials at the door: what every proxied `/api/v1/<service>/...` request goes
through before it leaves the gateway."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import MutableHeaders

from common.auth import Principal
from common.errors import BadRequest, NotFound, Unauthorized
from gateway.auth.errors import ApiKeyScopeDenied
from gateway.auth.service.api_keys import exchange_api_key
from gateway.auth.state import AuthState

# Service paths that are internal: the gateway reads them itself (raw audit logs) or only
# services call them (the registry's bulk person resolution); clients never do.
# A service's own API docs stay inside too: the public document is the gateway's merged one.
INTERNAL_SEGMENTS = frozenset({"audit-log", "persons", "docs", "redoc", "openapi.json"})
# The only paths an API key may write to: the work-unit sync API.
SYNC_PREFIX = "/api/v1/mobility/sync/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_internal(path: str) -> bool:
    """A path into a service's internal endpoints (`/api/v1/<svc>/audit-log...`): its
    fourth non-empty segment. Without an empty one inside (`//`), that is the fourth
    after the leading `/`, and only it is split off (every proxied read asks)."""
    if path.startswith("/") and "//" not in path:
        parts = path.split("/", 5)
        return len(parts) > 4 and parts[4].lower() in INTERNAL_SEGMENTS
    segments = [s for s in path.split("/") if s]
    return len(segments) >= 4 and segments[3].lower() in INTERNAL_SEGMENTS


async def authorize_upstream(request: Request) -> None:
    """Authenticate a request the proxy is about to forward, and rewrite the headers it
    will forward (in place: read `request.headers` after this call, not before).

    - A path into a service's internal endpoints (`/api/v1/<svc>/audit-log...`): 404.
    - `Authorization: Bearer <token>`: verified here (expired or tampered: 401 problem) and
      forwarded unchanged; the service verifies it again (defence in depth).
    - `X-API-Key: <key>`: looked up by its hash; unknown or revoked: 401. A key reads
      (scope `read`) and writes only through the sync API (scope `sync`): else 403. It is
      exchanged for a short-lived access token (role `integration`, the key's org and
      scopes, `sub` = `apikey:<id>`) sent upstream as `Authorization`; `X-API-Key` is
      never forwarded.
    - Both at once: 400. Neither: forwarded as is; the service answers 401 itself.

    On success the caller is on `request.state.principal` (rate limits key on it)."""
    path: str = request.scope["path"]
    if is_internal(path):
        raise NotFound("No such path.")

    state: AuthState = request.app.state.auth
    api_key = authorization = None
    for name, value in request.scope["headers"]:  # names in lower case, as ASGI gives them
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
    if api_key is not None and authorization is not None:
        raise BadRequest("Send either a bearer token or an API key, not both.")

    principal: Principal
    if api_key is not None:
        async with request.app.state.sessionmaker() as session, session.begin():
            principal, token = await exchange_api_key(
                session,
                key=api_key.strip(),
                issuer=state.issuer,
                now=state.now(),
                ttl_s=state.settings.api_key_token_ttl_s,
            )
        request.state.principal = principal  # a refused key still spends its own budget
        _check_key_scope(principal, request.method, path)
        _replace_headers(request, drop={"x-api-key", "authorization"}, add=f"Bearer {token}")
    elif authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Use `Authorization: Bearer <access token>` or `X-API-Key`.")
        principal = state.verifier.verify(token.strip())
    else:
        return
    request.state.principal = principal


def _check_key_scope(principal: Principal, method: str, path: str) -> None:
    if path.startswith(SYNC_PREFIX):
        if "sync" not in principal.scopes:
            raise ApiKeyScopeDenied("This API key lacks the `sync` scope.")
        return
    if method not in SAFE_METHODS:
        raise ApiKeyScopeDenied("An API key writes only through the sync API.")
    if "read" not in principal.scopes:
        raise ApiKeyScopeDenied("This API key lacks the `read` scope.")


def _replace_headers(request: Request, *, drop: set[str], add: str) -> None:
    """Rewrites the request's headers: in the ASGI scope (what any later `Request` built
    from it reads) and in the `Headers` this request has cached (what the proxy reads)."""
    headers = MutableHeaders(scope=request.scope)  # takes a fresh list into the scope
    for name in drop:
        del headers[name]
    headers["authorization"] = add
    request._headers = headers  # Starlette caches `request.headers`; keep it in step
