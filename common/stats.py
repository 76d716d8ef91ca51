"""Bands and breakdowns for the report figures, shared by the services that count members
(registry: members; activities: party workers) and the gateway that composes the report.

A breakdown maps every known value (zero included) and `unknown` to `{count, share}`;
`share` is count / total as a fraction rounded to 4 places (null when the total is 0) and
shares are never forced to sum to 1. Ages are counted at 31 December of the year, or today
for the current (or a future) year."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from sqlalchemy import case, extract, func, literal

UNKNOWN = "unknown"
AGE_BANDS = ("le_35", "36_45", "46_60", "gt_60")
EDUCATION_BANDS = ("junior_high_or_below", "senior_high", "college_or_above")
COLLEGE_OR_ABOVE = ("college", "bachelor", "postgraduate")


def share(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def breakdown(counts: Mapping[str, int], values: Iterable[str], total: int) -> dict[str, Any]:
    """Every value in `values` (zero included), then `unknown`: anything else, nulls too."""
    known = list(values)
    out = {v: counts.get(v, 0) for v in known}
    out[UNKNOWN] = sum(n for k, n in counts.items() if k not in known)
    return {k: {"count": n, "share": share(n, total)} for k, n in out.items()}


def age_as_of(year: int, today: date | None = None) -> date:
    """31 December of `year`, or today when that is still to come."""
    return min(date(year, 12, 31), today or date.today())


def age_band(birth: Any, as_of: date) -> Any:
    """SQL: the age band of a birth-date column at `as_of` (`unknown` when null)."""
    age = extract("year", func.age(literal(as_of), birth))
    return case(
        (birth.is_(None), literal(UNKNOWN)),
        (age <= 35, literal("le_35")),
        (age <= 45, literal("36_45")),
        (age <= 60, literal("46_60")),
        else_=literal("gt_60"),
    )


def education_band(education: Any) -> Any:
    """SQL: the education band of an education column (`unknown` when null)."""
    return case(
        (education == "junior_high_or_below", literal("junior_high_or_below")),
        (education == "senior_high", literal("senior_high")),
        (education.in_(COLLEGE_OR_ABOVE), literal("college_or_above")),
        else_=literal(UNKNOWN),
    )
