"""The demo city, loaded once into a database of its own, reproduces the survey's figures:
org counts exactly, shares within 0.1 percentage point, the year's flows exactly, and the
year's organizational life exactly as the plan decided it."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import create_engine, make_sessionmaker
from gateway.reports.composer import _activities_sections
from services.activities.models import ORGANIZATIONAL_LIFE
from services.activities.service.stats import stats as activities_stats
from services.mobility.service.alerts import statistics as mobility_statistics
from services.mobility.settings import MobilitySettings
from services.registry.service.stats import stats as registry_stats
from tests.pgutil import drop_database, fresh_database
from tools import migrate
from tools.demo import load, plan
from tools.demo.load import DEMO

YEAR = 2003
TOLERANCE = 0.001  # 0.1 percentage point


@dataclass
class Demo:
    url: str
    city_id: uuid.UUID
    seconds: float
    output: str
    meetings: list[plan.Meeting]


@pytest.fixture(scope="module")
def demo(server_url: str) -> Iterator[Demo]:
    url, name = fresh_database(server_url)
    try:
        migrate.upgrade_all(url)
        out = io.StringIO()
        loaded = asyncio.run(load(url, seed=2004, year=YEAR, out=out))
        assert loaded is not None
        yield Demo(url, loaded.city_id, loaded.seconds, out.getvalue(), loaded.plan.meetings)
    finally:
        drop_database(server_url, name)


@pytest.fixture
async def sm(demo: Demo) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(demo.url, pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def _rows(sm: async_sessionmaker[AsyncSession], sql: str, **params: Any) -> list[Any]:
    async with sm() as session:
        return list((await session.execute(text(sql), params)).all())


async def _scalar(sm: async_sessionmaker[AsyncSession], sql: str, **params: Any) -> Any:
    async with sm() as session:
        return (await session.execute(text(sql), params)).scalar_one()


def _close(count: int, total: int, expected: float) -> bool:
    return abs(count / total - expected) <= TOLERANCE


class TestOrganizations:
    async def test_towns_streets_and_communities(self, sm: Any) -> None:
        rows = await _rows(sm, "SELECT area_level, count(*) FROM registry.orgs GROUP BY area_level")
        levels = dict(rows)
        assert (levels["town"], levels["street"], levels["community"]) == (57, 17, 258)

    async def test_140_communities_are_urban(self, sm: Any) -> None:
        urban = await _scalar(
            sm,
            "SELECT count(*) FROM registry.orgs c WHERE c.area_level = 'community' AND EXISTS "
            "(SELECT 1 FROM registry.orgs s WHERE s.area_level = 'street' AND c.path <@ s.path)",
        )
        assert urban == 140

    async def test_232_community_party_orgs_by_kind(self, sm: Any) -> None:
        kinds = dict(
            await _rows(
                sm,
                "SELECT kind, count(*) FROM registry.orgs c WHERE c.area_level = 'community' "
                "GROUP BY kind",
            )
        )
        assert kinds == {"committee": 1, "general_branch": 63, "branch": 168, "group": 26}

    async def test_covered_communities_sit_under_a_party_org(self, sm: Any) -> None:
        parents = await _rows(
            sm,
            "SELECT p.area_level, p.kind FROM registry.orgs c "
            "JOIN registry.orgs p ON p.id = c.parent_id "
            "WHERE c.kind = 'group' AND c.area_level = 'community'",
        )
        assert len(parents) == 26
        assert {level for level, _ in parents} == {"community"}
        assert {kind for _, kind in parents} <= {"committee", "general_branch", "branch"}

    async def test_nanhetou_has_77_building_groups(self, sm: Any) -> None:
        groups = await _scalar(
            sm,
            "SELECT count(*) FROM registry.orgs g JOIN registry.orgs c ON c.id = g.parent_id "
            "WHERE c.name = '南河头社区党委' AND g.area_level = 'building' AND g.kind = 'group'",
        )
        assert groups == 77


class TestMembers:
    async def test_18165_members_each_with_a_valid_card(self, sm: Any) -> None:
        total = await _scalar(sm, "SELECT count(*) FROM registry.members m")
        assert total == plan.MEMBERS == 18_165

    async def test_retired_share(self, sm: Any) -> None:
        retired = await _scalar(
            sm, "SELECT count(*) FROM registry.members m WHERE category='retired'"
        )
        assert _close(retired, 18_165, 0.4509)
        assert _close(18_165 - retired, 18_165, 0.5491)

    async def test_age_bands_at_the_end_of_the_year(self, sm: Any) -> None:
        rows = await _rows(
            sm,
            "SELECT CASE WHEN a <= 35 THEN 'le_35' WHEN a <= 45 THEN '36_45' "
            "WHEN a <= 60 THEN '46_60' ELSE 'gt_60' END b, count(*) FROM (SELECT "
            "extract(year FROM age(DATE '2003-12-31', birth_date)) a FROM registry.members) m "
            "GROUP BY b",
        )
        bands = dict(rows)
        expected = {"le_35": 0.0976, "36_45": 0.1456, "46_60": 0.3071, "gt_60": 0.4509}
        for band, share in expected.items():
            assert _close(bands[band], 18_165, share), (band, bands[band])

    async def test_education_bands_with_the_unrecorded_apart(self, sm: Any) -> None:
        rows = await _rows(
            sm,
            "SELECT CASE WHEN education IN ('college','bachelor','postgraduate') THEN 'college' "
            "ELSE coalesce(education, 'unknown') END e, count(*) "
            "FROM registry.members m GROUP BY e",
        )
        bands = dict(rows)
        assert _close(bands["junior_high_or_below"], 18_165, 0.7333)
        assert _close(bands["senior_high"], 18_165, 0.1905)
        assert _close(bands["college"], 18_165, 0.0725)
        assert _close(bands["unknown"], 18_165, 1 - 0.9963)

    async def test_id_numbers_are_unique_and_agree_with_the_card(self, sm: Any) -> None:
        distinct = await _scalar(
            sm, "SELECT count(DISTINCT id_number_hash) FROM registry.members m"
        )
        assert distinct == 18_165
        people = plan.build(2004, YEAR).people
        assert all(p.id_number[6:14] == f"{p.birth_date:%Y%m%d}" for p in people)
        assert all((int(p.id_number[16]) % 2 == 1) == (p.gender == "male") for p in people)


class TestMobility:
    async def test_flows_of_the_year_exactly(self, sm: Any, demo: Demo) -> None:
        async with sm() as session:
            stats = await mobility_statistics(
                session, principal=DEMO, org_id=demo.city_id, year=YEAR, settings=MobilitySettings()
            )
        assert stats.flows == {"inflow": 76, "outflow": 264}

    async def test_ruyi_reports_above_90_percent(self, sm: Any, demo: Demo) -> None:
        ruyi = await _scalar(
            sm,
            "SELECT id FROM registry.orgs WHERE name LIKE '如意社区%' AND area_level = 'community'",
        )
        async with sm() as session:
            stats = await mobility_statistics(
                session, principal=DEMO, org_id=ruyi, year=YEAR, settings=MobilitySettings()
            )
        assert stats.dual_management["links"] >= 10
        assert stats.dual_management["report_rate"] > 0.9

    async def test_mobile_members_status_follows_their_cards(self, sm: Any) -> None:
        mobile = await _scalar(
            sm, "SELECT count(*) FROM registry.members m WHERE status IN ('mobile','lost_contact')"
        )
        active_cards = await _scalar(
            sm, "SELECT count(*) FROM mobility.mobile_cards WHERE status = 'active'"
        )
        assert mobile == active_cards > 0


class TestActivities:
    async def test_shuiyueting_held_188_talks_in_the_year(self, sm: Any) -> None:
        org = await _scalar(
            sm,
            "SELECT id FROM registry.orgs "
            "WHERE name LIKE '水月亭社区%' AND area_level = 'community'",
        )
        async with sm() as session:
            figures = await activities_stats(session, principal=DEMO, org_id=org, year=YEAR)
        assert figures["talks"] == 188

    async def test_funds_are_10_to_20_yuan_per_member(self, sm: Any, demo: Demo) -> None:
        rates = await _rows(
            sm, "SELECT rate_per_member FROM activities.fund_allocations WHERE year = 2003"
        )
        assert len(rates) == 232
        assert all(Decimal(10) <= r <= Decimal(20) for (r,) in rates)
        async with sm() as session:
            figures = await activities_stats(
                session, principal=DEMO, org_id=demo.city_id, year=YEAR
            )
        assert Decimal(10) <= figures["funds_per_member"] <= Decimal(20)
        assert 0 < figures["funds_spent"] < figures["funds_allocated"]

    async def test_party_workers_match_the_survey(self, sm: Any) -> None:
        rows = await _rows(
            sm,
            "SELECT extract(year FROM age(DATE '2003-12-31', m.birth_date)) AS age, m.education "
            "FROM activities.role_assignments r "
            "JOIN registry.members m ON m.id = r.member_id "
            "WHERE r.kind = 'party_worker' AND r.ended_on IS NULL",
        )
        total = len(rows)
        assert total == plan.WORKERS
        college = sum(e in ("college", "bachelor", "postgraduate") for _, e in rows)
        junior = sum(e == "junior_high_or_below" for _, e in rows)
        young = sum(a <= 35 for a, _ in rows)
        older = sum(a >= 45 for a, _ in rows)
        assert _close(college, total, 0.128) and _close(junior, total, 0.327)
        assert _close(young, total, 0.22) and _close(older, total, 0.427)

    async def test_service_hours_and_training(self, sm: Any, demo: Demo) -> None:
        async with sm() as session:
            figures = await activities_stats(
                session, principal=DEMO, org_id=demo.city_id, year=YEAR
            )
        assert figures["service_hours_verified"] > 0
        assert 0.5 < figures["training_coverage"] < 0.8


class TestOrganizationalLife:
    """The city report's activity figures are the plan's meetings, counted by hand here."""

    def test_every_community_party_org_holds_its_org_life(self, demo: Demo) -> None:
        held: dict[str, set[str]] = {}
        for m in demo.meetings:
            held.setdefault(m.org_code, set()).add(m.type)
        party = plan.build(2004, YEAR).communities
        codes = {c.code for c in party if c.kind != "group"}
        assert set(held) == codes and len(codes) == 232
        life = {"branch_committee", "party_lecture", "theme_day"}
        assert all(life <= types for types in held.values())
        urban = {c.code for c in party if c.kind != "group" and c.urban}
        assert {code for code, types in held.items() if "volunteer_service" in types} == urban
        assert plan.build(2004, YEAR).meetings == demo.meetings  # seeded, repeatable

    async def test_the_report_counts_the_planned_activities(self, sm: Any, demo: Demo) -> None:
        by_type: dict[str, int] = {}
        present = rows = life_present = life_rows = 0
        for m in demo.meetings:
            by_type[m.type] = by_type.get(m.type, 0) + 1
            here = sum(status == "present" for _, status in m.attendance)
            present, rows = present + here, rows + len(m.attendance)
            if m.type != "volunteer_service":
                life_present, life_rows = life_present + here, life_rows + len(m.attendance)
        total = len(demo.meetings)
        assert by_type == {
            "branch_committee": 232,
            "party_lecture": 232,
            "theme_day": 232,
            "volunteer_service": 140,
        }
        async with sm() as session:
            figures = await activities_stats(
                session, principal=DEMO, org_id=demo.city_id, year=YEAR
            )
        assert figures["activities_by_type"] == by_type
        assert figures["activities"] == total == 836
        assert figures["attendance_rate"] == round(present / rows, 4)
        assert figures["organizational_life_attendance_rate"] == round(life_present / life_rows, 4)
        assert 0.6 < figures["organizational_life_attendance_rate"] < 0.9
        # As the report composes them: counts and shares per type, no unknown.
        section = _activities_sections(figures)["activities"]
        assert section["total"] == total
        assert section["by_type"] == {
            **{t: {"count": n, "share": round(n / total, 4)} for t, n in sorted(by_type.items())},
            "unknown": {"count": 0, "share": 0.0},
        }
        assert section["attendance_rate"] == figures["attendance_rate"]
        assert plan.org_life_figures(demo.meetings, ORGANIZATIONAL_LIFE) == {
            **{k: figures[k] for k in ("activities_by_type", "activities", "attendance_rate")},
            "organizational_life_attendance_rate": figures["organizational_life_attendance_rate"],
            "attendance_rows": rows,
            "volunteer_hours": sum(
                (
                    m.hours * sum(s == "present" for _, s in m.attendance)
                    for m in demo.meetings
                    if m.type == "volunteer_service"
                ),
                Decimal(0),
            ),
            "volunteer_entries": sum(
                sum(s == "present" for _, s in m.attendance)
                for m in demo.meetings
                if m.type == "volunteer_service"
            ),
        }

    async def test_attendance_rows_by_status_and_hours(self, sm: Any, demo: Demo) -> None:
        expected: dict[str, list[Decimal]] = {}
        for m in demo.meetings:
            for _, status in m.attendance:
                hours = m.hours if status == "present" else Decimal(0)
                row = expected.setdefault(status, [Decimal(0), Decimal(0)])
                row[0] += 1
                row[1] += hours
        rows = await _rows(
            sm,
            "SELECT a.status, count(*), sum(a.hours) FROM activities.attendance a "
            "JOIN activities.activities v ON v.id = a.activity_id "
            "WHERE extract(year FROM v.starts_at) = :year GROUP BY a.status",
            year=YEAR,
        )
        assert {s: [Decimal(n), h] for s, n, h in rows} == expected
        assert set(expected) == {"present", "absent", "excused"}

    async def test_volunteer_service_hours_are_logged_and_verified(
        self, sm: Any, demo: Demo
    ) -> None:
        service = [m for m in demo.meetings if m.type == "volunteer_service"]
        entries = sum(sum(s == "present" for _, s in m.attendance) for m in service)
        hours = sum(
            (m.hours * sum(s == "present" for _, s in m.attendance) for m in service), Decimal(0)
        )
        count, total = (
            await _rows(
                sm,
                "SELECT count(*), sum(h.hours) FROM activities.service_hours h "
                "JOIN activities.activities v ON v.id = h.activity_id "
                "WHERE h.verified AND v.type = 'volunteer_service'",
            )
        )[0]
        assert (count, total) == (entries, hours) and entries > 0
        async with sm() as session:
            figures = await activities_stats(
                session, principal=DEMO, org_id=demo.city_id, year=YEAR
            )
        assert figures["service_hours_verified"] >= hours


class TestCityReport:
    """The figures as the report composes them (the registry's and activities' own
    statistics, the shared bands)."""

    async def test_registry_statistics(self, sm: Any, demo: Demo) -> None:
        async with sm() as session:
            figures = await registry_stats(session, principal=DEMO, org_id=demo.city_id, year=YEAR)
        members = figures["members"]
        assert members["total"] == 18_165
        assert abs(members["by_category"]["retired"]["share"] - 0.4509) <= TOLERANCE
        ages = members["by_age_band"]
        for band, share in {"le_35": 0.0976, "36_45": 0.1456, "46_60": 0.3071}.items():
            assert abs(ages[band]["share"] - share) <= TOLERANCE
        assert abs(ages["gt_60"]["share"] - 0.4509) <= TOLERANCE
        education = members["by_education_band"]
        assert abs(education["junior_high_or_below"]["share"] - 0.7333) <= TOLERANCE
        assert abs(education["senior_high"]["share"] - 0.1905) <= TOLERANCE
        assert abs(education["college_or_above"]["share"] - 0.0725) <= TOLERANCE
        assert education["unknown"]["count"] == 68
        levels = figures["orgs"]["by_area_level"]
        assert (levels["town"]["count"], levels["street"]["count"]) == (57, 17)
        assert levels["community"]["count"] == 258

    async def test_activities_party_worker_bands(self, sm: Any, demo: Demo) -> None:
        async with sm() as session:
            figures = await activities_stats(
                session, principal=DEMO, org_id=demo.city_id, year=YEAR
            )
        workers = figures["party_workers"]
        education = workers["by_education_band"]
        assert abs(education["college_or_above"]["share"] - 0.128) <= TOLERANCE
        assert abs(education["junior_high_or_below"]["share"] - 0.327) <= TOLERANCE
        assert abs(workers["by_age_band"]["le_35"]["share"] - 0.22) <= TOLERANCE


class TestGenerator:
    def test_same_seed_same_city(self) -> None:
        def summary(p: plan.Plan) -> tuple[Any, ...]:
            return (
                [(o.code, o.kind) for o in p.orgs],
                [(x.id_number, x.category, x.education, x.community, x.flow) for x in p.people],
            )

        assert summary(plan.build(7, YEAR)) == summary(plan.build(7, YEAR))
        assert summary(plan.build(7, YEAR)) != summary(plan.build(8, YEAR))

    def test_a_second_load_does_nothing(self, demo: Demo) -> None:
        assert asyncio.run(load(demo.url, seed=2004, year=YEAR)) is None

    def test_make_run_loads_it_only_into_an_empty_registry(
        self, demo: Demo, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from tools.run import _load_demo_if_empty

        _load_demo_if_empty(demo.url)
        assert "demo city" not in capsys.readouterr().out

    def test_prints_progress(self, demo: Demo) -> None:
        assert "100.0%" in demo.output
        assert "registry: members" in demo.output
