"""`GET /api/v1/reports/orgs/{org_id}`: every figure of the hand-made city (see `world.py`)
counted by hand, for the city and for street A; the xlsx and HTML forms hold the same
numbers; scope and roles; a service that does not answer."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.gateway.conftest import ServiceRouter
from tests.reports.world import World, build_world

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]
REPORT = "/api/v1/reports/orgs/{}"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def c(count: int, total: int) -> dict[str, Any]:
    """A `{count, share}` by the documented rule: a fraction rounded to 4 places."""
    return {"count": count, "share": round(count / total, 4) if total else None}


def by(total: int, **counts: int) -> dict[str, dict[str, Any]]:
    return {k.removeprefix("_"): c(n, total) for k, n in counts.items()}


KINDS = ("committee", "working_committee", "general_branch", "branch", "group")
LEVELS = ("city", "county", "street", "town", "community", "building", "work_unit")
CATEGORIES = (
    "community_staff",
    "new_economic_org",
    "retired",
    "laid_off",
    "migrant_worker",
    "rural_to_urban",
    "in_service_resident",
    "retired_unit_resident",
    "other",
)


def full(values: tuple[str, ...], total: int, **counts: int) -> dict[str, dict[str, Any]]:
    """Every value listed (zeros included) plus `unknown`."""
    out = {v: c(counts.get(v, 0), total) for v in values}
    out["unknown"] = c(counts.get("unknown", 0), total)
    return out


def age(total: int, le_35: int, b36_45: int, b46_60: int, gt_60: int, unknown: int = 0) -> Any:
    return {
        "le_35": c(le_35, total),
        "36_45": c(b36_45, total),
        "46_60": c(b46_60, total),
        "gt_60": c(gt_60, total),
        "unknown": c(unknown, total),
    }


def edu(total: int, junior: int, senior: int, college: int, unknown: int) -> Any:
    return {
        "junior_high_or_below": c(junior, total),
        "senior_high": c(senior, total),
        "college_or_above": c(college, total),
        "unknown": c(unknown, total),
    }


@pytest.fixture
async def world(admin_client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]) -> World:
    return await build_world(admin_client, db)


async def report_of(client: httpx.AsyncClient, w: World, org: str, **params: Any) -> Any:
    r = await client.get(REPORT.format(w.orgs[org]), params={"year": w.year, **params})
    assert r.status_code == 200, r.text
    return r.json()


class TestCityReport:
    async def test_every_figure_of_the_city_by_hand(
        self, admin_client: httpx.AsyncClient, world: World
    ) -> None:
        r = await report_of(admin_client, world, "city")
        assert r["org_id"] == world.orgs["city"] and r["year"] == world.year
        assert r["incomplete"] == []
        # 7 orgs: city; streets A, B; A1, A2, B1; the group A1g.
        assert r["orgs"] == {
            "total": 7,
            "by_kind": full(
                KINDS, 7, committee=1, working_committee=2, general_branch=1, branch=2, group=1
            ),
            "by_area_level": full(LEVELS, 7, city=1, street=2, community=3, building=1),
        }
        assert r["orgs"]["by_kind"]["working_committee"]["share"] == 0.2857
        # 9 members: m1 m2 m3 m4 m5 m7 r1 r2 r3 (m8 transferred out; r1, r2 once each).
        members = r["members"]
        assert members["total"] == 9
        assert members["by_category"] == full(
            CATEGORIES,
            9,
            retired=2,
            community_staff=1,
            laid_off=1,
            migrant_worker=1,
            other=1,
            retired_unit_resident=1,
            in_service_resident=2,
        )
        assert members["by_relation"] == by(9, enrolled=6, resident=3, unknown=0)
        # ≤35: m2 m5; 36–45: m3 m7 r2; 46–60: m4 r3; >60: m1 r1.
        assert members["by_age_band"] == age(9, 2, 3, 2, 2)
        # junior: m1 r2; senior: m3 m7; college+: m2 m5 r1 r3; unknown: m4.
        assert members["by_education_band"] == edu(9, 2, 2, 4, 1)
        assert members["by_education_band"]["college_or_above"]["share"] == 0.4444
        # Mobile m5 went out; transfers: m7 inside the city, m8 out of it.
        assert r["flows"] == {"inflow": 0, "outflow": 1, "transfers": {"in": 0, "out": 1}}
        assert r["dual_management"] == {"links": 1, "reported": 1, "report_rate": 1.0}
        assert r["mobile"]["by_status"]["active"] == c(1, 1)
        assert r["mobile"]["by_status"]["unknown"] == c(0, 1)
        assert sum(v["count"] for v in r["mobile"]["by_status"].values()) == 1
        assert r["activities"] == {
            "total": 2,
            "by_type": by(2, branch_assembly=1, volunteer_service=1, unknown=0),
            # m1 present, m2 absent, m5 present.
            "attendance_rate": 0.6667,
            "organizational_life_attendance_rate": 0.5,
        }
        assert r["talks"] == 1
        assert r["service_hours"] == "2.50"  # m5's hour is not verified
        # No pledge done; 8 enrolled live members in activities' view (m1 m2 m3 m4 m5 m7
        # r1 r2: residents without an org in the city are not its enrolled members).
        assert r["pledges"] == {"items_done": 0, "completion_rate": 0.0}
        # Party workers m2 (30, bachelor), m4 (50, unknown), m5 (33, college).
        assert r["party_workers"] == {
            "total": 3,
            "by_age_band": age(3, 2, 0, 1, 0),
            "by_education_band": edu(3, 0, 0, 2, 1),
        }
        assert r["training_coverage"] == 0.3333  # m2 of 3
        assert r["funds"] == {"allocated": "60.00", "spent": "15.00", "per_member": "7.50"}

    async def test_a_future_year_is_empty_but_complete(
        self, admin_client: httpx.AsyncClient, world: World
    ) -> None:
        r = await report_of(admin_client, world, "city", year=world.year + 1)
        assert r["flows"] == {"inflow": 0, "outflow": 0, "transfers": {"in": 0, "out": 0}}
        assert r["activities"]["total"] == 0 and r["activities"]["attendance_rate"] is None
        assert r["talks"] == 0 and r["members"]["total"] == 9


class TestStreetReport:
    async def test_every_figure_of_street_a_by_hand(self, as_user: AsUser, world: World) -> None:
        viewer = await as_user("org_viewer", org_id=world.orgs["A"])
        r = await report_of(viewer, world, "A")
        assert r["incomplete"] == []
        # A, A1, A1g, A2.
        assert r["orgs"] == {
            "total": 4,
            "by_kind": full(KINDS, 4, working_committee=1, general_branch=1, branch=1, group=1),
            "by_area_level": full(LEVELS, 4, street=1, community=2, building=1),
        }
        # m1 m2 (A1), m3 m4 m7 (A2), r1 (A1, lives in A2: once), r2 (A2, lives in B1).
        members = r["members"]
        assert members["total"] == 7
        assert members["by_category"] == full(
            CATEGORIES,
            7,
            retired=2,
            community_staff=1,
            laid_off=1,
            other=1,
            retired_unit_resident=1,
            in_service_resident=1,
        )
        assert members["by_relation"] == by(7, enrolled=5, resident=2, unknown=0)
        # ≤35: m2; 36–45: m3 m7 r2; 46–60: m4; >60: m1 r1.
        assert members["by_age_band"] == age(7, 1, 3, 1, 2)
        assert members["by_age_band"]["36_45"]["share"] == 0.4286
        # junior: m1 r2; senior: m3 m7; college+: m2 r1; unknown: m4.
        assert members["by_education_band"] == edu(7, 2, 2, 2, 1)
        # m7 came in from street B, m8 went out of the system; no mobile member here.
        assert r["flows"] == {"inflow": 0, "outflow": 0, "transfers": {"in": 1, "out": 1}}
        assert r["dual_management"] == {"links": 0, "reported": 0, "report_rate": None}
        assert all(v == c(0, 0) for v in r["mobile"]["by_status"].values())
        assert "unknown" in r["mobile"]["by_status"]
        assert r["activities"] == {
            "total": 1,
            "by_type": by(1, branch_assembly=1, unknown=0),
            "attendance_rate": 0.5,
            "organizational_life_attendance_rate": 0.5,
        }
        assert r["talks"] == 1
        assert r["service_hours"] == "2.50"
        assert r["pledges"] == {"items_done": 0, "completion_rate": 0.0}
        assert r["party_workers"] == {
            "total": 2,
            "by_age_band": age(2, 1, 0, 1, 0),
            "by_education_band": edu(2, 0, 0, 1, 1),
        }
        assert r["training_coverage"] == 0.5
        # 60.00 over 7 enrolled (m1 m2 m3 m4 m7 r1 r2).
        assert r["funds"] == {"allocated": "60.00", "spent": "15.00", "per_member": "8.57"}

    async def test_a_resident_living_in_street_b_counts_there_too(
        self, admin_client: httpx.AsyncClient, world: World
    ) -> None:
        r = await report_of(admin_client, world, "B")
        # m5 (B1), r2 (enrolled in A2, lives in B1), r3 (lives in B1); m7 left for A2.
        assert r["members"]["total"] == 3
        assert r["members"]["by_relation"] == by(3, enrolled=1, resident=2, unknown=0)
        assert r["flows"] == {"inflow": 0, "outflow": 1, "transfers": {"in": 0, "out": 1}}


def sheet_figures(data: bytes) -> dict[str, dict[tuple[str, str], tuple[Any, Any]]]:
    wb = load_workbook(io.BytesIO(data), read_only=True)
    out: dict[str, dict[tuple[str, str], tuple[Any, Any]]] = {}
    for ws in wb.worksheets:
        if ws.title == "report":
            continue
        # Read-only sheets drop trailing empty cells: pad every row to the five columns.
        rows = [tuple(r) + (None,) * (5 - len(r)) for r in ws.iter_rows(values_only=True)]
        assert rows[0] == ("figure", "item", "名称", "count / value", "share")
        out[ws.title] = {(str(r[0]), str(r[1] or "")): (r[3], r[4]) for r in rows[1:]}
    wb.close()
    return out


def json_figures(section: str, value: Any) -> dict[tuple[str, str], tuple[Any, Any]]:
    """What the workbook must hold for a JSON section (money as numbers)."""

    def num(v: Any) -> Any:
        return float(v) if isinstance(v, str) else v

    if not isinstance(value, dict):
        return {(section, ""): (num(value), None)}
    out: dict[tuple[str, str], tuple[Any, Any]] = {}
    for key, figure in value.items():
        if isinstance(figure, dict):
            for item, v in figure.items():
                if isinstance(v, dict) and "count" in v:
                    out[(key, item)] = (v["count"], v["share"])
                else:
                    out[(key, item)] = (num(v), None)
        else:
            out[(key, "")] = (num(figure), None)
    return out


class TestWorkbook:
    async def test_xlsx_holds_the_same_numbers_as_the_json(
        self, admin_client: httpx.AsyncClient, world: World
    ) -> None:
        report = await report_of(admin_client, world, "city")
        r = await admin_client.get(
            REPORT.format(world.orgs["city"]), params={"year": world.year, "format": "xlsx"}
        )
        assert r.status_code == 200
        assert r.headers["content-type"] == XLSX
        assert r.headers["content-disposition"].startswith("attachment; filename=")
        sheets = sheet_figures(r.content)
        sections = [k for k in report if k not in ("org_id", "year", "age_as_of", "incomplete")]
        assert list(sheets) == sections  # one sheet per section, in the JSON's order
        for section in sections:
            assert sheets[section] == json_figures(section, report[section]), section
        assert sheets["members"][("by_age_band", "36_45")] == (3, 0.3333)
        assert sheets["funds"][("allocated", "")] == (60.0, None)


class TestPrintable:
    async def test_html_has_the_figures_and_its_own_csp(
        self, admin_client: httpx.AsyncClient, world: World
    ) -> None:
        url = REPORT.format(world.orgs["A"])
        r = await admin_client.get(
            url, params={"year": world.year}, headers={"Accept": "text/html"}
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "style-src 'nonce-" in csp
        nonce = csp.split("'nonce-")[1].split("'")[0]
        page = r.text
        assert f'<style nonce="{nonce}">' in page
        assert "http://" not in page and "https://" not in page and "<script" not in page
        for text in ("党员", "按年龄段·36—45岁", "按文化程度·不详", "42.86%", "8.57", "60.00"):
            assert text in page, text
        same = await admin_client.get(url, params={"year": world.year, "format": "html"})
        assert same.status_code == 200 and "按组织类型" in same.text


class TestScope:
    async def test_org_roles_read_their_subtree_only(self, as_user: AsUser, world: World) -> None:
        admin_a = await as_user("org_admin", org_id=world.orgs["A"])
        assert (await report_of(admin_a, world, "A1"))["members"]["total"] == 3  # m1 m2 r1
        for other in ("city", "B", "B1"):
            r = await admin_a.get(REPORT.format(world.orgs[other]), params={"year": world.year})
            assert r.status_code == 404, other
            assert r.headers["content-type"] == "application/problem+json"

    async def test_members_and_auditors_are_refused(self, as_user: AsUser, world: World) -> None:
        member = await as_user("member", member_id=world.members["m1"])
        auditor = await as_user("auditor")
        for client in (member, auditor):
            r = await client.get(REPORT.format(world.orgs["A1"]), params={"year": world.year})
            assert r.status_code == 403
            assert r.headers["content-type"] == "application/problem+json"

    async def test_anonymous_is_401_and_a_bad_year_422(
        self, anon: httpx.AsyncClient, admin_client: httpx.AsyncClient, world: World
    ) -> None:
        assert (await anon.get(REPORT.format(world.orgs["A"]))).status_code == 401
        r = await admin_client.get(REPORT.format(world.orgs["A"]), params={"year": 1900})
        assert r.status_code == 422
        r = await admin_client.get(REPORT.format(world.orgs["A"]), params={"format": "pdf"})
        assert r.status_code == 422


class TestSourcesDown:
    async def test_a_service_down_gives_a_partial_report_naming_it(
        self, admin_client: httpx.AsyncClient, world: World, upstream: ServiceRouter
    ) -> None:
        upstream._transports.pop("activities")  # refused, like a stopped service
        r = await report_of(admin_client, world, "A")
        assert r["incomplete"] == ["activities"]
        assert r["members"]["total"] == 7 and r["flows"]["transfers"] == {"in": 1, "out": 1}
        for section in ("activities", "talks", "service_hours", "party_workers", "funds"):
            assert r[section] is None
        xlsx = await admin_client.get(
            REPORT.format(world.orgs["A"]), params={"year": world.year, "format": "xlsx"}
        )
        assert xlsx.status_code == 200

    async def test_no_service_answering_is_a_503_naming_them(
        self, admin_client: httpx.AsyncClient, world: World, upstream: ServiceRouter
    ) -> None:
        for name in ("registry", "mobility", "activities"):
            upstream._transports.pop(name)
        r = await admin_client.get(REPORT.format(world.orgs["A"]), params={"year": world.year})
        assert r.status_code == 503
        body = r.json()
        assert body["services"] == ["registry", "mobility", "activities"]
        assert "registry" in body["detail"]


STATS = "/api/v1/registry/stats"


class TestRegistryStats:
    """The registry's own figures (the report's first source) straight through the proxy."""

    async def test_scope_and_roles(
        self, admin_client: httpx.AsyncClient, as_user: AsUser, world: World
    ) -> None:
        viewer = await as_user("org_viewer", org_id=world.orgs["A"])
        mine = await viewer.get(STATS, params={"org_id": world.orgs["A2"], "year": world.year})
        assert mine.status_code == 200
        # m3 m4 m7 (A2), r1 (lives in A2), r2 (A2): r1 counts in A2 by residence.
        assert mine.json()["members"]["total"] == 5
        assert mine.json()["age_as_of"] == str(min(date(world.year, 12, 31), date.today()))
        other = await viewer.get(STATS, params={"org_id": world.orgs["B1"]})
        assert other.status_code == 404
        member = await as_user("member", member_id=world.members["m1"])
        auditor = await as_user("auditor")
        for client in (member, auditor):
            r = await client.get(STATS, params={"org_id": world.orgs["A1"]})
            assert r.status_code == 403
        assert (await admin_client.get(STATS)).status_code == 422  # org_id is required

    async def test_a_past_year_counts_ages_at_its_end(
        self, admin_client: httpx.AsyncClient, world: World
    ) -> None:
        # Ten years back every member was ten years younger: m2 (20), m5 (23), r2 (26),
        # m3 (30), m7 (35) ≤35; m4 (40), r3 (45) 36–45; r1 (52) 46–60; m1 (60) 46–60.
        r = await admin_client.get(
            STATS, params={"org_id": world.orgs["city"], "year": world.year - 10}
        )
        bands = {k: v["count"] for k, v in r.json()["members"]["by_age_band"].items()}
        assert bands == {"le_35": 5, "36_45": 2, "46_60": 2, "gt_60": 0, "unknown": 0}
        assert r.json()["transfers"] == {"transfers_in": 0, "transfers_out": 0}
