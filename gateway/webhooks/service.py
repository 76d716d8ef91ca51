"""Registering, listing, removing and replaying webhooks. Scope as everywhere: an org admin
or an API key manages the webhooks of its org's subtree (the registry decides what that
holds), an admin every webhook. Never commits; raises the webhook errors."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common.auth import Principal
from common.crypto import KeyRing
from common.pagination import decode_cursor, page_of
from gateway.audit.events import Action, actor_of, record_event
from gateway.auth.errors import OrgNotFound
from gateway.auth.registry import RegistryClient
from gateway.models import DeliveryStatus, Webhook, WebhookDelivery
from gateway.webhooks.deliverer import SECRET_PURPOSE, new_secret
from gateway.webhooks.errors import (
    DeliveryNotFound,
    ReplayTooLarge,
    WebhookForbidden,
    WebhookNotFound,
    WebhookUrlRefused,
)
from gateway.webhooks.fanout import schedule_replay
from gateway.webhooks.schemas import WebhookCreate
from gateway.webhooks.ssrf import AddressRefused, Resolver, check_target


async def create_webhook(
    session: AsyncSession,
    *,
    data: WebhookCreate,
    principal: Principal,
    registry: RegistryClient,
    keyring: KeyRing,
    resolver: Resolver,
    allow_http: bool,
) -> tuple[Webhook, str]:
    """The new webhook and its signing secret (shown to the caller once)."""
    if data.allow_private and not principal.is_admin:
        raise WebhookForbidden("Only an admin may allow private or loopback targets.")
    org_id = data.org_id
    if not principal.is_admin:
        org_id = org_id or principal.org_id
        if org_id is None:
            raise WebhookForbidden("Your account belongs to no org.")
    if org_id is not None:
        await registry.require_org(org_id)
    try:
        await check_target(
            data.url, allow_http=allow_http, allow_private=data.allow_private, resolver=resolver
        )
    except AddressRefused as exc:
        raise WebhookUrlRefused(str(exc)) from exc
    secret = new_secret()
    row = Webhook(
        org_id=org_id,
        url=data.url,
        events=sorted(set(data.events)),
        secret_encrypted=keyring.encrypt(secret, purpose=SECRET_PURPOSE),
        created_by=actor_of(principal),
        allow_private=data.allow_private,
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    await _audit(session, principal, Action.webhook_create, row.id)
    return row, secret


async def list_webhooks(
    session: AsyncSession,
    *,
    principal: Principal,
    registry: RegistryClient,
    limit: int,
    cursor: str | None,
) -> tuple[list[Webhook], str | None]:
    """An admin sees every webhook, anyone else those of their org's subtree."""
    filters: dict[str, Any] = {}
    query = select(Webhook)
    if not principal.is_admin:
        if principal.org_id is None:
            return [], None
        ids: Sequence[uuid.UUID] = await registry.subtree_org_ids(principal.org_id)
        query = query.where(col(Webhook.org_id).in_(ids))
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(
            tuple_(col(Webhook.created_at), col(Webhook.id)) < tuple_(after[0], after[1])
        )
    query = query.order_by(col(Webhook.created_at).desc(), col(Webhook.id).desc()).limit(limit + 1)
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, key=lambda w: [w.created_at, w.id], filters=filters)


async def get_webhook(
    session: AsyncSession,
    *,
    webhook_id: uuid.UUID,
    principal: Principal,
    registry: RegistryClient,
    for_update: bool = False,
) -> Webhook:
    """The webhook, if the caller may see it; `WebhookNotFound` otherwise."""
    row = await session.get(Webhook, webhook_id, with_for_update=for_update)
    if row is None:
        raise WebhookNotFound
    if not principal.is_admin:
        if row.org_id is None:
            raise WebhookNotFound
        try:
            await registry.require_org(row.org_id)
        except OrgNotFound as exc:
            raise WebhookNotFound from exc
    return row


async def delete_webhook(
    session: AsyncSession,
    *,
    webhook_id: uuid.UUID,
    principal: Principal,
    registry: RegistryClient,
) -> None:
    """Removes the webhook with its deliveries: nothing more is sent to it."""
    row = await get_webhook(
        session, webhook_id=webhook_id, principal=principal, registry=registry, for_update=True
    )
    await session.delete(row)
    await session.flush()
    await _audit(session, principal, Action.webhook_delete, webhook_id)


async def list_deliveries(
    session: AsyncSession,
    *,
    webhook: Webhook,
    status: DeliveryStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[WebhookDelivery], str | None]:
    """Newest first."""
    filters: dict[str, Any] = {"webhook_id": webhook.id, "status": status}
    query = select(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == webhook.id)
    if status is not None:
        query = query.where(col(WebhookDelivery.status) == status.value)
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(
            tuple_(col(WebhookDelivery.created_at), col(WebhookDelivery.id))
            < tuple_(after[0], after[1])
        )
    query = query.order_by(
        col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc()
    ).limit(limit + 1)
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, key=lambda d: [d.created_at, d.id], filters=filters)


async def replay_delivery(
    session: AsyncSession,
    *,
    webhook: Webhook,
    delivery_id: uuid.UUID,
    principal: Principal,
    now: datetime,
) -> WebhookDelivery:
    """Sends the delivery's event again, whatever became of it, with a fresh set of tries."""
    row = (
        await session.scalars(
            select(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id).with_for_update()
        )
    ).first()
    if row is None or row.webhook_id != webhook.id:
        raise DeliveryNotFound
    row.status = DeliveryStatus.pending.value
    row.attempts = 0
    row.next_attempt_at = now
    row.last_status_code = None
    row.last_error = None
    row.delivered_at = None
    await session.flush()
    await _audit(session, principal, Action.webhook_replay, webhook.id)
    return row


async def replay_since(
    session: AsyncSession,
    *,
    webhook: Webhook,
    since: datetime,
    principal: Principal,
    now: datetime,
    limit: int,
) -> int:
    """Schedules every event since `since` this webhook takes (again); how many."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    count = await schedule_replay(session, webhook_id=webhook.id, since=since, now=now, limit=limit)
    if count is None:
        raise ReplayTooLarge(limit)
    await _audit(session, principal, Action.webhook_replay, webhook.id)
    return count


async def _audit(
    session: AsyncSession, principal: Principal, action: Action, webhook_id: uuid.UUID
) -> None:
    await record_event(
        session,
        actor=actor_of(principal),
        role=principal.role.value,
        action=action,
        resource="webhook",
        record_id=webhook_id,
    )
