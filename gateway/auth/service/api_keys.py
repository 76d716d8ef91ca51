"""API keys of work-unit orgs and integrators: issued once, stored as a keyed hash,
exchanged at the door for a short-lived `integration` access token, revocable."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common.auth import Principal, Role
from common.pagination import decode_cursor, page_of
from gateway.audit.events import Action, actor_of, record_event
from gateway.auth.errors import ApiKeyNotFound, InvalidApiKey, OrgNotFound
from gateway.auth.registry import RegistryClient
from gateway.auth.schemas import ApiKeyCreate
from gateway.auth.tokens import API_KEY_RE, TokenClaims, TokenIssuer
from gateway.models import ApiKey

# `last_used_at` is kept to this precision, so a busy key does not write on every request.
LAST_USED_PRECISION = timedelta(minutes=1)


def _everywhere(principal: Principal) -> bool:
    """Manages the keys of every org (an org admin: of their subtree)."""
    return principal.is_admin or principal.role is Role.security_admin


async def create_api_key(
    session: AsyncSession,
    *,
    data: ApiKeyCreate,
    principal: Principal,
    issuer: TokenIssuer,
    registry: RegistryClient,
) -> tuple[ApiKey, str]:
    """The new key's row and the key itself (shown to the caller once, then gone)."""
    await registry.require_org(data.org_id)
    prefix, key, key_hash = issuer.new_api_key()
    row = ApiKey(
        name=data.name,
        prefix=prefix,
        key_hash=key_hash,
        org_id=data.org_id,
        scopes=sorted({s.value for s in data.scopes}),
        created_by=actor_of(principal),
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    await record_event(
        session,
        actor=actor_of(principal),
        role=principal.role.value,
        action=Action.api_key_create,
        resource="api_key",
        record_id=row.id,
    )
    return row, key


async def list_api_keys(
    session: AsyncSession,
    *,
    principal: Principal,
    registry: RegistryClient,
    org_id: uuid.UUID | None,
    include_revoked: bool,
    limit: int,
    cursor: str | None,
) -> tuple[list[ApiKey], str | None]:
    """Keys of `org_id` and its subtree (an org admin: of their own subtree by default)."""
    filters: dict[str, Any] = {"org_id": org_id, "include_revoked": include_revoked}
    query = select(ApiKey)
    root = org_id if org_id is not None or _everywhere(principal) else principal.org_id
    if root is not None:
        ids: Sequence[uuid.UUID] = await registry.subtree_org_ids(root)
        query = query.where(col(ApiKey.org_id).in_(ids))
    if not include_revoked:
        query = query.where(col(ApiKey.revoked_at).is_(None))
    after = decode_cursor(cursor, filters)
    if after is not None:
        query = query.where(
            tuple_(col(ApiKey.created_at), col(ApiKey.id)) < tuple_(after[0], after[1])
        )
    query = query.order_by(col(ApiKey.created_at).desc(), col(ApiKey.id).desc()).limit(limit + 1)
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, key=lambda k: [k.created_at, k.id], filters=filters)


async def revoke_api_key(
    session: AsyncSession,
    *,
    key_id: uuid.UUID,
    principal: Principal,
    registry: RegistryClient,
    now: datetime,
) -> None:
    """Revokes a key (again is fine); a key outside the caller's scope is not found."""
    row = await session.get(ApiKey, key_id, with_for_update=True)
    if row is None:
        raise ApiKeyNotFound
    if not _everywhere(principal):
        try:
            await registry.require_org(row.org_id)
        except OrgNotFound as exc:
            raise ApiKeyNotFound from exc
    if row.revoked_at is not None:
        return
    row.revoked_at = now
    row.revoked_by = actor_of(principal)
    await session.flush()
    await record_event(
        session,
        actor=actor_of(principal),
        role=principal.role.value,
        action=Action.api_key_revoke,
        resource="api_key",
        record_id=row.id,
    )


async def exchange_api_key(
    session: AsyncSession, *, key: str, issuer: TokenIssuer, now: datetime, ttl_s: int
) -> tuple[Principal, str]:
    """The principal a presented key speaks for and an access token for it; a malformed,
    unknown or revoked key is `InvalidApiKey` (401)."""
    if not API_KEY_RE.match(key):
        raise InvalidApiKey
    row = (
        await session.execute(
            select(
                col(ApiKey.id),
                col(ApiKey.prefix),
                col(ApiKey.org_id),
                col(ApiKey.scopes),
                col(ApiKey.revoked_at),
                col(ApiKey.last_used_at),
            ).where(col(ApiKey.key_hash) == issuer.api_key_hash(key))
        )
    ).first()
    if row is None:
        raise InvalidApiKey
    if row.revoked_at is not None:
        raise InvalidApiKey("The API key has been revoked.")
    if row.last_used_at is None or row.last_used_at < now - LAST_USED_PRECISION:
        await session.execute(
            update(ApiKey)
            .where(col(ApiKey.id) == row.id, col(ApiKey.revoked_at).is_(None))
            .values(last_used_at=now)
        )
    claims = TokenClaims(
        subject=f"apikey:{row.id}",
        role=Role.integration,
        username=f"apikey:{row.prefix}",
        org_id=row.org_id,
        scopes=tuple(row.scopes),
    )
    principal = Principal(
        subject=claims.subject,
        role=claims.role,
        org_id=claims.org_id,
        username=claims.username,
        scopes=frozenset(claims.scopes),
    )
    return principal, issuer.access_token(claims, now=now, ttl_s=ttl_s)
