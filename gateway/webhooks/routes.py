"""`/api/v1/webhooks`: served by the gateway itself."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import JSONResponse

from common.db import SessionDep
from common.errors import problem_responses
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from gateway.models import DeliveryStatus
from gateway.ratelimit import enforce as enforce_rate_limit
from gateway.webhooks import service
from gateway.webhooks.dependencies import CallerDep, WebhookDep
from gateway.webhooks.schemas import (
    DeliveryPublic,
    ReplayResult,
    WebhookCreate,
    WebhookCreated,
    WebhookPublic,
)
from gateway.webhooks.state import WebhookStateDep

router = APIRouter(
    prefix="/api/v1/webhooks", tags=["webhooks"], dependencies=[Depends(enforce_rate_limit)]
)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createWebhook",
    summary="Register a webhook for an org's events (the secret is shown once)",
    description="Admins, org admins (for an org of their subtree) and API keys with the "
    "`read` scope (for their org). The URL must be https (http outside production) and "
    "may not point at loopback, private or link-local addresses unless an admin sets "
    "`allow_private`. Deliveries are signed per Standard Webhooks with the returned secret.",
    response_model=WebhookCreated,
    responses=problem_responses(400, 401, 403, 404, 422, 503),
)
async def create_webhook(
    data: WebhookCreate, session: SessionDep, caller: CallerDep, hooks: WebhookStateDep
) -> JSONResponse:
    row, secret = await service.create_webhook(
        session,
        data=data,
        principal=caller.principal,
        registry=caller.registry,
        keyring=hooks.keyring,
        resolver=hooks.resolver,
        allow_http=hooks.allow_http,
    )
    body = WebhookCreated(**WebhookPublic.model_validate(row).model_dump(), secret=secret)
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=status.HTTP_201_CREATED,
        headers={**_NO_STORE, "Location": f"/api/v1/webhooks/{row.id}"},
    )


@router.get(
    "",
    operation_id="listWebhooks",
    summary="List the webhooks of your scope (never their secrets)",
    response_model=Page[WebhookPublic],
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def list_webhooks(
    session: SessionDep,
    caller: CallerDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[WebhookPublic]:
    rows, next_cursor = await service.list_webhooks(
        session, principal=caller.principal, registry=caller.registry, limit=limit, cursor=cursor
    )
    return Page[WebhookPublic](
        items=[WebhookPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/{webhook_id}",
    operation_id="getWebhook",
    summary="One webhook",
    response_model=WebhookPublic,
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def get_webhook(webhook: WebhookDep) -> WebhookPublic:
    return WebhookPublic.model_validate(webhook)


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteWebhook",
    summary="Remove a webhook (nothing more is sent to it)",
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def delete_webhook(webhook_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> Response:
    await service.delete_webhook(
        session, webhook_id=webhook_id, principal=caller.principal, registry=caller.registry
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{webhook_id}/deliveries",
    operation_id="listWebhookDeliveries",
    summary="Deliveries of a webhook and their outcomes, newest first",
    response_model=Page[DeliveryPublic],
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def list_deliveries(
    webhook: WebhookDep,
    session: SessionDep,
    delivery_status: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[DeliveryPublic]:
    rows, next_cursor = await service.list_deliveries(
        session, webhook=webhook, status=delivery_status, limit=limit, cursor=cursor
    )
    return Page[DeliveryPublic](
        items=[DeliveryPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="replayWebhookDelivery",
    summary="Send a delivery's event again (a fresh set of attempts)",
    response_model=DeliveryPublic,
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def replay_delivery(
    delivery_id: uuid.UUID,
    webhook: WebhookDep,
    session: SessionDep,
    caller: CallerDep,
    hooks: WebhookStateDep,
) -> DeliveryPublic:
    row = await service.replay_delivery(
        session,
        webhook=webhook,
        delivery_id=delivery_id,
        principal=caller.principal,
        now=hooks.clock(),
    )
    return DeliveryPublic.model_validate(row)


@router.post(
    "/{webhook_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="replayWebhookEvents",
    summary="Send every event since a time again (those this webhook takes)",
    response_model=ReplayResult,
    responses=problem_responses(400, 401, 403, 404, 422, 503),
)
async def replay_since(
    webhook: WebhookDep,
    session: SessionDep,
    caller: CallerDep,
    hooks: WebhookStateDep,
    since: Annotated[datetime, Query(description="Events that occurred at or after this.")],
) -> ReplayResult:
    count = await service.replay_since(
        session,
        webhook=webhook,
        since=since,
        principal=caller.principal,
        now=hooks.clock(),
        limit=hooks.settings.webhook_replay_max_events,
    )
    return ReplayResult(replayed=count)
