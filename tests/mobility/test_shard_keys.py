"""Every mobility row that belongs to a member carries the member's distribution key
(common/sharding.py), and so does every event the service writes; when the member's key
changes (a transfer to another county, an org above them moved to another county) their
rows take the new one as the registry's events are applied. The expected keys are worked
out here from the registry's own org tree and members by the rule, independently of the
code under test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events.outbox import emit, source_outbox
from common.sharding import UNSHARDED
from services.mobility.service.cards import publish_lost_contacts
from tests.helpers import keys_by_rule
from tests.mobility.factories import EventPump, make_link, open_card, work_unit
from tests.registry.factories import Tree, id_number, make_member, make_org

AsRole = Callable[..., httpx.AsyncClient]
Sessions = async_sessionmaker[AsyncSession]

# (table, member, key) of every keyed row, the member reached through the card or the link
# for contacts and feedback.
KEYED_ROWS = """
    SELECT 'mobile_cards', member_id, shard_key FROM mobility.mobile_cards
    UNION ALL SELECT 'contacts', c.member_id, t.shard_key
        FROM mobility.contacts t JOIN mobility.mobile_cards c ON c.id = t.card_id
    UNION ALL SELECT 'links', member_id, shard_key FROM mobility.links
    UNION ALL SELECT 'feedback', l.member_id, t.shard_key
        FROM mobility.feedback t JOIN mobility.links l ON l.id = t.link_id
    UNION ALL SELECT 'transfers', member_id, shard_key FROM mobility.transfers
    UNION ALL SELECT 'last_org_life', member_id, shard_key FROM mobility.last_org_life"""
EVENTS = """SELECT type, CAST(payload->>'member_id' AS uuid), shard_key
    FROM mobility.outbox ORDER BY id"""


async def _rows(db: Sessions, sql: str) -> list[tuple[Any, ...]]:
    async with db() as s:
        return [tuple(r) for r in await s.execute(text(sql))]


async def expected_keys(db: Sessions) -> dict[uuid.UUID, uuid.UUID]:
    """Each registry member's key, by the rule, from the registry's tables: an org under a
    city-level org (or at the root) is its own key, below any other it takes its parent's;
    a member takes their relation org's key, else their residence org's."""
    keys = keys_by_rule({o: (p, level) for o, p, level in await _rows(db, ORGS)})
    members = await _rows(db, "SELECT id, org_id, residence_org_id FROM registry.members")
    return {m: keys[org] if org else keys[residence] for m, org, residence in members}


ORGS = "SELECT id, parent_id, area_level FROM registry.orgs"


async def assert_rows_keyed(db: Sessions) -> list[tuple[Any, ...]]:
    """Every keyed row carries its member's key; returns the rows."""
    expected = await expected_keys(db)
    found = await _rows(db, KEYED_ROWS)
    wrong = [(t, m, k, expected.get(m)) for t, m, k in found if k != expected.get(m)]
    assert wrong == [], "rows whose key is not their member's (table, member, key, expected)"
    return found


async def attend(db: Sessions, member_id: str) -> None:
    """An attendance at organizational life as the activities service publishes it."""
    async with db() as s:
        await emit(
            s,
            source_outbox("activities"),
            type="attendance.recorded",
            aggregate_type="activity",
            aggregate_id=uuid.uuid4(),
            aggregate_version=1,
            payload={
                "activity_id": str(uuid.uuid4()),
                "org_id": None,
                "member_id": member_id,
                "status": "present",
                "activity_type": "branch_meeting",
                "starts_at": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
            },
        )
        await s.commit()


async def second_street(registry: httpx.AsyncClient, tree: Tree) -> dict[str, Any]:
    """Another street under the city: another county-level key."""
    return await make_org(
        registry, parent_id=tree.city["id"], kind="working_committee", area_level="street"
    )


async def transfer(registry: httpx.AsyncClient, member_id: str, to_org_id: str) -> None:
    """A transfer letter issued and received: the member now belongs to `to_org_id`."""
    t = await registry.post(
        "/api/v1/registry/transfers",
        json={"member_id": member_id, "to_org_id": to_org_id, "reason": "工作调动"},
    )
    assert t.status_code == 201, t.text
    tid = t.json()["id"]
    r = await registry.post(
        f"/api/v1/registry/transfers/{tid}/issue",
        json={"letter_no": f"JX-{tid[:6]}", "valid_until": str(date.today())},
    )
    assert r.status_code == 200, r.text
    r = await registry.post(f"/api/v1/registry/transfers/{tid}/receive", json={})
    assert r.status_code == 200, r.text


async def move(registry: httpx.AsyncClient, org: dict[str, Any], parent_id: str) -> None:
    url = f"/api/v1/registry/orgs/{org['id']}"
    etag = (await registry.get(url)).headers["ETag"]
    r = await registry.patch(url, json={"parent_id": parent_id}, headers={"If-Match": etag})
    assert r.status_code == 200, r.text


