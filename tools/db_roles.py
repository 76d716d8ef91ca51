"""Least privilege in the database: each app connects as its own PostgreSQL role.

Per service schema `<s>` (registry, mobility, activities, gateway) there are two roles:

* `lianxin_<s>_app` (NOLOGIN): the rights, and only these —
  USAGE on schema `<s>` (never CREATE); SELECT, INSERT, UPDATE, DELETE and TRUNCATE on its
  tables, except the append-only ones (`audit_log` and the ledgers, recognised by their
  `<table>_no_update_delete` trigger), which get SELECT and INSERT only; USAGE and SELECT on
  its sequences; EXECUTE on its functions (revoked from PUBLIC); nothing on
  `alembic_version`; default privileges so that tables a later
  migration creates are usable at once; and SELECT on the **outbox** of each service whose
  events it consumes (`OUTBOX_READS`), nothing else of another schema.
* `lianxin_<s>` (LOGIN, member of the group): what the app's `DATABASE_URL` names.

`tools.migrate.upgrade_all` (run with the owner's URL) applies all of it after the
migrations, idempotently, in one transaction: rights another role should not have are
revoked first, so the grants always match this file. The roles are cluster-wide; the grants
are per database. Creating roles needs an owner with CREATEROLE (or a superuser).

Passwords: `LIANXIN_<S>_DB_PASSWORD` or `LIANXIN_<S>_DB_PASSWORD_FILE` in the migration's
environment sets the password of `lianxin_<s>`; without either a new role gets none (fine
with `trust`/peer authentication, e.g. the embedded server of `make run` and the tests) and an
existing role keeps the one it has."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from common.db import plain_url

SCHEMAS = ("registry", "mobility", "activities", "gateway")

# Whose outbox each service's consumers read (services/*/consumers.py, projections.py,
# gateway/webhooks/fanout.py; the consumer-lag gauge reads the same tables).
OUTBOX_READS: dict[str, tuple[str, ...]] = {
    "registry": ("mobility",),
    "mobility": ("registry", "activities"),
    "activities": ("registry",),
    "gateway": ("registry", "mobility", "activities"),
}

APPEND_ONLY_TRIGGER_SUFFIX = "_no_update_delete"
DML = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE"
APPEND_ONLY = "SELECT, INSERT"


def login_role(schema: str) -> str:
    return f"lianxin_{schema}"


def group_role(schema: str) -> str:
    return f"lianxin_{schema}_app"


def role_url(url: str, schema: str, password: str | None = None) -> str:
    """`url` with the user switched to the service's login role (and `password`, or none)."""
    parsed = make_url(plain_url(url)).set(username=login_role(schema), password=password)
    return parsed.render_as_string(hide_password=False)


def passwords_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`LIANXIN_<S>_DB_PASSWORD` (or `_FILE`) per schema, when set."""
    env = os.environ if env is None else env
    found: dict[str, str] = {}
    for schema in SCHEMAS:
        key = f"LIANXIN_{schema.upper()}_DB_PASSWORD"
        if env.get(key):
            found[schema] = env[key]
        elif env.get(f"{key}_FILE"):
            found[schema] = Path(env[f"{key}_FILE"]).read_text().strip()
    return found


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _ensure_role(conn: asyncpg.Connection, name: str, *, login: bool) -> None:
    # Concurrent migrations of two databases on one server may race to create it.
    await conn.execute(
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN
                CREATE ROLE {_ident(name)};
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$"""
    )
    # Only when they differ: roles are shared by every database of the server, and two
    # concurrent ALTERs of one role fail ("tuple concurrently updated").
    fitting = await conn.fetchval(
        """SELECT rolcanlogin = $2 AND rolinherit AND NOT (rolsuper OR rolcreatedb
                  OR rolcreaterole OR rolreplication OR rolbypassrls)
           FROM pg_roles WHERE rolname = $1""",
        name,
        login,
    )
    if not fitting:
        attributes = "LOGIN" if login else "NOLOGIN"
        await conn.execute(
            f"ALTER ROLE {_ident(name)} {attributes} INHERIT NOSUPERUSER NOCREATEDB "
            "NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        )


async def _schema_exists(conn: asyncpg.Connection, schema: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", schema))


async def _apply(conn: asyncpg.Connection, passwords: Mapping[str, str]) -> None:
    present = [s for s in SCHEMAS if await _schema_exists(conn, s)]
    for schema in SCHEMAS:
        await _ensure_role(conn, group_role(schema), login=False)
        await _ensure_role(conn, login_role(schema), login=True)
        member = await conn.fetchval(
            "SELECT pg_has_role($1, $2, 'MEMBER')", login_role(schema), group_role(schema)
        )
        if not member:
            await conn.execute(
                f"GRANT {_ident(group_role(schema))} TO {_ident(login_role(schema))}"
            )
        if schema in passwords:
            # Quoted as a literal by the server: the password never goes through a format.
            literal = await conn.fetchval("SELECT quote_literal($1)", passwords[schema])
            await conn.execute(f"ALTER ROLE {_ident(login_role(schema))} PASSWORD {literal}")
    groups = [group_role(s) for s in SCHEMAS]
    everyone = ", ".join(_ident(g) for g in groups)
    # Start from nothing in every service schema, then grant exactly what is listed.
    for schema in present:
        s = _ident(schema)
        await conn.execute(f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC, {everyone}")
        await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM PUBLIC, {everyone}")
        await conn.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM PUBLIC, {everyone}")
        # Functions are executable by PUBLIC by default; here they are the schema's own.
        await conn.execute(f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {s} FROM PUBLIC, {everyone}")
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} REVOKE ALL ON TABLES FROM {everyone}"
        )
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} REVOKE ALL ON SEQUENCES FROM {everyone}"
        )
    for schema in present:
        s, g = _ident(schema), _ident(group_role(schema))
        await conn.execute(f"GRANT USAGE ON SCHEMA {s} TO {g}")
        tables = await conn.fetch(
            """SELECT c.relname,
                      EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = c.oid
                              AND t.tgname = c.relname || $2) AS append_only
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm')""",
            schema,
            APPEND_ONLY_TRIGGER_SUFFIX,
        )
        for row in tables:
            if row["relname"] == "alembic_version":
                continue
            rights = APPEND_ONLY if row["append_only"] else DML
            await conn.execute(f"GRANT {rights} ON {s}.{_ident(row['relname'])} TO {g}")
        await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {g}")
        await conn.execute(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {g}")
        await conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT {DML} ON TABLES TO {g}")
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT ON SEQUENCES TO {g}"
        )
        for source in OUTBOX_READS.get(schema, ()):
            if source in present and await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{source}.outbox"
            ):
                await conn.execute(f"GRANT USAGE ON SCHEMA {_ident(source)} TO {g}")
                await conn.execute(f"GRANT SELECT ON {_ident(source)}.outbox TO {g}")


async def apply_roles_async(url: str, passwords: Mapping[str, str] | None = None) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        async with conn.transaction():
            await _apply(conn, passwords if passwords is not None else passwords_from_env())
    finally:
        await conn.close()


def apply_roles(url: str, passwords: Mapping[str, str] | None = None) -> None:
    """Create or update the roles and grants on the database at `url` (the owner's)."""
    asyncio.run(apply_roles_async(url, passwords))
