"""The registry's figures for reports: orgs and members of a subtree, and its transfers."""

from __future__ import annotations

import uuid
from datetime import date

from pydantic import BaseModel, Field


class Count(BaseModel):
    count: int
    share: float | None = Field(
        description="count / total as a fraction rounded to 4 places; null when total is 0."
    )


Breakdown = dict[str, Count]


class OrgFigures(BaseModel):
    total: int
    by_kind: Breakdown
    by_area_level: Breakdown


class MemberFigures(BaseModel):
    total: int
    by_category: Breakdown
    by_relation: Breakdown
    by_age_band: Breakdown
    by_education_band: Breakdown


class TransferFigures(BaseModel):
    transfers_in: int = Field(description="Completed in the year into the subtree from outside.")
    transfers_out: int = Field(description="Completed in the year out of the subtree.")


class RegistryStats(BaseModel):
    org_id: uuid.UUID
    year: int
    age_as_of: date = Field(
        description="Ages are counted at this date: 31 December of the year, or today for "
        "the current year."
    )
    orgs: OrgFigures
    members: MemberFigures
    transfers: TransferFigures
