"""The gateway's `/healthz` (the process is up) and `/readyz` (its database and every
service's own `/readyz` answer), checked concurrently with short timeouts."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from gateway.proxy import Proxy

log = logging.getLogger("lianxin.gateway.health")

CHECK_TIMEOUT_S = 2.0

router = APIRouter(tags=["health"])

Status = Literal["up", "down"]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Status | None = None
    services: dict[str, Status]


@router.get(
    "/healthz",
    operation_id="gatewayHealth",
    summary="The gateway process is up",
    response_model=Health,
)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="gatewayReadiness",
    summary="The gateway's database and every service are reachable",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Some part is down (named in the body)"}},
)
async def readyz(request: Request) -> JSONResponse:
    proxy: Proxy = request.app.state.proxy
    names = list(proxy.upstreams)
    database = await _database(request)
    services = await asyncio.gather(*(_service(proxy, name) for name in names))
    readiness = Readiness(
        status="ok",
        database=database,
        services=dict(zip(names, services, strict=True)),
    )
    if database == "down" or "down" in readiness.services.values():
        readiness.status = "unavailable"
        down = [n for n, s in readiness.services.items() if s == "down"]
        if database == "down":
            down.insert(0, "database")
        log.warning("not ready: %s down", ", ".join(down))
    code = 200 if readiness.status == "ok" else 503
    return JSONResponse(readiness.model_dump(exclude_none=True), status_code=code)


async def _database(request: Request) -> Status | None:
    sessionmaker = getattr(request.app.state, "sessionmaker", None)
    if sessionmaker is None:
        return None
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), sessionmaker() as session:
            await session.execute(text("SELECT 1"))
    except Exception:  # any failure means "not ready", never a 500
        return "down"
    return "up"


async def _service(proxy: Proxy, name: str) -> Status:
    url = proxy.upstreams[name].base_url.join("/readyz")
    try:
        response = await proxy.client.get(url, timeout=CHECK_TIMEOUT_S)
        await response.aclose()
    except httpx.HTTPError:
        return "down"
    return "up" if response.status_code == 200 else "down"
