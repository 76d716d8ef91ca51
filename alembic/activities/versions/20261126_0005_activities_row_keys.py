"""activities: every row of an org or a member carries the distribution key, in its primary
key (common/sharding.py; docs/scaling.md, "Migrations that make the schema ready")

- `shard_key uuid NOT NULL` on the rows of an ORG — activities, attendance and signups (the
  activity's key), help_requests, fund_allocations, fund_expenses (the allocation's key),
  training_sessions, training_attendance (the session's key), program_adoptions (the adopting
  org) — and of a MEMBER — talks, service_hours, points_ledger, pledge_items,
  role_assignments; backfilled from the projection (`orgs.shard_key`, `members.shard_key`,
  filled by 0004), `UNSHARDED` where the org or member is unknown.
- Primary keys `(shard_key, id)` (link tables: `(shard_key, <parent>, member_id)`,
  adoptions `(shard_key, program_id, org_id)`, pledge items `(shard_key, member_id, year,
  program_id, n)`), each keeping a UNIQUE index on the old key: until Citus, this is one
  node, where an id is unique by itself, so lookups by id, the conflict targets of the
  upserts and the foreign keys to `programs` keep working unchanged. (On Citus a unique
  index must contain the distribution column: these indexes go with the Citus step.)
- Foreign keys inside one key become composite: attendance and signups → activities,
  training_attendance → training_sessions, `(shard_key, <parent>)` with ON UPDATE CASCADE,
  so re-keying the parent carries its rows (on Citus a re-key is a re-homing instead).
  service_hours → activities and → help_requests would cross counties (a member's hours at
  another county's activity): dropped, the service checks both when the hours are logged
  and neither is ever deleted.
- The ledgers stay append-only except for their key: their triggers let an UPDATE through
  when it changes `shard_key` and nothing else, and two SECURITY DEFINER functions are the
  only way the service's role (which may not UPDATE a ledger) re-keys them.

Revision ID: 0005_activities_row_keys
Revises: 0004_activities_keys
Create Date: 2026-11-26 14:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from common.audit import append_only_sql
from common.sharding import UNSHARDED

revision: str = "0005_activities_row_keys"
down_revision: str | None = "0004_activities_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "activities"
LEDGERS = ("points_ledger", "fund_expenses")
NONE = f"'{UNSHARDED}'::uuid"

# table → the key of each row, as an SQL expression over the row `t` (in dependency order:
# attendance after activities, expenses after allocations).
BACKFILL = {
    "activities": "(SELECT shard_key FROM activities.orgs WHERE org_id = t.org_id)",
    "help_requests": "(SELECT shard_key FROM activities.orgs WHERE org_id = t.org_id)",
    "fund_allocations": "(SELECT shard_key FROM activities.orgs WHERE org_id = t.org_id)",
    "training_sessions": "(SELECT shard_key FROM activities.orgs WHERE org_id = t.org_id)",
    "program_adoptions": "(SELECT shard_key FROM activities.orgs WHERE org_id = t.org_id)",
    "attendance": "(SELECT shard_key FROM activities.activities WHERE id = t.activity_id)",
    "signups": "(SELECT shard_key FROM activities.activities WHERE id = t.activity_id)",
    "fund_expenses": "(SELECT shard_key FROM activities.fund_allocations WHERE id = t.allocation_id)",
    "training_attendance": (
        "(SELECT shard_key FROM activities.training_sessions WHERE id = t.session_id)"
    ),
    "talks": "(SELECT shard_key FROM activities.members WHERE member_id = t.member_id)",
    "service_hours": "(SELECT shard_key FROM activities.members WHERE member_id = t.member_id)",
    "points_ledger": "(SELECT shard_key FROM activities.members WHERE member_id = t.member_id)",
    "pledge_items": "(SELECT shard_key FROM activities.members WHERE member_id = t.member_id)",
    "role_assignments": (
        "(SELECT shard_key FROM activities.members WHERE member_id = t.member_id)"
    ),
}

# table → (old primary key columns, new primary key columns, name of the unique index kept).
KEYS = {
    "activities": (["id"], ["shard_key", "id"], "uq_activities_id"),
    "help_requests": (["id"], ["shard_key", "id"], "uq_help_requests_id"),
    "fund_allocations": (["id"], ["shard_key", "id"], "uq_fund_allocations_id"),
    "fund_expenses": (["id"], ["shard_key", "id"], "uq_fund_expenses_id"),
    "training_sessions": (["id"], ["shard_key", "id"], "uq_training_sessions_id"),
    "talks": (["id"], ["shard_key", "id"], "uq_talks_id"),
    "service_hours": (["id"], ["shard_key", "id"], "uq_service_hours_id"),
    "points_ledger": (["id"], ["shard_key", "id"], "uq_points_ledger_id"),
    "role_assignments": (["id"], ["shard_key", "id"], "uq_role_assignments_id"),
    "attendance": (
        ["activity_id", "member_id"],
        ["shard_key", "activity_id", "member_id"],
        "uq_attendance_activity_id_member_id",
    ),
    "signups": (
        ["activity_id", "member_id"],
        ["shard_key", "activity_id", "member_id"],
        "uq_signups_activity_id_member_id",
    ),
    "training_attendance": (
        ["session_id", "member_id"],
        ["shard_key", "session_id", "member_id"],
        "uq_training_attendance_session_id_member_id",
    ),
    "program_adoptions": (
        ["program_id", "org_id"],
        ["shard_key", "program_id", "org_id"],
        "uq_program_adoptions_program_id_org_id",
    ),
    "pledge_items": (
        ["member_id", "year", "program_id", "n"],
        ["shard_key", "member_id", "year", "program_id", "n"],
        "uq_pledge_items_member_id_year_program_id_n",
    ),
}

# (table, column, parent table, on delete): the references between rows of one key.
LINKS = (
    ("attendance", "activity_id", "activities", "CASCADE"),
    ("signups", "activity_id", "activities", "CASCADE"),
    ("training_attendance", "session_id", "training_sessions", "CASCADE"),
)
# The references that would cross counties: dropped (the service checks them).
CROSSING = (
    ("service_hours", "activity_id", "activities", "RESTRICT"),
    ("service_hours", "help_request_id", "help_requests", "RESTRICT"),
)


def _ledger_guard(table: str) -> str:
    """The append-only trigger function of a ledger, letting a change of the key alone by."""
    return f"""CREATE OR REPLACE FUNCTION {SCHEMA}.{table}_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE'
                AND (to_jsonb(NEW) - 'shard_key') = (to_jsonb(OLD) - 'shard_key') THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '{SCHEMA}.{table} is append-only' USING ERRCODE = '42501';
        END $$"""


REKEY_FUNCTIONS = (
    # A member's ledger entries take the member's projected key.
    f"""CREATE FUNCTION {SCHEMA}.rekey_points_ledger(member_ids uuid[]) RETURNS bigint
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        WITH moved AS (
            UPDATE {SCHEMA}.points_ledger l
            SET shard_key = coalesce(m.shard_key, {NONE})
            FROM {SCHEMA}.members m
            WHERE m.member_id = ANY (member_ids) AND l.member_id = m.member_id
                AND l.shard_key <> coalesce(m.shard_key, {NONE})
            RETURNING 1)
        SELECT count(*) FROM moved $$""",  # noqa: S608 - constant identifiers
    # An allocation's expenses take the allocation's key.
    f"""CREATE FUNCTION {SCHEMA}.rekey_fund_expenses(allocation_ids uuid[]) RETURNS bigint
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        WITH moved AS (
            UPDATE {SCHEMA}.fund_expenses e SET shard_key = a.shard_key
            FROM {SCHEMA}.fund_allocations a
            WHERE a.id = ANY (allocation_ids) AND e.allocation_id = a.id
                AND e.shard_key <> a.shard_key
            RETURNING 1)
        SELECT count(*) FROM moved $$""",  # noqa: S608 - constant identifiers
)


def upgrade() -> None:
    for table in LEDGERS:
        op.execute(_ledger_guard(table))
    for table, key in BACKFILL.items():
        op.add_column(table, sa.Column("shard_key", sa.UUID(), nullable=True), schema=SCHEMA)
        op.execute(
            f"UPDATE {SCHEMA}.{table} t SET shard_key = coalesce({key}, {NONE})"  # noqa: S608 - constants
        )
        op.alter_column(table, "shard_key", nullable=False, schema=SCHEMA)
    for statement in REKEY_FUNCTIONS:
        op.execute(statement)
    for table, column, parent, _ in (*LINKS, *CROSSING):
        op.drop_constraint(
            f"fk_{table}_{column}_{parent}", table, type_="foreignkey", schema=SCHEMA
        )
    for table, (old, new, unique) in KEYS.items():
        op.create_index(unique, table, old, unique=True, schema=SCHEMA)
        op.drop_constraint(f"pk_{table}", table, type_="primary", schema=SCHEMA)
        op.create_primary_key(f"pk_{table}", table, new, schema=SCHEMA)
    for table, column, parent, ondelete in LINKS:
        op.create_foreign_key(
            f"fk_{table}_shard_key_{parent}",
            table,
            parent,
            ["shard_key", column],
            ["shard_key", "id"],
            source_schema=SCHEMA,
            referent_schema=SCHEMA,
            ondelete=ondelete,
            onupdate="CASCADE",
        )


def downgrade() -> None:
    for table, _, parent, _ in LINKS:
        op.drop_constraint(
            f"fk_{table}_shard_key_{parent}", table, type_="foreignkey", schema=SCHEMA
        )
    for table, (old, _, unique) in KEYS.items():
        op.drop_constraint(f"pk_{table}", table, type_="primary", schema=SCHEMA)
        op.create_primary_key(f"pk_{table}", table, old, schema=SCHEMA)
        op.drop_index(unique, table_name=table, schema=SCHEMA)
    for table, column, parent, ondelete in (*LINKS, *CROSSING):
        op.create_foreign_key(
            f"fk_{table}_{column}_{parent}",
            table,
            parent,
            [column],
            ["id"],
            source_schema=SCHEMA,
            referent_schema=SCHEMA,
            ondelete=ondelete,
        )
    op.execute(f"DROP FUNCTION {SCHEMA}.rekey_fund_expenses(uuid[])")
    op.execute(f"DROP FUNCTION {SCHEMA}.rekey_points_ledger(uuid[])")
    for table in reversed(BACKFILL):
        op.drop_column(table, "shard_key", schema=SCHEMA)
    for table in LEDGERS:
        op.execute(append_only_sql(SCHEMA, table)[0])
