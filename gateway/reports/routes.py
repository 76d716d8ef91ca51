"""`GET /api/v1/reports/orgs/{org_id}?year=&format=`: the report of an org subtree.

JSON by default; `format=xlsx` a workbook (one sheet per section); `format=html` or
`Accept: text/html` a printable page. Org admins and viewers (their subtree; another org:
404) and admins; members, auditors and API keys: 403."""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from common.auth import Principal, Role, require_roles
from common.errors import problem_responses
from gateway.auth.state import AuthState
from gateway.ratelimit import enforce as enforce_rate_limit
from gateway.reports.composer import StatsSources, compose
from gateway.reports.render import report_html, xlsx_bytes
from gateway.reports.schemas import Report

router = APIRouter(tags=["reports"], dependencies=[Depends(enforce_rate_limit)])

ReaderDep = Annotated[Principal, Depends(require_roles(Role.org_admin, Role.org_viewer))]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HTML_CSP = (
    "default-src 'none'; style-src 'nonce-{nonce}'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


class ReportFormat(StrEnum):
    json = "json"
    xlsx = "xlsx"
    html = "html"


def _sources(request: Request) -> StatsSources:
    auth: AuthState = request.app.state.auth
    settings = auth.settings
    return StatsSources(
        request.app.state.proxy.client,
        settings.upstreams(),
        authorization=request.headers.get("authorization", ""),
        timeout=httpx.Timeout(
            settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s
        ),
    )


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


@router.get(
    "/api/v1/reports/orgs/{org_id}",
    operation_id="getOrgReport",
    summary="The report of an org subtree for a year (JSON, xlsx or printable HTML)",
    description="Composed from the registry's, mobility's and activities' statistics. Every "
    "`by_*` maps a value to `{count, share}` and includes `unknown`; shares are fractions "
    "rounded to 4 places, never forced to sum to 1. A service that does not answer leaves "
    "its sections null and is named in `incomplete`; none answering is a 503.",
    response_model=Report,
    responses={
        **problem_responses(401, 403, 404, 422, 503),
        200: {
            "content": {
                XLSX: {"schema": {"type": "string", "format": "binary"}},
                "text/html": {"schema": {"type": "string"}},
            },
            "description": "The report.",
        },
    },
)
async def get_org_report(
    request: Request,
    org_id: uuid.UUID,
    principal: ReaderDep,
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
    format: Annotated[ReportFormat | None, Query(description="Default: JSON.")] = None,
) -> Any:
    year = year or date.today().year
    report = await compose(_sources(request), org_id=org_id, year=year)
    if format is ReportFormat.xlsx:
        body = xlsx_bytes(report)
        name = f"report-{org_id}-{year}.xlsx"
        return StreamingResponse(
            iter([body]),
            media_type=XLSX,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    if format is ReportFormat.html or (format is None and _wants_html(request)):
        page, nonce = report_html(report)
        return HTMLResponse(page, headers={"Content-Security-Policy": HTML_CSP.format(nonce=nonce)})
    return Report.model_validate(report)
