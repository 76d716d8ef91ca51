"""Importing registration cards from a spreadsheet: the per-row results."""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel, Field

from common.errors import FieldError


class ReportFormat(StrEnum):
    json = "json"
    xlsx = "xlsx"
    csv = "csv"


class RowStatus(StrEnum):
    created = "created"
    unchanged = "unchanged"
    valid = "valid"
    invalid = "invalid"


class ImportRow(BaseModel):
    row: int = Field(description="The row's number in the file (the header row included).")
    status: RowStatus = Field(
        description="`created` (real run), `valid` (dry run: would be created), `unchanged` "
        "(the person is registered with this very card) or `invalid` (see `errors`)."
    )
    member_id: uuid.UUID | None = Field(
        default=None,
        description="The record created or matched; for a person already registered with "
        "other data, that record.",
    )
    errors: list[FieldError] = Field(default_factory=list)


class ImportResult(BaseModel):
    dry_run: bool
    total: int = Field(description="Data rows in the file (blank rows skipped).")
    valid: int = Field(description="Rows that pass: created, would be created, or unchanged.")
    invalid: int
    created: int = Field(description="Members registered by this request (0 in a dry run).")
    unchanged: int
    rows: list[ImportRow] = Field(
        description="Every row when the file has at most 1,000; beyond that only the invalid "
        "rows, the first 1,000 of them (`rows_omitted` counts the rest; ask for "
        "`report=xlsx|csv` to get every rejected row)."
    )
    rows_omitted: int = 0
