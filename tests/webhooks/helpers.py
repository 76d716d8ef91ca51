"""Builders the webhook tests share."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

HOOKS = "/api/v1/webhooks"
KEYS = "/api/v1/auth/api-keys"


async def register(
    c: httpx.AsyncClient, url: str, *, events: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    r = await c.post(HOOKS, json={"url": url, "events": events or ["*"], **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def issue_key(admin: httpx.AsyncClient, org_id: str, scopes: list[str] | None = None) -> str:
    r = await admin.post(
        KEYS, json={"name": "人事系统", "org_id": org_id, "scopes": scopes or ["read"]}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


async def deliveries(c: httpx.AsyncClient, hook_id: str) -> list[dict[str, Any]]:
    r = await c.get(f"{HOOKS}/{hook_id}/deliveries")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def attempts(sessions: async_sessionmaker[AsyncSession], delivery_id: str) -> list[Any]:
    async with sessions() as session:
        result = await session.execute(
            text(
                "SELECT attempt, status_code, error FROM gateway.webhook_attempts "
                "WHERE delivery_id = CAST(:d AS uuid) ORDER BY attempt"
            ),
            {"d": delivery_id},
        )
        return [tuple(r) for r in result.all()]
