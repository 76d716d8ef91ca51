from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.registry.models import AreaLevel, OrgKind

Code = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    ),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class OrgCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "code": "JX-NH-RY",
                    "name": "如意社区党支部",
                    "kind": "branch",
                    "area_level": "community",
                    "parent_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                }
            ]
        },
    )

    code: Code
    name: Name
    kind: OrgKind
    area_level: AreaLevel
    parent_id: uuid.UUID | None = Field(
        default=None, description="The parent org; only admins create roots."
    )


class OrgUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "如意社区党总支", "kind": "general_branch"}]},
    )

    code: Code | None = None
    name: Name | None = None
    kind: OrgKind | None = None
    area_level: AreaLevel | None = None
    parent_id: uuid.UUID | None = Field(
        default=None, description="Moves the org and its whole subtree under another parent."
    )


class OrgPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    code: str
    name: str
    kind: OrgKind
    area_level: AreaLevel
    parent_id: uuid.UUID | None
    depth: int = Field(description="0 for a root org.")
    created_at: datetime
    updated_at: datetime
