"""activities: read model of the registry (orgs, members), consumer cursors, outbox,
idempotency keys, audit log

Revision ID: 0001_activities
Revises:
Create Date: 2026-11-26 06:40:50.823429+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import common.db
import common.events.outbox
from common.audit import append_only_sql, drop_append_only_sql
from common.events.outbox import drop_outbox_sql, outbox_sql

revision: str = "0001_activities"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "activities"


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS ltree WITH SCHEMA public")
    op.create_table(
        "audit_log",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.UUID(), nullable=True),
        sa.Column("subject_member_id", sa.UUID(), nullable=True),
        sa.Column("outcome", sa.String(length=32), server_default="success", nullable=False),
        sa.Column("client_addr", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f(f"ix_{SCHEMA}_audit_log_at"), "audit_log", ["at"], unique=False, schema=SCHEMA
    )
    op.create_index(
        op.f(f"ix_{SCHEMA}_audit_log_subject_member_id"),
        "audit_log",
        ["subject_member_id", "at"],
        unique=False,
        schema=SCHEMA,
    )
    op.create_table(
        "consumer_cursors",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column(
            "txid",
            common.events.outbox.Xid8(),
            server_default=sa.text("'0'::xid8"),
            nullable=False,
        ),
        sa.Column("id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("consumer", "source", name=op.f("pk_consumer_cursors")),
        schema=SCHEMA,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("caller", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("caller", "key", name=op.f("pk_idempotency_keys")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f(f"ix_{SCHEMA}_idempotency_keys_created_at"),
        "idempotency_keys",
        ["created_at"],
        unique=False,
        schema=SCHEMA,
    )
    op.create_table(
        "members",
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("relation", sa.String(length=16), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("org_path", common.db.LTree(), nullable=True),
        sa.Column("residence_org_id", sa.UUID(), nullable=True),
        sa.Column("residence_path", common.db.LTree(), nullable=True),
        sa.Column("merged_into", sa.UUID(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_members")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f(f"ix_{SCHEMA}_members_org_id"), "members", ["org_id"], unique=False, schema=SCHEMA
    )
    op.create_index(
        f"ix_{SCHEMA}_members_org_path_gist",
        "members",
        ["org_path"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gist",
    )
    op.create_index(
        op.f(f"ix_{SCHEMA}_members_residence_org_id"),
        "members",
        ["residence_org_id"],
        unique=False,
        schema=SCHEMA,
    )
    op.create_index(
        f"ix_{SCHEMA}_members_residence_path_gist",
        "members",
        ["residence_path"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gist",
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
        schema=SCHEMA,
    )
    op.create_index(op.f(f"ix_{SCHEMA}_orgs_code"), "orgs", ["code"], unique=False, schema=SCHEMA)
    op.create_index(
        op.f(f"ix_{SCHEMA}_orgs_parent_id"), "orgs", ["parent_id"], unique=False, schema=SCHEMA
    )
    op.create_index(
        f"ix_{SCHEMA}_orgs_path_gist",
        "orgs",
        ["path"],
        unique=False,
        schema=SCHEMA,
        postgresql_using="gist",
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column(
            "txid",
            common.events.outbox.Xid8(),
            server_default=sa.text("pg_current_xact_id()"),
            nullable=False,
        ),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("aggregate_type", sa.String(length=32), nullable=False),
        sa.Column("aggregate_id", sa.UUID(), nullable=False),
        sa.Column("aggregate_version", sa.BigInteger(), nullable=False),
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("org_paths", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f(f"ix_{SCHEMA}_outbox_txid"), "outbox", ["txid", "id"], unique=False, schema=SCHEMA
    )
    for statement in [*outbox_sql(SCHEMA), *append_only_sql(SCHEMA)]:
        op.execute(statement)


def downgrade() -> None:
    for statement in [*drop_append_only_sql(SCHEMA), *drop_outbox_sql(SCHEMA)]:
        op.execute(statement)
    op.drop_index(op.f(f"ix_{SCHEMA}_outbox_txid"), table_name="outbox", schema=SCHEMA)
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_index(
        f"ix_{SCHEMA}_orgs_path_gist", table_name="orgs", schema=SCHEMA, postgresql_using="gist"
    )
    op.drop_index(op.f(f"ix_{SCHEMA}_orgs_parent_id"), table_name="orgs", schema=SCHEMA)
    op.drop_index(op.f(f"ix_{SCHEMA}_orgs_code"), table_name="orgs", schema=SCHEMA)
    op.drop_table("orgs", schema=SCHEMA)
    op.drop_index(
        f"ix_{SCHEMA}_members_residence_path_gist",
        table_name="members",
        schema=SCHEMA,
        postgresql_using="gist",
    )
    op.drop_index(
        op.f(f"ix_{SCHEMA}_members_residence_org_id"), table_name="members", schema=SCHEMA
    )
    op.drop_index(
        f"ix_{SCHEMA}_members_org_path_gist",
        table_name="members",
        schema=SCHEMA,
        postgresql_using="gist",
    )
    op.drop_index(op.f(f"ix_{SCHEMA}_members_org_id"), table_name="members", schema=SCHEMA)
    op.drop_table("members", schema=SCHEMA)
    op.drop_index(
        op.f(f"ix_{SCHEMA}_idempotency_keys_created_at"),
        table_name="idempotency_keys",
        schema=SCHEMA,
    )
    op.drop_table("idempotency_keys", schema=SCHEMA)
    op.drop_table("consumer_cursors", schema=SCHEMA)
    op.drop_index(
        op.f(f"ix_{SCHEMA}_audit_log_subject_member_id"), table_name="audit_log", schema=SCHEMA
    )
    op.drop_index(op.f(f"ix_{SCHEMA}_audit_log_at"), table_name="audit_log", schema=SCHEMA)
    op.drop_table("audit_log", schema=SCHEMA)
