from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.activities.dependencies import PrincipalDep, SessionDep
from services.activities.models import HelpStatus, idempotency_keys
from services.activities.schemas import (
    Candidate,
    CandidateList,
    HelpAssign,
    HelpComplete,
    HelpRequestCreate,
    HelpRequestPublic,
)
from services.activities.service import help as service

router = APIRouter(prefix="/help-requests", tags=["help requests"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createHelpRequest",
    summary="Take a resident's help request",
    response_model=HelpRequestPublic,
    responses=problem_responses(403, 404, 422),
)
async def create(
    data: HelpRequestCreate,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        row = await service.create(session, principal=principal, data=data)
        return 201, HelpRequestPublic.model_validate(row).model_dump(mode="json")

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
    operation_id="listHelpRequests",
    summary="List help requests",
    description="Members see those of their communities (the open list) and their own.",
    response_model=Page[HelpRequestPublic],
    responses=problem_responses(403),
)
async def list_requests(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    status: HelpStatus | None = None,
    member_id: uuid.UUID | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[HelpRequestPublic]:
    filters = {
        "org_id": org_id,
        "status": status.value if status else None,
        "member_id": member_id,
    }
    rows, next_cursor = await service.list_requests(
        session, principal=principal, filters=filters, limit=limit, cursor=cursor
    )
    return Page[HelpRequestPublic](
        items=[HelpRequestPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/{request_id}",
    operation_id="getHelpRequest",
    summary="Read a help request",
    response_model=HelpRequestPublic,
    responses=problem_responses(403, 404),
)
async def get(
    request_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> HelpRequestPublic:
    row = await service.get(session, principal=principal, request_id=request_id)
    return HelpRequestPublic.model_validate(row)


@router.get(
    "/{request_id}/candidates",
    operation_id="listHelpRequestCandidates",
    summary="Members who could take the request, best first, with the reasons",
    description="Score: +10 per needed skill on the member's card, +5 for living in the "
    "request's building group, −2 per request the member holds open.",
    response_model=CandidateList,
    responses=problem_responses(403, 404),
)
async def candidates(
    request_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> CandidateList:
    rows = await service.candidates(session, principal=principal, request_id=request_id)
    return CandidateList(items=[Candidate.model_validate(r) for r in rows])


@router.post(
    "/{request_id}/assign",
    operation_id="assignHelpRequest",
    summary="The community assigns the request to a member",
    response_model=HelpRequestPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def assign(
    request_id: uuid.UUID, data: HelpAssign, session: SessionDep, principal: PrincipalDep
) -> HelpRequestPublic:
    row = await service.assign(
        session, principal=principal, request_id=request_id, member_id=data.member_id
    )
    return HelpRequestPublic.model_validate(row)


@router.post(
    "/{request_id}/claim",
    operation_id="claimHelpRequest",
    summary="A member takes an open request",
    response_model=HelpRequestPublic,
    responses=problem_responses(403, 404, 409),
)
async def claim(
    request_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> HelpRequestPublic:
    row = await service.claim(session, principal=principal, request_id=request_id)
    return HelpRequestPublic.model_validate(row)


@router.post(
    "/{request_id}/complete",
    operation_id="completeHelpRequest",
    summary="Complete the request (logs the service hours)",
    response_model=HelpRequestPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def complete(
    request_id: uuid.UUID, data: HelpComplete, session: SessionDep, principal: PrincipalDep
) -> HelpRequestPublic:
    row = await service.complete(
        session, principal=principal, request_id=request_id, spent=data.hours, on=data.on
    )
    return HelpRequestPublic.model_validate(row)


@router.post(
    "/{request_id}/close",
    operation_id="closeHelpRequest",
    summary="Close a done request on the resident's confirmation",
    response_model=HelpRequestPublic,
    responses=problem_responses(403, 404, 409),
)
async def close(
    request_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> HelpRequestPublic:
    row = await service.close(session, principal=principal, request_id=request_id)
    return HelpRequestPublic.model_validate(row)
