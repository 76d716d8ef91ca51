"""Registration cards in and out of spreadsheets: `POST /members/import`,
`GET /members/export`. Registered before the members router, so that these paths are not
taken for a member id."""

from __future__ import annotations

import base64
import uuid
from datetime import date
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

from common.errors import problem_responses
from common.idempotency import IdempotencyKeyHeader, run_idempotent
from services.registry.dependencies import CryptoDep, PrincipalDep, SessionDep
from services.registry.models import idempotency_keys
from services.registry.routes.members import MemberFiltersDep
from services.registry.schemas.imports import ImportResult, ReportFormat
from services.registry.service import exports, imports
from services.registry.service.card_sheet import Lang, SheetFormat, media_type

router = APIRouter(prefix="/members", tags=["members"])

_FILES: dict[str, Any] = {
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
        "schema": {"type": "string", "format": "binary"}
    },
    "text/csv": {"schema": {"type": "string", "format": "binary"}},
}

IMPORT_DESCRIPTION = """\
Registers the members of a spreadsheet: an `.xlsx` workbook (first sheet) or a `.csv` file
(UTF-8 with or without BOM, or GB18030), at most 100,000 rows. The header row names the
columns in English (`name`, `gender`, `birth_date`, `id_number`, `ethnicity`, `phone`,
`education`, `joined_on`, `membership`, `category`, `relation`, `org_code`,
`residence_org_code`, `group_code`, `address`, `employer`, `skills`, `resume`) or Chinese
(姓名, 性别, 出生日期, 身份证号, 民族, 电话, 学历, 入党日期, 党员类型, 类别, 关系, 所在组织代码,
居住社区代码, 楼道党小组代码, 住址, 工作单位, 特长, 履历); enum cells take the API value or the
Chinese word (男/女, 正式/预备, 初中及以下/高中/中专/大专/本科/研究生, 在册/居住…); orgs are
named by `code`; skills are separated by 、 , or ;. Birth date and gender may be left blank
when the ID number is given. `status`/状态 (in exports) and an `errors`/错误 column are
ignored.

Each row passes the checks of `POST /members`. Rows that pass are registered, rows that
do not come back with their reasons; nothing is half-written, and a file that cannot be
read is a 422 with nothing written. A person already registered (same ID number; without
one, same name, birth date and org) with the same card is `unchanged` — importing the same
file again, or an export, changes nothing; with other data the row is invalid and names
the existing record. A second row of one person in the file is invalid. The masked ID
numbers and phones of an export match the record they came from; they cannot register
anyone new.

Use `dry_run=true` first: it checks everything and writes nothing. `report=xlsx|csv`
answers with the rejected rows as a file in the uploaded columns plus `错误/errors`, to
fix and import again (the counts are in `X-Import-*` headers)."""


def _report_headers(summary: dict[str, Any], fmt: str) -> dict[str, str]:
    headers = {
        f"X-Import-{k.replace('_', '-').title()}": str(summary[k])
        for k in ("total", "valid", "invalid", "created", "unchanged", "dry_run")
    }
    name = f"import-rejected-{date.today():%Y%m%d}.{fmt}"
    headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return headers


@router.post(
    "/import",
    operation_id="importMembers",
    summary="Import registration cards from xlsx or csv",
    description=IMPORT_DESCRIPTION,
    response_model=ImportResult,
    responses={
        200: {
            "description": "Per-row results, or (`report`) the rejected rows as a file.",
            "content": _FILES,
        },
        **problem_responses(403, 409, 413, 422),
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "example": {"file": "registration-cards.xlsx (the file's bytes)"}
                }
            }
        }
    },
)
async def import_members(
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
    file: Annotated[UploadFile, File(description="The .xlsx or .csv file.")],
    dry_run: Annotated[
        bool, Query(description="Check every row and write nothing (default: a real run).")
    ] = False,
    org_id: Annotated[
        uuid.UUID | None,
        Query(
            description="The org of rows that name neither `org_code` nor "
            "`residence_org_code` (their residence community when the row is resident)."
        ),
    ] = None,
    report: Annotated[
        ReportFormat,
        Query(description="`json` (per-row results) or the rejected rows as `xlsx`/`csv`."),
    ] = ReportFormat.json,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    async def produce() -> tuple[int, Any]:
        outcome = await imports.import_members(
            session,
            file=file.file,
            filename=file.filename,
            principal=principal,
            crypto=crypto,
            dry_run=dry_run,
            default_org_id=org_id,
            report=report,
        )
        summary = outcome.result.model_dump(mode="json")
        if outcome.report is None:
            return 200, summary
        del summary["rows"]
        # Stored for replays, so sealed: the rejected rows hold ID and phone numbers.
        body = {"summary": summary, "file": base64.b64encode(outcome.report).decode()}
        return 200, crypto.seal(body)

    digest = await to_thread.run_sync(imports.file_digest, file.file)
    params = {"file": digest, "name": file.filename, "dry_run": dry_run, "org_id": org_id}
    code, stored = await run_idempotent(
        session,
        table=idempotency_keys,
        caller=principal.subject,
        key=idempotency_key,
        request_fingerprint=crypto.fingerprint({**params, "report": report.value}),
        produce=produce,
    )
    if "sealed" not in stored:
        return JSONResponse(stored, status_code=code)
    body = crypto.unseal(stored)
    fmt = SheetFormat(report.value)
    return Response(
        base64.b64decode(body["file"]),
        status_code=code,
        media_type=media_type(fmt),
        headers=_report_headers(body["summary"], fmt.value),
    )


@router.get(
    "/export",
    operation_id="exportMembers",
    summary="Export registration cards as xlsx or csv",
    description="The members `GET /members` lists with the same filters, in the import's "
    "columns (so an export imports again as `unchanged`): ID numbers masked, phones in "
    "full only for those who may see them. Text that a spreadsheet could take for a "
    "formula is kept as text (csv: a leading `'`, which import takes off again).",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The file, as an attachment.", "content": _FILES},
        **problem_responses(403, 422),
    },
)
async def export_members(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    crypto: CryptoDep,
    filters: MemberFiltersDep,
    format: Annotated[SheetFormat, Query(description="`xlsx` or `csv` (UTF-8 with BOM).")] = (
        SheetFormat.xlsx
    ),
    lang: Annotated[
        Lang, Query(description="Headers and enum words in Chinese (`zh`) or English (`en`).")
    ] = Lang.zh,
) -> StreamingResponse:
    query = await exports.start_export(session, principal=principal, filters=filters)
    body = exports.stream_export(
        request.app.state.sessionmaker,
        query=query,
        principal=principal,
        crypto=crypto,
        fmt=format,
        lang=lang,
    )
    name = f"members-{date.today():%Y%m%d}.{format.value}"
    return StreamingResponse(
        body,
        media_type=media_type(format),
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
