from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.etag import etag_of
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.registry.dependencies import PrincipalDep, SessionDep
from services.registry.models import TransferStatus, idempotency_keys
from services.registry.schemas.transfers import (
    TransferCreate,
    TransferDirection,
    TransferIssue,
    TransferPublic,
    TransferQueueItem,
    TransferReject,
)
from services.registry.service import transfers as service
from services.registry.settings import RegistrySettings


async def swept_today(session: SessionDep, principal: PrincipalDep) -> date:
    """Every transfers request first stores the expiry of overdue letters (for an
    authenticated caller), then works with the database's date."""
    await service.expire_overdue(session)
    return await service.db_today(session)


TodayDep = Annotated[date, Depends(swept_today)]

OptionalIfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=200,
        description="Optional: the `ETag` the change is meant for; 412 if the transfer has "
        "changed since.",
    ),
]

router = APIRouter(prefix="/transfers", tags=["transfers"])


def _settings(request: Request) -> RegistrySettings:
    settings: RegistrySettings = request.app.state.settings
    return settings


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createTransfer",
    summary="Request a transfer, or record one arriving from outside the system",
    response_model=TransferPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def create_transfer(
    data: TransferCreate,
    session: SessionDep,
    principal: PrincipalDep,
    today: TodayDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, object]:
        transfer = await service.create_transfer(session, data=data, principal=principal)
        return 201, service.to_public(transfer, today=today).model_dump(mode="json")

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
    operation_id="listTransfers",
    summary="List transfers",
    response_model=Page[TransferPublic],
    responses=problem_responses(403),
)
async def list_transfers(
    session: SessionDep,
    principal: PrincipalDep,
    today: TodayDep,
    member_id: uuid.UUID | None = None,
    status: TransferStatus | None = None,
    from_org_id: Annotated[uuid.UUID | None, Query(description="The sending org.")] = None,
    to_org_id: Annotated[uuid.UUID | None, Query(description="The receiving org.")] = None,
    org_id: Annotated[
        uuid.UUID | None,
        Query(description="Transfers leaving or entering this org or its subtree."),
    ] = None,
    direction: Annotated[
        TransferDirection | None,
        Query(
            description="`incoming` or `outgoing` relative to the `org_id` subtree if given, "
            "else to your scope."
        ),
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[TransferPublic]:
    filters = {
        "member_id": member_id,
        "status": status,
        "from_org_id": from_org_id,
        "to_org_id": to_org_id,
        "org_id": org_id,
        "direction": direction,
    }
    rows, next_cursor = await service.list_transfers(
        session, principal=principal, limit=limit, cursor=cursor, filters=filters
    )
    return Page[TransferPublic](
        items=[service.to_public(t, today=today) for t in rows], next_cursor=next_cursor
    )


@router.get(
    "/queue",
    operation_id="listTransferQueue",
    summary="The transfers waiting on an organization: letters to issue, transfers to receive",
    response_model=Page[TransferQueueItem],
    responses=problem_responses(403, 404),
)
async def list_queue(
    session: SessionDep,
    principal: PrincipalDep,
    today: TodayDep,
    org_id: Annotated[
        uuid.UUID | None, Query(description="This org and its subtree (default: your scope).")
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[TransferQueueItem]:
    entries, next_cursor = await service.work_queue(
        session, principal=principal, org_id=org_id, limit=limit, cursor=cursor
    )
    return Page[TransferQueueItem](
        items=[e.public(today=today) for e in entries], next_cursor=next_cursor
    )


@router.get(
    "/{transfer_id}",
    operation_id="getTransfer",
    summary="Read a transfer",
    response_model=TransferPublic,
    responses=problem_responses(404),
)
async def get_transfer(
    transfer_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    today: TodayDep,
    response: Response,
) -> TransferPublic:
    transfer = await service.get_transfer(session, transfer_id=transfer_id, principal=principal)
    response.headers["ETag"] = etag_of(transfer.version)
    return service.to_public(transfer, today=today)


@router.post(
    "/{transfer_id}/issue",
    operation_id="issueTransferLetter",
    summary="Issue the transfer letter (sending org)",
    response_model=TransferPublic,
    responses=problem_responses(403, 404, 409, 412, 422),
)
async def issue_transfer(
    transfer_id: uuid.UUID,
    data: TransferIssue,
    session: SessionDep,
    principal: PrincipalDep,
    today: TodayDep,
    response: Response,
    settings: Annotated[RegistrySettings, Depends(_settings)],
    if_match: OptionalIfMatch = None,
) -> TransferPublic:
    transfer = await service.issue_transfer(
        session,
        transfer_id=transfer_id,
        data=data,
        if_match=if_match,
        default_validity_days=settings.letter_validity_days,
        principal=principal,
    )
    response.headers["ETag"] = etag_of(transfer.version)
    return service.to_public(transfer, today=today)


@router.post(
    "/{transfer_id}/receive",
    operation_id="receiveTransfer",
    summary="Receive the transfer (receiving org); the member moves with it",
    response_model=TransferPublic,
    responses=problem_responses(403, 404, 409, 412),
)
async def receive_transfer(
    transfer_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    today: TodayDep,
    response: Response,
    if_match: OptionalIfMatch = None,
) -> TransferPublic:
    transfer = await service.receive_transfer(
        session, transfer_id=transfer_id, if_match=if_match, principal=principal
    )
    response.headers["ETag"] = etag_of(transfer.version)
    return service.to_public(transfer, today=today)


@router.post(
    "/{transfer_id}/reject",
    operation_id="rejectTransfer",
    summary="Reject a transfer request or an issued letter",
    response_model=TransferPublic,
    responses=problem_responses(403, 404, 409, 412, 422),
)
async def reject_transfer(
    transfer_id: uuid.UUID,
    data: TransferReject,
    session: SessionDep,
    principal: PrincipalDep,
    today: TodayDep,
    response: Response,
    if_match: OptionalIfMatch = None,
) -> TransferPublic:
    transfer = await service.reject_transfer(
        session, transfer_id=transfer_id, data=data, if_match=if_match, principal=principal
    )
    response.headers["ETag"] = etag_of(transfer.version)
    return service.to_public(transfer, today=today)
