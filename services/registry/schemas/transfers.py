from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from common.errors import FieldError
from services.registry.models import TransferStatus
from services.registry.schemas.orgs import Name

LetterNo = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
ExternalCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class TransferDirection(StrEnum):
    incoming = "incoming"
    outgoing = "outgoing"


class ExternalOrg(BaseModel):
    """An organization outside the system, referenced by name and code."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    code: ExternalCode | None = None


class TransferCreate(BaseModel):
    """Either a transfer out of a member's current org (`to_org_id` or `to_external`),
    created as `requested`; or an incoming transfer from outside the system
    (`from_external`, `to_org_id`, `letter_no`, `valid_until`), created as `issued`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "member_id": "5d1c8d36-7f43-4d4a-9a55-0c2e7c4f8a10",
                    "to_org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "reason": "迁居凤凰社区",
                },
                {
                    "member_id": "5d1c8d36-7f43-4d4a-9a55-0c2e7c4f8a10",
                    "from_external": {"name": "杭州市某机关党委", "code": "HZ-001"},
                    "to_org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "letter_no": "浙组转〔2026〕118号",
                    "valid_until": "2027-01-31",
                    "reason": "退休回嘉兴居住",
                },
            ]
        },
    )

    member_id: uuid.UUID
    to_org_id: uuid.UUID | None = Field(default=None, description="The receiving org.")
    to_external: ExternalOrg | None = Field(
        default=None, description="The receiving org when it is outside the system."
    )
    from_external: ExternalOrg | None = Field(
        default=None,
        description="The sending org outside the system: makes this an incoming transfer, "
        "recorded with the letter already issued.",
    )
    letter_no: LetterNo | None = Field(
        default=None, description="Incoming transfers only: the number of the letter received."
    )
    valid_until: date | None = Field(
        default=None, description="Incoming transfers only: the letter's last valid day."
    )
    reason: Reason | None = None

    def shape_errors(self) -> list[FieldError]:
        """The combinations of fields this request may not have."""
        errors: list[FieldError] = []
        if self.from_external is not None:
            if self.to_org_id is None:
                errors.append(
                    FieldError(field="to_org_id", message="required for an incoming transfer")
                )
            if self.to_external is not None:
                errors.append(
                    FieldError(
                        field="to_external",
                        message="a transfer cannot come from and go to outside the system",
                    )
                )
            for name in ("letter_no", "valid_until"):
                if getattr(self, name) is None:
                    errors.append(
                        FieldError(field=name, message="required for an incoming transfer")
                    )
            return errors
        if (self.to_org_id is None) == (self.to_external is None):
            message = "give exactly one of to_org_id and to_external"
            errors += [
                FieldError(field="to_org_id", message=message),
                FieldError(field="to_external", message=message),
            ]
        for name in ("letter_no", "valid_until"):
            if getattr(self, name) is not None:
                errors.append(
                    FieldError(
                        field=name,
                        message="set when the letter is issued (POST /transfers/{id}/issue)",
                    )
                )
        return errors


class TransferIssue(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"letter_no": "嘉组转〔2026〕57号"}]},
    )

    letter_no: LetterNo
    valid_until: date | None = Field(
        default=None,
        description="The letter's last valid day: from today to 180 days ahead; the "
        "registry's default validity when omitted.",
    )


class TransferReject(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "接收组织信息有误"}]}
    )

    reason: Reason


class TransferPublic(BaseModel):
    id: uuid.UUID
    member_id: uuid.UUID
    from_org_id: uuid.UUID | None
    from_external: ExternalOrg | None
    to_org_id: uuid.UUID | None
    to_external: ExternalOrg | None
    reason: str | None
    status: TransferStatus = Field(
        description="`issued` turns `expired` once the day after `valid_until` begins."
    )
    letter_no: str | None
    valid_until: date | None
    reject_reason: str | None
    requested_by: str
    issued_at: datetime | None
    completed_at: datetime | None
    closed_at: datetime | None = Field(
        description="When the transfer was completed, rejected or expired."
    )
    created_at: datetime
    updated_at: datetime


class TransferQueueItem(TransferPublic):
    waiting_on: Literal["issue", "receive"] = Field(
        description="`issue`: the sending org owes the letter; `receive`: the receiving org "
        "(or, for a transfer out of the system, the sending org) owes the receipt."
    )
    overdue: bool = Field(
        description="A letter that expires within 7 days, or a request older than 14 days."
    )
    waiting_since: datetime
