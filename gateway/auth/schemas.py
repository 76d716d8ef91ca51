"""Request and response models of `/api/v1/auth`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.models import ApiKeyScope, UserRole

Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"
    ),
]


class TokenPair(BaseModel):
    access_token: str
    token_type: str = Field(default="bearer", examples=["bearer"])
    expires_in: int = Field(description="Seconds the access token is valid for.")
    refresh_token: str = Field(description="Works once; `POST /refresh` gives a new pair.")


class RefreshRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"refresh_token": "rt_2QXk9v0b7c1d4e8f3a6b5c2d9e0f1a7b"}]},
    )

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Me(BaseModel):
    username: str
    role: str
    org_id: uuid.UUID | None
    member_id: uuid.UUID | None
    scopes: list[str] = Field(default_factory=list)


class UserCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "username": "ruyi-secretary",
                    "password": "correct horse 42 battery",
                    "role": "org_admin",
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                }
            ]
        },
    )

    username: Username
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="At least 10 characters mixing letters and digits; not the username, "
        "not a common password."
    )
    role: UserRole
    org_id: uuid.UUID | None = Field(
        default=None, description="Required for org_admin and org_viewer: the scope's root."
    )
    member_id: uuid.UUID | None = Field(
        default=None, description="The member's record; required for the member role."
    )


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    role: UserRole
    org_id: uuid.UUID | None
    member_id: uuid.UUID | None
    created_at: datetime


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "嘉兴电力局 人事系统",
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "scopes": ["sync"],
                }
            ]
        },
    )

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    org_id: uuid.UUID
    scopes: list[ApiKeyScope] = Field(min_length=1, max_length=len(ApiKeyScope))


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str = Field(description="Identifies the key (`lx_<prefix>_…`); not a secret.")
    org_id: uuid.UUID
    scopes: list[ApiKeyScope]
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str | None = Field(
        description="The key itself, shown this once (null when an Idempotency-Key replays "
        "the creation): send it as `X-API-Key`."
    )
