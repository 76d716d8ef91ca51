from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.activities.dependencies import PrincipalDep, SessionDep
from services.activities.models import idempotency_keys
from services.activities.schemas import ServiceHoursCreate, ServiceHoursPublic
from services.activities.service import hours as service

router = APIRouter(prefix="/service-hours", tags=["service hours"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="logServiceHours",
    summary="Log service hours",
    description="A member logs their own; an org admin logs for a member in scope. They "
    "count once verified. A day's entries never exceed 24 hours (409).",
    response_model=ServiceHoursPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def log_hours(
    data: ServiceHoursCreate,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        row = await service.log_hours(
            session,
            principal=principal,
            member_id=data.member_id,
            on=data.on,
            hours=data.hours,
            role=data.role,
            activity_id=data.activity_id,
            description=data.description,
        )
        return 201, ServiceHoursPublic.model_validate(row).model_dump(mode="json")

    code, body = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=fingerprint(data.model_dump(mode="json")),
        produce=produce,
    )
    return JSONResponse(body, status_code=code)


@router.get(
    "",
    operation_id="listServiceHours",
    summary="List service hours",
    response_model=Page[ServiceHoursPublic],
    responses=problem_responses(403),
)
async def list_hours(
    session: SessionDep,
    principal: PrincipalDep,
    member_id: uuid.UUID | None = None,
    org_id: Annotated[uuid.UUID | None, Query(description="Members of this subtree.")] = None,
    verified: bool | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ServiceHoursPublic]:
    filters = {"member_id": member_id, "org_id": org_id, "verified": verified}
    rows, next_cursor = await service.list_hours(
        session, principal=principal, filters=filters, limit=limit, cursor=cursor
    )
    return Page[ServiceHoursPublic](
        items=[ServiceHoursPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/{entry_id}/verify",
    operation_id="verifyServiceHours",
    summary="Verify a service hours entry",
    description="By an org admin whose scope holds the member; awards points per the rule.",
    response_model=ServiceHoursPublic,
    responses=problem_responses(403, 404, 409),
)
async def verify(
    entry_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> ServiceHoursPublic:
    row = await service.verify(session, entry_id=entry_id, principal=principal)
    return ServiceHoursPublic.model_validate(row)