async def everything_for(
    admin: httpx.AsyncClient, member_id: str, unit: dict[str, Any], residence_org_id: str
) -> None:
    """A card with a contact at organizational life, a link reported with feedback."""
    card = await open_card(admin, member_id)
    r = await admin.post(
        f"/api/v1/mobility/mobile-members/{card['id']}/contacts",
        json={"on": str(date.today()), "channel": "phone", "attended_org_life": True},
    )
    assert r.status_code == 201, r.text
    link = await make_link(
        admin,
        member_id=member_id,
        workplace_org_id=unit["id"],
        residence_org_id=residence_org_id,
    )
    r = await admin.post(f"/api/v1/mobility/links/{link['id']}/report", json={})
    assert r.status_code == 200, r.text
    r = await admin.post(
        f"/api/v1/mobility/links/{link['id']}/feedback",
        json={"year": date.today().year, "rating": "good", "comment": "按时报到"},
    )
    assert r.status_code == 200, r.text


class TestRowsCarryTheMembersKey:
    async def test_every_write_path_and_every_event(
        self,
        admin: httpx.AsyncClient,
        as_role: AsRole,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: Sessions,
    ) -> None:
        street2 = await second_street(registry, tree)
        community_c = await make_org(registry, parent_id=street2["id"])
        unit = await work_unit(registry, tree.city["id"])
        enrolled = await make_member(registry, org_id=tree.community_a["id"])
        resident = await make_member(
            registry, residence_org_id=tree.community_b["id"], category="in_service_resident"
        )
        elsewhere = await make_member(registry, org_id=community_c["id"])
        await pump()
        await everything_for(admin, enrolled["id"], unit, tree.community_a["id"])
        await everything_for(admin, resident["id"], unit, tree.community_b["id"])
        await everything_for(admin, elsewhere["id"], unit, community_c["id"])
        await attend(db, elsewhere["id"])
        # A transfer letter issued, not received yet: the read model of transfers.
        t = await registry.post(
            "/api/v1/registry/transfers",
            json={"member_id": enrolled["id"], "to_org_id": tree.community_b["id"], "reason": "x"},
        )
        assert t.status_code == 201, t.text
        r = await registry.post(
            f"/api/v1/registry/transfers/{t.json()['id']}/issue",
            json={"letter_no": "JX-1", "valid_until": str(date.today())},
        )
        assert r.status_code == 200, r.text
        # The work-unit sync: persons the registry registers now, in two communities.
        async with as_role("integration", org_id=unit["id"], scopes=["sync"]) as key:
            rows = [
                {
                    "external_id": f"E-{n}",
                    "name": f"职工{n}",
                    "id_number": id_number(date(1981, 2, 3), serial=n),
                    "residence_community_code": community["code"],
                }
                for n, community in ((1, tree.community_a), (2, community_c))
            ]
            r = await key.put(
                f"/api/v1/mobility/sync/{unit['id']}/members",
                json={"mode": "delta", "members": rows},
            )
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 2
        # Links the sync wrote carry their members' keys before any of their events arrive.
        synced = await _rows(
            db, "SELECT member_id, shard_key FROM mobility.links WHERE external_id IS NOT NULL"
        )
        expected = await expected_keys(db)
        assert {k for _, k in synced} == {expected[m] for m, _ in synced}
        await pump()
        async with db() as s:  # a silent card: the periodic announcement writes an event
            await s.execute(
                text(
                    "UPDATE mobility.mobile_cards SET left_on = current_date - 400, "
                    "last_contact_on = NULL WHERE member_id = :m"
                ),
                {"m": uuid.UUID(resident["id"])},
            )
            assert await publish_lost_contacts(s, days=90) == 1
            await s.commit()

        found = await assert_rows_keyed(db)
        tables = {t for t, _, _ in found}
        assert tables == {
            "mobile_cards",
            "contacts",
            "links",
            "feedback",
            "transfers",
            "last_org_life",
        }
        keys = {k for _, _, k in found}
        assert uuid.UUID(tree.street["id"]) in keys and uuid.UUID(street2["id"]) in keys
        assert UNSHARDED not in keys
        events = await _rows(db, EVENTS)
        assert {t for t, _, _ in events} >= {
            "mobile.registered",
            "mobile.lost_contact",
            "link.created",
            "link.reported",
            "feedback.given",
        }
        assert [(t, m) for t, m, k in events if k != expected[m]] == []

    async def test_rows_written_before_the_projection_knows_the_member_are_keyed_by_its_event(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: Sessions,
    ) -> None:
        unit = await work_unit(registry, (await second_street(registry, tree))["id"])
        member = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        async with db() as s:  # as if written while the projection lagged
            await s.execute(
                text("UPDATE mobility.members SET shard_key = :k WHERE member_id = :m"),
                {"k": UNSHARDED, "m": uuid.UUID(member["id"])},
            )
            await s.commit()
        await everything_for(admin, member["id"], unit, tree.community_a["id"])
        assert {k for _, _, k in await _rows(db, KEYED_ROWS)} == {UNSHARDED}
        r = await registry.patch(
            f"/api/v1/registry/members/{member['id']}",
            json={"name": "改名"},
            headers={
                "If-Match": (
                    await registry.get(f"/api/v1/registry/members/{member['id']}")
                ).headers["ETag"]
            },
        )
        assert r.status_code == 200, r.text
        await pump()
        found = await assert_rows_keyed(db)
        assert len(found) == 5 and {k for _, _, k in found} == {uuid.UUID(tree.street["id"])}


