from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from common.errors import problem_responses
from common.idempotency import IdempotencyKeyHeader, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.activities.dependencies import NotesCipherDep, PrincipalDep, SessionDep
from services.activities.models import idempotency_keys
from services.activities.schemas import TalkCreate, TalkDetail, TalkPublic
from services.activities.service import talks as service

router = APIRouter(prefix="/talks", tags=["talks"])


class TalkCount(BaseModel):
    count: int


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createTalk",
    summary="Record a heart-to-heart talk",
    description="The notes are encrypted at rest; the response never carries them.",
    response_model=TalkPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def create_talk(
    data: TalkCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    cipher: NotesCipherDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        row = await service.create_talk(session, data=data, principal=principal, cipher=cipher)
        return 201, TalkPublic.model_validate(row).model_dump(mode="json")

    code, body = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=cipher.fingerprint(data.model_dump(mode="json")),
        produce=produce,
    )
    location = request.url_for("get_talk", talk_id=body["id"]).path
    return JSONResponse(body, status_code=code, headers={"Location": location})


async def talk_filters(
    member_id: uuid.UUID | None = None,
    org_id: Annotated[uuid.UUID | None, Query(description="Members of this subtree.")] = None,
    held_from: date | None = None,
    held_until: date | None = None,
) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "org_id": org_id,
        "held_from": held_from,
        "held_until": held_until,
    }


TalkFilters = Annotated[dict[str, Any], Depends(talk_filters)]


@router.get(
    "",
    operation_id="listTalks",
    summary="List talks (never their notes)",
    response_model=Page[TalkPublic],
    responses=problem_responses(403),
)
async def list_talks(
    session: SessionDep,
    principal: PrincipalDep,
    filters: TalkFilters,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[TalkPublic]:
    rows, next_cursor = await service.list_talks(
        session, principal=principal, filters=filters, limit=limit, cursor=cursor
    )
    return Page[TalkPublic](
        items=[TalkPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/count",
    operation_id="countTalks",
    summary="Count talks in scope",
    response_model=TalkCount,
    responses=problem_responses(403),
)
async def count_talks(
    session: SessionDep, principal: PrincipalDep, filters: TalkFilters
) -> TalkCount:
    return TalkCount(count=await service.count_talks(session, principal=principal, filters=filters))


@router.get(
    "/{talk_id}",
    operation_id="getTalk",
    summary="Read a talk (notes for the member's own org admins, audited)",
    response_model=TalkDetail,
    responses=problem_responses(403, 404),
)
async def get_talk(
    talk_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    cipher: NotesCipherDep,
) -> TalkDetail:
    row = await service.get_talk(session, talk_id=talk_id, principal=principal, cipher=cipher)
    response.headers["Cache-Control"] = "no-store"
    return TalkDetail.model_validate(row)
