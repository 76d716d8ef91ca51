from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, status

from common.errors import problem_responses
from services.activities.dependencies import PrincipalDep, SessionDep
from services.activities.schemas import (
    Leaderboard,
    LeaderboardRow,
    MemberPoints,
    PointsEntry,
    PointsRulePublic,
    PointsRuleSet,
    RedemptionCreate,
    Year,
)
from services.activities.service import points as service

router = APIRouter(tags=["points"])


@router.get(
    "/points/rules",
    operation_id="listPointsRules",
    summary="The points rules in force",
    description="Points per attendance by activity type and per verified service hour: the "
    "org's own rule, else its nearest ancestor's, else the system default.",
    response_model=list[PointsRulePublic],
    responses=problem_responses(403, 404),
)
async def list_rules(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: Annotated[
        uuid.UUID | None, Query(description="The org (its subtree inherits).")
    ] = None,
) -> list[PointsRulePublic]:
    rows = await service.list_rules(session, principal=principal, org_id=org_id)
    return [PointsRulePublic.model_validate(r) for r in rows]


@router.put(
    "/points/rules",
    operation_id="setPointsRule",
    summary="Set an org's points rule",
    response_model=PointsRulePublic,
    responses=problem_responses(403, 404, 422),
)
async def set_rule(
    data: PointsRuleSet, session: SessionDep, principal: PrincipalDep
) -> PointsRulePublic:
    row = await service.set_rule(session, principal=principal, data=data)
    return PointsRulePublic.model_validate(row)


@router.get(
    "/members/{member_id}/points",
    operation_id="getMemberPoints",
    summary="A member's points: balance and ledger",
    description="The balance is the sum of the ledger's entries (newest first, up to 500).",
    response_model=MemberPoints,
    responses=problem_responses(403, 404),
)
async def member_points(
    member_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    year: Annotated[Year | None, Query()] = None,
) -> MemberPoints:
    data = await service.member_points(session, principal=principal, member_id=member_id, year=year)
    return MemberPoints(
        member_id=data["member_id"],
        balance=data["balance"],
        year=data["year"],
        earned_in_year=data["earned_in_year"],
        entries=[PointsEntry.model_validate(e) for e in data["entries"]],
    )


@router.post(
    "/members/{member_id}/points/redemptions",
    status_code=status.HTTP_201_CREATED,
    operation_id="redeemMemberPoints",
    summary="Redeem points for a material reward",
    description="Appends a negative entry; 409 beyond the balance.",
    response_model=PointsEntry,
    responses=problem_responses(403, 404, 409, 422),
)
async def redeem(
    member_id: uuid.UUID, data: RedemptionCreate, session: SessionDep, principal: PrincipalDep
) -> PointsEntry:
    row = await service.redeem(
        session,
        principal=principal,
        member_id=member_id,
        reward=data.reward,
        points=data.points,
        year=date.today().year,
    )
    return PointsEntry.model_validate(row)


@router.get(
    "/points/leaderboard",
    operation_id="getPointsLeaderboard",
    summary="Points leaderboard of an org's subtree for a year",
    response_model=Leaderboard,
    responses=problem_responses(403, 404),
)
async def leaderboard(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: uuid.UUID,
    year: Year,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Leaderboard:
    rows = await service.leaderboard(
        session, principal=principal, org_id=org_id, year=year, limit=limit
    )
    return Leaderboard(
        org_id=org_id, year=year, items=[LeaderboardRow.model_validate(r) for r in rows]
    )
