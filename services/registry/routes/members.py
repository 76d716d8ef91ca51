from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import AfterValidator

from common.auth import BEARER_SECURITY, bearer_principal
from common.errors import problem_responses
from common.etag import IfMatchHeader, check_if_match, etag_of
from common.idempotency import IdempotencyKeyHeader, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.registry.dependencies import CryptoDep, FieldCrypto, PrincipalDep, SessionDep
from services.registry.models import (
    Category,
    Education,
    Member,
    MemberStatus,
    Relation,
    idempotency_keys,
)
from services.registry.schemas.members import (
    MemberCreate,
    MemberIdNumber,
    MemberPublic,
    MemberUpdate,
    MergeRequest,
    no_nul,
)
from services.registry.service import member_merge, member_read
from services.registry.service import members as service
from services.registry.service.member_card import to_public

router = APIRouter(prefix="/members", tags=["members"])

AgeQuery = Annotated[int | None, Query(ge=0, le=150, description="Whole years, today.")]


def _single(request: Request, response: Response, member: Member, requested: uuid.UUID) -> None:
    response.headers["ETag"] = etag_of(member.version)
    if member.id != requested:
        # The requested record was merged into this one; this is its address now.
        response.headers["Content-Location"] = request.url_for(
            "get_member", member_id=member.id
        ).path


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createMember",
    summary="Register a member",
    response_model=MemberPublic,
    responses=problem_responses(403, 409, 422),
)
async def create_member(
    data: MemberCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, object]:
        member = await service.create_member(session, data=data, principal=principal, crypto=crypto)
        public = to_public(member, crypto=crypto, principal=principal)
        # Stored for replays, so sealed: the body may hold a phone number.
        return 201, crypto.seal(public.model_dump(mode="json", by_alias=True))

    code, stored = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=crypto.fingerprint(data.model_dump(mode="json", by_alias=True)),
        produce=produce,
    )
    body = crypto.unseal(stored)
    location = request.url_for("get_member", member_id=body["id"]).path
    return JSONResponse(body, status_code=code, headers={"Location": location})


async def member_filters(
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    residence_org_id: Annotated[
        uuid.UUID | None, Query(description="This residence org and its subtree.")
    ] = None,
    category: Category | None = None,
    relation: Relation | None = None,
    status: MemberStatus | None = None,
    education: Education | None = None,
    age_min: AgeQuery = None,
    age_max: AgeQuery = None,
    q: Annotated[
        Annotated[str, AfterValidator(no_nul)] | None,
        Query(max_length=100, description="Part of the name."),
    ] = None,
) -> dict[str, Any]:
    """The list filters, shared by the list and the export."""
    return {
        "org_id": org_id,
        "residence_org_id": residence_org_id,
        "category": category,
        "relation": relation,
        "status": status,
        "education": education,
        "age_min": age_min,
        "age_max": age_max,
        "q": q,
    }


MemberFiltersDep = Annotated[dict[str, Any], Depends(member_filters)]


@router.get(
    "",
    operation_id="listMembers",
    summary="List members",
    response_model=Page[MemberPublic],
    responses=problem_responses(403),
)
async def list_members(
    request: Request,
    principal: PrincipalDep,
    crypto: CryptoDep,
    filters: MemberFiltersDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Response:
    # A subtree's page by `org_id` alone is the hot list (see `member_read.list_page`): no
    # session; the ORM path opens one itself (a read: nothing to commit).
    page = await member_read.list_page(
        request.app,
        principal=principal,
        crypto=crypto,
        filters=filters,
        limit=limit,
        cursor=cursor,
    )
    if page is None:
        async with request.app.state.sessionmaker() as session:
            rows, next_cursor = await service.list_members(
                session, principal=principal, limit=limit, cursor=cursor, filters=filters
            )
        items = [to_public(m, crypto=crypto, principal=principal) for m in rows]
        page = Page[MemberPublic](items=items, next_cursor=next_cursor)
    # Already validated models: serialized once, not validated a second time.
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/{member_id}",
    operation_id="getMember",
    summary="Read a member's registration card",
    description="A record merged into another answers with the surviving record and its "
    "address in `Content-Location`.",
    response_model=MemberPublic,
    responses=problem_responses(403, 404),
    openapi_extra=BEARER_SECURITY,
)
async def get_member(member_id: uuid.UUID, request: Request) -> Response:
    # The read a phone makes most: it takes the app's lane past the middleware stack (see
    # `common.lane`; registered in `services.registry.app`), so it resolves its caller and
    # keys itself, without FastAPI's dependency solving; the hot path needs no session
    # (see `member_read`), the ORM path opens one itself.
    principal = bearer_principal(request)
    crypto: FieldCrypto = request.app.state.crypto
    card = await member_read.read_card(
        request.app, member_id=member_id, principal=principal, crypto=crypto
    )
    if card is not None:
        # Already a validated `MemberPublic`: serialized once, not validated again.
        public, version = card
        return Response(
            public.model_dump_json(),
            media_type="application/json",
            headers={"ETag": etag_of(version)},
        )
    async with request.app.state.sessionmaker() as session:
        member = await service.get_member(session, member_id=member_id, principal=principal)
    body = to_public(member, crypto=crypto, principal=principal).model_dump_json()
    response = Response(body, media_type="application/json")
    _single(request, response, member, member_id)
    return response


@router.patch(
    "/{member_id}",
    operation_id="updateMember",
    summary="Change a member's registration card",
    response_model=MemberPublic,
    responses=problem_responses(403, 404, 409, 412, 422, 428),
)
async def update_member(
    member_id: uuid.UUID,
    data: MemberUpdate,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
    if_match: IfMatchHeader = None,
) -> MemberPublic:
    current = await service.get_member(session, member_id=member_id, principal=principal)
    version = check_if_match(if_match, current.version)
    member = await service.update_member(
        session,
        member_id=current.id,
        data=data,
        expected_version=version,
        principal=principal,
        crypto=crypto,
    )
    _single(request, response, member, member_id)
    return to_public(member, crypto=crypto, principal=principal)


@router.get(
    "/{member_id}/id-number",
    operation_id="getMemberIdNumber",
    summary="Read a member's full ID number (audited)",
    description="For admins and the org admins whose scope holds the member. Every read is "
    "recorded in the audit log.",
    response_model=MemberIdNumber,
    responses=problem_responses(403, 404),
)
async def get_member_id_number(
    member_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
) -> MemberIdNumber:
    member, number = await service.read_id_number(
        session, member_id=member_id, principal=principal, crypto=crypto
    )
    response.headers["Cache-Control"] = "no-store"
    return MemberIdNumber(member_id=member.id, id_number=number)


@router.post(
    "/{member_id}/merge",
    operation_id="mergeMembers",
    summary="Merge a duplicate record into this one",
    description="The duplicate keeps its row as history and resolves to this record from "
    "now on; fields this record lacks are filled from it, its transfers move here.",
    response_model=MemberPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def merge_members(
    member_id: uuid.UUID,
    data: MergeRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
) -> MemberPublic:
    member = await member_merge.merge_members(
        session, survivor_id=member_id, data=data, principal=principal, crypto=crypto
    )
    _single(request, response, member, member_id)
    return to_public(member, crypto=crypto, principal=principal)
