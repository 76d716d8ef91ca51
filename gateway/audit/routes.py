"""`GET /api/v1/audit` (auditors only) and `GET /api/v1/auth/me/access-log` (a member:
who read or changed their record)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, Field

from common.audit import AuditEntry
from common.auth import Principal, PrincipalDep, Role
from common.db import SessionDep
from common.errors import Forbidden, problem_responses
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery
from gateway.audit.merge import RemoteTrails, merged_page
from gateway.auth.state import AuthState
from gateway.ratelimit import enforce as enforce_rate_limit

router = APIRouter(tags=["audit"], dependencies=[Depends(enforce_rate_limit)])


async def _auditor_only(principal: PrincipalDep) -> Principal:
    """Auditors only: unlike `require_roles`, an admin does not pass (separate duties)."""
    if principal.role is not Role.auditor:
        raise Forbidden("Only auditors read the audit log.")
    return principal


AuditorDep = Annotated[Principal, Depends(_auditor_only)]
Text = Annotated[str | None, Query(max_length=200)]


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = None
    incomplete: list[str] = Field(
        default_factory=list,
        description="Sources that did not answer: their entries are missing from this page.",
    )


class AccessLogEntry(BaseModel):
    """Who did what with the caller's record. Never where they did it from."""

    at: datetime
    actor: str
    role: str
    action: str
    resource: str
    record_id: uuid.UUID | None
    outcome: str
    service: str


class AccessLogPage(BaseModel):
    items: list[AccessLogEntry]
    next_cursor: str | None = None
    incomplete: list[str] = Field(default_factory=list)


def _remote(request: Request) -> RemoteTrails:
    auth: AuthState = request.app.state.auth
    settings = auth.settings
    return RemoteTrails(
        request.app.state.proxy.client,
        settings.upstreams(),
        authorization=request.headers.get("authorization", ""),
        timeout=httpx.Timeout(
            settings.audit_source_timeout_s, connect=settings.upstream_connect_timeout_s
        ),
    )


@router.get(
    "/api/v1/audit",
    operation_id="listAuditLog",
    summary="The merged audit trail: who did what to which record, when, from where",
    description="For auditors only (not even admins: separate duties).",
    response_model=AuditPage,
    responses=problem_responses(401, 403, 422),
)
async def list_audit_log(
    request: Request,
    session: SessionDep,
    principal: AuditorDep,
    actor: Text = None,
    action: Text = None,
    resource: Text = None,
    record_id: uuid.UUID | None = None,
    subject_member_id: uuid.UUID | None = None,
    since: Annotated[AwareDatetime | None, Query(description="From this time on.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before this time.")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> AuditPage:
    filters: dict[str, Any] = {
        "actor": actor,
        "action": action,
        "resource": resource,
        "record_id": record_id,
        "subject_member_id": subject_member_id,
        "since": since,
        "until": until,
    }
    page = await merged_page(
        session,
        remote=_remote(request),
        filters=filters,
        cursor_filters={**filters, "view": "audit"},
        limit=limit,
        cursor=cursor,
    )
    return AuditPage(items=page.items, next_cursor=page.next_cursor, incomplete=page.incomplete)


@router.get(
    "/api/v1/auth/me/access-log",
    operation_id="getMyAccessLog",
    summary="Who read or changed my record, when, and in which role",
    response_model=AccessLogPage,
    responses=problem_responses(401, 403, 422),
    tags=["auth"],
)
async def get_my_access_log(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    since: Annotated[AwareDatetime | None, Query(description="From this time on.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before this time.")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> AccessLogPage:
    if principal.role is not Role.member or principal.member_id is None:
        raise Forbidden("The access log is for members: log in with your member account.")
    filters: dict[str, Any] = {
        "subject_member_id": principal.member_id,
        "since": since,
        "until": until,
    }
    page = await merged_page(
        session,
        remote=_remote(request),
        filters=filters,
        cursor_filters={**filters, "view": "access-log"},
        limit=limit,
        cursor=cursor,
    )
    return AccessLogPage(
        items=[AccessLogEntry.model_validate(e, from_attributes=True) for e in page.items],
        next_cursor=page.next_cursor,
        incomplete=page.incomplete,
    )
