"""Members' registration cards (党员登记表): what clients send and what they get back.

Rules that need one field only live here (an ID number's checksum, a phone's shape, a
resume entry's dates); rules across fields or against the database live in the service,
because a PATCH must be checked against the record it changes."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.registry import idnumber
from services.registry.models import (
    Category,
    Education,
    Gender,
    Membership,
    MemberStatus,
    Relation,
)

MAX_SKILLS = 32
MAX_RESUME = 100

# The statuses a PATCH may set; the others follow from mobility events and transfers.
SETTABLE_STATUSES = frozenset({MemberStatus.active, MemberStatus.deceased, MemberStatus.removed})


def _id_number(value: str) -> str:
    try:
        return idnumber.parse(value).number
    except idnumber.InvalidIdNumber as exc:
        raise PydanticCustomError("id_number", str(exc)) from None


def _phone(value: str) -> str:
    try:
        return idnumber.normalise_phone(value)
    except idnumber.InvalidPhone as exc:
        raise PydanticCustomError("phone", str(exc)) from None


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL; refuse it as a field error rather than fail later."""
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain NUL characters")
    return value


def _skills(values: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for skill in values:
        if skill.casefold() not in seen:
            seen.add(skill.casefold())
            out.append(skill)
    if len(out) > MAX_SKILLS:
        raise PydanticCustomError("too_many_skills", f"at most {MAX_SKILLS} different skills")
    return out


_Clean = AfterValidator(no_nul)


def _trimmed(max_length: int) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length)


Name = Annotated[str, _trimmed(100), _Clean]
Ethnicity = Annotated[str, _trimmed(32), _Clean]
Address = Annotated[str, _trimmed(300), _Clean]
Employer = Annotated[str, _trimmed(200), _Clean]
Skill = Annotated[str, _trimmed(64), _Clean]
Line = Annotated[str, _trimmed(500), _Clean]
IdNumberIn = Annotated[
    str,
    StringConstraints(max_length=32),
    AfterValidator(_id_number),
    Field(
        description="18 characters, GB 11643 check digit; write-only (responses carry "
        "`id_number_masked`).",
        examples=["330402197001011231"],
    ),
]
PhoneIn = Annotated[
    str,
    StringConstraints(max_length=32),
    AfterValidator(_phone),
    Field(description="Mainland mobile or landline with area code.", examples=["13812341234"]),
]
Skills = Annotated[
    list[Skill],
    Field(max_length=256, description=f"Trimmed and deduplicated; at most {MAX_SKILLS}."),
    AfterValidator(_skills),
]


class ResumeEntry(BaseModel):
    """One line of the resume (履历): from, to (null while it lasts), what."""

    model_config = ConfigDict(extra="forbid")

    from_: date = Field(alias="from")
    to: date | None = None
    text: Line

    @model_validator(mode="after")
    def _from_not_after_to(self) -> ResumeEntry:
        if self.to is not None and self.from_ > self.to:
            raise PydanticCustomError("resume_dates", "'from' must not be after 'to'")
        return self


Resume = Annotated[list[ResumeEntry], Field(max_length=MAX_RESUME)]

_EXAMPLE: dict[str, Any] = {
    "name": "张三",
    "gender": "male",
    "birth_date": "1970-01-01",
    "id_number": "330402197001011231",
    "phone": "13812341234",
    "ethnicity": "汉族",
    "education": "senior_high",
    "joined_on": "1995-07-01",
    "membership": "full",
    "category": "retired",
    "relation": "enrolled",
    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
    "address": "如意小区3幢2单元101",
    "skills": ["水电维修", "书法"],
    "resume": [{"from": "1988-09-01", "to": "2010-01-31", "text": "嘉兴毛纺厂 工人"}],
}


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    name: Name
    gender: Gender
    birth_date: date
    id_number: IdNumberIn | None = None
    phone: PhoneIn | None = None
    ethnicity: Ethnicity | None = None
    education: Education | None = None
    joined_on: date | None = Field(default=None, description="Date joined the party.")
    membership: Membership = Membership.full
    category: Category
    relation: Relation | None = Field(
        default=None,
        description="Derived from `category` when omitted (for `other`: `enrolled` with an "
        "`org_id`, else `resident`).",
    )
    org_id: uuid.UUID | None = Field(
        default=None, description="The org holding the relation; required when enrolled."
    )
    residence_org_id: uuid.UUID | None = Field(
        default=None, description="The residence community; required when resident."
    )
    group_id: uuid.UUID | None = Field(
        default=None, description="A party group under `org_id` or `residence_org_id`."
    )
    address: Address | None = None
    employer: Employer | None = None
    skills: Skills = Field(default_factory=list)
    resume: Resume = Field(default_factory=list)


_NOT_NULL = (
    "name",
    "gender",
    "birth_date",
    "membership",
    "category",
    "relation",
    "status",
    "skills",
    "resume",
)


class MemberUpdate(BaseModel):
    """Fields to change; `null` clears an optional field. `org_id` of an enrolled member
    changes only through a transfer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"phone": "13912345678", "education": "college"}]},
    )

    name: Name | None = None
    gender: Gender | None = None
    birth_date: date | None = None
    id_number: IdNumberIn | None = None
    phone: PhoneIn | None = None
    ethnicity: Ethnicity | None = None
    education: Education | None = None
    joined_on: date | None = None
    membership: Membership | None = None
    category: Category | None = None
    relation: Relation | None = None
    status: MemberStatus | None = Field(
        default=None,
        description="`active`, `deceased` or `removed`; the other statuses are set by "
        "mobility events and transfers.",
    )
    org_id: uuid.UUID | None = None
    residence_org_id: uuid.UUID | None = None
    group_id: uuid.UUID | None = None
    address: Address | None = None
    employer: Employer | None = None
    skills: Skills | None = None
    resume: Resume | None = None

    @field_validator(*_NOT_NULL, mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("not_null", "may not be null")
        return value

    @field_validator("status")
    @classmethod
    def _settable(cls, value: MemberStatus | None) -> MemberStatus | None:
        if value is not None and value not in SETTABLE_STATUSES:
            raise PydanticCustomError(
                "status_by_system",
                "is set by the system (mobility, transfers); PATCH may set active, "
                "deceased or removed",
            )
        return value


class MemberPublic(BaseModel):
    id: uuid.UUID
    name: str
    gender: Gender
    birth_date: date
    age: int = Field(description="Whole years today.")
    id_number_masked: str | None = Field(examples=["330402********123X"])
    phone: str | None = Field(
        description="In full for admins, org admins of the member and the member; "
        "otherwise null (see `phone_masked`)."
    )
    phone_masked: str | None = Field(examples=["138****1234"])
    ethnicity: str | None
    education: Education | None
    joined_on: date | None
    membership: Membership
    category: Category
    relation: Relation
    status: MemberStatus
    org_id: uuid.UUID | None
    residence_org_id: uuid.UUID | None
    group_id: uuid.UUID | None
    address: str | None
    employer: str | None
    skills: list[str]
    resume: list[ResumeEntry]
    created_at: datetime
    updated_at: datetime


class MemberIdNumber(BaseModel):
    member_id: uuid.UUID
    id_number: str | None = Field(description="The full number; null when none is recorded.")


class MergeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "duplicate_id": "5d1b7c1e-2f1a-4c1e-9a53-6b0c1f0e8a77",
                    "reason": "同一人在两个社区重复登记",
                }
            ]
        },
    )

    duplicate_id: uuid.UUID = Field(description="The record absorbed into this one.")
    reason: Line
