"""The internal bulk endpoint other services call to find or register persons by ID number
(`POST /persons/resolve`, role `service` only).

The persons travel as columns, one array per field (the i-th entry of every array is the
i-th person), and the answer comes back the same way, in the order asked: tens of
thousands of persons are a handful of arrays of plain values to parse and check, not tens
of thousands of objects."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_PERSONS = 50_000

ExternalId = Annotated[str, Field(max_length=100)]
Name = Annotated[str, Field(min_length=1, max_length=100)]
IdNumber = Annotated[str, Field(min_length=1, max_length=32)]
Phone = Annotated[str, Field(max_length=32)]
CommunityCode = Annotated[str, Field(max_length=64)]
Address = Annotated[str, Field(max_length=300)]
Employer = Annotated[str, Field(max_length=200)]


class PersonColumns(BaseModel):
    """The persons, one array per field, all of the same length. A column left out is
    null for every person."""

    model_config = ConfigDict(extra="forbid")

    index: list[Annotated[int, Field(ge=0)]] = Field(
        max_length=MAX_PERSONS, description="Each row's position in the caller's own file."
    )
    external_id: list[ExternalId | None] | None = Field(default=None, max_length=MAX_PERSONS)
    name: list[Name] = Field(max_length=MAX_PERSONS)
    id_number: list[IdNumber] = Field(max_length=MAX_PERSONS)
    phone: list[Phone | None] | None = Field(default=None, max_length=MAX_PERSONS)
    residence_community_code: list[CommunityCode | None] | None = Field(
        default=None, max_length=MAX_PERSONS
    )
    address: list[Address | None] | None = Field(default=None, max_length=MAX_PERSONS)
    employer: list[Employer | None] | None = Field(default=None, max_length=MAX_PERSONS)

    @model_validator(mode="after")
    def _same_length(self) -> PersonColumns:
        wanted = len(self.index)
        for name in PersonColumns.model_fields:
            values = getattr(self, name)
            if values is not None and len(values) != wanted:
                raise ValueError(
                    f"{name}: {len(values)} values for {wanted} persons (every column "
                    "holds one value per person)"
                )
        return self

    def __len__(self) -> int:
        return len(self.index)


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    persons: PersonColumns
    create_missing: bool = True


class ResolveResults(BaseModel):
    """One entry per person asked, in the order asked."""

    member_id: list[uuid.UUID | None]
    created: list[bool]
    residence_org_id: list[uuid.UUID | None]
    error: list[str | None]


class ResolveResponse(BaseModel):
    results: ResolveResults
