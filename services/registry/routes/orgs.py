from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.etag import IfMatchHeader, check_if_match, etag_of
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.registry.dependencies import PrincipalDep, SessionDep
from services.registry.models import AreaLevel, OrgKind, idempotency_keys
from services.registry.schemas.orgs import OrgCreate, OrgPublic, OrgUpdate
from services.registry.service import orgs as service

router = APIRouter(prefix="/orgs", tags=["orgs"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createOrg",
    summary="Create an organization",
    response_model=OrgPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def create_org(
    data: OrgCreate,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, object]:
        org = await service.create_org(session, data=data, principal=principal)
        return 201, service.to_public(org).model_dump(mode="json")

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
    operation_id="listOrgs",
    summary="List organizations",
    response_model=Page[OrgPublic],
    responses=problem_responses(403),
)
async def list_orgs(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    parent_id: uuid.UUID | None = None,
    kind: OrgKind | None = None,
    area_level: AreaLevel | None = None,
    code: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=100, description="Part of the name.")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[OrgPublic]:
    filters = {
        "org_id": org_id,
        "parent_id": parent_id,
        "kind": kind,
        "area_level": area_level,
        "code": code,
        "q": q,
    }
    rows, next_cursor = await service.list_orgs(
        session, principal=principal, limit=limit, cursor=cursor, filters=filters
    )
    return Page[OrgPublic](items=[service.to_public(o) for o in rows], next_cursor=next_cursor)


@router.get(
    "/{org_id}",
    operation_id="getOrg",
    summary="Read an organization",
    response_model=OrgPublic,
    responses=problem_responses(404),
)
async def get_org(
    org_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, response: Response
) -> OrgPublic:
    org = await service.get_org(session, org_id=org_id, principal=principal)
    response.headers["ETag"] = etag_of(org.version)
    return service.to_public(org)


@router.patch(
    "/{org_id}",
    operation_id="updateOrg",
    summary="Change or move an organization",
    response_model=OrgPublic,
    responses=problem_responses(403, 404, 409, 412, 422, 428),
)
async def update_org(
    org_id: uuid.UUID,
    data: OrgUpdate,
    session: SessionDep,
    principal: PrincipalDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> OrgPublic:
    current = await service.get_org(session, org_id=org_id, principal=principal)
    version = check_if_match(if_match, current.version)
    org = await service.update_org(
        session, org_id=org_id, data=data, expected_version=version, principal=principal
    )
    response.headers["ETag"] = etag_of(org.version)
    return service.to_public(org)


@router.get(
    "/{org_id}/children",
    operation_id="listOrgChildren",
    summary="List an organization's direct children",
    response_model=Page[OrgPublic],
    responses=problem_responses(404),
)
async def list_children(
    org_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[OrgPublic]:
    await service.get_org(session, org_id=org_id, principal=principal)
    rows, next_cursor = await service.list_orgs(
        session, principal=principal, limit=limit, cursor=cursor, filters={"parent_id": org_id}
    )
    return Page[OrgPublic](items=[service.to_public(o) for o in rows], next_cursor=next_cursor)
