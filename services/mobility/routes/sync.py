from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic_core import from_json

from common.bulk import gc_paused
from common.errors import problem_responses
from common.idempotency import IdempotencyKeyHeader, fingerprint, run_idempotent
from common.pagination import CursorQuery, LimitQuery
from common.service_client import call_service
from services.mobility.dependencies import CryptoDep, PrincipalDep, SessionDep, SettingsDep
from services.mobility.errors import RegistryUnavailable
from services.mobility.models import idempotency_keys
from services.mobility.schemas import ChangesPage, SyncRequest, SyncResult
from services.mobility.service import sync as service
from services.mobility.settings import MobilitySettings

router = APIRouter(prefix="/sync", tags=["work-unit sync"])


_RESULT_COLUMNS = ("member_id", "created", "residence_org_id", "error")


def _results(body: bytes, asked: int) -> dict[str, list[Any]]:
    """The columns of the registry's answer (`ResolveResults`), each with one entry per
    person asked; any other answer is the registry's fault, and the sync fails as a whole
    (never a row dropped or matched to another person's result)."""
    try:
        results = from_json(body)["results"]
        columns = {name: results[name] for name in _RESULT_COLUMNS}
    except (ValueError, TypeError, KeyError) as exc:
        raise RegistryUnavailable("The registry's answer could not be read.") from exc
    if any(type(values) is not list or len(values) != asked for values in columns.values()):
        raise RegistryUnavailable("The registry's answer does not match the persons asked.")
    return columns


def registry_resolver(request: Request, settings: MobilitySettings) -> service.Resolver:
    """Persons found or registered through the registry's own bulk endpoint."""
    transport = getattr(request.app.state, "registry_transport", None)

    async def resolve(persons: dict[str, list[Any]]) -> dict[str, list[Any]]:
        response = await call_service(
            "POST",
            f"{settings.registry_url}/api/v1/registry/persons/resolve",
            json={"persons": persons, "create_missing": True},
            private_key_pem=settings.service_private_key_pem(),
            subject="service:mobility",
            transport=transport,
        )
        if response.status_code != 200:
            raise RegistryUnavailable(f"The registry answered {response.status_code}.")
        return _results(response.content, len(persons["index"]))

    return resolve


@router.put(
    "/{org_id}/members",
    operation_id="syncWorkUnitMembers",
    summary="Put a work unit's in-service members (API key with scope `sync`)",
    description="`full` ends the links of members no longer listed; `delta` only upserts. "
    "Rows are checked one by one: bad rows come back in `errors` with their index, good "
    "rows are kept.",
    response_model=SyncResult,
    responses=problem_responses(403, 404, 409, 413, 422, 503),
)
async def sync_members(
    org_id: uuid.UUID,
    data: SyncRequest,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    service.authorize_sync(principal, org_id)

    async def produce() -> tuple[int, object]:
        with gc_paused():
            result = await service.sync_members(
                session,
                org_id=org_id,
                data=data,
                principal=principal,
                resolve=registry_resolver(request, settings),
                chunk=settings.sync_chunk,
            )
            return 200, result.model_dump(mode="json")

    # A keyed hash: the body holds ID numbers. Only a retry with a key compares it (20,000
    # rows serialized and hashed for nothing otherwise).
    digest = ""
    if idempotency_key is not None:
        digest = crypto.lookup.digest(
            fingerprint({"org_id": str(org_id), **data.model_dump(mode="json")}),
            purpose="mobility.idempotency",
        ).hex()
    code, body = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=digest,
        produce=produce,
    )
    return JSONResponse(body, status_code=code)


@router.get(
    "/{org_id}/changes",
    operation_id="listWorkUnitChanges",
    summary="Report status and community feedback of the unit's members since a cursor",
    response_model=ChangesPage,
    responses=problem_responses(403, 404, 422),
)
async def list_changes(
    org_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 500,
) -> ChangesPage:
    return await service.changes(
        session, org_id=org_id, principal=principal, cursor=cursor, limit=limit
    )
