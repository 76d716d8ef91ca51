"""The work-unit sync end to end: a real API key with scope `sync`, exchanged at the gateway,
mobility resolving persons through the registry with its own service credentials."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.mobility.factories import EventPump
from tests.registry.factories import Tree, id_number, make_org

Gw = Callable[..., httpx.AsyncClient]


async def unit_with_key(admin: httpx.AsyncClient, tree: Tree, scopes: list[str]) -> tuple[str, str]:
    unit = await make_org(
        admin, parent_id=tree.city["id"], kind="committee", area_level="work_unit"
    )
    r = await admin.post(
        "/api/v1/auth/api-keys", json={"name": "人事系统", "org_id": unit["id"], "scopes": scopes}
    )
    assert r.status_code == 201, r.text
    return unit["id"], r.json()["key"]


class TestWorkUnitSyncThroughTheGateway:
    async def test_a_unit_syncs_its_members_and_reads_back_the_changes(
        self,
        gw: Gw,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        unit_id, key = await unit_with_key(admin_client, tree, ["sync"])
        await EventPump(db)()
        members = [
            {
                "external_id": f"HR-{n}",
                "name": f"职工{n}",
                "id_number": id_number(date(1990, 3, 4), serial=500 + n),
                "phone": "13700137000",
                "residence_community_code": tree.community_a["code"],
            }
            for n in range(3)
        ] + [{"external_id": "HR-bad", "name": "坏行", "id_number": "1"}]
        unit = gw(X_API_Key=key)
        r = await unit.put(
            f"/api/v1/mobility/sync/{unit_id}/members",
            json={"mode": "full", "members": members},
            headers={"Idempotency-Key": "hr-2024-06"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 3
        assert [(e["index"], e["external_id"]) for e in r.json()["errors"]] == [(3, "HR-bad")]
        again = await unit.put(
            f"/api/v1/mobility/sync/{unit_id}/members",
            json={"mode": "full", "members": members},
            headers={"Idempotency-Key": "hr-2024-06"},
        )
        assert again.json() == r.json()
        changes = await unit.get(f"/api/v1/mobility/sync/{unit_id}/changes")
        assert changes.status_code == 200, changes.text
        assert sorted(c["external_id"] for c in changes.json()["items"]) == ["HR-0", "HR-1", "HR-2"]
        # the key neither reads a community's residents nor the registry directly
        assert (await unit.get("/api/v1/mobility/links")).status_code == 403
        assert (await unit.get("/api/v1/registry/members")).status_code == 403

    async def test_a_units_key_cannot_touch_another_units_members(
        self,
        gw: Gw,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        first_id, _ = await unit_with_key(admin_client, tree, ["sync"])
        _, other_key = await unit_with_key(admin_client, tree, ["sync", "read"])
        await EventPump(db)()
        other = gw(X_API_Key=other_key)
        body = {"mode": "full", "members": []}
        assert (
            await other.put(f"/api/v1/mobility/sync/{first_id}/members", json=body)
        ).status_code == 404
        assert (await other.get(f"/api/v1/mobility/sync/{first_id}/changes")).status_code == 404
