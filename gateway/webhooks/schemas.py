"""Request and response models of `/api/v1/webhooks`."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gateway.models import DeliveryStatus

EVENT_PATTERN = re.compile(r"^(\*|[a-z][a-z_]*(\.[a-z_]+)*(\.\*)?)$")


def _event_filter(value: str) -> str:
    if not EVENT_PATTERN.match(value):
        raise ValueError("an event type (`member.registered`), a family (`member.*`) or `*`")
    return value


EventFilter = Annotated[str, Field(max_length=64), AfterValidator(_event_filter)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hr.example.com/lianxin/events",
                    "events": ["member.*", "transfer.completed"],
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                }
            ]
        },
    )

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="Where events are POSTed: https (http only outside production). "
        "Loopback, private and link-local targets are refused unless `allow_private`.",
    )
    events: list[EventFilter] = Field(
        min_length=1,
        max_length=50,
        description="Event types to receive: exact (`member.registered`), a family "
        "(`member.*`) or `*` for all.",
    )
    org_id: uuid.UUID | None = Field(
        default=None,
        description="Whose events (that org's subtree). Defaults to the caller's org; an "
        "admin may leave it out for every event.",
    )
    allow_private: bool = Field(
        default=False, description="Allow loopback/private targets (admins only)."
    )


class WebhookPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    org_id: uuid.UUID | None
    url: str
    events: list[str]
    active: bool
    allow_private: bool
    created_by: str
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="The signing secret (`whsec_…`), shown this once: verify deliveries "
        "with it (Standard Webhooks)."
    )


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="When the next attempt is due.")
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class ReplayResult(BaseModel):
    replayed: int = Field(description="Deliveries scheduled again (or for the first time).")
