"""gateway: users, refresh tokens, api keys, idempotency keys, audit log

Revision ID: 0001_gateway
Revises:
Create Date: 2026-11-26 06:31:22.518154+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from common.audit import append_only_sql, drop_append_only_sql

revision: str = "0001_gateway"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "cardinality(scopes) > 0 AND scopes <@ ARRAY['sync', 'read']::varchar[]",
            name=op.f("ck_api_keys_scopes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
        schema="gateway",
    )
    op.create_index(
        "ix_api_keys_org_id_id", "api_keys", ["org_id", "id"], unique=False, schema="gateway"
    )
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
        schema="gateway",
    )
    op.create_index(
        op.f("ix_gateway_audit_log_at"), "audit_log", ["at"], unique=False, schema="gateway"
    )
    op.create_index(
        op.f("ix_gateway_audit_log_subject_member_id"),
        "audit_log",
        ["subject_member_id", "at"],
        unique=False,
        schema="gateway",
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
        schema="gateway",
    )
    op.create_index(
        op.f("ix_gateway_idempotency_keys_created_at"),
        "idempotency_keys",
        ["created_at"],
        unique=False,
        schema="gateway",
    )
    op.create_table(
        "users",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("member_id", sa.UUID(), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "role <> 'member' OR member_id IS NOT NULL", name=op.f("ck_users_member_has_record")
        ),
        sa.CheckConstraint(
            "role IN ('admin', 'org_admin', 'org_viewer', 'member', 'auditor')",
            name=op.f("ck_users_role"),
        ),
        sa.CheckConstraint(
            "role NOT IN ('org_admin', 'org_viewer') OR org_id IS NOT NULL",
            name=op.f("ck_users_org_roles_org"),
        ),
        sa.CheckConstraint("failed_attempts >= 0", name=op.f("ck_users_failed_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        schema="gateway",
    )
    op.create_index("ix_users_role", "users", ["role"], unique=False, schema="gateway")
    op.create_index(
        "uq_users_member_id",
        "users",
        ["member_id"],
        unique=True,
        schema="gateway",
        postgresql_where=sa.text("member_id IS NOT NULL"),
    )
    op.create_index(
        "uq_users_username_lower",
        "users",
        [sa.literal_column("lower(username)")],
        unique=True,
        schema="gateway",
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("family_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["gateway.users.id"],
            name=op.f("fk_refresh_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
        schema="gateway",
    )
    op.create_index(
        "ix_refresh_tokens_expires_at",
        "refresh_tokens",
        ["expires_at"],
        unique=False,
        schema="gateway",
    )
    op.create_index(
        "ix_refresh_tokens_family_id",
        "refresh_tokens",
        ["family_id"],
        unique=False,
        schema="gateway",
    )
    op.create_index(
        "ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"], unique=False, schema="gateway"
    )
    for statement in append_only_sql("gateway"):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_append_only_sql("gateway"):
        op.execute(statement)
    op.drop_index("ix_refresh_tokens_user_id", table_name="refresh_tokens", schema="gateway")
    op.drop_index("ix_refresh_tokens_family_id", table_name="refresh_tokens", schema="gateway")
    op.drop_index("ix_refresh_tokens_expires_at", table_name="refresh_tokens", schema="gateway")
    op.drop_table("refresh_tokens", schema="gateway")
    op.drop_index("uq_users_username_lower", table_name="users", schema="gateway")
    op.drop_index(
        "uq_users_member_id",
        table_name="users",
        schema="gateway",
        postgresql_where=sa.text("member_id IS NOT NULL"),
    )
    op.drop_index("ix_users_role", table_name="users", schema="gateway")
    op.drop_table("users", schema="gateway")
    op.drop_index(
        op.f("ix_gateway_idempotency_keys_created_at"),
        table_name="idempotency_keys",
        schema="gateway",
    )
    op.drop_table("idempotency_keys", schema="gateway")
    op.drop_index(
        op.f("ix_gateway_audit_log_subject_member_id"), table_name="audit_log", schema="gateway"
    )
    op.drop_index(op.f("ix_gateway_audit_log_at"), table_name="audit_log", schema="gateway")
    op.drop_table("audit_log", schema="gateway")
    op.drop_index("ix_api_keys_org_id_id", table_name="api_keys", schema="gateway")
    op.drop_table("api_keys", schema="gateway")
