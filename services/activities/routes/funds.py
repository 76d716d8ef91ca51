from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.activities.dependencies import PrincipalDep, SessionDep
from services.activities.models import idempotency_keys
from services.activities.schemas import (
    AllocationCreate,
    AllocationPublic,
    ExpenseCreate,
    ExpensePublic,
    FundSummary,
    Year,
)
from services.activities.service import funds as service

router = APIRouter(prefix="/funds", tags=["funds"])


@router.post(
    "/allocations",
    status_code=status.HTTP_201_CREATED,
    operation_id="createFundAllocation",
    summary="Allocate an org's yearly funds",
    description="amount = members enrolled in the org's subtree (active or mobile) × "
    "rate_per_member. One allocation per org and year (409 on a second).",
    response_model=AllocationPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def create_allocation(
    data: AllocationCreate,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        row = await service.create_allocation(session, data=data, principal=principal)
        return 201, AllocationPublic.model_validate(row).model_dump(mode="json")

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
    "/allocations",
    operation_id="listFundAllocations",
    summary="List fund allocations",
    response_model=Page[AllocationPublic],
    responses=problem_responses(403),
)
async def list_allocations(
    session: SessionDep,
    principal: PrincipalDep,
    org_id: Annotated[uuid.UUID | None, Query(description="This org and its subtree.")] = None,
    year: Annotated[Year | None, Query()] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[AllocationPublic]:
    rows, next_cursor = await service.list_allocations(
        session,
        principal=principal,
        filters={"org_id": org_id, "year": year},
        limit=limit,
        cursor=cursor,
    )
    return Page[AllocationPublic](
        items=[AllocationPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/expenses",
    status_code=status.HTTP_201_CREATED,
    operation_id="bookFundExpense",
    summary="Book an expense against an org's allocation",
    description="409 when it would take the balance below zero, unless the request carries "
    "`approved_overspend: true` (recorded with the approver).",
    response_model=ExpensePublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def book_expense(
    data: ExpenseCreate,
    session: SessionDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, Any]:
        row = await service.book_expense(session, data=data, principal=principal)
        return 201, ExpensePublic.model_validate(row).model_dump(mode="json")

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
    "/expenses",
    operation_id="listFundExpenses",
    summary="An org's expenses of a year",
    response_model=list[ExpensePublic],
    responses=problem_responses(403, 404),
)
async def list_expenses(
    session: SessionDep, principal: PrincipalDep, org_id: uuid.UUID, year: Year
) -> list[ExpensePublic]:
    rows = await service.list_expenses(session, principal=principal, org_id=org_id, year=year)
    return [ExpensePublic.model_validate(r) for r in rows]


@router.get(
    "/summary",
    operation_id="getFundSummary",
    summary="An org's funds of a year: allocated, spent, balance, per member",
    response_model=FundSummary,
    responses=problem_responses(403, 404),
)
async def summary(
    session: SessionDep, principal: PrincipalDep, org_id: uuid.UUID, year: Year
) -> FundSummary:
    data = await service.summary(session, principal=principal, org_id=org_id, year=year)
    return FundSummary.model_validate(data)
