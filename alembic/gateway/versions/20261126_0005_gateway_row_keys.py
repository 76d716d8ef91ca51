"""gateway: webhook deliveries and their attempts carry their event's distribution key
(common/sharding.py), filled for rows that exist; primary keys (shard_key, id)

A delivery takes the key its source outbox recorded for the event (`shard_key`, joined by
the unique `event_id`), `UNSHARDED` when the event is gone or was written without one;
an attempt takes its delivery's. The primary keys become `(shard_key, id)` (a sharded
engine requires the distribution column in every unique key) and an attempt refers to
its delivery by `(shard_key, delivery_id)`: both are on one shard. Each keeps a unique index
on its id alone: while there is one node, lookups by id keep working unchanged. Users,
refresh tokens, API keys and webhooks stay as they are (small: reference or single-node
tables on Citus, docs/scaling.md).

Revision ID: 0005_gateway_row_keys
Revises: 0004_gateway_keys
Create Date: 2026-11-26 13:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from common.sharding import UNSHARDED

revision: str = "0005_gateway_row_keys"
down_revision: str | None = "0004_gateway_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"
TABLES = ("webhook_deliveries", "webhook_attempts")
SOURCES = ("registry", "mobility", "activities")


def _sources_with_keys() -> list[str]:
    """The producers whose outbox is in this database and records keys."""
    found = op.get_bind().execute(
        sa.text(
            "SELECT table_schema FROM information_schema.columns "
            "WHERE table_name = 'outbox' AND column_name = 'shard_key' "
            "AND table_schema = ANY(:sources)"
        ),
        {"sources": list(SOURCES)},
    )
    return sorted(r[0] for r in found)


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("shard_key", sa.UUID(), nullable=True), schema=SCHEMA)
    for source in _sources_with_keys():
        op.execute(
            f"""UPDATE {SCHEMA}.webhook_deliveries d SET shard_key = o.shard_key
            FROM {source}.outbox o
            WHERE d.source = '{source}' AND o.event_id = d.event_id"""  # noqa: S608 - constants
        )
    op.execute(
        f"UPDATE {SCHEMA}.webhook_deliveries SET shard_key = '{UNSHARDED}'::uuid "  # noqa: S608
        "WHERE shard_key IS NULL"
    )
    op.execute(
        f"""UPDATE {SCHEMA}.webhook_attempts a SET shard_key = d.shard_key
        FROM {SCHEMA}.webhook_deliveries d WHERE d.id = a.delivery_id"""  # noqa: S608
    )
    op.drop_constraint(
        "fk_webhook_attempts_delivery_id_webhook_deliveries",
        "webhook_attempts",
        type_="foreignkey",
        schema=SCHEMA,
    )
    for table in TABLES:
        op.alter_column(table, "shard_key", nullable=False, schema=SCHEMA)
        op.create_index(f"uq_{table}_id", table, ["id"], unique=True, schema=SCHEMA)
        op.drop_constraint(f"pk_{table}", table, type_="primary", schema=SCHEMA)
        op.create_primary_key(f"pk_{table}", table, ["shard_key", "id"], schema=SCHEMA)
    op.create_foreign_key(
        "fk_webhook_attempts_shard_key_webhook_deliveries",
        "webhook_attempts",
        "webhook_deliveries",
        ["shard_key", "delivery_id"],
        ["shard_key", "id"],
        source_schema=SCHEMA,
        referent_schema=SCHEMA,
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_constraint(
        "fk_webhook_attempts_shard_key_webhook_deliveries",
        "webhook_attempts",
        type_="foreignkey",
        schema=SCHEMA,
    )
    for table in TABLES:
        op.drop_constraint(f"pk_{table}", table, type_="primary", schema=SCHEMA)
        op.create_primary_key(f"pk_{table}", table, ["id"], schema=SCHEMA)
        op.drop_index(f"uq_{table}_id", table_name=table, schema=SCHEMA)
    op.create_foreign_key(
        "fk_webhook_attempts_delivery_id_webhook_deliveries",
        "webhook_attempts",
        "webhook_deliveries",
        ["delivery_id"],
        ["id"],
        source_schema=SCHEMA,
        referent_schema=SCHEMA,
        ondelete="CASCADE",
    )
    for table in TABLES:
        op.drop_column(table, "shard_key", schema=SCHEMA)
