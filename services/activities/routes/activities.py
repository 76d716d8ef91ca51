from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.etag import IfMatchHeader, check_if_match, etag_of
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.activities.dependencies import PrincipalDep, SessionDep
from services.activities.models import ActivityType, idempotency_keys
from services.activities.schemas import (
    ActivityCreate,
    ActivityPublic,
    ActivityUpdate,
    AttendanceEntry,
    AttendanceList,
    AttendancePublic,
    SignupPublic,
)
from services.activities.service import activities as service

router = APIRouter(prefix="/activities", tags=["activities"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createActivity",
    summary="Schedule an activity for an org",
    response_model=ActivityPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def create_activity(
    data: ActivityCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        row = await service.create_activity(session, data=data, principal=principal)
        return 201, ActivityPublic.model_validate(row).model_dump(mode="json")

    code, body = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=fingerprint(data.model_dump(mode="json")),
        produce=produce,
    )
    location = request.url_for("get_activity", activity_id=body["id"]).path
    return JSONResponse(body, status_code=code, headers={"Location": location})


async def activity_filters(
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    type: ActivityType | None = None,
    starts_from: Annotated[datetime | None, Query(description="Starting at or after.")] = None,
    starts_before: Annotated[datetime | None, Query(description="Starting before.")] = None,
) -> dict[str, Any]:
    return {
        "org_id": org_id,
        "type": type.value if type else None,
        "starts_from": starts_from,
        "starts_before": starts_before,
    }


@router.get(
    "",
    operation_id="listActivities",
    summary="List activities",
    description="Org roles see their subtree's activities, members those of their communities.",
    response_model=Page[ActivityPublic],
    responses=problem_responses(403),
)
async def list_activities(
    session: SessionDep,
    principal: PrincipalDep,
    filters: Annotated[dict[str, Any], Depends(activity_filters)],
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ActivityPublic]:
    rows, next_cursor = await service.list_activities(
        session, principal=principal, filters=filters, limit=limit, cursor=cursor
    )
    return Page[ActivityPublic](
        items=[ActivityPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/{activity_id}",
    operation_id="getActivity",
    summary="Read an activity",
    response_model=ActivityPublic,
    responses=problem_responses(403, 404),
)
async def get_activity(
    activity_id: uuid.UUID, response: Response, session: SessionDep, principal: PrincipalDep
) -> ActivityPublic:
    row = await service.get_activity(session, activity_id=activity_id, principal=principal)
    response.headers["ETag"] = etag_of(row["version"])
    return ActivityPublic.model_validate(row)


@router.patch(
    "/{activity_id}",
    operation_id="updateActivity",
    summary="Change an activity",
    response_model=ActivityPublic,
    responses=problem_responses(403, 404, 409, 412, 422, 428),
)
async def update_activity(
    activity_id: uuid.UUID,
    data: ActivityUpdate,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    if_match: IfMatchHeader = None,
) -> ActivityPublic:
    current = await service.get_activity(session, activity_id=activity_id, principal=principal)
    version = check_if_match(if_match, current["version"])
    row = await service.update_activity(
        session,
        activity_id=activity_id,
        data=data,
        expected_version=version,
        principal=principal,
    )
    response.headers["ETag"] = etag_of(row["version"])
    return ActivityPublic.model_validate(row)


AttendanceBody = Annotated[
    list[AttendanceEntry],
    Body(
        max_length=2000,
        examples=[
            [
                {
                    "member_id": "5b1f0e4e-2d7a-4c1e-b1a8-6f3f0a9d2c41",
                    "status": "present",
                    "hours": "2.00",
                },
                {"member_id": "8e2b7c0d-9f4a-4b61-a1c3-2d5e6f708192", "status": "excused"},
            ]
        ],
    ),
]


@router.put(
    "/{activity_id}/attendance",
    operation_id="setActivityAttendance",
    summary="Record attendance (bulk)",
    description="Sets each listed member's attendance; unchanged rows are left alone, so "
    "repeating the request changes nothing. Accepts `Idempotency-Key`.",
    response_model=AttendanceList,
    responses=problem_responses(403, 404, 409, 422),
)
async def set_attendance(
    activity_id: uuid.UUID,
    entries: AttendanceBody,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        rows = await service.set_attendance(
            session, activity_id=activity_id, entries=entries, principal=principal
        )
        items = [AttendancePublic.model_validate(r) for r in rows]
        return 200, AttendanceList(items=items).model_dump(mode="json")

    code, body = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=fingerprint(
            [str(activity_id), [e.model_dump(mode="json") for e in entries]]
        ),
        produce=produce,
    )
    return JSONResponse(body, status_code=code)


@router.get(
    "/{activity_id}/attendance",
    operation_id="listActivityAttendance",
    summary="Read an activity's attendance",
    response_model=AttendanceList,
    responses=problem_responses(403, 404),
)
async def list_attendance(
    activity_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> AttendanceList:
    rows = await service.list_attendance(session, activity_id=activity_id, principal=principal)
    return AttendanceList(items=[AttendancePublic.model_validate(r) for r in rows])


@router.post(
    "/{activity_id}/signups",
    status_code=status.HTTP_201_CREATED,
    operation_id="signUpForActivity",
    summary="Sign up for an activity (members)",
    description="A member signs up for an activity of their communities; 409 when full.",
    response_model=SignupPublic,
    responses=problem_responses(403, 404, 409),
)
async def sign_up(
    activity_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> SignupPublic:
    row = await service.sign_up(session, activity_id=activity_id, principal=principal)
    return SignupPublic.model_validate(row)
