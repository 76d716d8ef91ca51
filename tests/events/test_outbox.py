"""The outbox: an event exactly when its change commits, in an order no late commit can
break, immutable, and free of sensitive fields."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.auth import Principal, Role
from common.events.outbox import (
    START,
    EventRow,
    RowEvents,
    SensitiveField,
    emit,
    emit_many,
    emit_rows,
    read_after,
)
from services.registry.models import outbox
from services.registry.schemas.orgs import OrgCreate
from services.registry.service.orgs import create_org
from tests.events.helpers import rows
from tests.registry.factories import code, make_org

ADMIN = Principal(subject="events-test", role=Role.admin, username="events-test")

Sessions = async_sessionmaker[AsyncSession]


async def _events_of(sessions: Sessions, aggregate_id: object) -> list[tuple[object, ...]]:
    return await rows(
        sessions,
        "SELECT type, aggregate_version FROM registry.outbox WHERE aggregate_id = :a ORDER BY id",
        a=aggregate_id,
    )


async def _emit_probe(session: AsyncSession, n: int) -> uuid.UUID:
    return await emit(
        session,
        outbox,
        type="probe.written",
        aggregate_type="probe",
        aggregate_id=uuid.uuid4(),
        aggregate_version=n,
        payload={"n": n},
    )


class TestEmission:
    async def test_committed_change_emits_its_event(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        org = await make_org(admin, kind="committee", area_level="city")
        assert await _events_of(committed_db, uuid.UUID(org["id"])) == [("org.created", 1)]
        body = (
            await rows(
                committed_db,
                "SELECT payload, org_paths FROM registry.outbox WHERE aggregate_id = :a",
                a=uuid.UUID(org["id"]),
            )
        )[0]
        assert body[0]["code"] == org["code"] and body[0]["parent_id"] is None
        assert body[1] == [body[0]["path"]]

    async def test_rolled_back_change_emits_nothing(self, committed_db: Sessions) -> None:
        async with committed_db() as session:
            org = await create_org(
                session,
                data=OrgCreate(code=code(), name="回滚", kind="committee", area_level="city"),
                principal=ADMIN,
            )
            written = await session.scalars(
                select(outbox.c.type).where(outbox.c.aggregate_id == org.id)
            )
            assert written.all() == ["org.created"]
            await session.rollback()
        assert await _events_of(committed_db, org.id) == []
        assert await rows(committed_db, "SELECT 1 FROM registry.orgs WHERE id = :i", i=org.id) == []

    async def test_failed_request_emits_nothing(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        parent = await make_org(admin, kind="committee", area_level="city")
        taken = await make_org(admin, parent_id=parent["id"])
        r = await admin.post(
            "/api/v1/registry/orgs",
            json={
                "code": taken["code"],
                "name": "重复",
                "kind": "branch",
                "area_level": "community",
                "parent_id": parent["id"],
            },
        )
        assert r.status_code == 409
        types = await rows(committed_db, "SELECT type FROM registry.outbox ORDER BY id")
        assert types == [("org.created",), ("org.created",)]

    async def test_update_and_move_emit_with_versions(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        city = await make_org(admin, kind="committee", area_level="city")
        a = await make_org(admin, parent_id=city["id"], area_level="street")
        b = await make_org(admin, parent_id=city["id"], area_level="street")
        child = await make_org(admin, parent_id=a["id"])
        r = await admin.patch(
            f"/api/v1/registry/orgs/{child['id']}",
            json={"name": "新名"},
            headers={"If-Match": '"1"'},
        )
        assert r.status_code == 200, r.text
        r = await admin.patch(
            f"/api/v1/registry/orgs/{child['id']}",
            json={"parent_id": b["id"]},
            headers={"If-Match": r.headers["ETag"]},
        )
        assert r.status_code == 200, r.text
        assert await _events_of(committed_db, uuid.UUID(child["id"])) == [
            ("org.created", 1),
            ("org.updated", 2),
            ("org.moved", 3),
        ]
        moved = (
            await rows(
                committed_db,
                "SELECT payload FROM registry.outbox WHERE type = 'org.moved'",
            )
        )[0][0]
        assert moved["old_parent_id"] == a["id"] and moved["parent_id"] == b["id"]
        assert moved["old_path"].rsplit(".", 1)[0] != moved["path"].rsplit(".", 1)[0]


class TestCommitOrder:
    async def test_lower_id_committing_later_is_still_delivered(
        self, committed_db: Sessions
    ) -> None:
        """T1 writes the lower id and commits last: a reader must neither skip it nor pass
        it; it sees nothing after T1's row until T1 has committed, then both in order."""
        async with committed_db() as t1, committed_db() as t2, committed_db() as reader:
            first = await _emit_probe(t1, 1)  # lower id, still open
            second = await _emit_probe(t2, 2)
            await t2.commit()
            events, held_back = await read_after(reader, source="registry", after=START, limit=10)
            await reader.commit()
            assert [e.event_id for e in events] == [] and held_back
            await t1.commit()
            events, held_back = await read_after(reader, source="registry", after=START, limit=10)
            await reader.commit()
        assert [e.event_id for e in events] == [first, second] and not held_back
        assert events[0].seq < events[1].seq

    async def test_order_follows_transactions_not_ids(self, committed_db: Sessions) -> None:
        """Rows are ordered by the writing transaction's id first: T1 took its xid first but
        inserted last; its event still comes first, and nothing is lost past the cursor."""
        async with committed_db() as t1, committed_db() as t2, committed_db() as reader:
            await t1.execute(text("SELECT pg_current_xact_id()"))
            await t2.execute(text("SELECT pg_current_xact_id()"))
            late_xid_event = await _emit_probe(t2, 1)
            early_xid_event = await _emit_probe(t1, 2)
            await t2.commit()
            await t1.commit()
            events, _ = await read_after(reader, source="registry", after=START, limit=10)
            assert [e.event_id for e in events] == [early_xid_event, late_xid_event]
            after, _ = await read_after(
                reader, source="registry", after=events[0].position, limit=10
            )
            assert [e.event_id for e in after] == [late_xid_event]


