from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.activities.app import create_app
from services.activities.settings import ActivitiesSettings
from tests.activities.factories import BASE, World, build_world, make_activity, seed_member
from tests.helpers import client, mint

Sessions = async_sessionmaker[AsyncSession]
AsRole = Callable[..., httpx.AsyncClient]
FUNDS = f"{BASE}/funds"


async def allocate(c: httpx.AsyncClient, org_id: str, rate: str = "50", year: int = 2026) -> Any:
    r = await c.post(
        f"{FUNDS}/allocations", json={"org_id": org_id, "year": year, "rate_per_member": rate}
    )
    assert r.status_code == 201, r.text
    return r.json()


def expense(org_id: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {"org_id": org_id, "year": 2026, "amount": amount, "purpose": "党课资料", **extra}


class TestCreateAllocation:
    async def test_amount_is_members_times_rate(
        self, admin: httpx.AsyncClient, world: World, db: Sessions
    ) -> None:
        await seed_member(db, world.a1)  # a building group counts within its community
        await seed_member(db, world.a, status="deceased")  # not counted
        alloc = await allocate(admin, world.a.sid, "15")
        assert alloc["member_count"] == 4
        assert alloc["amount"] == "60.00" and alloc["rate_per_member"] == "15.00"
        street = await allocate(admin, world.street.sid, "50")
        assert street["member_count"] == 6 and street["amount"] == "300.00"

    async def test_second_allocation_is_409(self, admin: httpx.AsyncClient, world: World) -> None:
        await allocate(admin, world.a.sid)
        r = await admin.post(
            f"{FUNDS}/allocations",
            json={"org_id": world.a.sid, "year": 2026, "rate_per_member": "20"},
        )
        assert r.status_code == 409

    @pytest.mark.parametrize(
        "change", [{"rate_per_member": "-1"}, {"rate_per_member": "abc"}, {"year": 1900}, {"x": 1}]
    )
    async def test_bad_input_is_422(
        self, admin: httpx.AsyncClient, world: World, change: dict[str, Any]
    ) -> None:
        body = {"org_id": world.a.sid, "year": 2026, "rate_per_member": "50", **change}
        assert (await admin.post(f"{FUNDS}/allocations", json=body)).status_code == 422

    async def test_viewer_403_and_other_org_404(self, as_role: AsRole, world: World) -> None:
        body = {"org_id": world.b.sid, "year": 2026, "rate_per_member": "50"}
        async with as_role("org_viewer", org_id=world.b.id) as c:
            assert (await c.post(f"{FUNDS}/allocations", json=body)).status_code == 403
        async with as_role("org_admin", org_id=world.a.id) as c:
            assert (await c.post(f"{FUNDS}/allocations", json=body)).status_code == 404


class TestListAllocations:
    async def test_scope(self, admin: httpx.AsyncClient, as_role: AsRole, world: World) -> None:
        await allocate(admin, world.a.sid)
        await allocate(admin, world.b.sid)
        async with as_role("org_viewer", org_id=world.a.id) as c:
            items = (await c.get(f"{FUNDS}/allocations")).json()["items"]
        assert [i["org_id"] for i in items] == [world.a.sid]


class TestBookExpense:
    async def test_overspend_is_refused_unless_approved(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World, db: Sessions
    ) -> None:
        await allocate(admin, world.a.sid, "50")  # 3 members: 150.00
        a = await make_activity(admin, world.a)
        async with as_role("org_admin", org_id=world.a.id) as c:
            ok = await c.post(
                f"{FUNDS}/expenses", json=expense(world.a.sid, "100", activity_id=a["id"])
            )
            refused = await c.post(f"{FUNDS}/expenses", json=expense(world.a.sid, "60"))
            approved = await c.post(
                f"{FUNDS}/expenses", json=expense(world.a.sid, "60", approved_overspend=True)
            )
        assert ok.status_code == 201 and ok.json()["approved_overspend"] is False
        assert refused.status_code == 409 and refused.json()["balance"] == "50.00"
        assert approved.status_code == 201 and approved.json()["approved_overspend"] is True
        summary = (
            await admin.get(f"{FUNDS}/summary", params={"org_id": world.a.sid, "year": 2026})
        ).json()
        assert summary == {
            "org_id": world.a.sid,
            "year": 2026,
            "member_count": 3,
            "allocated": "150.00",
            "spent": "160.00",
            "balance": "-10.00",
            "per_member": "50.00",
        }
        async with db() as s:
            action = await s.scalar(
                text("SELECT count(*) FROM activities.audit_log WHERE action = 'approve_overspend'")
            )
        assert action == 1

    async def test_without_allocation_is_404(self, admin: httpx.AsyncClient, world: World) -> None:
        assert (
            await admin.post(f"{FUNDS}/expenses", json=expense(world.b.sid, "1"))
        ).status_code == 404

    async def test_activity_of_another_org_is_404(
        self, admin: httpx.AsyncClient, world: World
    ) -> None:
        await allocate(admin, world.a.sid)
        other = await make_activity(admin, world.b)
        r = await admin.post(
            f"{FUNDS}/expenses", json=expense(world.a.sid, "1", activity_id=other["id"])
        )
        assert r.status_code == 404

    @pytest.mark.parametrize("amount", ["0", "-5", "1.001", "NaN", "1e20"])
    async def test_bad_amounts_are_422(
        self, admin: httpx.AsyncClient, world: World, amount: str
    ) -> None:
        await allocate(admin, world.a.sid)
        assert (
            await admin.post(f"{FUNDS}/expenses", json=expense(world.a.sid, amount))
        ).status_code == 422

    async def test_ledger_is_append_only(
        self, admin: httpx.AsyncClient, world: World, db: Sessions
    ) -> None:
        await allocate(admin, world.a.sid)
        await admin.post(f"{FUNDS}/expenses", json=expense(world.a.sid, "5"))
        async with db() as s:
            with pytest.raises(DBAPIError):
                await s.execute(text("UPDATE activities.fund_expenses SET amount = 1"))
            await s.rollback()
        async with db() as s:
            with pytest.raises(DBAPIError):
                await s.execute(text("DELETE FROM activities.fund_expenses"))
            await s.rollback()


class TestListExpenses:
    async def test_lists_the_years_expenses(self, admin: httpx.AsyncClient, world: World) -> None:
        await allocate(admin, world.a.sid)
        for amount in ("1", "2"):
            await admin.post(f"{FUNDS}/expenses", json=expense(world.a.sid, amount))
        r = await admin.get(f"{FUNDS}/expenses", params={"org_id": world.a.sid, "year": 2026})
        assert sorted(e["amount"] for e in r.json()) == ["1.00", "2.00"]


class TestFundSummary:
    async def test_cache_equals_the_sum_and_scope(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World, db: Sessions
    ) -> None:
        await allocate(admin, world.a.sid, "20")
        for amount in ("3.10", "4.20", "5.30"):
            await admin.post(f"{FUNDS}/expenses", json=expense(world.a.sid, amount))
        async with db() as s:
            cached, summed = (
                await s.execute(
                    text(
                        "SELECT a.spent, (SELECT sum(amount) FROM activities.fund_expenses e "
                        "WHERE e.allocation_id = a.id) FROM activities.fund_allocations a "
                        "WHERE a.org_id = CAST(:o AS uuid)"
                    ),
                    {"o": world.a.sid},
                )
            ).one()
        assert cached == summed == Decimal("12.60")
        async with as_role("org_viewer", org_id=world.b.id) as c:
            r = await c.get(f"{FUNDS}/summary", params={"org_id": world.a.sid, "year": 2026})
        assert r.status_code == 404


class TestConcurrentExpenses:
    async def test_two_bookings_that_each_fit_alone_never_overspend(
        self, committed: Sessions, activities_settings: ActivitiesSettings
    ) -> None:
        world = await build_world(committed)
        apps = [create_app(activities_settings, sessionmaker=committed) for _ in range(2)]
        clients = [client(app, mint("org_admin", org_id=world.a.id)) for app in apps]
        try:
            await allocate(clients[0], world.a.sid, "50")  # 150.00
            results = await asyncio.gather(
                *(c.post(f"{FUNDS}/expenses", json=expense(world.a.sid, "100")) for c in clients)
            )
            assert sorted(r.status_code for r in results) == [201, 409]
            summary = (
                await clients[0].get(
                    f"{FUNDS}/summary", params={"org_id": world.a.sid, "year": 2026}
                )
            ).json()
            assert summary["spent"] == "100.00" and summary["balance"] == "50.00"
        finally:
            for c in clients:
                await c.aclose()
