"""From an event to a receiver: who gets which events, signed how, retried until it works
(and recorded), never with a sensitive field, replayable, and never at an internal address
unless an admin allowed it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from gateway.webhooks.deliverer import Deliverer
from gateway.webhooks.ssrf import system_resolver
from tests.events.helpers import move
from tests.gateway.conftest import FakeClock
from tests.registry.factories import Tree, make_member, make_org, next_id_number
from tests.webhooks.conftest import PUBLIC_URL, RETRY_DELAYS, Dns
from tests.webhooks.helpers import HOOKS, attempts, deliveries, issue_key, register
from tests.webhooks.receiver import Receiver, serve

Gw = Callable[..., httpx.AsyncClient]
Step = Callable[[], Awaitable[int]]
Sessions = async_sessionmaker[AsyncSession]


async def settle(fan_out_now: Step, deliver_now: Step) -> None:
    """Fan out every committed event, then attempt everything due."""
    await fan_out_now()
    while await deliver_now():
        pass


class TestScope:
    async def test_key_gets_only_events_of_its_subtree(
        self,
        admin_client: httpx.AsyncClient,
        gw: Gw,
        tree: Tree,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        key = gw(X_API_Key=await issue_key(admin_client, tree.community_a["id"]))
        hook = await register(key, PUBLIC_URL, events=["member.registered"])
        mine = await make_member(admin_client, org_id=tree.community_a["id"])
        await make_member(admin_client, org_id=tree.community_b["id"])  # a sibling community
        await settle(fan_out_now, deliver_now)

        assert [r.json()["aggregate"]["id"] for r in receiver.accepted] == [mine["id"]]
        [delivery] = await deliveries(key, hook["id"])
        assert delivery["status"] == "delivered" and delivery["event_type"] == "member.registered"

    async def test_filter_and_subtree_of_a_street(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        await register(admin_client, PUBLIC_URL, org_id=tree.street["id"], events=["member.*"])
        await make_member(admin_client, org_id=tree.community_a["id"])
        await make_member(admin_client, org_id=tree.community_b["id"])
        await admin_client.post(
            "/api/v1/registry/orgs",
            json={
                "code": "ORG-X1",
                "name": "新社区",
                "kind": "branch",
                "area_level": "community",
                "parent_id": tree.street["id"],
            },
        )  # an org event: not in the filter
        await settle(fan_out_now, deliver_now)
        types = [r.json()["type"] for r in receiver.accepted]
        assert types == ["member.registered", "member.registered"]

    async def test_an_event_is_delivered_once_per_webhook(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
        db: Sessions,
    ) -> None:
        await register(admin_client, PUBLIC_URL, org_id=tree.community_a["id"])
        await make_member(admin_client, org_id=tree.community_a["id"])
        await settle(fan_out_now, deliver_now)
        first = len(receiver.accepted)
        # The consumer starts over (a rebuild): the same events fan out again.
        async with db() as session, session.begin():
            from sqlalchemy import text

            await session.execute(text("DELETE FROM gateway.consumer_cursors"))
        await settle(fan_out_now, deliver_now)
        assert first >= 1 and len(receiver.accepted) == first

    async def test_a_moved_community_brings_its_events_to_the_new_street(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        street2 = await make_org(
            admin_client, parent_id=tree.city["id"], kind="working_committee", area_level="street"
        )
        await move(admin_client, tree.community_a, street2["id"])
        await register(admin_client, PUBLIC_URL, org_id=street2["id"], events=["member.*"])
        member = await make_member(
            admin_client, org_id=tree.community_a["id"], group_id=tree.building_a1["id"]
        )
        await make_member(admin_client, org_id=tree.community_b["id"])
        await settle(fan_out_now, deliver_now)
        assert [r.json()["aggregate"]["id"] for r in receiver.accepted] == [member["id"]]

    async def test_a_moved_webhook_org_matches_by_its_new_path_in_the_same_batch(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        """The webhook's own org moves, then a member event under its new path: read in one
        batch, the move is applied before the event is matched."""
        await register(admin_client, PUBLIC_URL, org_id=tree.community_a["id"], events=["member.*"])
        street2 = await make_org(
            admin_client, parent_id=tree.city["id"], kind="working_committee", area_level="street"
        )
        await move(admin_client, tree.community_a, street2["id"])
        member = await make_member(admin_client, org_id=tree.community_a["id"])
        assert await fan_out_now() >= 3  # street2 created, the move, the member: one catch-up
        await deliver_now()
        assert [r.json()["aggregate"]["id"] for r in receiver.accepted] == [member["id"]]


class TestSigning:
    async def test_signature_verifies_and_fails_with_the_wrong_secret(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        hook = await register(admin_client, PUBLIC_URL, org_id=tree.city["id"])
        other = await register(admin_client, PUBLIC_URL, org_id=tree.community_b["id"])
        member = await make_member(admin_client, org_id=tree.community_a["id"])
        await settle(fan_out_now, deliver_now)
        [got] = receiver.accepted
        assert got.path == "/lianxin" and got.headers["host"] == "hooks.example.com"
        assert got.headers["content-type"] == "application/json"

        body = Webhook(hook["secret"]).verify(got.body, got.headers)
        assert body["type"] == "member.registered"
        assert (
            body["aggregate"]["id"] == member["id"] and body["data"]["org_id"] == member["org_id"]
        )
        assert set(body) == {"id", "type", "occurred_at", "aggregate", "data"}
        with pytest.raises(WebhookVerificationError):
            Webhook(other["secret"]).verify(got.body, got.headers)
        tampered = got.body.replace(b"member.registered", b"member.updated")
        with pytest.raises(WebhookVerificationError):
            Webhook(hook["secret"]).verify(tampered, got.headers)


class TestRetries:
    async def test_receiver_failing_three_times_gets_the_event_once(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        clock: FakeClock,
        fan_out_now: Step,
        deliver_now: Step,
        db: Sessions,
    ) -> None:
        hook = await register(
            admin_client, PUBLIC_URL, org_id=tree.community_a["id"], events=["member.registered"]
        )
        await make_member(admin_client, org_id=tree.community_a["id"])
        receiver.answers = [500, 503, 500]
        await fan_out_now()

        assert await deliver_now() == 1
        [delivery] = await deliveries(admin_client, hook["id"])
        assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
        assert delivery["last_status_code"] == 500 and delivery["last_error"] == "HTTP 500"
        for delay in RETRY_DELAYS:
            assert await deliver_now() == 0  # not due yet
            clock.advance(seconds=delay)
            assert await deliver_now() == 1
        clock.advance(hours=1)
        assert await deliver_now() == 0

        assert len(receiver.received) == 4 and len(receiver.accepted) == 1
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
        [delivery] = await deliveries(admin_client, hook["id"])
        assert delivery["status"] == "delivered" and delivery["attempts"] == 4
        assert delivery["last_status_code"] == 204 and delivery["delivered_at"]
        tried = await attempts(db, delivery["id"])
        assert [(n, code) for n, code, _ in tried] == [(1, 500), (2, 503), (3, 500), (4, 204)]

    async def test_dead_after_the_last_attempt_then_replayed(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        clock: FakeClock,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        hook = await register(admin_client, PUBLIC_URL, org_id=tree.community_a["id"])
        await make_member(admin_client, org_id=tree.community_a["id"])
        receiver.answers = [500] * 4
        await fan_out_now()
        await deliver_now()
        for delay in RETRY_DELAYS:
            clock.advance(seconds=delay)
            await deliver_now()
        [dead] = await deliveries(admin_client, hook["id"])
        assert (dead["status"], dead["attempts"]) == ("dead", 4)
        clock.advance(days=1)
        assert await deliver_now() == 0

        r = await admin_client.post(f"{HOOKS}/{hook['id']}/deliveries/{dead['id']}/replay")
        assert r.status_code == 202 and r.json()["status"] == "pending"
        assert await deliver_now() == 1
        [done] = await deliveries(admin_client, hook["id"])
        assert done["status"] == "delivered" and len(receiver.accepted) == 1

    async def test_redirect_is_a_failed_attempt_and_not_followed(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        hook = await register(admin_client, PUBLIC_URL, org_id=tree.community_a["id"])
        await make_member(admin_client, org_id=tree.community_a["id"])
        receiver.answers = [302]
        await fan_out_now()
        assert await deliver_now() == 1
        assert len(receiver.received) == 1  # the Location was not visited
        [delivery] = await deliveries(admin_client, hook["id"])
        assert delivery["status"] == "failed" and delivery["last_status_code"] == 302
        assert "redirect" in delivery["last_error"]
        assert "receiver says no" not in json.dumps(delivery)

    async def test_dns_changed_to_loopback_is_refused_at_delivery(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        dns: Dns,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        hook = await register(admin_client, PUBLIC_URL, org_id=tree.community_a["id"])
        await make_member(admin_client, org_id=tree.community_a["id"])
        dns.table["hooks.example.com"] = ["127.0.0.1"]  # rebinding after registration
        await fan_out_now()
        assert await deliver_now() == 1
        assert receiver.received == []
        [delivery] = await deliveries(admin_client, hook["id"])
        assert delivery["status"] == "failed" and delivery["last_error"].startswith("refused")


class TestReplay:
    async def test_replay_since_sends_the_events_again(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        hook = await register(
            admin_client, PUBLIC_URL, org_id=tree.community_a["id"], events=["member.registered"]
        )
        since = datetime.now(UTC) - timedelta(minutes=1)
        for _ in range(2):
            await make_member(admin_client, org_id=tree.community_a["id"])
        await make_member(admin_client, org_id=tree.community_b["id"])
        await settle(fan_out_now, deliver_now)
        assert len(receiver.accepted) == 2

        r = await admin_client.post(
            f"{HOOKS}/{hook['id']}/replay", params={"since": since.isoformat()}
        )
        assert r.status_code == 202 and r.json() == {"replayed": 2}
        while await deliver_now():
            pass
        assert len(receiver.accepted) == 4
        ids = [r.json()["id"] for r in receiver.accepted]
        assert sorted(ids[:2]) == sorted(ids[2:])

    async def test_replay_of_another_scope_is_404(
        self, admin_client: httpx.AsyncClient, gw: Gw, tree: Tree
    ) -> None:
        hook = await register(admin_client, PUBLIC_URL, org_id=tree.community_a["id"])
        key_b = gw(X_API_Key=await issue_key(admin_client, tree.community_b["id"]))
        r = await key_b.post(
            f"{HOOKS}/{hook['id']}/replay", params={"since": "2026-01-01T00:00:00Z"}
        )
        assert r.status_code == 404
        missing = f"{HOOKS}/{hook['id']}/deliveries/00000000-0000-0000-0000-000000000000/replay"
        assert (await admin_client.post(missing)).status_code == 404
        assert (await admin_client.post(f"{HOOKS}/{hook['id']}/replay")).status_code == 422


class TestPrivacy:
    async def test_no_sensitive_field_in_any_body(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        receiver: Receiver,
        fan_out_now: Step,
        deliver_now: Step,
    ) -> None:
        await register(admin_client, PUBLIC_URL)
        number = next_id_number()
        await make_member(
            admin_client,
            org_id=tree.community_a["id"],
            id_number=number,
            phone="13812345678",
            address="嘉兴市南湖区如意路1号",
        )
        await settle(fan_out_now, deliver_now)
        assert receiver.accepted
        everything = b"".join(r.body for r in receiver.received).decode()
        for secret in (number, number[-6:], "13812345678", "5678", "如意路", "id_number", "phone"):
            assert secret not in everything


class TestLoopbackSocket:
    async def test_admin_allowed_loopback_receiver_over_a_real_socket(
        self,
        admin_client: httpx.AsyncClient,
        tree: Tree,
        gateway_app: FastAPI,
        clock: FakeClock,
        fan_out_now: Step,
        db: Sessions,
    ) -> None:
        receiver = Receiver(answers=[500])
        async with serve(receiver) as base:
            hook = await register(
                admin_client, f"{base}/hook", org_id=tree.community_a["id"], allow_private=True
            )
            await make_member(admin_client, org_id=tree.community_a["id"])
            await fan_out_now()
            state = gateway_app.state.webhooks
            async with httpx.AsyncClient(
                timeout=5.0, follow_redirects=False, trust_env=False
            ) as client:
                deliverer = Deliverer(
                    db,
                    keyring=state.keyring,
                    policy=state.deliverer.policy,
                    client=client,
                    resolver=system_resolver,
                    clock=clock,
                )
                assert await deliverer.run_once() == 1
                clock.advance(seconds=RETRY_DELAYS[0])
                assert await deliverer.run_once() == 1
        assert len(receiver.received) == 2 and len(receiver.accepted) == 1
        got = receiver.accepted[0]
        assert got.path == "/hook"
        body: dict[str, Any] = Webhook(hook["secret"]).verify(got.body, got.headers)
        assert body["type"] == "member.registered"
        [delivery] = await deliveries(admin_client, hook["id"])
        assert delivery["status"] == "delivered" and delivery["attempts"] == 2

    async def test_without_admin_allow_loopback_is_never_contacted(
        self, admin_client: httpx.AsyncClient, dns: Dns
    ) -> None:
        receiver = Receiver()
        async with serve(receiver) as base:
            port = base.rsplit(":", 1)[1]
            dns.table["sneaky.example.com"] = ["127.0.0.1"]
            r = await admin_client.post(
                HOOKS, json={"url": f"http://sneaky.example.com:{port}/hook", "events": ["*"]}
            )
        assert r.status_code == 422 and receiver.received == []
