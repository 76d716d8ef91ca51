"""Who may manage webhooks: an admin, an org admin (bearer token) or an API key with the
`read` scope (`X-API-Key`, exchanged here like at the proxy). Yields the principal and the
registry as that caller sees it (the registry's scope rules decide what is theirs)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from common.auth import Principal, Role
from common.db import SessionDep
from common.errors import BadRequest, Unauthorized
from gateway.auth.errors import ApiKeyScopeDenied
from gateway.auth.registry import RegistryClient
from gateway.auth.service.api_keys import exchange_api_key
from gateway.auth.state import AuthState
from gateway.models import Webhook
from gateway.webhooks import service
from gateway.webhooks.errors import WebhookForbidden

MANAGERS = frozenset({Role.admin, Role.org_admin, Role.integration})

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/v1/auth/token")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An org's API key")


@dataclass(frozen=True)
class Caller:
    principal: Principal
    registry: RegistryClient


async def get_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Caller:
    auth: AuthState = request.app.state.auth
    if api_key is not None and request.headers.get("authorization") is not None:
        raise BadRequest("Send either a bearer token or an API key, not both.")
    if api_key is not None:
        async with request.app.state.sessionmaker() as session, session.begin():
            principal, token = await exchange_api_key(
                session,
                key=api_key.strip(),
                issuer=auth.issuer,
                now=auth.now(),
                ttl_s=auth.settings.api_key_token_ttl_s,
            )
        request.state.principal = principal
        if "read" not in principal.scopes:
            raise ApiKeyScopeDenied("This API key lacks the `read` scope.")
        authorization = f"Bearer {token}"
    elif bearer is not None and bearer.scheme.lower() == "bearer":
        principal = auth.verifier.verify(bearer.credentials)
        request.state.principal = principal
        authorization = f"Bearer {bearer.credentials}"
    else:
        raise Unauthorized("Credentials are required.")
    if principal.role not in MANAGERS:
        raise WebhookForbidden("Your role may not manage webhooks.")
    registry = RegistryClient(
        request.app.state.proxy.client,
        auth.settings.registry_url,
        authorization=authorization,
    )
    return Caller(principal, registry)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_webhook(webhook_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> Webhook:
    """The webhook in the path, if the caller may see it (404 otherwise)."""
    return await service.get_webhook(
        session, webhook_id=webhook_id, principal=caller.principal, registry=caller.registry
    )


WebhookDep = Annotated[Webhook, Depends(get_webhook)]
