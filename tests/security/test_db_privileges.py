"""Least privilege in the database: each app's role (tools/db_roles.py) may use its own
schema's tables, read exactly the outboxes it consumes, create nothing, and never change an
audit trail; the running apps connect as those roles."""

# Every SQL text here is built from the fixed schema names above, never from input.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from common.db import plain_url
from tests.security.conftest import Scenario
from tools.db_roles import login_role, role_url

SCHEMAS = ("registry", "mobility", "activities", "gateway")
# The specification, written out: whose outbox each service may read.
READS_OUTBOX_OF = {
    "registry": {"mobility"},
    "mobility": {"registry", "activities"},
    "activities": {"registry"},
    "gateway": {"registry", "mobility", "activities"},
}
# Tables only appended to: the audit trails, and activities' ledgers.
APPEND_ONLY = {(s, "audit_log") for s in SCHEMAS} | {
    ("activities", "points_ledger"),
    ("activities", "fund_expenses"),
}
DENIED = asyncpg.exceptions.InsufficientPrivilegeError


async def as_role(
    database_url: str, schema: str, work: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    """Run `work` connected as the service's role, in a transaction that is rolled back."""
    conn = await asyncpg.connect(role_url(database_url, schema))
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            return await work(conn)
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def denied(conn: asyncpg.Connection, sql: str) -> str:
    """The error of `sql`, which must be refused for want of a privilege (not by a trigger)."""
    savepoint = conn.transaction()  # the connection's transaction goes on afterwards
    await savepoint.start()
    try:
        with pytest.raises(DENIED) as refused:
            await conn.execute(sql)
    finally:
        await savepoint.rollback()
    message = str(refused.value)
    assert message.startswith(("permission denied", "must be owner")), message
    return message


async def tables(database_url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        rows = await conn.fetch(
            """SELECT schemaname, tablename FROM pg_tables
               WHERE schemaname = ANY($1::text[]) ORDER BY 1, 2""",
            list(SCHEMAS),
        )
    finally:
        await conn.close()
    return [(r["schemaname"], r["tablename"]) for r in rows]


def expected_rights(role_schema: str, schema: str, table: str) -> set[str]:
    if schema != role_schema:
        if table == "outbox" and schema in READS_OUTBOX_OF[role_schema]:
            return {"SELECT"}
        return set()
    if table == "alembic_version":
        return set()
    if (schema, table) in APPEND_ONLY:
        return {"SELECT", "INSERT"}
    return {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"}


async def test_every_role_holds_exactly_its_rights_on_every_table(database_url: str) -> None:
    every = await tables(database_url)
    assert ("registry", "members") in every and ("activities", "points_ledger") in every
    assert all((s, "audit_log") in every for s in SCHEMAS)
    conn = await asyncpg.connect(plain_url(database_url))
    wrong: list[str] = []
    try:
        for role_schema in SCHEMAS:
            role = login_role(role_schema)
            for schema, table in every:
                held = {
                    right
                    for right in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES")
                    if await conn.fetchval(
                        "SELECT has_table_privilege($1, $2, $3)", role, f"{schema}.{table}", right
                    )
                }
                want = expected_rights(role_schema, schema, table)
                if held != want:
                    wrong.append(f"{role} on {schema}.{table}: {sorted(held)} != {sorted(want)}")
            for schema in (*SCHEMAS, "public"):
                if await conn.fetchval(
                    "SELECT has_schema_privilege($1, $2, 'CREATE')", role, schema
                ):
                    wrong.append(f"{role} may CREATE in {schema}")
            for fn in await conn.fetch(
                """SELECT p.oid, n.nspname FROM pg_proc p
                   JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = ANY($1::text[])""",
                list(SCHEMAS),
            ):
                may = await conn.fetchval(
                    "SELECT has_function_privilege($1, $2::oid, 'EXECUTE')", role, fn["oid"]
                )
                if may != (fn["nspname"] == role_schema):
                    wrong.append(f"{role} EXECUTE on a function of {fn['nspname']}: {may}")
            attributes = await conn.fetchrow(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolcanlogin "
                "FROM pg_roles WHERE rolname = $1",
                role,
            )
            assert attributes is not None
            assert dict(attributes) == {
                "rolsuper": False,
                "rolcreatedb": False,
                "rolcreaterole": False,
                "rolbypassrls": False,
                "rolcanlogin": True,
            }
    finally:
        await conn.close()
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_a_role_reads_and_writes_its_own_tables(database_url: str, schema: str) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        await conn.execute(
            f"INSERT INTO {schema}.audit_log (id, actor, role, action, resource) "
            "VALUES (gen_random_uuid(), 'privilege-test', 'admin', 'probe', 'probe')"
        )
        assert await conn.fetchval(
            f"SELECT count(*) FROM {schema}.audit_log WHERE actor = 'privilege-test'"
        )
        await conn.execute(
            f"INSERT INTO {schema}.consumer_cursors (consumer, source) VALUES ('probe', 'x')"
        )
        await conn.execute(f"UPDATE {schema}.consumer_cursors SET id = 7 WHERE consumer = 'probe'")
        assert (
            await conn.fetchval(
                f"SELECT id FROM {schema}.consumer_cursors WHERE consumer = 'probe'"
            )
            == 7
        )
        await conn.execute(f"DELETE FROM {schema}.consumer_cursors WHERE consumer = 'probe'")

    await as_role(database_url, schema, work)


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_a_role_cannot_touch_another_services_tables(database_url: str, schema: str) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        for other in SCHEMAS:
            if other == schema:
                continue
            await denied(conn, f"SELECT * FROM {other}.audit_log")
            await denied(conn, f"SELECT * FROM {other}.consumer_cursors")
            await denied(
                conn, f"INSERT INTO {other}.consumer_cursors (consumer, source) VALUES ('x', 'y')"
            )
            if other != "gateway":  # the gateway publishes no events
                if other in READS_OUTBOX_OF[schema]:
                    await conn.fetch(f"SELECT id FROM {other}.outbox LIMIT 1")
                else:
                    await denied(conn, f"SELECT id FROM {other}.outbox LIMIT 1")
                await denied(conn, f"DELETE FROM {other}.outbox")

    await as_role(database_url, schema, work)


async def test_mobility_cannot_read_the_registrys_members(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> str:
        return await denied(conn, "SELECT id_number_cipher FROM registry.members")

    assert "members" in await as_role(database_url, "mobility", work)


async def test_the_registry_renews_the_members_statistics_only_through_its_function(
    database_url: str,
) -> None:
    """`ANALYZE` is the owner's (a role's own is skipped with a warning);
    `registry.analyze_members` (SECURITY DEFINER) does it for the registry's role after a
    big import, and no other service's role may call it."""

    async def work(conn: asyncpg.Connection) -> tuple[bool, bool, list[str]]:
        said: list[str] = []
        conn.add_log_listener(lambda _, message: said.append(str(message)))
        await conn.execute("ANALYZE registry.members")  # its own: skipped, with a warning
        small = await conn.fetchval("SELECT registry.analyze_members(999)")
        # More than a tenth of any table the planner knows of here.
        known = await conn.fetchval(
            "SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'registry.members'::regclass"
        )
        big = await conn.fetchval("SELECT registry.analyze_members($1)", int(known) + 1000)
        await conn.execute("SELECT 1")  # the listener's messages are in before this answer
        return small, big, said

    small, big, said = await as_role(database_url, "registry", work)
    assert (small, big) == (False, True)
    # The role's own ANALYZE was skipped; the function's was not (no second warning).
    assert len([m for m in said if "skipping" in m]) == 1, said

    async def refused(conn: asyncpg.Connection) -> str:
        return await denied(conn, "SELECT registry.analyze_members(1000000)")

    for schema in ("mobility", "activities", "gateway"):
        assert "analyze_members" in await as_role(database_url, schema, refused)


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_no_role_changes_any_audit_trail(database_url: str, schema: str) -> None:
    """Refused by the grants (`permission denied`), before the append-only trigger would."""

    async def work(conn: asyncpg.Connection) -> None:
        for target in SCHEMAS:
            trail = f"{target}.audit_log"
            await denied(conn, f"UPDATE {trail} SET actor = 'someone else'")
            await denied(conn, f"DELETE FROM {trail}")
            await denied(conn, f"TRUNCATE {trail}")

    await as_role(database_url, schema, work)


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_no_role_creates_or_alters_anything(database_url: str, schema: str) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        for target in (*SCHEMAS, "public"):
            await denied(conn, f"CREATE TABLE {target}.intruder (a int)")
            await denied(
                conn, f"CREATE FUNCTION {target}.intruder() RETURNS int AS 'SELECT 1' LANGUAGE sql"
            )
        await denied(conn, f"ALTER TABLE {schema}.audit_log DISABLE TRIGGER ALL")
        await denied(conn, f"DROP TABLE {schema}.consumer_cursors")
        await denied(conn, f"UPDATE {schema}.alembic_version SET version_num = 'x'")
        await denied(conn, "CREATE SCHEMA intruder")

    await as_role(database_url, schema, work)


async def test_running_apps_connect_as_their_own_roles(scenario: Scenario) -> None:
    """The scenario ran through every app (events crossed from the registry to activities and
    mobility); every connection their pools and consumers hold is their own role's."""
    pools = {  # each app's engine names its connections
        "lianxin registry": "lianxin_registry",
        "lianxin mobility": "lianxin_mobility",
        "lianxin activities": "lianxin_activities",
        "gateway": "lianxin_gateway",
    }
    # Each app's /metrics reads its consumers' lag from the outboxes it may read.
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        for name in ("registry", "mobility", "activities", "gateway"):
            r = await http.get(scenario.system.processes[name].url + "/metrics")
            assert r.status_code == 200, (name, r.text)
            assert "lianxin_consumer_lag_events{" in r.text, name
    logs = scenario.logs()
    assert "permission denied" not in logs and "InsufficientPrivilege" not in logs
    assert "consumer lag not read" not in logs
    conn = await asyncpg.connect(plain_url(scenario.database_url))
    try:
        rows = await conn.fetch(
            "SELECT usename, application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
    finally:
        await conn.close()
    seen = {(r["application_name"], r["usename"]) for r in rows}
    assert {(name, role) for name, role in seen if name in pools} == set(pools.items()), seen
    assert {role for _, role in seen if role.startswith("lianxin_")} == {
        login_role(s) for s in SCHEMAS
    }, seen


def test_migrations_reapply_the_grants_idempotently(server_url: str) -> None:
    """A second run of the migration runner changes nothing and fails on nothing; a right
    granted by hand in between is taken back."""
    from tests.pgutil import drop_database, fresh_database
    from tools import migrate

    url, name = fresh_database(server_url)
    try:
        migrate.upgrade_all(url)
        before = asyncio.run(_acl_snapshot(url))
        migrate.upgrade_all(url)
        assert asyncio.run(_acl_snapshot(url)) == before
        asyncio.run(
            _owner_runs(
                url,
                "GRANT SELECT ON registry.members TO lianxin_mobility_app",
                "GRANT UPDATE ON registry.audit_log TO lianxin_registry_app",
                "GRANT CREATE ON SCHEMA mobility TO lianxin_mobility_app",
                "ALTER ROLE lianxin_mobility CREATEDB",
            )
        )
        assert asyncio.run(_acl_snapshot(url)) != before
        migrate.upgrade_all(url)
        assert asyncio.run(_acl_snapshot(url)) == before
        assert not asyncio.run(
            _owner_fetch(url, "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'lianxin_mobility'")
        )
    finally:
        drop_database(server_url, name)


async def _owner_runs(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _owner_fetch(url: str, query: str) -> Any:
    conn = await asyncpg.connect(plain_url(url))
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def _acl_snapshot(url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        rows = await conn.fetch(
            """SELECT n.nspname || '.' || c.relname AS name, coalesce(c.relacl::text, '') AS acl
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = ANY($1::text[]) ORDER BY 1""",
            list(SCHEMAS),
        )
        schemas = await conn.fetch(
            "SELECT nspname, coalesce(nspacl::text, '') AS acl FROM pg_namespace "
            "WHERE nspname = ANY($1::text[]) ORDER BY 1",
            list(SCHEMAS),
        )
    finally:
        await conn.close()
    return [(r["name"], r["acl"]) for r in rows] + [(r["nspname"], r["acl"]) for r in schemas]
