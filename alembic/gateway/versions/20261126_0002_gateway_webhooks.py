"""gateway: webhooks, their deliveries and attempts, the org-tree projection and cursors

Revision ID: 0002_gateway
Revises: 0001_gateway
Create Date: 2026-11-26 07:17:00.329747+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import common.db
import common.events.outbox

revision: str = "0002_gateway"
down_revision: str | None = "0001_gateway"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS ltree WITH SCHEMA public")
    op.create_table(
        "consumer_cursors",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column(
            "txid", common.events.outbox.Xid8(), server_default=sa.text("'0'::xid8"), nullable=False
        ),
        sa.Column("id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("consumer", "source", name=op.f("pk_consumer_cursors")),
        schema="gateway",
    )
    op.create_table(
        "orgs",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("parent_id", sa.UUID(), nullable=True),
        sa.Column("path", common.db.LTree(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("area_level", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_orgs")),
        schema="gateway",
    )
    op.create_index(op.f("ix_gateway_orgs_code"), "orgs", ["code"], unique=False, schema="gateway")
    op.create_index(
        op.f("ix_gateway_orgs_parent_id"), "orgs", ["parent_id"], unique=False, schema="gateway"
    )
    op.create_index(
        "ix_gateway_orgs_path_gist",
        "orgs",
        ["path"],
        unique=False,
        schema="gateway",
        postgresql_using="gist",
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.String(length=64)), nullable=False),
        sa.Column("secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("allow_private", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("cardinality(events) > 0", name=op.f("ck_webhooks_events")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
        schema="gateway",
    )
    op.create_index(
        "ix_webhooks_org_id_id", "webhooks", ["org_id", "id"], unique=False, schema="gateway"
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("webhook_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'failed', 'delivered', 'dead')",
            name=op.f("ck_webhook_deliveries_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_deliveries_attempts")),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["gateway.webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "webhook_id", "event_id", name=op.f("uq_webhook_deliveries_webhook_id")
        ),
        schema="gateway",
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        unique=False,
        schema="gateway",
        postgresql_where=sa.text("status IN ('pending', 'failed')"),
    )
    op.create_index(
        "ix_webhook_deliveries_webhook_id_created_at",
        "webhook_deliveries",
        ["webhook_id", "created_at", "id"],
        unique=False,
        schema="gateway",
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("delivery_id", sa.UUID(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["gateway.webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
        schema="gateway",
    )
    op.create_index(
        "ix_webhook_attempts_delivery_id_attempt",
        "webhook_attempts",
        ["delivery_id", "attempt"],
        unique=False,
        schema="gateway",
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_attempts_delivery_id_attempt", table_name="webhook_attempts", schema="gateway"
    )
    op.drop_table("webhook_attempts", schema="gateway")
    op.drop_index(
        "ix_webhook_deliveries_webhook_id_created_at",
        table_name="webhook_deliveries",
        schema="gateway",
    )
    op.drop_index(
        "ix_webhook_deliveries_due",
        table_name="webhook_deliveries",
        schema="gateway",
        postgresql_where=sa.text("status IN ('pending', 'failed')"),
    )
    op.drop_table("webhook_deliveries", schema="gateway")
    op.drop_index("ix_webhooks_org_id_id", table_name="webhooks", schema="gateway")
    op.drop_table("webhooks", schema="gateway")
    op.drop_index(
        "ix_gateway_orgs_path_gist", table_name="orgs", schema="gateway", postgresql_using="gist"
    )
    op.drop_index(op.f("ix_gateway_orgs_parent_id"), table_name="orgs", schema="gateway")
    op.drop_index(op.f("ix_gateway_orgs_code"), table_name="orgs", schema="gateway")
    op.drop_table("orgs", schema="gateway")
    op.drop_table("consumer_cursors", schema="gateway")
