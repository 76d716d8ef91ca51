"""Composes the report of an org subtree from each service's statistics, read concurrently
with the caller's own token (every service checks the scope itself):

- registry `GET /api/v1/registry/stats`: orgs, members, transfers;
- mobility `GET /api/v1/mobility/statistics`: flows, dual management, mobile members;
- activities `GET /api/v1/activities/stats`: activities, talks, hours, pledges, party
  workers, training, funds.

Failures: a 403 from any service is the report's 403; a 404 from the registry (the owner
of the tree) is the report's 404, and so is a 404 from every service that answered when
the registry did not. Any other failure of a service (down, timeout, an error) leaves its
sections null and names it in `incomplete`: a partial report rather than none. Only when
no service answers is the report a 503 naming them.

Figures: every `by_*` maps a value to `{count, share}` and has `unknown`; shares are
fractions of the breakdown's total rounded to 4 places (null when the total is 0), never
forced to sum to 1. Money and hours are decimal strings with 2 places, as the services
give them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from common.context import request_id_var
from common.errors import Forbidden, NotFound, ServiceUnavailable
from common.stats import UNKNOWN, breakdown

log = logging.getLogger("lianxin.gateway.reports")

SOURCES: dict[str, str] = {
    "registry": "/api/v1/registry/stats",
    "mobility": "/api/v1/mobility/statistics",
    "activities": "/api/v1/activities/stats",
}


@dataclass(frozen=True)
class _Answer:
    status: int | None  # None: no answer at all
    body: Any = None


class ReportUnavailable(ServiceUnavailable):
    title = "Report sources unavailable"


class StatsSources:
    """Reads the services' statistics through the gateway's pooled upstream client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        upstreams: Mapping[str, str],
        *,
        authorization: str,
        timeout: httpx.Timeout,
    ) -> None:
        self._http = http
        self._upstreams = upstreams
        self._authorization = authorization
        self._timeout = timeout

    async def fetch(self, service: str, *, org_id: uuid.UUID, year: int) -> _Answer:
        headers = {"authorization": self._authorization, "accept": "application/json"}
        rid = request_id_var.get()
        if rid:
            headers["x-request-id"] = rid
        url = httpx.URL(self._upstreams[service]).join(SOURCES[service])
        try:
            response = await self._http.get(
                url,
                params={"org_id": str(org_id), "year": str(year)},
                headers=headers,
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            log.warning("report source %s unavailable: %s", service, type(exc).__name__)
            return _Answer(None)
        if response.status_code != 200:
            log.warning("report source %s answered %d", service, response.status_code)
            return _Answer(response.status_code)
        try:
            return _Answer(200, response.json())
        except ValueError:
            log.warning("report source %s answered something else than JSON", service)
            return _Answer(None)


def _counts(mapping: Mapping[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in mapping.items()}


def _with_unknown(by: Mapping[str, Any]) -> dict[str, Any]:
    """A service's `{value: {count, share}}` with `unknown`, shares by the same rule."""
    counts = {k: int(v["count"]) for k, v in by.items()}
    return breakdown(counts, [k for k in counts if k != UNKNOWN], sum(counts.values()))


def _registry_sections(data: Mapping[str, Any] | None) -> dict[str, Any]:
    if data is None:
        return {"orgs": None, "members": None, "transfers": None}
    orgs, members = data["orgs"], data["members"]
    return {
        "age_as_of": data["age_as_of"],
        "orgs": {
            "total": orgs["total"],
            "by_kind": orgs["by_kind"],
            "by_area_level": orgs["by_area_level"],
        },
        "members": {
            "total": members["total"],
            "by_category": members["by_category"],
            "by_relation": members["by_relation"],
            "by_age_band": members["by_age_band"],
            "by_education_band": members["by_education_band"],
        },
        "transfers": {
            "in": data["transfers"]["transfers_in"],
            "out": data["transfers"]["transfers_out"],
        },
    }


def _mobility_sections(data: Mapping[str, Any] | None) -> dict[str, Any]:
    if data is None:
        return {"flows": None, "dual_management": None, "mobile": None}
    dm = data["dual_management"]
    return {
        "flows": {"inflow": int(data["flows"]["inflow"]), "outflow": int(data["flows"]["outflow"])},
        "dual_management": {
            "links": int(dm["links"]),
            "reported": int(dm["reported"]),
            "report_rate": dm["report_rate"],
        },
        "mobile": {"by_status": _with_unknown(data["mobile"]["by_status"])},
    }


def _activities_sections(data: Mapping[str, Any] | None) -> dict[str, Any]:
    if data is None:
        return dict.fromkeys(
            (
                "activities",
                "talks",
                "service_hours",
                "pledges",
                "party_workers",
                "training_coverage",
                "funds",
            )
        )
    by_type = _counts(data["activities_by_type"])
    total = sum(by_type.values())
    workers = data["party_workers"]
    return {
        "activities": {
            "total": total,
            # Every type held in the year; a type not held is not listed.
            "by_type": breakdown(by_type, sorted(by_type), total),
            "attendance_rate": data["attendance_rate"],
            "organizational_life_attendance_rate": data["organizational_life_attendance_rate"],
        },
        "talks": int(data["talks"]),
        "service_hours": data["service_hours_verified"],
        "pledges": {
            "items_done": int(data["pledge_items_done"]),
            "completion_rate": data["pledge_completion"],
        },
        "party_workers": {
            "total": int(workers["total"]),
            "by_age_band": workers["by_age_band"],
            "by_education_band": workers["by_education_band"],
        },
        "training_coverage": data["training_coverage"],
        "funds": {
            "allocated": data["funds_allocated"],
            "spent": data["funds_spent"],
            "per_member": data["funds_per_member"],
        },
    }


def _check_refusals(answers: Mapping[str, _Answer]) -> None:
    if any(a.status == 403 for a in answers.values()):
        raise Forbidden("Your role may not read reports.")
    registry = answers["registry"]
    answered = [a for a in answers.values() if a.status is not None]
    if registry.status == 404 or (
        registry.status is None and answered and all(a.status == 404 for a in answered)
    ):
        raise NotFound("No such organization in your scope.")


async def compose(sources: StatsSources, *, org_id: uuid.UUID, year: int) -> dict[str, Any]:
    names = list(SOURCES)
    fetched = await asyncio.gather(
        *(sources.fetch(name, org_id=org_id, year=year) for name in names)
    )
    answers = dict(zip(names, fetched, strict=True))
    _check_refusals(answers)
    incomplete = [name for name, a in answers.items() if a.status != 200]
    if len(incomplete) == len(names):
        raise ReportUnavailable(
            f"No statistics could be read from {', '.join(incomplete)}.",
            extra={"services": incomplete},
        )

    def ok(name: str) -> Mapping[str, Any] | None:
        a = answers[name]
        return a.body if a.status == 200 else None

    registry = _registry_sections(ok("registry"))
    mobility = _mobility_sections(ok("mobility"))
    report: dict[str, Any] = {
        "org_id": org_id,
        "year": year,
        "age_as_of": registry.pop("age_as_of", None),
        **{k: registry[k] for k in ("orgs", "members")},
        "flows": None
        if mobility["flows"] is None and registry["transfers"] is None
        else {
            **(mobility["flows"] or {"inflow": None, "outflow": None}),
            "transfers": registry["transfers"],
        },
        "dual_management": mobility["dual_management"],
        "mobile": mobility["mobile"],
        **_activities_sections(ok("activities")),
        "incomplete": incomplete,
    }
    return report