class TestGuards:
    async def test_events_are_immutable(self, committed_db: Sessions) -> None:
        async with committed_db() as session:
            await _emit_probe(session, 1)
            await session.commit()
            with pytest.raises(DBAPIError, match="immutable"):
                await session.execute(text("UPDATE registry.outbox SET type = 'forged'"))
            await session.rollback()

    @pytest.mark.parametrize(
        "payload",
        [
            {"id_number": "330402197001011234"},
            {"member": {"phone": "13800000000"}},
            {"items": [{"notes": "谈心内容"}]},
            {"address": "某路1号"},
        ],
    )
    async def test_sensitive_fields_are_refused(
        self, committed_db: Sessions, payload: dict[str, object]
    ) -> None:
        async with committed_db() as session:
            with pytest.raises(SensitiveField):
                await emit(
                    session,
                    outbox,
                    type="probe.written",
                    aggregate_type="probe",
                    aggregate_id=uuid.uuid4(),
                    aggregate_version=1,
                    payload=payload,
                )
            await session.rollback()

    @pytest.mark.parametrize(
        "payload",
        [
            {"id_number": "330402197001011234"},
            {"member": {"phone": "13800000000"}},
            {"items": [{"notes": "谈心内容"}]},
            {"a": [[{"b": {"whereabouts": "外地"}}]]},
        ],
    )
    async def test_bulk_events_refuse_sensitive_fields_at_any_depth(
        self, committed_db: Sessions, payload: dict[str, object]
    ) -> None:
        """`emit_many` checks the serialized text: the one bad payload among many stops
        the lot and is named."""
        fine = {"member_id": str(uuid.uuid4()), "name": "某"}
        events = [_probe_row(fine), _probe_row(payload), _probe_row(fine)]
        async with committed_db() as session:
            with pytest.raises(SensitiveField, match="may not appear"):
                await emit_many(session, outbox, events)
            await session.rollback()
        assert await rows(committed_db, "SELECT 1 FROM registry.outbox") == []

    async def test_text_that_only_reads_like_a_sensitive_key_is_carried(
        self, committed_db: Sessions
    ) -> None:
        """A value quoting a sensitive key, or a key that merely ends in one, is no
        sensitive field: the events go out with the payloads unchanged."""
        payloads = [
            {"comment": 'he said "phone": call me', "name": '"id_number":'},
            {"home_phone_known": True, "tags": ['x"address":y']},
        ]
        async with committed_db() as session:
            await emit_many(session, outbox, [_probe_row(p) for p in payloads])
            await session.commit()
        stored = await rows(committed_db, "SELECT payload FROM registry.outbox ORDER BY id")
        assert [r[0] for r in stored] == payloads

    def test_events_made_by_the_database_may_not_name_a_sensitive_field(self) -> None:
        """The payload of `RowEvents` is fixed in code: a sensitive key fails when the
        events are declared, before any is written."""
        with pytest.raises(SensitiveField, match="phone"):
            RowEvents(
                table=outbox,
                aggregate_type="member",
                rows="JOIN registry.members AS m ON m.id = w.id",
                aggregate_id="m.id",
                aggregate_version="m.version",
                shard_key="m.shard_key",
                org_paths=("NULL", "NULL"),
                payload={"member_id": "m.id", "phone": "m.phone_masked"},
            )


def _probe_row(payload: dict[str, object]) -> EventRow:
    return EventRow(
        type="probe.written",
        aggregate_type="probe",
        aggregate_id=uuid.uuid4(),
        aggregate_version=1,
        payload=payload,
    )


async def test_an_id_without_its_row_fails_rather_than_lose_its_event(
    committed_db: Sessions,
) -> None:
    """Events made by the database for ids given: one with no row is the caller's
    mistake, and the statement fails instead of writing the others without it."""
    from services.registry.events import MEMBERS_REGISTERED

    async with committed_db() as session:
        with pytest.raises(RuntimeError, match="1 ids given, 0 member rows found"):
            await emit_rows(session, MEMBERS_REGISTERED, [uuid.uuid4()], type="member.registered")
        await session.rollback()
    assert await rows(committed_db, "SELECT 1 FROM registry.outbox") == []
