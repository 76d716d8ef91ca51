from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.etag import etag_of
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.mobility.dependencies import PrincipalDep, SessionDep
from services.mobility.models import LinkMode, LinkStatus, idempotency_keys
from services.mobility.schemas import (
    EndCreate,
    FeedbackCreate,
    FeedbackPublic,
    LinkCreate,
    LinkPublic,
    ReportCreate,
)
from services.mobility.service import links as service

router = APIRouter(prefix="/links", tags=["dual management"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createLink",
    summary="Link a member with a workplace and a residence community",
    response_model=LinkPublic,
    responses=problem_responses(403, 409, 422),
)
async def create_link(
    data: LinkCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, object]:
        row = await service.create_link(session, data=data, principal=principal)
        return 201, service.to_public(row).model_dump(mode="json")

    code, body = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=fingerprint(data.model_dump(mode="json")),
        produce=produce,
    )
    location = request.url_for("get_link", link_id=body["id"]).path
    return JSONResponse(body, status_code=code, headers={"Location": location})


@router.get(
    "",
    operation_id="listLinks",
    summary="List dual-management links",
    response_model=Page[LinkPublic],
    responses=problem_responses(403),
)
async def list_links(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: uuid.UUID | None = None,
    residence_org_id: uuid.UUID | None = None,
    workplace_org_id: uuid.UUID | None = None,
    member_id: uuid.UUID | None = None,
    status: LinkStatus | None = None,
    mode: LinkMode | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[LinkPublic]:
    filters = {
        "org_id": org_id,
        "residence_org_id": residence_org_id,
        "workplace_org_id": workplace_org_id,
        "member_id": member_id,
        "status": status,
        "mode": mode,
    }
    rows, next_cursor = await service.list_links(
        session, principal=principal, filters=filters, limit=limit, cursor=cursor
    )
    return Page[LinkPublic](items=[service.to_public(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{link_id}",
    operation_id="getLink",
    summary="Read a link with the community's feedback",
    response_model=LinkPublic,
    responses=problem_responses(403, 404),
)
async def get_link(
    link_id: uuid.UUID, response: Response, session: SessionDep, principal: PrincipalDep
) -> LinkPublic:
    link = await service.read_link(session, link_id=link_id, principal=principal)
    response.headers["ETag"] = etag_of(link.version)
    return link


@router.post(
    "/{link_id}/report",
    operation_id="reportLink",
    summary="Record the member's reporting to the community (报到)",
    response_model=LinkPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def report_link(
    link_id: uuid.UUID, data: ReportCreate, session: SessionDep, principal: PrincipalDep
) -> LinkPublic:
    return service.to_public(
        await service.report(session, link_id=link_id, on=data.on, principal=principal)
    )


@router.post(
    "/{link_id}/feedback",
    operation_id="giveLinkFeedback",
    summary="The community's yearly feedback on the member (replaces that year's)",
    response_model=FeedbackPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def give_feedback(
    link_id: uuid.UUID, data: FeedbackCreate, session: SessionDep, principal: PrincipalDep
) -> FeedbackPublic:
    saved = await service.give_feedback(session, link_id=link_id, data=data, principal=principal)
    return FeedbackPublic(
        year=saved.year,
        rating=saved.rating,
        comment=saved.comment,
        given_by=saved.given_by,
        updated_at=saved.updated_at,
    )


@router.post(
    "/{link_id}/end",
    operation_id="endLink",
    summary="End a link",
    response_model=LinkPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def end_link(
    link_id: uuid.UUID, data: EndCreate, session: SessionDep, principal: PrincipalDep
) -> LinkPublic:
    return service.to_public(
        await service.end(session, link_id=link_id, on=data.on, principal=principal)
    )
