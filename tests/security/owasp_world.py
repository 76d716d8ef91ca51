"""A world for the OWASP API Top 10 tests, through the in-process gateway harness
(`tests/gateway/conftest.py`): the city tree, and in community B — the org the attackers
of community A must not reach — one record of every resource type, created by the admin.

`refs` names every id (`member_b`, `transfer_b`, …); `actors` are clients of community A
(`org_admin_a`, `org_viewer_a`, `member_a`, `key_a`: an API key with scope `read`), an
`auditor`, an `integration` key of A with scope `sync`, and the `admin`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.activities.pump import project_registry
from tests.mobility.factories import EventPump, card_body
from tests.registry.factories import Tree, make_member, next_id_number

AsUser = Callable[..., Awaitable[httpx.AsyncClient]]
Gw = Callable[..., httpx.AsyncClient]

R = "/api/v1/registry"
M = "/api/v1/mobility"
AC = "/api/v1/activities"
ID_NUMBER_B = next_id_number()
PHONE_B = "13697531246"
TALK_NOTES_B = "谈心记录：家中困难，需要关怀"


@dataclass
class World:
    tree: Tree
    refs: dict[str, str]
    actors: dict[str, httpx.AsyncClient]

    def fill(self, text: str) -> str:
        for name, value in self.refs.items():
            text = text.replace("{" + name + "}", value)
        return text


async def _created(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


async def build_world(
    tree: Tree,
    admin: httpx.AsyncClient,
    as_user: AsUser,
    gw: Gw,
    db: async_sessionmaker[AsyncSession],
) -> World:
    a, b = tree.community_a["id"], tree.community_b["id"]
    member_a = await make_member(admin, org_id=a, id_number=next_id_number())
    member_b = await make_member(
        admin, org_id=b, id_number=ID_NUMBER_B, phone=PHONE_B, skills=["水电维修"]
    )
    await EventPump(db)()  # mobility's read model of the registry
    await project_registry(db)  # activities' read model of the registry

    transfer = await _created(
        await admin.post(
            f"{R}/transfers",
            json={
                "member_id": member_b["id"],
                "to_external": {"name": "杭州市某单位党委", "code": "HZ-001"},
                "reason": "工作调动",
            },
        )
    )
    card = await _created(await admin.post(f"{M}/mobile-members", json=card_body(member_b["id"])))
    link = await _created(
        await admin.post(
            f"{M}/links",
            json={
                "mode": "direct",
                "member_id": member_b["id"],
                "residence_org_id": b,
                "workplace_external": {"name": "嘉兴电力局", "code": "91330400X"},
            },
        )
    )
    activity = await _created(
        await admin.post(
            f"{AC}/activities",
            json={
                "org_id": b,
                "type": "party_lecture",
                "title": "党课",
                "starts_at": "2026-07-01T19:00:00+08:00",
                "ends_at": "2026-07-01T21:00:00+08:00",
            },
        )
    )
    await _created(
        await admin.put(
            f"{AC}/activities/{activity['id']}/attendance",
            json=[{"member_id": member_b["id"], "status": "present", "hours": "2"}],
        )
    )
    talk = await _created(
        await admin.post(
            f"{AC}/talks",
            json={
                "member_id": member_b["id"],
                "held_on": "2026-03-12",
                "talker": "李书记",
                "topic": "家庭情况",
                "notes": TALK_NOTES_B,
            },
        )
    )
    hours = await _created(
        await admin.post(
            f"{AC}/service-hours",
            json={"member_id": member_b["id"], "on": "2026-05-04", "hours": "1"},
        )
    )
    help_request = await _created(
        await admin.post(
            f"{AC}/help-requests",
            json={"org_id": b, "title": "厨房水管漏水", "needed_skills": ["水电维修"]},
        )
    )
    allocation = await _created(
        await admin.post(
            f"{AC}/funds/allocations", json={"org_id": b, "year": 2026, "rate_per_member": "50"}
        )
    )
    program = await _created(
        await admin.post(
            f"{AC}/programs",
            json={
                "org_id": b,
                "code": "b_helps",
                "name": "凤凰三帮",
                "kind": "pledge",
                "items": [{"n": 1, "title": "help one elder", "title_zh": "帮一位老人"}],
            },
        )
    )
    role = await _created(
        await admin.post(
            f"{AC}/role-assignments",
            json={
                "member_id": member_b["id"],
                "org_id": b,
                "kind": "role",
                "role": "民事调解员",
                "program_id": "0f1e0000-0000-4000-8000-000000000008",
                "started_on": "2025-01-01",
            },
        )
    )
    webhook = await _created(
        await admin.post(
            "/api/v1/webhooks",
            json={
                "url": "http://127.0.0.1:9/hook",
                "events": ["*"],
                "org_id": b,
                "allow_private": True,
            },
        )
    )
    key_b = await _created(
        await admin.post(
            "/api/v1/auth/api-keys", json={"name": "B 人事", "org_id": b, "scopes": ["read"]}
        )
    )
    key_a = await _created(
        await admin.post(
            "/api/v1/auth/api-keys", json={"name": "A 人事", "org_id": a, "scopes": ["read"]}
        )
    )
    sync_a = await _created(
        await admin.post(
            "/api/v1/auth/api-keys", json={"name": "A 同步", "org_id": a, "scopes": ["sync"]}
        )
    )
    actors = {
        "admin": admin,
        "org_admin_a": await as_user("org_admin", org_id=a),
        "org_viewer_a": await as_user("org_viewer", org_id=a),
        "member_a": await as_user("member", org_id=a, member_id=member_a["id"]),
        "auditor": await as_user("auditor"),
        "key_a": gw(X_API_Key=key_a["key"]),
        "sync_key_a": gw(X_API_Key=sync_a["key"]),
    }
    refs = {
        "city": tree.city["id"],
        "community_a": a,
        "community_b": b,
        "member_a": member_a["id"],
        "member_b": member_b["id"],
        "transfer_b": transfer["id"],
        "card_b": card["id"],
        "link_b": link["id"],
        "activity_b": activity["id"],
        "talk_b": talk["id"],
        "hours_b": hours["id"],
        "help_b": help_request["id"],
        "allocation_b": allocation["id"],
        "program_b": program["id"],
        "role_b": role["id"],
        "webhook_b": webhook["id"],
        "key_b": key_b["id"],
    }
    return World(tree, refs, actors)
