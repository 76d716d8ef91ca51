"""The report's shape (API.md, "Reports"); a section is null when its source did not answer
(see `incomplete`)."""

from __future__ import annotations

import uuid
from datetime import date

from pydantic import BaseModel, Field


class Count(BaseModel):
    count: int
    share: float | None = Field(description="Fraction of the total, 4 places; null if it is 0.")


Breakdown = dict[str, Count]


class Orgs(BaseModel):
    total: int
    by_kind: Breakdown
    by_area_level: Breakdown


class Members(BaseModel):
    total: int = Field(description="Enrolled in the subtree or residing in it, each once.")
    by_category: Breakdown
    by_relation: Breakdown
    by_age_band: Breakdown = Field(description="`le_35`, `36_45`, `46_60`, `gt_60`, `unknown`.")
    by_education_band: Breakdown = Field(
        description="`junior_high_or_below`, `senior_high`, `college_or_above`, `unknown`."
    )


class Transfers(BaseModel):
    in_: int = Field(alias="in", serialization_alias="in")
    out: int


class Flows(BaseModel):
    inflow: int | None = Field(description="Mobile members who came in during the year.")
    outflow: int | None = Field(description="Mobile members who went out during the year.")
    transfers: Transfers | None = Field(
        description="Transfers of organizational relation completed in the year."
    )


class DualManagement(BaseModel):
    links: int
    reported: int
    report_rate: float | None


class Mobile(BaseModel):
    by_status: Breakdown


class Activities(BaseModel):
    total: int
    by_type: Breakdown
    attendance_rate: float | None
    organizational_life_attendance_rate: float | None


class Pledges(BaseModel):
    items_done: int
    completion_rate: float | None


class PartyWorkers(BaseModel):
    total: int
    by_age_band: Breakdown
    by_education_band: Breakdown


class Funds(BaseModel):
    allocated: str = Field(description="Yuan, a decimal string with 2 places.")
    spent: str
    per_member: str | None


class Report(BaseModel):
    org_id: uuid.UUID
    year: int
    age_as_of: date | None = Field(description="Ages are counted at this date.")
    orgs: Orgs | None
    members: Members | None
    flows: Flows | None
    dual_management: DualManagement | None
    mobile: Mobile | None
    activities: Activities | None
    talks: int | None
    service_hours: str | None = Field(description="Verified hours in the year, 2 places.")
    pledges: Pledges | None
    party_workers: PartyWorkers | None
    training_coverage: float | None
    funds: Funds | None
    incomplete: list[str] = Field(
        description="Services that did not answer: their sections are null."
    )
