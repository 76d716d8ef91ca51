"""The gateway's own events (logins, lockouts, refresh-token reuse, users and API keys) in
`gateway.audit_log`, appended in the same transaction as what they record. Never pass a
secret or a value someone typed as a username that matched nobody (it may be a password)."""

from __future__ import annotations

import uuid
from enum import StrEnum
from uuid import UUID

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.auth import Principal
from common.context import client_addr_var, request_id_var
from gateway.models import audit_log


class Action(StrEnum):
    login = "auth.login"
    lockout = "auth.lockout"
    refresh_reuse = "auth.refresh_reuse"
    logout = "auth.logout"
    user_create = "user.create"
    api_key_create = "api_key.create"
    api_key_revoke = "api_key.revoke"
    webhook_create = "webhook.create"
    webhook_delete = "webhook.delete"
    webhook_replay = "webhook.replay"


async def record_event(
    session: AsyncSession,
    *,
    actor: str,
    role: str,
    action: Action,
    resource: str,
    record_id: UUID | None = None,
    subject_member_id: UUID | None = None,
    outcome: str = "success",
) -> None:
    await session.execute(
        insert(audit_log).values(
            id=uuid.uuid4(),
            actor=actor[:200],
            role=role,
            action=action.value,
            resource=resource,
            record_id=record_id,
            subject_member_id=subject_member_id,
            outcome=outcome,
            client_addr=client_addr_var.get(),
            request_id=request_id_var.get(),
        )
    )


def actor_of(principal: Principal) -> str:
    return principal.username or principal.subject
