"""Request and response models of the activities service: `<Entity>Create`, `<Entity>Update`,
`<Entity>Public`. Every request model refuses unknown fields. Money is a `Decimal` with two
places, written as a string (`"50.00"`); hours are decimals too."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

from services.activities.models import (
    ActivityType,
    AssignmentKind,
    AttendanceStatus,
    EvidenceType,
    HelpStatus,
    Layer,
    PointsSource,
    ProgramKind,
)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


_Clean = AfterValidator(_no_nul)
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), _Clean
]
Short = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), _Clean
]
LongText = Annotated[str, StringConstraints(max_length=4000), _Clean]
Notes = Annotated[str, StringConstraints(max_length=20000), _Clean]
Skill = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50), _Clean
]

Money = Annotated[
    Decimal,
    Field(max_digits=12, decimal_places=2, ge=0, allow_inf_nan=False),
    PlainSerializer(lambda v: f"{v:.2f}", return_type=str, when_used="json"),
]
PositiveMoney = Annotated[
    Decimal,
    Field(max_digits=12, decimal_places=2, gt=0, allow_inf_nan=False),
    PlainSerializer(lambda v: f"{v:.2f}", return_type=str, when_used="json"),
]
Hours = Annotated[
    Decimal,
    Field(max_digits=4, decimal_places=2, ge=0, le=24, allow_inf_nan=False),
    PlainSerializer(lambda v: f"{v:.2f}", return_type=str, when_used="json"),
]
PositiveHours = Annotated[
    Decimal,
    Field(max_digits=4, decimal_places=2, gt=0, le=24, allow_inf_nan=False),
    PlainSerializer(lambda v: f"{v:.2f}", return_type=str, when_used="json"),
]
# A computed amount (may be negative: an approved overspend).
Amount = Annotated[
    Decimal, PlainSerializer(lambda v: f"{v:.2f}", return_type=str, when_used="json")
]
Year = Annotated[int, Field(ge=2000, le=2100)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublicModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- activities -------------------------------------------------------------------------


class ActivityCreate(RequestModel):
    org_id: uuid.UUID
    type: ActivityType
    title: Name
    description: LongText = ""
    starts_at: datetime
    ends_at: datetime
    location: Name | None = None
    capacity: Annotated[int, Field(ge=1, le=100_000)] | None = None
    cost: Money | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "type": "party_lecture",
                    "title": "七月党课：社区党员的先锋作用",
                    "starts_at": "2026-07-01T19:00:00+08:00",
                    "ends_at": "2026-07-01T21:00:00+08:00",
                    "location": "如意社区活动室",
                    "capacity": 40,
                    "cost": "120.00",
                }
            ]
        },
    )

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("times need an offset (RFC 3339)")
        if self.ends_at < self.starts_at:
            raise ValueError("ends_at must not be before starts_at")
        return self


class ActivityUpdate(RequestModel):
    type: ActivityType | None = None
    title: Name | None = None
    description: LongText | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    location: Name | None = None
    capacity: Annotated[int, Field(ge=1, le=100_000)] | None = None
    cost: Money | None = None

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"location": "社区服务中心二楼"}]}
    )


class ActivityPublic(PublicModel):
    id: uuid.UUID
    org_id: uuid.UUID
    type: ActivityType
    title: str
    description: str
    starts_at: datetime
    ends_at: datetime
    location: str | None
    capacity: int | None
    cost: Money | None
    signed_up: int = 0
    version: int


class AttendanceEntry(RequestModel):
    member_id: uuid.UUID
    status: AttendanceStatus
    hours: Hours = Decimal("0")


class AttendancePublic(PublicModel):
    activity_id: uuid.UUID
    member_id: uuid.UUID
    status: AttendanceStatus
    hours: Hours


class AttendanceList(BaseModel):
    items: list[AttendancePublic]


class SignupPublic(PublicModel):
    activity_id: uuid.UUID
    member_id: uuid.UUID
    signed_up_at: datetime


# --- talks ------------------------------------------------------------------------------


class TalkCreate(RequestModel):
    member_id: uuid.UUID
    held_on: date
    talker: Short
    topic: Name
    notes: Notes | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "member_id": "5b1f0e4e-2d7a-4c1e-b1a8-6f3f0a9d2c41",
                    "held_on": "2026-03-12",
                    "talker": "李书记",
                    "topic": "再就业与思想状况",
                    "notes": "下岗后情绪低落，已介绍到公交公司面试。",
                }
            ]
        },
    )


class TalkPublic(PublicModel):
    """A talk as lists show it: never the notes."""

    id: uuid.UUID
    member_id: uuid.UUID
    held_on: date
    talker: str
    topic: str
    has_notes: bool


class TalkDetail(TalkPublic):
    """`GET /talks/{id}`: the notes for admins and the member's own org admins (audited);
    null for anyone else."""

    notes: str | None = None


# --- service hours ----------------------------------------------------------------------


class ServiceHoursCreate(RequestModel):
    member_id: uuid.UUID | None = Field(default=None, description="Defaults to the calling member.")
    on: date
    hours: PositiveHours
    role: Short | None = None
    activity_id: uuid.UUID | None = None
    description: LongText = ""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "on": "2026-05-04",
                    "hours": "2.50",
                    "role": "卫生保洁员",
                    "description": "楼道清洁",
                }
            ]
        },
    )


class ServiceHoursPublic(PublicModel):
    id: uuid.UUID
    member_id: uuid.UUID
    org_id: uuid.UUID | None
    on: date
    hours: Hours
    role: str | None
    activity_id: uuid.UUID | None
    help_request_id: uuid.UUID | None
    description: str
    verified: bool
    verified_at: datetime | None


# --- programs, pledges, role assignments -------------------------------------------------


class ProgramItem(RequestModel):
    n: Annotated[int, Field(ge=1, le=50)]
    title: Name
    title_zh: Name | None = None


class ProgramCreate(RequestModel):
    org_id: uuid.UUID
    code: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{2,64}$")]
    name: Name
    kind: ProgramKind
    items: Annotated[list[ProgramItem], Field(min_length=1, max_length=50)]

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "code": "three_helps",
                    "name": "三帮",
                    "kind": "pledge",
                    "items": [
                        {"n": 1, "title": "help one elder", "title_zh": "帮一位老人"},
                        {"n": 2, "title": "help one student", "title_zh": "帮一名学生"},
                    ],
                }
            ]
        },
    )

    @model_validator(mode="after")
    def _numbered(self) -> Self:
        if sorted(i.n for i in self.items) != list(range(1, len(self.items) + 1)):
            raise ValueError("items must be numbered 1..N without gaps or repeats")
        return self


class ProgramItemPublic(BaseModel):
    n: int
    title: str
    title_zh: str | None = None


class ProgramPublic(PublicModel):
    id: uuid.UUID
    org_id: uuid.UUID | None = Field(description="null: a system template.")
    code: str
    name: str
    kind: ProgramKind
    items: list[ProgramItemPublic]
    adopted_by: list[uuid.UUID] = Field(
        default_factory=list, description="The orgs in your scope that adopted it."
    )


class ProgramAdopt(RequestModel):
    org_id: uuid.UUID

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11"}]},
    )


class PledgeItemDone(RequestModel):
    evidence_type: EvidenceType
    evidence_id: uuid.UUID
    done_on: date | None = None
    program_id: uuid.UUID | None = Field(
        default=None, description='The pledge program; the "ten ones" when omitted.'
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "evidence_type": "service_hours",
                    "evidence_id": "6f2d0c2e-9a1b-4f3e-8d7c-1a2b3c4d5e6f",
                    "done_on": "2026-05-04",
                }
            ]
        },
    )


class PledgeItemPublic(BaseModel):
    n: int
    title: str
    title_zh: str | None = None
    done: bool
    done_on: date | None = None
    evidence_type: EvidenceType | None = None
    evidence_id: uuid.UUID | None = None


class PledgePublic(BaseModel):
    member_id: uuid.UUID
    year: int
    program_id: uuid.UUID
    program: str
    items: list[PledgeItemPublic]
    done: int
    total: int


class RoleAssignmentCreate(RequestModel):
    member_id: uuid.UUID
    org_id: uuid.UUID
    kind: AssignmentKind
    role: Short
    program_id: uuid.UUID | None = None
    layer: Layer | None = None
    started_on: date

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "member_id": "5b1f0e4e-2d7a-4c1e-b1a8-6f3f0a9d2c41",
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "kind": "role",
                    "role": "民事调解员",
                    "program_id": "0f1e0000-0000-4000-8000-000000000008",
                    "started_on": "2026-01-01",
                }
            ]
        },
    )


class RoleAssignmentEnd(RequestModel):
    ended_on: date

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"ended_on": "2026-12-31"}]}
    )


class RoleAssignmentPublic(PublicModel):
    id: uuid.UUID
    member_id: uuid.UUID
    org_id: uuid.UUID
    kind: AssignmentKind
    role: str
    program_id: uuid.UUID | None
    layer: Layer | None
    started_on: date
    ended_on: date | None


# --- points -----------------------------------------------------------------------------


class PointsRuleSet(RequestModel):
    org_id: uuid.UUID
    source: PointsSource
    activity_type: ActivityType | None = None
    points: Annotated[int, Field(ge=0, le=1000)]

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "source": "activity",
                    "activity_type": "patrol",
                    "points": 6,
                }
            ]
        },
    )

    @model_validator(mode="after")
    def _type_for_activity(self) -> Self:
        if (self.source is PointsSource.activity) != (self.activity_type is not None):
            raise ValueError("activity rules name an activity_type; service_hour rules do not")
        return self


class PointsRulePublic(BaseModel):
    source: PointsSource
    activity_type: ActivityType | None
    points: int
    org_id: uuid.UUID | None = Field(description="null: the system default applies.")


class PointsEntry(PublicModel):
    id: int
    year: int
    points: int
    reason: str
    source_id: uuid.UUID | None
    note: str | None
    created_at: datetime


class MemberPoints(BaseModel):
    member_id: uuid.UUID
    balance: int
    year: int | None = None
    earned_in_year: int | None = None
    entries: list[PointsEntry]


class RedemptionCreate(RequestModel):
    reward: Name = Field(description="The material reward given (the report's recommendation).")
    points: Annotated[int, Field(ge=1, le=100_000)]

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reward": "大米一袋", "points": 20}]},
    )


class LeaderboardRow(BaseModel):
    rank: int
    member_id: uuid.UUID
    name: str
    points: int


class Leaderboard(BaseModel):
    org_id: uuid.UUID
    year: int
    items: list[LeaderboardRow]


# --- help requests ----------------------------------------------------------------------


class HelpRequestCreate(RequestModel):
    org_id: uuid.UUID
    building_id: uuid.UUID | None = None
    title: Name
    description: LongText = ""
    needed_skills: Annotated[list[Skill], Field(max_length=20)] = []
    resident_name: Short | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "title": "厨房水管漏水",
                    "needed_skills": ["水电维修"],
                    "resident_name": "张阿姨",
                }
            ]
        },
    )


class HelpRequestPublic(PublicModel):
    id: uuid.UUID
    org_id: uuid.UUID
    building_id: uuid.UUID | None
    title: str
    description: str
    needed_skills: list[str]
    resident_name: str | None
    status: HelpStatus
    member_id: uuid.UUID | None
    hours: Hours | None
    created_at: datetime


class HelpAssign(RequestModel):
    member_id: uuid.UUID

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"member_id": "5b1f0e4e-2d7a-4c1e-b1a8-6f3f0a9d2c41"}]},
    )


class HelpComplete(RequestModel):
    hours: PositiveHours
    on: date | None = None

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"hours": "1.50"}]})


class Candidate(BaseModel):
    member_id: uuid.UUID
    name: str
    score: int
    reasons: list[str]


class CandidateList(BaseModel):
    items: list[Candidate]


# --- funds ------------------------------------------------------------------------------


class AllocationCreate(RequestModel):
    org_id: uuid.UUID
    year: Year
    rate_per_member: Annotated[
        Decimal, Field(max_digits=8, decimal_places=2, ge=0, le=10_000, allow_inf_nan=False)
    ]

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "year": 2026,
                    "rate_per_member": "50.00",
                }
            ]
        },
    )


class AllocationPublic(PublicModel):
    id: uuid.UUID
    org_id: uuid.UUID
    year: int
    rate_per_member: Money
    member_count: int
    amount: Money


class ExpenseCreate(RequestModel):
    org_id: uuid.UUID
    year: Year
    amount: PositiveMoney
    purpose: Name
    activity_id: uuid.UUID | None = None
    approved_overspend: bool = Field(
        default=False,
        description="An org admin's explicit approval to go below zero (recorded).",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "year": 2026,
                    "amount": "120.00",
                    "purpose": "党课资料印刷",
                }
            ]
        },
    )


class ExpensePublic(PublicModel):
    id: uuid.UUID
    allocation_id: uuid.UUID
    org_id: uuid.UUID
    year: int
    amount: Money
    purpose: str
    activity_id: uuid.UUID | None
    approved_overspend: bool
    created_at: datetime


class FundSummary(BaseModel):
    org_id: uuid.UUID
    year: int
    member_count: int
    allocated: Money
    spent: Amount
    balance: Amount
    per_member: Money = Field(description="Allocated per member (the report's 10–20, or 50).")


# --- training ---------------------------------------------------------------------------


class TrainingSessionCreate(RequestModel):
    org_id: uuid.UUID
    title: Name
    held_on: date
    hours: Hours = Decimal("0")
    member_ids: Annotated[list[uuid.UUID], Field(max_length=1000)] = []

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "org_id": "0b7e3a52-5a1f-4c55-9b0e-9a3f4f6f1c11",
                    "title": "社区党务工作者轮训",
                    "held_on": "2026-04-20",
                    "hours": "6.00",
                    "member_ids": ["5b1f0e4e-2d7a-4c1e-b1a8-6f3f0a9d2c41"],
                }
            ]
        },
    )


class TrainingSessionPublic(PublicModel):
    id: uuid.UUID
    org_id: uuid.UUID
    title: str
    held_on: date
    hours: Hours
    member_ids: list[uuid.UUID]


class TrainingCoverage(BaseModel):
    org_id: uuid.UUID
    as_of: date
    party_workers: int
    trained_within_three_years: int
    coverage: float | None = Field(description="Share in [0, 1]; null with no party workers.")


# --- statistics -------------------------------------------------------------------------


class BandCount(BaseModel):
    count: int
    share: float | None = Field(description="Fraction of the total, 4 places; null if 0.")


class PartyWorkerBands(BaseModel):
    total: int
    by_age_band: dict[str, BandCount] = Field(
        description="Age at 31 December of the year (today for the current year)."
    )
    by_education_band: dict[str, BandCount]


class Stats(BaseModel):
    org_id: uuid.UUID
    year: int
    members: int
    activities_by_type: dict[str, int]
    activities: int
    attendance_rate: float | None
    organizational_life_attendance_rate: float | None
    talks: int
    service_hours_verified: Amount
    service_hours_entries: int
    pledge_items_done: int
    pledge_completion: float | None
    points_awarded: int
    funds_allocated: Money
    funds_spent: Money
    funds_per_member: Money | None
    training_coverage: float | None
    party_workers: PartyWorkerBands
