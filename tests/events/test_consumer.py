"""Consumers reading the outbox tables directly (no broker): the read models of mobility and
activities match the registry, survive being killed mid-stream, replays and reordering,
and a registration shows up in mobility well within a second."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.consumer import catch_up, reset_cursors, run_outbox_consumer
from common.events.outbox import START, Event, read_after
from common.events.runtime import rebuild
from services.mobility.app import create_app as create_mobility_app
from services.mobility.projections import _rebuild as rebuild_mobility_cli
from services.mobility.settings import MobilitySettings
from tests.events.helpers import (
    consumer,
    eventually,
    model,
    move,
    outbox_count,
    populate,
    projection,
    registry_view,
    rows,
    running,
    stop,
)
from tests.registry.factories import build_tree, make_member, make_org

Sessions = async_sessionmaker[AsyncSession]


class TestProjection:
    async def test_catch_up_builds_what_the_registry_holds(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        await populate(admin)
        result = await catch_up(committed_db, consumer("mobility"))
        assert result.applied == await outbox_count(committed_db)
        expected = await registry_view(committed_db)
        assert len(expected["members"]) == 12
        assert await projection(committed_db, "mobility") == expected

    async def test_org_move_repaths_the_subtree_and_its_members(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        tree = await build_tree(admin)
        enrolled = await make_member(admin, org_id=tree.community_a["id"])
        resident = await make_member(
            admin,
            residence_org_id=tree.community_a["id"],
            group_id=tree.building_a1["id"],
            category="in_service_resident",
        )
        await catch_up(committed_db, consumer("activities"))
        street2 = await make_org(
            admin, parent_id=tree.city["id"], kind="working_committee", area_level="street"
        )
        await move(admin, tree.community_a, street2["id"])
        await catch_up(committed_db, consumer("activities"))
        paths = dict(
            await rows(
                committed_db,
                "SELECT member_id, coalesce(org_path, residence_path)::text "
                "FROM activities.members",
            )
        )
        street2_path = (
            await rows(
                committed_db,
                "SELECT path::text FROM activities.orgs WHERE org_id = :i",
                i=uuid.UUID(street2["id"]),
            )
        )[0][0]
        for member in (enrolled, resident):
            assert paths[uuid.UUID(member["id"])].startswith(street2_path + ".")
        assert await projection(committed_db, "activities") == await registry_view(committed_db)

    async def test_applying_the_same_events_twice_changes_nothing(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        await populate(admin, members=2)
        await catch_up(committed_db, consumer("mobility"))
        once = await projection(committed_db, "mobility")
        async with committed_db() as session, session.begin():
            events, _ = await read_after(session, source="registry", after=START, limit=10_000)
            for event in events:
                await model("mobility").apply(session, event)
        assert await projection(committed_db, "mobility") == once
        async with committed_db() as session, session.begin():
            await reset_cursors(session, consumer("mobility"))
        assert (await catch_up(committed_db, consumer("mobility"))).applied == len(events)
        assert (
            await projection(committed_db, "mobility") == once == await registry_view(committed_db)
        )

    async def test_replaying_the_whole_stream_twice_gives_the_same_projection(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str
    ) -> None:
        await populate(admin, members=2)
        await catch_up(committed_db, consumer("mobility"))
        before = await projection(committed_db, "mobility")
        replays = []
        for _ in range(2):
            applied = await rebuild(
                committed_db, consumer("mobility"), reset=model("mobility").reset, dsn=dsn
            )
            assert applied == await outbox_count(committed_db)
            replays.append(await projection(committed_db, "mobility"))
        assert replays[0] == replays[1] == before == await registry_view(committed_db)

    async def test_move_applied_before_an_earlier_registration_still_converges(
        self, admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        """Transactions may take their ids in one order and commit in another: a member
        registered under the old path and applied after the move lands under the new one."""
        tree = await build_tree(admin)
        member = await make_member(admin, org_id=tree.community_a["id"])
        group = await make_org(
            admin, parent_id=tree.community_a["id"], kind="group", area_level="building"
        )
        street2 = await make_org(
            admin, parent_id=tree.city["id"], kind="working_committee", area_level="street"
        )
        await move(admin, tree.community_a, street2["id"])
        async with committed_db() as session:
            events, _ = await read_after(session, source="registry", after=START, limit=1000)
        late_ids = {uuid.UUID(member["id"]), uuid.UUID(group["id"])}
        late = [e for e in events if e.aggregate_id in late_ids]
        assert [e.type for e in late] == ["member.registered", "org.created"]
        reordered = [e for e in events if e.aggregate_id not in late_ids] + late
        async with committed_db() as session, session.begin():
            for event in reordered:
                await model("activities").apply(session, event)
        assert await projection(committed_db, "activities") == await registry_view(committed_db)


class TestRunner:
    async def test_killed_mid_stream_and_restarted_ends_like_one_that_never_stopped(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str
    ) -> None:
        await populate(admin, members=5)
        total = await outbox_count(committed_db)
        await catch_up(committed_db, consumer("mobility"))  # never stopped
        uninterrupted = await projection(committed_db, "mobility")

        # The other one hangs inside a batch's transaction at the 12th event and is killed.
        hung = asyncio.Event()
        seen = 0

        async def apply_then_hang(session: AsyncSession, event: Event) -> None:
            nonlocal seen
            seen += 1
            if seen == 12:
                hung.set()
                await asyncio.Event().wait()
            await model("activities").apply(session, event)

        task = asyncio.create_task(
            run_outbox_consumer(
                committed_db,
                consumer("activities", apply=apply_then_hang, batch_size=5),
                dsn=dsn,
            )
        )
        await asyncio.wait_for(hung.wait(), 10)
        await stop(task)
        partial = await projection(committed_db, "activities")
        cursor = await rows(
            committed_db, "SELECT id FROM activities.consumer_cursors WHERE source = 'registry'"
        )
        applied_rows = len(partial["orgs"]) + len(partial["members"])
        assert 0 < applied_rows < len(uninterrupted["orgs"]) + len(uninterrupted["members"])
        assert cursor and cursor[0][0] > 0

        async with running(run_outbox_consumer(committed_db, consumer("activities"), dsn=dsn)):

            async def caught_up() -> bool:
                return await projection(committed_db, "activities") == uninterrupted

            await eventually(caught_up, what="the restarted consumer to catch up")
        assert uninterrupted == await registry_view(committed_db)
        assert total == await outbox_count(committed_db)

    async def test_registered_member_is_usable_in_mobility_within_one_second(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str
    ) -> None:
        tree = await build_tree(admin)
        # Polling every 30 s: only LISTEN/NOTIFY can make it in time.
        runner = run_outbox_consumer(
            committed_db, consumer("mobility"), dsn=dsn, poll_interval_s=30
        )
        async with running(runner):

            async def tree_projected() -> bool:
                return len((await projection(committed_db, "mobility"))["orgs"]) == 5

            await eventually(tree_projected, what="the tree")
            for _ in range(3):
                started = time.monotonic()
                member = await make_member(admin, org_id=tree.community_a["id"])

                async def projected(member_id: str = member["id"]) -> bool:
                    found = await rows(
                        committed_db,
                        "SELECT org_path::text FROM mobility.members WHERE member_id = :i",
                        i=uuid.UUID(member_id),
                    )
                    return bool(found)

                await eventually(projected, timeout_s=1.0, what="the member in mobility")
                assert time.monotonic() - started < 1.0

    async def test_polling_delivers_when_no_notification_comes(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str
    ) -> None:
        async with committed_db() as session, session.begin():
            await session.execute(text("ALTER TABLE registry.outbox DISABLE TRIGGER outbox_notify"))
        try:
            runner = run_outbox_consumer(
                committed_db, consumer("mobility"), dsn=dsn, poll_interval_s=0.2
            )
            async with running(runner):
                org = await make_org(admin, kind="committee", area_level="city")

                async def projected() -> bool:
                    return bool(
                        await rows(
                            committed_db,
                            "SELECT 1 FROM mobility.orgs WHERE org_id = :i",
                            i=uuid.UUID(org["id"]),
                        )
                    )

                await eventually(projected, timeout_s=5, what="the polled org")
        finally:
            async with committed_db() as session, session.begin():
                await session.execute(
                    text("ALTER TABLE registry.outbox ENABLE TRIGGER outbox_notify")
                )

    async def test_one_runner_applies_while_a_second_stands_by(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str
    ) -> None:
        appliers: list[str] = []

        def tagged(tag: str) -> Any:
            async def apply(session: AsyncSession, event: Event) -> None:
                appliers.append(tag)
                await model("mobility").apply(session, event)

            return apply

        first = asyncio.create_task(
            run_outbox_consumer(
                committed_db,
                consumer("mobility", apply=tagged("first")),
                dsn=dsn,
                poll_interval_s=0.1,
            )
        )
        try:

            async def applied(n: int) -> bool:
                return len(appliers) >= n

            # Once it has applied an event, the first runner holds the consumer's lock.
            await make_org(admin, kind="committee", area_level="city")
            await eventually(lambda: applied(1), what="the first runner")
            async with running(
                run_outbox_consumer(
                    committed_db,
                    consumer("mobility", apply=tagged("second")),
                    dsn=dsn,
                    poll_interval_s=0.1,
                )
            ):
                second_org = await make_org(admin, kind="committee", area_level="city")
                await eventually(lambda: applied(2), what="the second event")

                async def committed() -> bool:  # applied is not yet committed
                    found = await rows(
                        committed_db,
                        "SELECT 1 FROM mobility.orgs WHERE org_id = :i",
                        i=uuid.UUID(second_org["id"]),
                    )
                    return bool(found)

                await eventually(committed, what="the second event's commit")
                assert appliers == ["first", "first"]
                await stop(first)
                await make_org(admin, kind="committee", area_level="city")
                await eventually(lambda: applied(3), what="the standby to take over")
                assert appliers == ["first", "first", "second"]
        finally:
            await stop(first)

    async def test_mobility_app_runs_its_consumer_for_its_lifetime(
        self,
        admin: httpx.AsyncClient,
        committed_db: Sessions,
        settings_env: dict[str, object],
    ) -> None:
        settings = MobilitySettings(**settings_env, nats_url=None)  # type: ignore[arg-type]
        app = create_mobility_app(settings, sessionmaker=committed_db)
        async with app.router.lifespan_context(app):
            tasks = list(app.state.events.tasks)
            assert [t.get_name() for t in tasks] == [
                "consumer:mobility.registry",
                "consumer:mobility.transfers",
                "consumer:mobility.org_life",
                "partitions:mobility",  # the outbox's and audit log's upkeep
            ]
            org = await make_org(admin, kind="committee", area_level="city")

            async def projected() -> bool:
                return bool(
                    await rows(
                        committed_db,
                        "SELECT 1 FROM mobility.orgs WHERE org_id = :i",
                        i=uuid.UUID(org["id"]),
                    )
                )

            await eventually(projected, what="the app's consumer")
        assert all(t.done() for t in tasks)

        off = MobilitySettings(**settings_env, consumers_enabled=False)  # type: ignore[arg-type]
        app = create_mobility_app(off, sessionmaker=committed_db)
        async with app.router.lifespan_context(app):
            assert app.state.events is None

    async def test_rebuild_command_replays_from_the_start(
        self,
        admin: httpx.AsyncClient,
        committed_db: Sessions,
        settings_env: dict[str, object],
    ) -> None:
        await populate(admin, members=1)
        settings = MobilitySettings(**settings_env, nats_url=None)  # type: ignore[arg-type]
        applied = await rebuild_mobility_cli(settings)
        assert applied == await outbox_count(committed_db)
        assert await projection(committed_db, "mobility") == await registry_view(committed_db)
