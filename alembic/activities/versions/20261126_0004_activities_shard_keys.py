"""activities: the outbox and the projected orgs and members carry the distribution
key (common/sharding.py), filled for rows that exist;
consumer cursors per database node; the outbox partitioned by
day, the audit log by month; scheduled_jobs

Revision ID: 0004_activities_keys
Revises: 0003_activities_members
Create Date: 2026-11-26 12:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from common.audit import partition_audit_sql, unpartition_audit_sql
from common.events.outbox_partitions import partition_sql, unpartition_sql
from common.sharding import UNSHARDED, backfill_org_keys

revision: str = "0004_activities_keys"
down_revision: str | None = "0003_activities_members"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "activities"


def upgrade() -> None:
    # Periodic jobs, once across replicas (common/schedule.py): the partitions' upkeep.
    op.create_table(
        "scheduled_jobs",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("runs", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduled_jobs")),
        schema=SCHEMA,
    )
    # Cursors per database node of the source (one node here: "local").
    op.add_column(
        "consumer_cursors",
        sa.Column("node", sa.String(length=64), server_default="local", nullable=False),
        schema=SCHEMA,
    )
    op.drop_constraint("pk_consumer_cursors", "consumer_cursors", schema=SCHEMA)
    op.create_primary_key(
        "pk_consumer_cursors", "consumer_cursors", ["consumer", "source", "node"], schema=SCHEMA
    )
    op.add_column("outbox", sa.Column("shard_key", sa.UUID(), nullable=True), schema=SCHEMA)
    # Daily partitions (common/events/outbox_partitions.py): rows and ids kept.
    for statement in partition_sql(SCHEMA):
        op.execute(statement)
    op.add_column("orgs", sa.Column("shard_key", sa.UUID(), nullable=True), schema=SCHEMA)
    backfill_org_keys(op.get_bind(), f"{SCHEMA}.orgs", id_column="org_id")
    op.alter_column("orgs", "shard_key", nullable=False, schema=SCHEMA)
    _key_first("orgs", "org_id")
    op.add_column("members", sa.Column("shard_key", sa.UUID(), nullable=True), schema=SCHEMA)
    op.execute(
        f"""UPDATE {SCHEMA}.members m SET shard_key = coalesce(
            (SELECT shard_key FROM {SCHEMA}.orgs WHERE org_id = m.org_id),
            (SELECT shard_key FROM {SCHEMA}.orgs WHERE org_id = m.residence_org_id),
            '{UNSHARDED}'::uuid)"""  # noqa: S608 - constant identifiers
    )
    op.alter_column("members", "shard_key", nullable=False, schema=SCHEMA)
    _key_first("members", "member_id")

    # Monthly partitions of the audit log (common/partitions.py): every record kept.
    for statement in partition_audit_sql(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    for statement in unpartition_audit_sql(SCHEMA):
        op.execute(statement)
    op.execute(f"DELETE FROM {SCHEMA}.consumer_cursors WHERE node <> 'local'")  # noqa: S608
    op.drop_constraint("pk_consumer_cursors", "consumer_cursors", schema=SCHEMA)
    op.drop_column("consumer_cursors", "node", schema=SCHEMA)
    op.create_primary_key(
        "pk_consumer_cursors", "consumer_cursors", ["consumer", "source"], schema=SCHEMA
    )
    _id_only("members", "member_id")
    op.drop_column("members", "shard_key", schema=SCHEMA)
    _id_only("orgs", "org_id")
    op.drop_column("orgs", "shard_key", schema=SCHEMA)
    for statement in unpartition_sql(SCHEMA):
        op.execute(statement)
    op.drop_column("outbox", "shard_key", schema=SCHEMA)
    op.drop_table("scheduled_jobs", schema=SCHEMA)


def _key_first(table: str, id_column: str) -> None:
    """Primary key (shard_key, id); the id stays unique on its own (one node: lookups and
    the projection's upserts by id)."""
    op.create_unique_constraint(op.f(f"uq_{table}_{id_column}"), table, [id_column], schema=SCHEMA)
    op.drop_constraint(f"pk_{table}", table, schema=SCHEMA)
    op.create_primary_key(f"pk_{table}", table, ["shard_key", id_column], schema=SCHEMA)


def _id_only(table: str, id_column: str) -> None:
    op.drop_constraint(f"pk_{table}", table, schema=SCHEMA)
    op.create_primary_key(f"pk_{table}", table, [id_column], schema=SCHEMA)
    op.drop_constraint(op.f(f"uq_{table}_{id_column}"), table, schema=SCHEMA)
