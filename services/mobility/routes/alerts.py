from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from common.errors import problem_responses
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page, decode_cursor, page_of
from services.mobility.dependencies import PrincipalDep, SessionDep, SettingsDep
from services.mobility.schemas import Alert, Statistics
from services.mobility.service import alerts as service

router = APIRouter(tags=["alerts"])

AlertType = Literal[
    "duplicate_person", "pocket_member", "unreported_resident", "lost_contact", "no_org_life"
]


@router.get(
    "/alerts",
    operation_id="listMobilityAlerts",
    summary="Members organised twice or missed by everyone, in an org subtree",
    response_model=Page[Alert],
    responses=problem_responses(403, 404),
)
async def list_alerts(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    type: AlertType | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[Alert]:
    filters = {"org_id": org_id, "type": type}
    alerts = await service.list_alerts(
        session, principal=principal, org_id=org_id, type=type, settings=settings
    )
    after = decode_cursor(cursor, filters)
    if after is not None:
        alerts = [a for a in alerts if (a.type, str(a.record_id)) > (after[0], after[1])]
    items, next_cursor = page_of(
        alerts[: limit + 1], limit=limit, key=lambda a: [a.type, str(a.record_id)], filters=filters
    )
    return Page[Alert](items=items, next_cursor=next_cursor)


@router.get(
    "/statistics",
    operation_id="getMobilityStatistics",
    summary="Flows, dual-management report rate and mobile members by status, per subtree",
    response_model=Statistics,
    responses=problem_responses(403, 404),
)
async def get_statistics(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
) -> Statistics:
    return await service.statistics(
        session,
        principal=principal,
        org_id=org_id,
        year=year or date.today().year,
        settings=settings,
    )
