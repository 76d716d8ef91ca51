"""Request and response models of the mobility API."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from types import GenericAlias
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core.core_schema import CoreSchema

from services.mobility.models import CardStatus, Channel, Direction, LinkMode, LinkStatus, Rating

FORBID = ConfigDict(extra="forbid")


# --- mobile members ---------------------------------------------------------------------


class CardCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "member_id": "0b7d4c1e-5f0a-4c3e-9d7e-2f1b6a9c8d10",
                    "direction": "outflow",
                    "place": "广东省深圳市宝安区",
                    "host_org_id": None,
                    "left_on": "2024-03-01",
                    "expected_return_on": "2025-01-20",
                    "contact_phone": "13800138000",
                    "tracker": "王书记",
                }
            ]
        },
    )

    member_id: uuid.UUID
    direction: Direction
    place: str = Field(min_length=1, max_length=300, description="Where to (or from).")
    host_org_id: uuid.UUID | None = Field(
        default=None, description="The receiving (outflow) or hosting (inflow) org."
    )
    left_on: date
    expected_return_on: date | None = None
    contact_phone: str | None = Field(default=None, max_length=32)
    tracker: str = Field(min_length=1, max_length=100, description="Responsible for follow-up.")
    org_id: uuid.UUID | None = Field(
        default=None,
        description="The org responsible for the card; by default the member's own org "
        "(outflow) or the hosting org (inflow).",
    )

    @model_validator(mode="after")
    def _dates(self) -> CardCreate:
        if self.expected_return_on is not None and self.expected_return_on < self.left_on:
            raise ValueError("expected_return_on is before left_on")
        return self


class ContactCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "on": "2024-06-01",
                    "channel": "phone",
                    "attended_org_life": True,
                    "notes": "在深圳某厂工作，参加了当地流动党员支部的组织生活。",
                }
            ]
        },
    )

    on: date
    channel: Channel
    attended_org_life: bool = False
    notes: str | None = Field(default=None, max_length=4000)


class ReturnCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"on": "2024-12-20"}]}
    )

    on: date | None = Field(default=None, description="The day of return; today by default.")


class ContactPublic(BaseModel):
    id: uuid.UUID
    on: date
    channel: Channel
    attended_org_life: bool
    notes: str | None = None
    recorded_by: str


class CardPublic(BaseModel):
    id: uuid.UUID
    member_id: uuid.UUID
    org_id: uuid.UUID
    direction: Direction
    place: str | None = Field(
        default=None, description="Only in `GET /mobile-members/{id}` (audited), never in lists."
    )
    host_org_id: uuid.UUID | None
    left_on: date
    expected_return_on: date | None
    contact_phone: str | None = Field(default=None, description="Only in the single read.")
    contact_phone_masked: str | None
    tracker: str
    status: CardStatus
    last_contact_on: date | None
    returned_on: date | None
    version: int
    contacts: list[ContactPublic] | None = Field(
        default=None, description="The log of contacts, in the single read only."
    )


# --- dual management --------------------------------------------------------------------


class ExternalUnit(BaseModel):
    model_config = FORBID

    name: str = Field(min_length=1, max_length=200)
    code: str | None = Field(default=None, max_length=64)


class LinkCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "member_id": "0b7d4c1e-5f0a-4c3e-9d7e-2f1b6a9c8d10",
                    "workplace_org_id": "4f3c2b1a-0000-4000-8000-000000000001",
                    "residence_org_id": "4f3c2b1a-0000-4000-8000-000000000002",
                    "mode": "direct",
                }
            ]
        },
    )

    member_id: uuid.UUID
    workplace_org_id: uuid.UUID | None = None
    workplace_external: ExternalUnit | None = None
    residence_org_id: uuid.UUID
    mode: LinkMode = LinkMode.direct

    @model_validator(mode="after")
    def _one_workplace(self) -> LinkCreate:
        if (self.workplace_org_id is None) == (self.workplace_external is None):
            raise ValueError("give exactly one of workplace_org_id and workplace_external")
        return self


class ReportCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"on": "2024-04-01"}]}
    )

    on: date | None = Field(default=None, description="The day of reporting; today by default.")


class EndCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"on": "2024-12-31"}]}
    )

    on: date | None = None


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"year": 2024, "rating": "excellent", "comment": "积极参加社区服务。"}]
        },
    )

    year: int = Field(ge=2000, le=2100)
    rating: Rating
    comment: str = Field(default="", max_length=2000)


class FeedbackPublic(BaseModel):
    year: int
    rating: Rating
    comment: str
    given_by: str
    updated_at: datetime


class LinkPublic(BaseModel):
    id: uuid.UUID
    member_id: uuid.UUID
    member_name: str | None = None
    workplace_org_id: uuid.UUID | None
    workplace_external: ExternalUnit | None
    residence_org_id: uuid.UUID
    mode: LinkMode
    status: LinkStatus
    reported_on: date | None
    ended_on: date | None
    external_id: str | None
    version: int
    feedback: list[FeedbackPublic] | None = Field(
        default=None, description="The community's yearly feedback, in the single read only."
    )


# --- work-unit sync ---------------------------------------------------------------------


class SyncMember(BaseModel):
    model_config = FORBID

    external_id: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=100)
    id_number: str = Field(min_length=1, max_length=32)
    phone: str | None = Field(default=None, max_length=32)
    residence_community_code: str = Field(min_length=1, max_length=64)
    address: str | None = Field(default=None, max_length=300)
    mode: LinkMode = LinkMode.direct


class RowsDocumentedAs:
    """A list validated as loose objects but documented with the model of its rows, so
    that generated clients get typed rows while the service can report each bad row."""

    def __init__(self, row: type[BaseModel]) -> None:
        self.row = row

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        documented = handler(schema)
        # Through a list, so that the row model is a named component, not inlined.
        rows: Any = GenericAlias(list, (self.row,))
        documented["items"] = handler(TypeAdapter[Any](rows).core_schema)["items"]
        return documented


class SyncRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "mode": "delta",
                    "members": [
                        {
                            "external_id": "E-0001",
                            "name": "李四",
                            "id_number": "33040219800101123X",
                            "phone": "13800138000",
                            "residence_community_code": "JX-NH-001",
                            "address": "南湖区某小区3幢",
                        }
                    ],
                }
            ]
        },
    )

    mode: Literal["full", "delta"]
    # Rows are checked one by one, so one bad row does not reject the others: they are
    # taken as objects here and documented as `SyncMember`s for clients.
    members: Annotated[list[dict[str, Any]], RowsDocumentedAs(SyncMember)] = Field(
        max_length=50_000
    )


class SyncRowError(BaseModel):
    index: int
    external_id: str | None
    message: str


class SyncResult(BaseModel):
    created: int
    updated: int
    unchanged: int
    ended: int
    errors: list[SyncRowError]


class Change(BaseModel):
    kind: str = Field(description="`link` (report status) or `feedback`.")
    link_id: uuid.UUID
    external_id: str | None
    member_id: uuid.UUID
    status: LinkStatus
    reported_on: date | None
    ended_on: date | None
    year: int | None = None
    rating: Rating | None = None
    comment: str | None = None


class ChangesPage(BaseModel):
    items: list[Change]
    next_cursor: str = Field(description="Pass it back next time: changes after this point.")
    has_more: bool


# --- alerts and statistics --------------------------------------------------------------


class Alert(BaseModel):
    type: str
    record_id: uuid.UUID = Field(description="The member, card or link the alert names.")
    member_id: uuid.UUID
    org_id: uuid.UUID | None
    reason: str


class Count(BaseModel):
    count: int
    share: float | None


class CommunityLinks(BaseModel):
    org_id: uuid.UUID
    links: int
    reported: int
    report_rate: float | None


class Statistics(BaseModel):
    org_id: uuid.UUID | None
    year: int
    flows: dict[str, int]
    dual_management: dict[str, Any]
    by_community: list[CommunityLinks]
    mobile: dict[str, dict[str, Count]]
