from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse

from common.errors import problem_responses
from common.etag import etag_of
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from services.mobility.dependencies import CryptoDep, PrincipalDep, SessionDep, SettingsDep
from services.mobility.models import CardStatus, Direction, idempotency_keys
from services.mobility.schemas import CardCreate, CardPublic, ContactCreate, ReturnCreate
from services.mobility.service import cards as service

router = APIRouter(prefix="/mobile-members", tags=["mobile members"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="createMobileMember",
    summary="Open a mobile member's tracking card",
    response_model=CardPublic,
    responses=problem_responses(403, 409, 422),
)
async def create_card(
    data: CardCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    async def produce() -> tuple[int, object]:
        row = await service.create_card(
            session, data=data, principal=principal, crypto=crypto, days=settings.lost_contact_days
        )
        # Stored for replays without whereabouts: the list form.
        return 201, service.to_public(row).model_dump(mode="json")

    code, body = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=crypto.lookup.digest(
            fingerprint(data.model_dump(mode="json")), purpose="mobility.idempotency"
        ).hex(),
        produce=produce,
    )
    location = request.url_for("get_mobile_member", card_id=body["id"]).path
    return JSONResponse(body, status_code=code, headers={"Location": location})


@router.get(
    "",
    operation_id="listMobileMembers",
    summary="List mobile members' cards (without whereabouts)",
    response_model=Page[CardPublic],
    responses=problem_responses(403),
)
async def list_cards(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    org_id: uuid.UUID | None = None,
    member_id: uuid.UUID | None = None,
    direction: Direction | None = None,
    status: CardStatus | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[CardPublic]:
    filters = {"org_id": org_id, "member_id": member_id, "direction": direction, "status": status}
    rows, next_cursor = await service.list_cards(
        session,
        principal=principal,
        filters=filters,
        limit=limit,
        cursor=cursor,
        days=settings.lost_contact_days,
    )
    return Page[CardPublic](items=[service.to_public(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{card_id}",
    operation_id="getMobileMember",
    summary="Read a mobile member's card with whereabouts and contacts (audited)",
    response_model=CardPublic,
    responses=problem_responses(403, 404),
)
async def get_mobile_member(
    card_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
    settings: SettingsDep,
) -> CardPublic:
    card = await service.read_card(
        session,
        card_id=card_id,
        principal=principal,
        crypto=crypto,
        days=settings.lost_contact_days,
    )
    response.headers["ETag"] = etag_of(card.version)
    response.headers["Cache-Control"] = "no-store"  # whereabouts
    return card


@router.post(
    "/{card_id}/contacts",
    status_code=status.HTTP_201_CREATED,
    operation_id="addMobileMemberContact",
    summary="Log a contact with a mobile member",
    response_model=CardPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def add_contact(
    card_id: uuid.UUID,
    data: ContactCreate,
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
    settings: SettingsDep,
) -> CardPublic:
    row = await service.add_contact(
        session,
        card_id=card_id,
        data=data,
        principal=principal,
        crypto=crypto,
        days=settings.lost_contact_days,
    )
    return service.to_public(row)


@router.post(
    "/{card_id}/return",
    operation_id="returnMobileMember",
    summary="Record a mobile member's return (ends the card)",
    response_model=CardPublic,
    responses=problem_responses(403, 404, 409, 422),
)
async def return_card(
    card_id: uuid.UUID,
    data: ReturnCreate,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> CardPublic:
    row = await service.return_card(
        session, card_id=card_id, on=data.on, principal=principal, days=settings.lost_contact_days
    )
    return service.to_public(row)
