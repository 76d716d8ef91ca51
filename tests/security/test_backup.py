"""`make backup` / `make restore` (tools/backup.py): a populated database — orgs, members
with encrypted fields, an activity, a talk, the audit trails — goes to a file and comes
back into a fresh database with every row of every table, still readable with the keys."""

# Table names come from the catalogue of our own schemas, never from input.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from common.crypto import KeyRing
from common.db import plain_url
from services.activities.dependencies import PURPOSE as TALK_NOTES
from services.registry.service.member_card import ID_NUMBER, PHONE
from tests.pgutil import drop_database
from tests.security.conftest import Scenario
from tools import backup
from tools.db_roles import role_url

SCHEMAS = ["registry", "mobility", "activities", "gateway"]
Contents = dict[str, list[str]]


async def contents(conn: asyncpg.Connection) -> Contents:
    """Every row of every table of the four schemas, as text, sorted."""
    names = await conn.fetch(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[])",
        SCHEMAS,
    )
    found: Contents = {}
    for r in names:
        table = f'"{r["schemaname"]}"."{r["tablename"]}"'
        rows = await conn.fetch(f"SELECT t::text AS row FROM {table} AS t")
        found[f"{r['schemaname']}.{r['tablename']}"] = sorted(x["row"] for x in rows)
    return found


async def backup_with_contents(url: str, folder: Path) -> tuple[Path, Contents]:
    """The backup and the contents it must hold, both from one snapshot of the live system."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            archive = await asyncio.to_thread(backup.backup, url, folder, snapshot=snapshot)
            expected = await contents(conn)
    finally:
        await conn.close()
    return archive, expected


async def test_a_backup_restores_into_a_fresh_database(
    scenario: Scenario, server_url: str, tmp_path: Path
) -> None:
    archive, expected = await backup_with_contents(scenario.database_url, tmp_path / "backups")
    assert archive.parent == tmp_path / "backups" and archive.suffix == ".dump"
    assert archive.stat().st_mode & 0o077 == 0  # for the owner's eyes only
    for table, least in {
        "registry.orgs": 3,
        "registry.members": 6,
        "registry.audit_log": 5,
        "registry.outbox": 9,
        "mobility.links": 2,
        "activities.activities": 1,
        "activities.talks": 1,
        "activities.members": 6,
        "gateway.users": 1,
        "gateway.api_keys": 1,
        "gateway.audit_log": 1,
    }.items():
        assert len(expected[table]) >= least, table

    name = f"lianxin_restored_{uuid.uuid4().hex[:8]}"
    try:
        restored = await asyncio.to_thread(backup.restore, archive, server_url, database=name)
        assert make_url(restored).database == name
        conn = await asyncpg.connect(plain_url(restored))
        try:
            got = await contents(conn)
            assert {t: len(rows) for t, rows in got.items()} == {
                t: len(rows) for t, rows in expected.items()
            }
            assert got == expected
            # The encrypted fields still open with the keys the apps used.
            keys = KeyRing(scenario.data_keys)
            member = await conn.fetchrow(
                "SELECT id_number_cipher, phone_cipher FROM registry.members WHERE id = $1",
                uuid.UUID(scenario.member_ids[0]),
            )
            assert member is not None
            assert (
                keys.decrypt(member["id_number_cipher"], purpose=ID_NUMBER)
                == (scenario.secrets["id_number 0"])
            )
            assert (
                keys.decrypt(member["phone_cipher"], purpose=PHONE) == (scenario.secrets["phone 0"])
            )
            notes = await conn.fetchval(
                "SELECT notes_enc FROM activities.talks WHERE id = $1",
                uuid.UUID(scenario.ids["talk"]),
            )
            assert keys.decrypt(notes, purpose=TALK_NOTES) == scenario.secrets["talk notes"]
        finally:
            await conn.close()
        # The apps' roles and grants came back with it.
        as_registry = await asyncpg.connect(role_url(restored, "registry"))
        try:
            assert await as_registry.fetchval("SELECT count(*) FROM registry.members") == len(
                expected["registry.members"]
            )
        finally:
            await as_registry.close()
        # A database that holds Lianxin already is never restored over by accident.
        with pytest.raises(RuntimeError, match="already holds"):
            await asyncio.to_thread(backup.restore, archive, server_url, database=name)
    finally:
        await asyncio.to_thread(drop_database, server_url, name)


def test_the_cli_backs_up_and_restores(scenario: Scenario, server_url: str, tmp_path: Path) -> None:
    """`python -m tools.backup` as `make backup` / `make restore` run it."""
    folder = tmp_path / "cli"
    assert backup.main(["backup", "--url", scenario.database_url, "--dir", str(folder)]) == 0
    [archive] = folder.glob("lianxin-*.dump")
    name = f"lianxin_restored_{uuid.uuid4().hex[:8]}"
    try:
        assert backup.main(["restore", str(archive), "--url", server_url, "--database", name]) == 0
        assert backup.main(["restore", str(archive), "--url", server_url, "--database", name]) == 1
        url = (
            make_url(plain_url(server_url)).set(database=name).render_as_string(hide_password=False)
        )

        async def count() -> int:
            conn = await asyncpg.connect(url)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM registry.members"))
            finally:
                await conn.close()

        assert asyncio.run(count()) >= 6
    finally:
        drop_database(server_url, name)
