"""The internal bulk endpoint other services call to find or register persons by ID number
(`POST /persons/resolve`, role `service` only)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_PERSONS = 50_000


class PersonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="The row's position in the caller's own file.")
    external_id: str | None = Field(default=None, max_length=100)
    name: str = Field(min_length=1, max_length=100)
    id_number: str = Field(min_length=1, max_length=32)
    phone: str | None = Field(default=None, max_length=32)
    residence_community_code: str | None = Field(default=None, max_length=64)
    address: str | None = Field(default=None, max_length=300)
    employer: str | None = Field(default=None, max_length=200)
    category: Literal["in_service_resident"] = "in_service_resident"
    workplace_org_id: uuid.UUID | None = None


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    persons: list[PersonIn] = Field(max_length=MAX_PERSONS)
    create_missing: bool = True


class PersonResult(BaseModel):
    index: int
    external_id: str | None = None
    member_id: uuid.UUID | None = None
    created: bool = False
    residence_org_id: uuid.UUID | None = None
    error: str | None = None


class ResolveResponse(BaseModel):
    results: list[PersonResult]
