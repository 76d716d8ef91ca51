"""registry: the outbox records each event's distribution key (common/sharding.py);
cursors per database node; the outbox partitioned by
day, the audit log by month

Revision ID: 0004_registry_outbox_key
Revises: 0003_registry
Create Date: 2026-11-26 12:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from common.audit import partition_audit_sql, unpartition_audit_sql
from common.events.outbox_partitions import partition_sql, unpartition_sql

revision: str = "0004_registry_outbox_key"
down_revision: str | None = "0003_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "registry"


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
    op.add_column("outbox", sa.Column("shard_key", sa.UUID(), nullable=True), schema=SCHEMA)
    # Daily partitions (common/events/outbox_partitions.py): rows and ids kept.
    for statement in partition_sql(SCHEMA):
        op.execute(statement)

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
    for statement in unpartition_sql(SCHEMA):
        op.execute(statement)
    op.drop_column("outbox", "shard_key", schema=SCHEMA)
