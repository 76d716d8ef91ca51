"""A small hand-made city, built through the gateway, whose every report figure is counted
by hand in `test_org_report.py`.

    city 嘉兴市 (committee, city)
    ├── street A 南湖街道 (working_committee, street)
    │   ├── A1 如意社区 (general_branch, community)
    │   │   └── A1g 3幢党小组 (group, building)
    │   └── A2 凤凰社区 (branch, community)
    └── street B 秀洲街道 (working_committee, street)
        └── B1 新城社区 (branch, community)

Members (age at today, as the current year's report counts it):

    m1  org A1            retired                70  junior_high_or_below
    m2  org A1, group A1g community_staff        30  bachelor       party worker A1, trained
    m3  org A2            laid_off               40  senior_high
    m4  org A2            retired                50  (no education) party worker A2
    m5  org B1            migrant_worker         33  college        party worker B1; mobile (out)
    m7  org B1 → A2       other                  45  senior_high    transfer completed this year
    m8  org A1 → outside  retired                80  -              transferred out: not counted
    r1  org A1, lives A2  retired_unit_resident  62  college        (resident, counted once)
    r2  org A2, lives B1  in_service_resident    36  junior_high    (in street A and street B)
    r3  lives B1          in_service_resident    55  postgraduate   dual-management link, reported

Activities (this year): A1 branch_assembly (m1 present, m2 absent), B1 volunteer_service
(m5 present); a talk with m1 (A1); service hours m2 2.50 verified, m5 1.00 not verified;
training at A1 attended by m2; funds: A1 allocated 20.00 × 3 enrolled (m1, m2, r1) = 60.00,
spent 15.00."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.activities.pump import project_registry
from tests.mobility.factories import EventPump, card_body
from tests.registry.factories import make_member, make_org

R = "/api/v1/registry"
A = "/api/v1/activities"
M = "/api/v1/mobility"


@dataclass
class World:
    year: int
    orgs: dict[str, str] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)


def born(age: int) -> str:
    """A birth date giving exactly `age` today (1 January, `age` years ago)."""
    return str(date(date.today().year - age, 1, 1))


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


async def build_world(admin: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]) -> World:
    today = date.today()
    w = World(year=today.year)
    pump = EventPump(db)

    async def sync() -> None:
        await pump()  # registry ⇄ mobility
        await project_registry(db)  # registry → activities

    city = await make_org(admin, kind="committee", area_level="city", name="嘉兴市")
    sa = await make_org(
        admin, parent_id=city["id"], kind="working_committee", area_level="street", name="南湖街道"
    )
    sb = await make_org(
        admin, parent_id=city["id"], kind="working_committee", area_level="street", name="秀洲街道"
    )
    a1 = await make_org(admin, parent_id=sa["id"], kind="general_branch", name="如意社区")
    a1g = await make_org(
        admin, parent_id=a1["id"], kind="group", area_level="building", name="3幢党小组"
    )
    a2 = await make_org(admin, parent_id=sa["id"], name="凤凰社区")
    b1 = await make_org(admin, parent_id=sb["id"], name="新城社区")
    w.orgs = {
        k: o["id"]
        for k, o in {
            "city": city,
            "A": sa,
            "B": sb,
            "A1": a1,
            "A1g": a1g,
            "A2": a2,
            "B1": b1,
        }.items()
    }
    o = w.orgs

    async def member(key: str, age: int, education: str | None, **card: Any) -> None:
        body: dict[str, Any] = {"birth_date": born(age), **card}
        if education is not None:
            body["education"] = education
        w.members[key] = (await make_member(admin, **body))["id"]

    await member("m1", 70, "junior_high_or_below", org_id=o["A1"], category="retired")
    await member(
        "m2", 30, "bachelor", org_id=o["A1"], group_id=o["A1g"], category="community_staff"
    )
    await member("m3", 40, "senior_high", org_id=o["A2"], category="laid_off")
    await member("m4", 50, None, org_id=o["A2"], category="retired")
    await member("m5", 33, "college", org_id=o["B1"], category="migrant_worker")
    await member("m7", 45, "senior_high", org_id=o["B1"], category="other")
    await member("m8", 80, "junior_high_or_below", org_id=o["A1"], category="retired")
    await member(
        "r1",
        62,
        "college",
        org_id=o["A1"],
        residence_org_id=o["A2"],
        category="retired_unit_resident",
    )
    await member(
        "r2",
        36,
        "junior_high_or_below",
        org_id=o["A2"],
        residence_org_id=o["B1"],
        category="in_service_resident",
    )
    await member(
        "r3",
        55,
        "postgraduate",
        residence_org_id=o["B1"],
        category="in_service_resident",
    )
    m = w.members

    # Transfers: m7 B1 → A2 (inside the city), m8 A1 → outside; both completed.
    for member_id, target in (
        (m["m7"], {"to_org_id": o["A2"]}),
        (m["m8"], {"to_external": {"name": "上海市某街道党工委"}}),
    ):
        t = ok(await admin.post(f"{R}/transfers", json={"member_id": member_id, **target}), 201)
        ok(
            await admin.post(
                f"{R}/transfers/{t['id']}/issue", json={"letter_no": f"嘉组转{t['id'][:6]}"}
            )
        )
        ok(await admin.post(f"{R}/transfers/{t['id']}/receive"))
    await sync()

    # Mobility: m5 went out 10 days ago (in this year); r3's link reported.
    left = max(today - timedelta(days=10), date(today.year, 1, 1))
    ok(await admin.post(f"{M}/mobile-members", json=card_body(m["m5"], left_on=str(left))), 201)
    link = ok(
        await admin.post(
            f"{M}/links",
            json={
                "member_id": m["r3"],
                "residence_org_id": o["B1"],
                "workplace_external": {"name": "嘉兴电力局"},
            },
        ),
        201,
    )
    ok(await admin.post(f"{M}/links/{link['id']}/report", json={"on": str(left)}))
    await sync()

    # Activities, this year.
    day = max(today - timedelta(days=5), date(today.year, 1, 2))
    starts = datetime(day.year, day.month, day.day, 1, 0, tzinfo=UTC)

    async def activity(org: str, type_: str) -> str:
        body = {
            "org_id": org,
            "type": type_,
            "title": "主题党日",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(hours=2)).isoformat(),
        }
        return str(ok(await admin.post(f"{A}/activities", json=body), 201)["id"])

    assembly = await activity(o["A1"], "branch_assembly")
    ok(
        await admin.put(
            f"{A}/activities/{assembly}/attendance",
            json=[
                {"member_id": m["m1"], "status": "present"},
                {"member_id": m["m2"], "status": "absent"},
            ],
        )
    )
    service = await activity(o["B1"], "volunteer_service")
    ok(
        await admin.put(
            f"{A}/activities/{service}/attendance",
            json=[{"member_id": m["m5"], "status": "present"}],
        )
    )
    ok(
        await admin.post(
            f"{A}/talks",
            json={"member_id": m["m1"], "held_on": str(day), "talker": "李书记", "topic": "谈心"},
        ),
        201,
    )
    hours = ok(
        await admin.post(
            f"{A}/service-hours", json={"member_id": m["m2"], "on": str(day), "hours": "2.5"}
        ),
        201,
    )
    ok(await admin.post(f"{A}/service-hours/{hours['id']}/verify"))
    ok(
        await admin.post(
            f"{A}/service-hours", json={"member_id": m["m5"], "on": str(day), "hours": "1"}
        ),
        201,
    )
    for key, org in (("m2", "A1"), ("m4", "A2"), ("m5", "B1")):
        ok(
            await admin.post(
                f"{A}/role-assignments",
                json={
                    "member_id": m[key],
                    "org_id": o[org],
                    "kind": "party_worker",
                    "role": "党务工作者",
                    "started_on": str(date(today.year, 1, 1)),
                },
            ),
            201,
        )
    ok(
        await admin.post(
            f"{A}/training/sessions",
            json={"org_id": o["A1"], "title": "轮训", "held_on": str(day), "member_ids": [m["m2"]]},
        ),
        201,
    )
    alloc = ok(
        await admin.post(
            f"{A}/funds/allocations",
            json={"org_id": o["A1"], "year": today.year, "rate_per_member": "20"},
        ),
        201,
    )
    assert alloc["member_count"] == 3 and alloc["amount"] == "60.00", alloc
    ok(
        await admin.post(
            f"{A}/funds/expenses",
            json={"org_id": o["A1"], "year": today.year, "amount": "15", "purpose": "党课资料"},
        ),
        201,
    )
    await sync()
    return w
