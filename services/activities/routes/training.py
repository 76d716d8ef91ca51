from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.activities.dependencies import PrincipalDep, SessionDep
from services.activities.models import idempotency_keys
from services.activities.schemas import (
    Stats,
    TrainingCoverage,
    TrainingSessionCreate,
    TrainingSessionPublic,
    Year,
)
from services.activities.service import stats as stats_service
from services.activities.service import training as service

router = APIRouter(tags=["training"])


@router.post(
    "/training/sessions",
    status_code=status.HTTP_201_CREATED,
    operation_id="createTrainingSession",
    summary="Record a training session of party workers and who attended",
    response_model=TrainingSessionPublic,
    responses=problem_responses(403, 404, 422),
)
async def create_session(
    data: TrainingSessionCreate,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        row = await service.create_session(session, principal=principal, data=data)
        return 201, TrainingSessionPublic.model_validate(row).model_dump(mode="json")

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
    "/training/sessions",
    operation_id="listTrainingSessions",
    summary="List training sessions",
    response_model=Page[TrainingSessionPublic],
    responses=problem_responses(403),
)
async def list_sessions(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[TrainingSessionPublic]:
    rows, next_cursor = await service.list_sessions(
        session, principal=principal, filters={"org_id": org_id}, limit=limit, cursor=cursor
    )
    return Page[TrainingSessionPublic](
        items=[TrainingSessionPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/training/coverage",
    operation_id="getTrainingCoverage",
    summary="Share of party workers trained within the last three years",
    description="Party workers: members holding a current role assignment of kind "
    "`party_worker` in the org's subtree.",
    response_model=TrainingCoverage,
    responses=problem_responses(403, 404),
)
async def coverage(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: uuid.UUID,
    as_of: Annotated[date | None, Query(description="Defaults to today.")] = None,
) -> TrainingCoverage:
    data = await service.coverage(
        session, principal=principal, org_id=org_id, as_of=as_of or date.today()
    )
    return TrainingCoverage.model_validate(data)


@router.get(
    "/stats",
    operation_id="getActivitiesStats",
    summary="Statistics for reports: an org subtree's year",
    description="Activities by type, attendance rates, talks, verified service hours, "
    'pledge completion ("ten ones"), points, funds per member, training coverage.',
    response_model=Stats,
    tags=["statistics"],
    responses=problem_responses(403, 404),
)
async def stats(
    session: SessionDep, principal: PrincipalDep, org_id: uuid.UUID, year: Year
) -> Stats:
    data = await stats_service.stats(session, principal=principal, org_id=org_id, year=year)
    return Stats.model_validate(data)
