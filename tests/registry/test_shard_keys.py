"""The distribution key (common/sharding.py) on every registry row, the lookup tables that
keep ID numbers and org codes unique, and the upper tree — through every write path, and
as the 0005 migration backfills them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import plain_url
from common.events.consumer import catch_up
from common.service_client import service_token
from common.sharding import UNSHARDED
from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from tests.events.helpers import consumer
from tests.helpers import SERVICE_PRIVATE_PEM, client, keys_by_rule, mint
from tests.pgutil import drop_database, fresh_database
from tests.registry.factories import id_number, make_member, make_org, next_id_number
from tests.registry.test_import_export import HEADER, csv_file, upload
from tests.registry.transfer_factories import issue, request_transfer
from tools import migrate

Sessions = async_sessionmaker[AsyncSession]
ORGS = "/api/v1/registry/orgs"
MEMBERS = "/api/v1/registry/members"
TRANSFERS = "/api/v1/registry/transfers"
RESOLVE = "/api/v1/registry/persons/resolve"


async def rows(db: Sessions, sql: str, **params: Any) -> list[Any]:
    async with db() as s:
        return list((await s.execute(text(sql), params)).all())


async def count(db: Sessions, sql: str, **params: Any) -> int:
    async with db() as s:
        return int((await s.execute(text(sql), params)).scalar_one())


def rule_keys(orgs: dict[uuid.UUID, Any]) -> dict[uuid.UUID, uuid.UUID]:
    """The rule, recomputed from the tree alone (tests/helpers.py)."""
    return keys_by_rule({o: (org.parent_id, org.area_level) for o, org in orgs.items()})


async def assert_keys_follow_the_rule(db: Sessions) -> dict[str, dict[uuid.UUID, uuid.UUID]]:
    """Every row's key is the rule's, and the lookup tables and upper tree mirror the rows;
    returns the keys of orgs and members."""
    orgs = {
        r.id: r
        for r in await rows(
            db, "SELECT id, parent_id, area_level, code, shard_key FROM registry.orgs"
        )
    }
    org_keys = rule_keys(orgs)
    assert {i: o.shard_key for i, o in orgs.items()} == org_keys
    members = await rows(
        db,
        "SELECT id, org_id, residence_org_id, shard_key, id_number_hash, merged_into "
        "FROM registry.members",
    )
    member_keys = {
        m.id: org_keys.get(m.org_id) or org_keys.get(m.residence_org_id) or UNSHARDED
        for m in members
    }
    assert {m.id: m.shard_key for m in members} == member_keys
    merges = await rows(db, "SELECT into_id, shard_key FROM registry.member_merges")
    assert all(g.shard_key == member_keys[g.into_id] for g in merges)
    transfers = await rows(db, "SELECT member_id, shard_key FROM registry.transfers")
    assert all(t.shard_key == member_keys[t.member_id] for t in transfers)
    identities = await rows(
        db, "SELECT id_number_hash, member_id, shard_key FROM registry.member_identities"
    )
    assert {bytes(i.id_number_hash): (i.member_id, i.shard_key) for i in identities} == {
        bytes(m.id_number_hash): (m.id, member_keys[m.id])
        for m in members
        if m.id_number_hash is not None and m.merged_into is None
    }
    codes = await rows(db, "SELECT code, org_id, shard_key FROM registry.org_codes")
    assert {c.code: (c.org_id, c.shard_key) for c in codes} == {
        o.code: (i, org_keys[i]) for i, o in orgs.items()
    }
    await assert_upper_orgs_mirror_the_tree(db)
    return {"orgs": org_keys, "members": member_keys}


async def assert_upper_orgs_mirror_the_tree(db: Sessions) -> None:
    upper = await rows(
        db,
        "SELECT id, parent_id, path::text, code, name, kind, area_level "
        "FROM registry.upper_orgs ORDER BY id",
    )
    city = await rows(
        db,
        "SELECT id, parent_id, path::text, code, name, kind, area_level "
        "FROM registry.orgs WHERE area_level = 'city' ORDER BY id",
    )
    assert upper == city


async def latest_event_keys(db: Sessions) -> dict[uuid.UUID, uuid.UUID | None]:
    found = await rows(
        db,
        "SELECT DISTINCT ON (aggregate_id) aggregate_id, shard_key FROM registry.outbox "
        "ORDER BY aggregate_id, id DESC",
    )
    return {r.aggregate_id: r.shard_key for r in found}


async def patch_org(admin: httpx.AsyncClient, org: dict[str, Any], **changes: Any) -> Any:
    url = f"{ORGS}/{org['id']}"
    etag = (await admin.get(url)).headers["ETag"]
    return await admin.patch(url, json=changes, headers={"If-Match": etag})


async def patch_member(admin: httpx.AsyncClient, member_id: str, **changes: Any) -> Any:
    url = f"{MEMBERS}/{member_id}"
    etag = (await admin.get(url)).headers["ETag"]
    return await admin.patch(url, json=changes, headers={"If-Match": etag})


class TestEveryWritePath:
    async def test_every_row_carries_the_key_the_tree_implies(
        self, app: FastAPI, admin: httpx.AsyncClient, db: Sessions
    ) -> None:
        city = await make_org(admin, kind="committee", area_level="city", name="嘉兴市")
        k1 = await make_org(
            admin, parent_id=city["id"], kind="committee", area_level="county", name="南湖区"
        )
        k2 = await make_org(
            admin, parent_id=city["id"], kind="committee", area_level="county", name="平湖市"
        )
        s1 = await make_org(
            admin, parent_id=k1["id"], kind="working_committee", area_level="street"
        )
        a = await make_org(admin, parent_id=s1["id"], name="如意社区")
        await make_org(admin, parent_id=a["id"], kind="group", area_level="building")
        s2 = await make_org(
            admin, parent_id=k2["id"], kind="working_committee", area_level="street"
        )
        b = await make_org(admin, parent_id=s2["id"], name="凤凰社区")
        s3 = await make_org(
            admin, parent_id=city["id"], kind="working_committee", area_level="street"
        )
        work_unit = await make_org(
            admin, parent_id=city["id"], kind="committee", area_level="work_unit"
        )
        wb = await make_org(admin, parent_id=work_unit["id"], area_level="work_unit")

        # Single registrations: enrolled, resident, enrolled with a residence elsewhere.
        m1 = await make_member(admin, org_id=a["id"], id_number=next_id_number())
        m2 = await make_member(admin, residence_org_id=b["id"], category="in_service_resident")
        await make_member(admin, org_id=wb["id"], residence_org_id=a["id"])
        await make_member(admin, org_id=s3["id"])
        # An import (a row in each county) and a bulk resolution (the work-unit sync).
        roster = [HEADER] + [
            [name, "男", "1970-01-01", next_id_number(), None, "高中", "正式", "离退休", code, None]
            for name, code in (("甲", a["code"]), ("乙", b["code"]))
        ]
        r = await upload(admin, ("roster.csv", csv_file(roster), "text/csv"))
        assert r.json()["created"] == 2, r.text
        persons = {  # the endpoint's columns
            "index": [0, 1],
            "name": ["人员0", "人员1"],
            "id_number": [id_number(date(1985, 2, 3), serial=500 + i) for i in range(2)],
            "residence_community_code": [a["code"], b["code"]],
        }
        async with client(app, service_token(SERVICE_PRIVATE_PEM, subject="service:mobility")) as c:
            resolved = await c.post(RESOLVE, json={"persons": persons, "create_missing": True})
        assert resolved.json()["results"]["created"] == [True, True], resolved.text
        # A merge across counties: the duplicate (with the number and an open transfer) in
        # K2, the survivor in K1.
        survivor = await make_member(admin, org_id=a["id"])
        duplicate = await make_member(admin, org_id=b["id"], id_number=next_id_number())
        moved_over = await request_transfer(admin, duplicate["id"], to_org_id=a["id"])
        r = await admin.post(
            f"{MEMBERS}/{survivor['id']}/merge",
            json={"duplicate_id": duplicate["id"], "reason": "重复登记"},
        )
        assert r.status_code == 200, r.text
        # A transfer across counties, received.
        t = await request_transfer(admin, m1["id"], to_org_id=b["id"])
        await issue(admin, t["id"])
        r = await admin.post(f"{TRANSFERS}/{t['id']}/receive")
        assert r.status_code == 200, r.text
        keys = await assert_keys_follow_the_rule(db)
        assert keys["members"][uuid.UUID(m1["id"])] == uuid.UUID(k2["id"])
        got = await rows(
            db, "SELECT shard_key FROM registry.transfers WHERE id = :i", i=moved_over["id"]
        )
        assert got[0].shard_key == uuid.UUID(k1["id"])  # the survivor's now

        # Each aggregate's latest event carries its row's key.
        events = await latest_event_keys(db)
        current = {**keys["orgs"], **keys["members"]}
        for transfer in await rows(db, "SELECT id, shard_key FROM registry.transfers"):
            current[transfer.id] = transfer.shard_key
        assert all(events[i] == current[i] for i in events), (events, current)
        assert await count(db, "SELECT count(*) FROM registry.outbox WHERE shard_key IS NULL") == 0

        # A member moving their residence to another county; a street moving under the
        # city (its own key from now on, for its subtree and their members); a county
        # raised to city level and back (its children's keys follow).
        r = await patch_member(admin, m2["id"], residence_org_id=a["id"])
        assert r.status_code == 200, r.text
        r = await patch_org(admin, s1, parent_id=city["id"])
        assert r.status_code == 200, r.text
        keys = await assert_keys_follow_the_rule(db)
        assert keys["orgs"][uuid.UUID(a["id"])] == uuid.UUID(s1["id"])
        assert keys["members"][uuid.UUID(m2["id"])] == uuid.UUID(s1["id"])
        events = await latest_event_keys(db)
        assert events[uuid.UUID(s1["id"])] == uuid.UUID(s1["id"])
        assert events[uuid.UUID(m2["id"])] == uuid.UUID(k1["id"])  # before the street moved
        r = await patch_org(admin, k2, area_level="city")
        assert r.status_code == 200, r.text
        keys = await assert_keys_follow_the_rule(db)
        assert keys["members"][uuid.UUID(m1["id"])] == uuid.UUID(s2["id"])
        assert (await latest_event_keys(db))[uuid.UUID(s2["id"])] == uuid.UUID(s2["id"])
        r = await patch_org(admin, k2, area_level="county")
        assert r.status_code == 200, r.text
        keys = await assert_keys_follow_the_rule(db)
        assert keys["members"][uuid.UUID(m1["id"])] == uuid.UUID(k2["id"])
        assert (await latest_event_keys(db))[uuid.UUID(s2["id"])] == uuid.UUID(k2["id"])


class TestUniqueness:
    async def test_a_duplicate_id_number_is_409_and_writes_nothing(
        self, admin: httpx.AsyncClient, db: Sessions
    ) -> None:
        org = await make_org(admin, kind="committee", area_level="city")
        number, other = next_id_number(), next_id_number()
        first = await make_member(admin, org_id=org["id"], id_number=number)
        second = await make_member(admin, org_id=org["id"], id_number=other)
        before = await count(db, "SELECT count(*) FROM registry.member_identities")
        members = await count(db, "SELECT count(*) FROM registry.members")
        r = await admin.post(
            MEMBERS,
            json={
                "name": "又一个",
                "gender": "male",
                "birth_date": "1970-01-01",
                "id_number": number,
                "category": "retired",
                "org_id": org["id"],
            },
        )
        assert r.status_code == 409 and r.json()["existing_id"] == first["id"]
        r = await patch_member(admin, second["id"], id_number=number)
        assert r.status_code == 409 and r.json()["existing_id"] == first["id"]
        assert await count(db, "SELECT count(*) FROM registry.member_identities") == before
        assert await count(db, "SELECT count(*) FROM registry.members") == members
        # A number given up is free again.
        r = await patch_member(admin, first["id"], id_number=None)
        assert r.status_code == 200, r.text
        r = await patch_member(admin, second["id"], id_number=number)
        assert r.status_code == 200, r.text
        await assert_keys_follow_the_rule(db)

    async def test_a_duplicate_org_code_is_409_and_writes_nothing(
        self, admin: httpx.AsyncClient, db: Sessions
    ) -> None:
        city = await make_org(admin, kind="committee", area_level="city")
        county = await make_org(admin, parent_id=city["id"], kind="committee", area_level="county")
        orgs = await count(db, "SELECT count(*) FROM registry.orgs")
        codes = await count(db, "SELECT count(*) FROM registry.org_codes")
        body = {"code": county["code"], "name": "重", "kind": "branch", "area_level": "community"}
        r = await admin.post(ORGS, json={**body, "parent_id": city["id"]})
        assert r.status_code == 409, r.text
        r = await patch_org(admin, county, code=city["code"])
        assert r.status_code == 409, r.text
        assert await count(db, "SELECT count(*) FROM registry.orgs") == orgs
        assert await count(db, "SELECT count(*) FROM registry.org_codes") == codes
        # A code given up is free again.
        r = await patch_org(admin, county, code=f"{county['code']}-new")
        assert r.status_code == 200, r.text
        r = await admin.post(ORGS, json={**body, "parent_id": county["id"]})
        assert r.status_code == 201, r.text
        await assert_keys_follow_the_rule(db)


class TestReferencesWithoutForeignKeys:
    """A residence org, a party group and a transfer's destination may lie in another county:
    no foreign key holds them, the service does (the same 422 as before)."""

    @pytest.mark.parametrize("field", ["residence_org_id", "group_id"])
    async def test_an_unknown_org_is_422_and_writes_nothing(
        self, admin: httpx.AsyncClient, db: Sessions, field: str
    ) -> None:
        org = await make_org(admin, kind="committee", area_level="city")
        member = await make_member(admin, org_id=org["id"])
        before = await count(db, "SELECT count(*) FROM registry.members")
        body = {
            "name": "某",
            "gender": "male",
            "birth_date": "1970-01-01",
            "category": "retired",
            "org_id": org["id"],
            field: str(uuid.uuid4()),
        }
        r = await admin.post(MEMBERS, json=body)
        assert r.status_code == 422, r.text
        assert {e["field"] for e in r.json()["errors"]} == {field}
        r = await patch_member(admin, member["id"], **{field: str(uuid.uuid4())})
        assert r.status_code == 422, r.text
        assert {e["field"] for e in r.json()["errors"]} == {field}
        assert await count(db, "SELECT count(*) FROM registry.members") == before

    async def test_an_unknown_destination_of_an_incoming_transfer_is_422(
        self, admin: httpx.AsyncClient, db: Sessions
    ) -> None:
        org = await make_org(admin, kind="committee", area_level="city")
        member = await make_member(admin, org_id=org["id"])
        before = await count(db, "SELECT count(*) FROM registry.transfers")
        body = {
            "member_id": member["id"],
            "from_external": {"name": "外地", "code": "X"},
            "to_org_id": str(uuid.uuid4()),
            "letter_no": "1",
            "valid_until": date.today().isoformat(),
        }
        r = await admin.post(TRANSFERS, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [{"field": "to_org_id", "message": "no such organization"}]
        assert await count(db, "SELECT count(*) FROM registry.transfers") == before


class TestUpperOrgs:
    async def test_mirror_the_city_level_orgs_after_create_update_and_move(
        self, admin: httpx.AsyncClient, db: Sessions
    ) -> None:
        first = await make_org(admin, kind="committee", area_level="city", name="甲市")
        second = await make_org(admin, kind="committee", area_level="city", name="乙市")
        county = await make_org(admin, parent_id=first["id"], kind="committee", area_level="county")
        await assert_upper_orgs_mirror_the_tree(db)
        assert (await patch_org(admin, first, name="甲市委")).status_code == 200
        assert (await patch_org(admin, county, area_level="city")).status_code == 200
        await assert_upper_orgs_mirror_the_tree(db)
        assert (
            await count(
                db, "SELECT count(*) FROM registry.upper_orgs WHERE id = :i", i=county["id"]
            )
            == 1
        )
        assert (await patch_org(admin, first, parent_id=second["id"])).status_code == 200
        await assert_upper_orgs_mirror_the_tree(db)
        assert (await patch_org(admin, county, area_level="county")).status_code == 200
        await assert_upper_orgs_mirror_the_tree(db)
        await assert_keys_follow_the_rule(db)


class TestReadModels:
    """The registry's events carry the keys: mobility's and activities' read models hold the
    same ones after a level change and a move, whatever rows the change re-keyed."""

    @pytest.fixture
    async def committed_admin(
        self, committed_db: Sessions, settings_env: dict[str, object]
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = RegistrySettings(**settings_env, consumers_enabled=False)  # type: ignore[arg-type]
        app = create_app(settings, sessionmaker=committed_db)
        async with client(app, mint("admin", username="keys-admin")) as c:
            yield c

    @staticmethod
    async def assert_projected_keys(db: Sessions) -> None:
        orgs = dict(await rows(db, "SELECT id, shard_key FROM registry.orgs"))
        members = dict(await rows(db, "SELECT id, shard_key FROM registry.members"))
        for schema in ("mobility", "activities"):
            await catch_up(db, consumer(schema))
            projected = await rows(db, f"SELECT org_id, shard_key FROM {schema}.orgs")  # noqa: S608
            assert dict(projected) == orgs, schema  # type: ignore[arg-type]
            projected = await rows(db, f"SELECT member_id, shard_key FROM {schema}.members")  # noqa: S608
            assert dict(projected) == members, schema  # type: ignore[arg-type]

    async def test_hold_the_registry_keys_after_a_level_change_and_a_move(
        self, committed_admin: httpx.AsyncClient, committed_db: Sessions
    ) -> None:
        admin = committed_admin
        city = await make_org(admin, kind="committee", area_level="city")
        k1 = await make_org(admin, parent_id=city["id"], kind="committee", area_level="county")
        k2 = await make_org(admin, parent_id=city["id"], kind="committee", area_level="county")
        street = await make_org(
            admin, parent_id=k1["id"], kind="working_committee", area_level="street"
        )
        community = await make_org(admin, parent_id=street["id"])
        await make_member(admin, org_id=community["id"])
        await make_member(admin, residence_org_id=community["id"], category="in_service_resident")
        await self.assert_projected_keys(committed_db)
        assert (await patch_org(admin, k1, area_level="city")).status_code == 200
        await self.assert_projected_keys(committed_db)
        assert (await patch_org(admin, k1, area_level="county")).status_code == 200
        await self.assert_projected_keys(committed_db)
        assert (await patch_org(admin, street, parent_id=k2["id"])).status_code == 200
        await self.assert_projected_keys(committed_db)


# --- the migration ---------------------------------------------------------------------------


@pytest.fixture
def scratch_url(server_url: str) -> Iterator[str]:
    url, name = fresh_database(server_url)
    yield url
    drop_database(server_url, name)


def _run(url: str, *statements: tuple[str, tuple[Any, ...]]) -> list[list[Any]]:
    async def go() -> list[list[Any]]:
        conn = await asyncpg.connect(plain_url(url))
        try:
            return [list(await conn.fetch(sql, *args)) for sql, args in statements]
        finally:
            await conn.close()

    return asyncio.run(go())


ORG_SQL = (
    "INSERT INTO registry.orgs (id, seq, code, name, kind, area_level, parent_id, path) "
    "VALUES ($1, $2, $3, $3, 'committee', $4, $5, $6::ltree)"
)
MEMBER_SQL = (
    "INSERT INTO registry.members (id, name, gender, birth_date, membership, category, "
    "relation, org_id, residence_org_id, id_number_cipher, id_number_hash, merged_into) "
    "VALUES ($1, 'x', 'male', '1970-01-01', 'full', 'retired', 'enrolled', $2, $3, $4, $4, $5)"
)


class TestMigration:
    def test_backfills_keys_lookups_and_the_upper_tree(self, scratch_url: str) -> None:
        cfg = migrate.config("registry", scratch_url)
        command.upgrade(cfg, "0004_registry_outbox_key")
        city, county, street, community, loose = (uuid.uuid4() for _ in range(5))
        m1, m2, m3, m4 = (uuid.uuid4() for _ in range(4))
        _run(
            scratch_url,
            (ORG_SQL, (city, 1, "C", "city", None, "1")),
            (ORG_SQL, (county, 2, "K", "county", city, "1.2")),
            (ORG_SQL, (street, 3, "S", "street", county, "1.2.3")),
            (ORG_SQL, (community, 4, "A", "community", street, "1.2.3.4")),
            (ORG_SQL, (loose, 5, "L", "street", city, "1.5")),
            (MEMBER_SQL, (m1, community, loose, b"h1", None)),
            (MEMBER_SQL, (m2, None, loose, b"h2", None)),
            (MEMBER_SQL, (m3, None, None, None, None)),
            (MEMBER_SQL, (m4, community, None, None, m1)),
            (
                "INSERT INTO registry.member_merges (id, from_id, into_id, merged_by) "
                "VALUES ($1, $2, $3, 'sql')",
                (uuid.uuid4(), m4, m2),
            ),
            (
                "INSERT INTO registry.transfers (id, member_id, from_org_id, to_external_name, "
                "requested_by) VALUES ($1, $2, $3, 'x', 'sql')",
                (uuid.uuid4(), m1, community),
            ),
        )
        command.upgrade(cfg, "head")
        orgs, members, merges, transfers, identities, codes, upper = _run(
            scratch_url,
            ("SELECT id, shard_key FROM registry.orgs", ()),
            ("SELECT id, shard_key FROM registry.members", ()),
            ("SELECT shard_key FROM registry.member_merges", ()),
            ("SELECT shard_key FROM registry.transfers", ()),
            ("SELECT id_number_hash, member_id, shard_key FROM registry.member_identities", ()),
            ("SELECT code, org_id, shard_key FROM registry.org_codes", ()),
            ("SELECT id FROM registry.upper_orgs", ()),
        )
        org_keys = {r["id"]: r["shard_key"] for r in orgs}
        assert org_keys == {
            city: city,
            county: county,
            street: county,
            community: county,
            loose: loose,
        }
        assert {r["id"]: r["shard_key"] for r in members} == {
            m1: county,
            m2: loose,
            m3: UNSHARDED,
            m4: county,
        }
        assert [r["shard_key"] for r in merges] == [loose]
        assert [r["shard_key"] for r in transfers] == [county]
        assert {
            (bytes(r["id_number_hash"]), r["member_id"], r["shard_key"]) for r in identities
        } == {
            (b"h1", m1, county),
            (b"h2", m2, loose),
        }
        assert {r["code"]: (r["org_id"], r["shard_key"]) for r in codes} == {
            "C": (city, city),
            "K": (county, county),
            "S": (street, county),
            "A": (community, county),
            "L": (loose, loose),
        }
        assert [r["id"] for r in upper] == [city]

        command.downgrade(cfg, "0004_registry_outbox_key")
        (columns, tables) = _run(
            scratch_url,
            (
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = 'registry' AND column_name = 'shard_key'",
                (),
            ),
            (
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'registry'",
                (),
            ),
        )
        keyed = {r["table_name"] for r in columns}
        assert not {"orgs", "members", "member_merges", "transfers"} & keyed
        assert not {"member_identities", "org_codes", "upper_orgs"} & {
            r["table_name"] for r in tables
        }
        command.upgrade(cfg, "head")
