"""What the registry publishes about members and transfers: one event per change, with the
member's projected state and never a sensitive field, and a read model that follows."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.consumer import catch_up
from tests.events.helpers import consumer, projection, registry_view, rows
from tests.registry.factories import build_tree, make_member, next_id_number

Sessions = async_sessionmaker[AsyncSession]
MEMBERS = "/api/v1/registry/members"
TRANSFERS = "/api/v1/registry/transfers"
MEMBER_FIELDS = {
    "member_id",
    "name",
    "birth_date",
    "education",
    "status",
    "category",
    "relation",
    "membership",
    "org_id",
    "org_path",
    "residence_org_id",
    "residence_path",
    "group_id",
    "skills",
    "merged_into",
    "version",
}


async def events_of(sessions: Sessions, aggregate_id: str) -> list[tuple[str, int, Any]]:
    found = await rows(
        sessions,
        "SELECT type, aggregate_version, payload FROM registry.outbox "
        "WHERE aggregate_id = :a ORDER BY id",
        a=uuid.UUID(aggregate_id),
    )
    return [(t, v, p) for t, v, p in found]


async def patch_member(admin: httpx.AsyncClient, member_id: str, **changes: Any) -> None:
    current = await admin.get(f"{MEMBERS}/{member_id}")
    r = await admin.patch(
        f"{MEMBERS}/{member_id}", json=changes, headers={"If-Match": current.headers["ETag"]}
    )
    assert r.status_code == 200, r.text


class TestMemberEvents:
    async def test_registration_carries_the_projected_state_and_no_secret(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        tree = await build_tree(admin)
        number = next_id_number()
        member = await make_member(
            admin,
            org_id=tree.community_a["id"],
            group_id=tree.building_a1["id"],
            id_number=number,
            phone="13812345678",
            address="嘉兴市南湖区如意路1号",
        )
        [(type_, version, data)] = await events_of(committed_db, member["id"])
        assert (type_, version) == ("member.registered", 1)
        assert set(data) == MEMBER_FIELDS
        assert data["org_id"] == tree.community_a["id"] and data["status"] == "active"
        assert data["org_path"].count(".") == 2 and data["residence_path"] is None
        everything = json.dumps(
            await rows(committed_db, "SELECT row_to_json(o) FROM registry.outbox o"),
            default=str,
            ensure_ascii=False,
        )
        for secret in (number, "13812345678", "****", "如意路"):
            assert secret not in everything

    async def test_changes_emit_updated_or_status_changed(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        tree = await build_tree(admin)
        member = await make_member(admin, org_id=tree.community_a["id"])
        await patch_member(admin, member["id"], name="李四")
        await patch_member(admin, member["id"], status="deceased")
        events = await events_of(committed_db, member["id"])
        assert [(t, v) for t, v, _ in events] == [
            ("member.registered", 1),
            ("member.updated", 2),
            ("member.status_changed", 3),
        ]
        assert events[1][2]["name"] == "李四"
        assert events[2][2]["status"] == "deceased"
        assert events[2][2]["previous_status"] == "active"

    async def test_merge_emits_merged_for_the_duplicate_and_updated_for_the_survivor(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        tree = await build_tree(admin)
        survivor = await make_member(admin, org_id=tree.community_a["id"])
        duplicate = await make_member(admin, org_id=tree.community_a["id"])
        r = await admin.post(
            f"{MEMBERS}/{survivor['id']}/merge",
            json={"duplicate_id": duplicate["id"], "reason": "重复登记"},
        )
        assert r.status_code == 200, r.text
        dup_events = await events_of(committed_db, duplicate["id"])
        assert [(t, v) for t, v, _ in dup_events][-1] == ("member.merged", 2)
        assert dup_events[-1][2]["merged_into"] == survivor["id"]
        assert [(t, v) for t, v, _ in await events_of(committed_db, survivor["id"])][-1] == (
            "member.updated",
            2,
        )
        await catch_up(committed_db, consumer("mobility"))
        assert await projection(committed_db, "mobility") == await registry_view(committed_db)


class TestTransferEvents:
    async def test_issue_and_receive_move_the_member_in_the_read_model(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        tree = await build_tree(admin)
        member = await make_member(admin, org_id=tree.community_a["id"])
        await catch_up(committed_db, consumer("mobility"))
        r = await admin.post(
            TRANSFERS, json={"member_id": member["id"], "to_org_id": tree.community_b["id"]}
        )
        assert r.status_code == 201, r.text
        transfer = r.json()
        r = await admin.post(f"{TRANSFERS}/{transfer['id']}/issue", json={"letter_no": "嘉转1"})
        assert r.status_code == 200, r.text
        r = await admin.post(f"{TRANSFERS}/{transfer['id']}/receive")
        assert r.status_code == 200, r.text
        transfer_events = await events_of(committed_db, transfer["id"])
        assert [t for t, _, _ in transfer_events] == ["transfer.issued", "transfer.completed"]
        completed = transfer_events[-1][2]
        assert completed["from_org_id"] == tree.community_a["id"]
        assert completed["to_org_id"] == tree.community_b["id"]
        assert completed["to_org_path"] and "reason" not in completed
        member_events = await events_of(committed_db, member["id"])
        assert member_events[-1][0] == "member.updated"
        assert member_events[-1][2]["org_id"] == tree.community_b["id"]
        await catch_up(committed_db, consumer("mobility"))
        moved = await rows(
            committed_db,
            "SELECT org_id FROM mobility.members WHERE member_id = :i",
            i=uuid.UUID(member["id"]),
        )
        assert moved == [(uuid.UUID(tree.community_b["id"]),)]
        assert await projection(committed_db, "mobility") == await registry_view(committed_db)

    async def test_transfer_out_of_the_system_changes_the_status(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        tree = await build_tree(admin)
        member = await make_member(admin, org_id=tree.community_a["id"])
        r = await admin.post(
            TRANSFERS,
            json={
                "member_id": member["id"],
                "to_external": {"name": "杭州市某单位党委", "code": "HZ-001"},
            },
        )
        assert r.status_code == 201, r.text
        transfer = r.json()
        r = await admin.post(f"{TRANSFERS}/{transfer['id']}/issue", json={"letter_no": "嘉转2"})
        assert r.status_code == 200, r.text
        r = await admin.post(f"{TRANSFERS}/{transfer['id']}/receive")
        assert r.status_code == 200, r.text
        completed = (await events_of(committed_db, transfer["id"]))[-1][2]
        assert completed["to_external"] == {"name": "杭州市某单位党委", "code": "HZ-001"}
        last = (await events_of(committed_db, member["id"]))[-1]
        assert last[0] == "member.status_changed"
        assert (last[2]["status"], last[2]["previous_status"]) == ("transferred_out", "active")
        await catch_up(committed_db, consumer("activities"))
        assert await projection(committed_db, "activities") == await registry_view(committed_db)
