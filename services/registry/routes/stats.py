from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from common.errors import problem_responses
from services.registry.dependencies import PrincipalDep, SessionDep
from services.registry.schemas.stats import RegistryStats
from services.registry.service import stats as service

router = APIRouter(tags=["statistics"])


@router.get(
    "/stats",
    operation_id="getRegistryStats",
    summary="Statistics for reports: an org subtree's orgs, members and transfers",
    description="Orgs by kind and area level; live members (enrolled in the subtree or "
    "residing in it, each once) by category, relation, age band (age at 31 December of "
    "the year, or today for the current year) and education band, each with `unknown`; "
    "transfers completed in the year into and out of the subtree.",
    response_model=RegistryStats,
    responses=problem_responses(403, 404),
)
async def get_stats(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: Annotated[uuid.UUID, Query(description="This org and its subtree.")],
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
) -> RegistryStats:
    data = await service.stats(
        session, principal=principal, org_id=org_id, year=year or date.today().year
    )
    return RegistryStats.model_validate(data)
