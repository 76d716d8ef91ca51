"""gateway: the projected orgs carry the distribution key (common/sharding.py), filled for
rows that exist;
consumer cursors per database node; the audit log partitioned by month

Revision ID: 0004_gateway_keys
Revises: 0003_gateway
Create Date: 2026-11-26 12:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from common.audit import partition_audit_sql, unpartition_audit_sql
from common.sharding import backfill_org_keys

revision: str = "0004_gateway_keys"
down_revision: str | None = "0003_gateway"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
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
    op.add_column("orgs", sa.Column("shard_key", sa.UUID(), nullable=True), schema=SCHEMA)
    backfill_org_keys(op.get_bind(), f"{SCHEMA}.orgs", id_column="org_id")
    op.alter_column("orgs", "shard_key", nullable=False, schema=SCHEMA)
    _key_first("orgs", "org_id")

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
    _id_only("orgs", "org_id")
    op.drop_column("orgs", "shard_key", schema=SCHEMA)


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
