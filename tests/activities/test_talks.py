from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.activities.factories import BASE, World

Sessions = async_sessionmaker[AsyncSession]
AsRole = Callable[..., httpx.AsyncClient]
TALKS = f"{BASE}/talks"
SECRET = "下岗后情绪低落，已介绍到公交公司面试。"


async def make_talk(c: httpx.AsyncClient, member_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "member_id": member_id,
        "held_on": "2026-03-12",
        "talker": "李书记",
        "topic": "思想状况",
        "notes": SECRET,
        **extra,
    }
    r = await c.post(TALKS, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def notes_reads(db: Sessions, talk_id: str) -> int:
    async with db() as s:
        return int(
            await s.scalar(
                text(
                    "SELECT count(*) FROM activities.audit_log "
                    "WHERE action = 'read_notes' AND record_id = CAST(:t AS uuid)"
                ),
                {"t": talk_id},
            )
            or 0
        )


class TestCreateTalk:
    async def test_notes_are_encrypted_at_rest_and_not_echoed(
        self, admin: httpx.AsyncClient, world: World, db: Sessions
    ) -> None:
        talk = await make_talk(admin, world.a_members[0].sid)
        assert "notes" not in talk and talk["has_notes"] is True
        async with db() as s:
            blob = await s.scalar(
                text("SELECT notes_enc FROM activities.talks WHERE id = CAST(:t AS uuid)"),
                {"t": talk["id"]},
            )
        assert blob is not None and SECRET.encode() not in bytes(blob)

    async def test_member_out_of_scope_is_404_and_viewer_403(
        self, as_role: AsRole, world: World
    ) -> None:
        async with as_role("org_admin", org_id=world.a.id) as c:
            r = await c.post(
                TALKS,
                json={
                    "member_id": world.b_members[0].sid,
                    "held_on": "2026-03-12",
                    "talker": "李书记",
                    "topic": "x",
                },
            )
        assert r.status_code == 404
        async with as_role("org_viewer", org_id=world.a.id) as c:
            r = await c.post(
                TALKS,
                json={
                    "member_id": world.a_members[0].sid,
                    "held_on": "2026-03-12",
                    "talker": "李书记",
                    "topic": "x",
                },
            )
        assert r.status_code == 403

    @pytest.mark.parametrize(
        "change", [{"held_on": "2026-02-30"}, {"talker": ""}, {"notes": 5}, {"mood": "ok"}]
    )
    async def test_bad_input_is_422(
        self, admin: httpx.AsyncClient, world: World, change: dict[str, Any]
    ) -> None:
        body = {
            "member_id": world.a_members[0].sid,
            "held_on": "2026-03-12",
            "talker": "李书记",
            "topic": "x",
            **change,
        }
        assert (await admin.post(TALKS, json=body)).status_code == 422


class TestListTalks:
    async def test_lists_never_carry_notes_and_respect_scope(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        await make_talk(admin, world.a_members[0].sid)
        await make_talk(admin, world.b_members[0].sid)
        r = await admin.get(TALKS)
        assert SECRET not in r.text and '"notes"' not in r.text
        assert len(r.json()["items"]) == 2
        async with as_role("org_viewer", org_id=world.a.id) as c:
            r = await c.get(TALKS)
        assert [i["member_id"] for i in r.json()["items"]] == [world.a_members[0].sid]


class TestCountTalks:
    async def test_count_for_everyone_with_scope(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        for _ in range(3):
            await make_talk(admin, world.a_members[1].sid)
        await make_talk(admin, world.b_members[0].sid)
        async with as_role("org_viewer", org_id=world.a.id) as c:
            assert (await c.get(f"{TALKS}/count")).json() == {"count": 3}
        r = await admin.get(f"{TALKS}/count", params={"org_id": world.street.sid})
        assert r.json() == {"count": 4}


class TestGetTalk:
    async def test_own_org_admin_reads_notes_and_each_read_is_audited(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World, db: Sessions
    ) -> None:
        talk = await make_talk(admin, world.a_members[0].sid)
        async with as_role("org_admin", org_id=world.a.id) as c:
            r = await c.get(f"{TALKS}/{talk['id']}")
            await c.get(f"{TALKS}/{talk['id']}")
        assert r.status_code == 200 and r.json()["notes"] == SECRET
        assert r.headers["Cache-Control"] == "no-store"
        assert await notes_reads(db, talk["id"]) == 2

    async def test_viewer_and_member_get_no_notes_and_no_audit(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World, db: Sessions
    ) -> None:
        m = world.a_members[0]
        talk = await make_talk(admin, m.sid)
        async with as_role("org_viewer", org_id=world.a.id) as c:
            r = await c.get(f"{TALKS}/{talk['id']}")
        assert r.status_code == 200 and r.json()["notes"] is None
        async with as_role("member", member_id=m.id) as c:
            r = await c.get(f"{TALKS}/{talk['id']}")
        assert r.status_code == 200 and r.json()["notes"] is None
        assert await notes_reads(db, talk["id"]) == 0

    async def test_other_org_admin_gets_404(
        self, admin: httpx.AsyncClient, as_role: AsRole, world: World
    ) -> None:
        talk = await make_talk(admin, world.a_members[0].sid)
        async with as_role("org_admin", org_id=world.b.id) as c:
            assert (await c.get(f"{TALKS}/{talk['id']}")).status_code == 404
        async with as_role("member", member_id=world.a_members[1].id) as c:
            assert (await c.get(f"{TALKS}/{talk['id']}")).status_code == 404

    async def test_notes_never_in_events_or_idempotency_store(
        self, admin: httpx.AsyncClient, world: World, db: Sessions
    ) -> None:
        await make_talk(admin, world.a_members[0].sid)
        r = await admin.post(
            TALKS,
            json={
                "member_id": world.a_members[0].sid,
                "held_on": "2026-03-13",
                "talker": "李书记",
                "topic": "x",
                "notes": SECRET,
            },
            headers={"Idempotency-Key": "talk-1"},
        )
        assert r.status_code == 201
        async with db() as s:
            outbox = await s.scalar(
                text("SELECT string_agg(payload::text, '') FROM activities.outbox")
            )
            stored = await s.scalar(
                text(
                    "SELECT string_agg(body::text || fingerprint, '') "
                    "FROM activities.idempotency_keys"
                )
            )
        assert SECRET not in (outbox or "") and SECRET not in (stored or "")
