"""The revisions that key mobility's member rows and the gateway's webhook deliveries
(`0006_mobility_row_keys`, `0005_gateway_row_keys`) fill the key of rows that exist, make
it part of the primary key, and go back down without losing a row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic import command

from common.db import plain_url
from common.sharding import UNSHARDED
from tests.pgutil import drop_database, fresh_database
from tools import migrate

MOBILITY_TABLES = {
    "mobile_cards": "id",
    "contacts": "id",
    "links": "id",
    "feedback": "id",
    "transfers": "transfer_id",
    "last_org_life": "member_id",
}


@pytest.fixture
def scratch_url(server_url: str) -> Iterator[str]:
    url, name = fresh_database(server_url)
    yield url
    drop_database(server_url, name)


def sql(url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(plain_url(url))
        try:
            return list(await conn.fetch(statement, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def primary_key(url: str, schema: str, table: str) -> list[str]:
    rows = sql(
        url,
        """SELECT a.attname FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = CAST($1 AS regclass) AND i.indisprimary
        ORDER BY array_position(i.indkey, a.attnum)""",
        f"{schema}.{table}",
    )
    return [r["attname"] for r in rows]


def foreign_keys(url: str, schema: str, table: str) -> set[str]:
    rows = sql(
        url,
        "SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint "
        "WHERE conrelid = CAST($1 AS regclass) AND contype = 'f'",
        f"{schema}.{table}",
    )
    return {r["d"] for r in rows}


def test_mobility_rows_take_their_members_key(scratch_url: str) -> None:
    cfg = migrate.config("mobility", scratch_url)
    command.upgrade(cfg, "0005_mobility_keys")
    known, unknown, county = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    org = uuid.uuid4()
    sql(
        scratch_url,
        """INSERT INTO mobility.members (member_id, name, status, category, relation, shard_key,
            version, updated_at)
        VALUES ($1, '张三', 'full', 'retired', 'enrolled', $2, 1, now())""",
        known,
        county,
    )
    for member in (known, unknown):
        card, link = uuid.uuid4(), uuid.uuid4()
        sql(
            scratch_url,
            """WITH card AS (
                INSERT INTO mobility.mobile_cards (id, member_id, org_id, direction,
                    place_cipher, left_on, tracker)
                VALUES ($1, $3, $4, 'outflow', '\\x00', current_date, '王书记') RETURNING id),
            contact AS (
                INSERT INTO mobility.contacts (id, card_id, "on", channel, attended_org_life,
                    recorded_by)
                SELECT gen_random_uuid(), id, current_date, 'phone', true, 'x' FROM card),
            link AS (
                INSERT INTO mobility.links (id, member_id, workplace_external_name,
                    residence_org_id, mode)
                VALUES ($2, $3, '某公司', $4, 'direct') RETURNING id),
            rated AS (
                INSERT INTO mobility.feedback (id, link_id, year, rating, given_by)
                SELECT gen_random_uuid(), id, 2026, 'good', 'x' FROM link),
            transfer AS (
                INSERT INTO mobility.transfers (transfer_id, member_id, status, version)
                VALUES (gen_random_uuid(), $3, 'issued', 1))
            INSERT INTO mobility.last_org_life (member_id, last_attended_at)
            VALUES ($3, now())""",
            card,
            link,
            member,
            org,
        )

    command.upgrade(cfg, "head")
    keys = sql(
        scratch_url,
        """SELECT 'mobile_cards' AS t, member_id, shard_key FROM mobility.mobile_cards
        UNION ALL SELECT 'contacts', c.member_id, t.shard_key
            FROM mobility.contacts t JOIN mobility.mobile_cards c ON c.id = t.card_id
        UNION ALL SELECT 'links', member_id, shard_key FROM mobility.links
        UNION ALL SELECT 'feedback', l.member_id, t.shard_key
            FROM mobility.feedback t JOIN mobility.links l ON l.id = t.link_id
        UNION ALL SELECT 'transfers', member_id, shard_key FROM mobility.transfers
        UNION ALL SELECT 'last_org_life', member_id, shard_key FROM mobility.last_org_life""",
    )
    assert sorted((r["t"], r["member_id"], r["shard_key"]) for r in keys) == sorted(
        (t, m, k) for t in MOBILITY_TABLES for m, k in ((known, county), (unknown, UNSHARDED))
    )
    for table, id_column in MOBILITY_TABLES.items():
        assert primary_key(scratch_url, "mobility", table) == ["shard_key", id_column]
    assert foreign_keys(scratch_url, "mobility", "contacts") == {
        "FOREIGN KEY (shard_key, card_id) REFERENCES mobility.mobile_cards(shard_key, id) "
        "ON UPDATE CASCADE"
    }
    assert foreign_keys(scratch_url, "mobility", "feedback") == {
        "FOREIGN KEY (shard_key, link_id) REFERENCES mobility.links(shard_key, id) "
        "ON UPDATE CASCADE"
    }
    # Lookups and conflict targets by id alone still have their unique index.
    with pytest.raises(asyncpg.UniqueViolationError):
        sql(
            scratch_url,
            "INSERT INTO mobility.transfers (transfer_id, shard_key, member_id, status, version) "
            "SELECT transfer_id, gen_random_uuid(), member_id, status, version "
            "FROM mobility.transfers LIMIT 1",
        )

    command.downgrade(cfg, "0005_mobility_keys")
    for table, id_column in MOBILITY_TABLES.items():
        assert primary_key(scratch_url, "mobility", table) == [id_column]
        count = sql(scratch_url, f"SELECT count(*) AS n FROM mobility.{table}")  # noqa: S608
        assert count[0]["n"] == 2
    assert foreign_keys(scratch_url, "mobility", "contacts") == {
        "FOREIGN KEY (card_id) REFERENCES mobility.mobile_cards(id)"
    }


def test_gateway_deliveries_take_their_events_key(scratch_url: str) -> None:
    command.upgrade(migrate.config("mobility", scratch_url), "head")
    cfg = migrate.config("gateway", scratch_url)
    command.upgrade(cfg, "0004_gateway_keys")
    county, keyed_event, unkeyed_event, gone_event = (uuid.uuid4() for _ in range(4))
    for event_id, key in ((keyed_event, county), (unkeyed_event, None)):
        sql(
            scratch_url,
            """INSERT INTO mobility.outbox (event_id, type, aggregate_type, aggregate_id,
                aggregate_version, shard_key, payload)
            VALUES ($1, 'mobile.registered', 'mobile_card', gen_random_uuid(), 1, $2, '{}')""",
            event_id,
            key,
        )
    hook = uuid.uuid4()
    sql(
        scratch_url,
        """INSERT INTO gateway.webhooks (id, url, events, secret_encrypted, created_by)
        VALUES ($1, 'https://hooks.example.com/', '{*}', '\\x00', 'admin')""",
        hook,
    )
    expected = {}
    for event_id, source, key in (
        (keyed_event, "mobility", county),
        (unkeyed_event, "mobility", UNSHARDED),
        (gone_event, "mobility", UNSHARDED),
        (uuid.uuid4(), "registry", UNSHARDED),  # no registry outbox in this database
    ):
        delivery = uuid.uuid4()
        expected[delivery] = key
        sql(
            scratch_url,
            """WITH d AS (
                INSERT INTO gateway.webhook_deliveries (id, webhook_id, event_id, source,
                    event_type)
                VALUES ($1, $2, $3, $4, 'mobile.registered') RETURNING id)
            INSERT INTO gateway.webhook_attempts (id, delivery_id, attempt, attempted_at,
                status_code, duration_ms)
            SELECT gen_random_uuid(), id, n, now(), 500, 3 FROM d, generate_series(1, 2) n""",
            delivery,
            hook,
            event_id,
            source,
        )

    command.upgrade(cfg, "head")
    found = sql(scratch_url, "SELECT id, shard_key FROM gateway.webhook_deliveries")
    assert {r["id"]: r["shard_key"] for r in found} == expected
    tried = sql(scratch_url, "SELECT delivery_id, shard_key FROM gateway.webhook_attempts")
    assert len(tried) == 8 and all(r["shard_key"] == expected[r["delivery_id"]] for r in tried)
    for table in ("webhook_deliveries", "webhook_attempts"):
        assert primary_key(scratch_url, "gateway", table) == ["shard_key", "id"]
    assert foreign_keys(scratch_url, "gateway", "webhook_attempts") == {
        "FOREIGN KEY (shard_key, delivery_id) REFERENCES "
        "gateway.webhook_deliveries(shard_key, id) ON DELETE CASCADE"
    }

    command.downgrade(cfg, "0004_gateway_keys")
    for table, count in (("webhook_deliveries", 4), ("webhook_attempts", 8)):
        assert primary_key(scratch_url, "gateway", table) == ["id"]
        rows = sql(scratch_url, f"SELECT count(*) AS n FROM gateway.{table}")  # noqa: S608
        assert rows[0]["n"] == count
