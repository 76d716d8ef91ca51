from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from services.activities.dependencies import PrincipalDep, SessionDep
from services.activities.models import AssignmentKind, ProgramKind, idempotency_keys
from services.activities.schemas import (
    PledgeItemDone,
    PledgePublic,
    ProgramAdopt,
    ProgramCreate,
    ProgramPublic,
    RoleAssignmentCreate,
    RoleAssignmentEnd,
    RoleAssignmentPublic,
    Year,
)
from services.activities.service import programs as service

router = APIRouter(tags=["programs"])


@router.get(
    "/programs",
    operation_id="listPrograms",
    summary="List programs",
    description='The system templates ("ten ones", "eight roles") and the programs of '
    "orgs in scope, each with the orgs in scope that adopted it.",
    response_model=list[ProgramPublic],
    responses=problem_responses(403),
)
async def list_programs(
    session: SessionDep, principal: PrincipalDep, kind: ProgramKind | None = None
) -> list[ProgramPublic]:
    rows = await service.list_programs(session, principal=principal, kind=kind)
    return [ProgramPublic.model_validate(r) for r in rows]


@router.post(
    "/programs",
    status_code=status.HTTP_201_CREATED,
    operation_id="createProgram",
    summary="Define an org's own program (adopted by it at once)",
    response_model=ProgramPublic,
    responses=problem_responses(403, 404, 422),
)
async def create_program(
    data: ProgramCreate,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        row = await service.create_program(session, principal=principal, data=data)
        return 201, ProgramPublic.model_validate(row).model_dump(mode="json")

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
    "/programs/{program_id}",
    operation_id="getProgram",
    summary="Read a program",
    response_model=ProgramPublic,
    responses=problem_responses(403, 404),
)
async def get_program(
    program_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> ProgramPublic:
    row = await service.get_program(session, principal=principal, program_id=program_id)
    return ProgramPublic.model_validate(row)


@router.post(
    "/programs/{program_id}/adopt",
    operation_id="adoptProgram",
    summary="An org adopts a program",
    description="Adopting again changes nothing.",
    response_model=ProgramPublic,
    responses=problem_responses(403, 404, 422),
)
async def adopt_program(
    program_id: uuid.UUID, data: ProgramAdopt, session: SessionDep, principal: PrincipalDep
) -> ProgramPublic:
    row = await service.adopt(
        session, principal=principal, program_id=program_id, org_id=data.org_id
    )
    return ProgramPublic.model_validate(row)


@router.get(
    "/members/{member_id}/pledges/{year}",
    operation_id="getMemberPledge",
    summary="A member's yearly pledge: each item done or not, with its evidence",
    response_model=PledgePublic,
    responses=problem_responses(403, 404, 422),
)
async def get_pledge(
    member_id: uuid.UUID,
    year: Annotated[Year, Path()],
    session: SessionDep,
    principal: PrincipalDep,
    program_id: Annotated[
        uuid.UUID | None, Query(description='The pledge program; the "ten ones" if omitted.')
    ] = None,
) -> PledgePublic:
    data = await service.pledge(
        session, principal=principal, member_id=member_id, year=year, program_id=program_id
    )
    return PledgePublic.model_validate(data)


@router.post(
    "/members/{member_id}/pledges/{year}/items/{n}",
    operation_id="markPledgeItemDone",
    summary="Mark a pledge item done, linked to its evidence",
    description="The evidence must be the member's own: an activity attended, verified "
    "service hours, or a help request completed, in the pledge's year.",
    response_model=PledgePublic,
    responses=problem_responses(403, 404, 422),
)
async def mark_done(
    member_id: uuid.UUID,
    year: Annotated[Year, Path()],
    n: Annotated[int, Path(ge=1, le=50)],
    data: PledgeItemDone,
    session: SessionDep,
    principal: PrincipalDep,
) -> PledgePublic:
    result = await service.mark_done(
        session, principal=principal, member_id=member_id, year=year, n=n, data=data
    )
    return PledgePublic.model_validate(result)


@router.post(
    "/role-assignments",
    status_code=status.HTTP_201_CREATED,
    operation_id="createRoleAssignment",
    summary="Assign a role, a post by layer or the party-worker post",
    description="`kind=party_worker` marks the member as a community party worker (党务工作者): "
    "these are the people the training coverage counts.",
    response_model=RoleAssignmentPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def assign_role(
    data: RoleAssignmentCreate,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        row = await service.assign_role(session, principal=principal, data=data)
        return 201, RoleAssignmentPublic.model_validate(row).model_dump(mode="json")

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
    "/role-assignments",
    operation_id="listRoleAssignments",
    summary="Role assignments, current first, then the history",
    response_model=list[RoleAssignmentPublic],
    responses=problem_responses(403),
)
async def list_roles(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    member_id: uuid.UUID | None = None,
    kind: AssignmentKind | None = None,
    current: bool | None = None,
) -> list[RoleAssignmentPublic]:
    filters = {
        "org_id": org_id,
        "member_id": member_id,
        "kind": kind.value if kind else None,
        "current": current,
    }
    rows = await service.list_roles(session, principal=principal, filters=filters)
    return [RoleAssignmentPublic.model_validate(r) for r in rows]


@router.post(
    "/role-assignments/{assignment_id}/end",
    operation_id="endRoleAssignment",
    summary="End a role assignment (it stays as history)",
    response_model=RoleAssignmentPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def end_role(
    assignment_id: uuid.UUID, data: RoleAssignmentEnd, session: SessionDep, principal: PrincipalDep
) -> RoleAssignmentPublic:
    row = await service.end_role(
        session, principal=principal, assignment_id=assignment_id, ended_on=data.ended_on
    )
    return RoleAssignmentPublic.model_validate(row)