class TestRekeying:
    async def test_a_member_transferred_to_another_county_takes_their_rows_along(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: Sessions,
    ) -> None:
        street2 = await second_street(registry, tree)
        community_c = await make_org(registry, parent_id=street2["id"])
        unit = await work_unit(registry, tree.city["id"])
        moving = await make_member(registry, org_id=tree.community_a["id"])
        staying = await make_member(registry, org_id=tree.community_a["id"])
        await pump()
        for member in (moving, staying):
            await everything_for(admin, member["id"], unit, tree.community_a["id"])
            await attend(db, member["id"])
        await pump()
        before = {(t, m): k for t, m, k in await assert_rows_keyed(db)}
        assert set(before.values()) == {uuid.UUID(tree.street["id"])}

        await transfer(registry, moving["id"], community_c["id"])
        await pump()
        after = {(t, m): k for t, m, k in await assert_rows_keyed(db)}
        assert after.keys() >= before.keys()
        moved = {t for (t, m), k in after.items() if m == uuid.UUID(moving["id"])}
        assert moved == {
            "mobile_cards",
            "contacts",
            "links",
            "feedback",
            "transfers",
            "last_org_life",
        }
        assert {k for (_, m), k in after.items() if m == uuid.UUID(moving["id"])} == {
            uuid.UUID(street2["id"])
        }
        assert {k for (_, m), k in after.items() if m == uuid.UUID(staying["id"])} == {
            uuid.UUID(tree.street["id"])
        }

    async def test_an_org_moved_to_another_county_takes_its_members_rows_along(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        pump: EventPump,
        db: Sessions,
    ) -> None:
        street2 = await second_street(registry, tree)
        unit = await work_unit(registry, tree.city["id"])
        enrolled = await make_member(registry, org_id=tree.building_a1["id"])
        resident = await make_member(
            registry, residence_org_id=tree.community_a["id"], category="in_service_resident"
        )
        other = await make_member(registry, org_id=tree.community_b["id"])
        await pump()
        for member, home in (
            (enrolled, tree.community_a),
            (resident, tree.community_a),
            (other, tree.community_b),
        ):
            await everything_for(admin, member["id"], unit, home["id"])
        await pump()

        await move(registry, tree.community_a, street2["id"])
        await pump()
        found = await assert_rows_keyed(db)
        by_member: dict[Any, set[Any]] = {}
        for _, m, k in found:
            by_member.setdefault(m, set()).add(k)
        assert by_member == {
            uuid.UUID(enrolled["id"]): {uuid.UUID(street2["id"])},
            uuid.UUID(resident["id"]): {uuid.UUID(street2["id"])},
            uuid.UUID(other["id"]): {uuid.UUID(tree.street["id"])},
        }

    async def test_the_same_in_batches(
        self,
        admin: httpx.AsyncClient,
        registry: httpx.AsyncClient,
        tree: Tree,
        db: Sessions,
    ) -> None:
        """The bulk path (`apply_batch`, runs of member events in one statement)."""
        pump = EventPump(db, batch=True)
        await pump()
        street2 = await second_street(registry, tree)
        community_c = await make_org(registry, parent_id=street2["id"])
        unit = await work_unit(registry, tree.city["id"])
        members = [await make_member(registry, org_id=tree.community_a["id"]) for _ in range(3)]
        members.append(await make_member(registry, org_id=tree.building_a1["id"]))
        await pump()
        for member in members:
            await everything_for(admin, member["id"], unit, tree.community_a["id"])
        await pump()
        # One batch: a transfer to another county, the org holding the last member moved
        # there, another transfer into the moved org.
        await transfer(registry, members[0]["id"], community_c["id"])
        await move(registry, tree.building_a1, community_c["id"])
        await transfer(registry, members[1]["id"], tree.building_a1["id"])
        await pump()
        found = await assert_rows_keyed(db)
        keys = {m: k for _, m, k in found}
        assert [keys[uuid.UUID(m["id"])] for m in members] == [
            uuid.UUID(street2["id"]),
            uuid.UUID(street2["id"]),
            uuid.UUID(tree.street["id"]),
            uuid.UUID(street2["id"]),
        ]
