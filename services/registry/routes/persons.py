"""Internal: other Lianxin services find or register persons in bulk (not in the public
contract; the gateway never routes a client here with a service token)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic_core import to_json

from common.bulk import gc_paused
from common.errors import problem_responses
from services.registry.dependencies import CryptoDep, PrincipalDep, SessionDep
from services.registry.schemas.persons import ResolveRequest, ResolveResponse
from services.registry.service import persons as service

router = APIRouter(prefix="/persons", tags=["persons"])


@router.post(
    "/resolve",
    operation_id="resolvePersons",
    summary="Find persons by ID number, registering the missing ones (services only)",
    response_model=ResolveResponse,
    responses=problem_responses(403, 422),
    include_in_schema=False,
)
async def resolve_persons(
    data: ResolveRequest, session: SessionDep, principal: PrincipalDep, crypto: CryptoDep
) -> Response:
    with gc_paused():  # tens of thousands of rows: see `common.bulk.gc_paused`
        results = await service.resolve_persons(
            session, data=data, principal=principal, crypto=crypto
        )
        # Serialized once, as `ResolveResponse`: tens of thousands of results are not
        # validated a second time. The ids as text first (what they serialize to; the
        # driver's UUIDs take the serializer's slow path).
        for name in ("member_id", "residence_org_id"):
            results[name] = [None if v is None else str(v) for v in results[name]]
        body = to_json({"results": results})
    return Response(body, media_type="application/json")
