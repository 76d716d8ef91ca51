"""registry: orgs, members, transfers, idempotency keys, audit log

Revision ID: 0001_registry
Revises:
Create Date: 2026-11-26 06:23:52.929577+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import common.db
from common.audit import append_only_sql, drop_append_only_sql

revision: str = "0001_registry"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRANSITIONS_SQL = """
CREATE FUNCTION registry.transfers_check_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status IN ('requested', 'issued') THEN RETURN NEW; END IF;
        RAISE EXCEPTION 'a transfer starts as requested or issued, not %', NEW.status
            USING ERRCODE = '23514';
    END IF;
    IF NEW.status = OLD.status THEN RETURN NEW; END IF;
    IF (OLD.status = 'requested' AND NEW.status IN ('issued', 'rejected'))
       OR (OLD.status = 'issued' AND NEW.status IN ('completed', 'rejected', 'expired')) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'a transfer cannot go from % to %', OLD.status, NEW.status
        USING ERRCODE = '23514';
END $$
"""


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
        schema="registry",
    )
    op.create_index(
        op.f("ix_registry_audit_log_at"), "audit_log", ["at"], unique=False, schema="registry"
    )
    op.create_index(
        op.f("ix_registry_audit_log_subject_member_id"),
        "audit_log",
        ["subject_member_id", "at"],
        unique=False,
        schema="registry",
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
        schema="registry",
    )
    op.create_index(
        op.f("ix_registry_idempotency_keys_created_at"),
        "idempotency_keys",
        ["created_at"],
        unique=False,
        schema="registry",
    )
    op.create_table(
        "orgs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("area_level", sa.String(length=32), nullable=False),
        sa.Column("parent_id", sa.UUID(), nullable=True),
        sa.Column("path", common.db.LTree(), nullable=False),
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
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.CheckConstraint(
            "area_level IN ('city', 'county', 'street', 'town', 'community', 'building', 'work_unit')",
            name=op.f("ck_orgs_area_level"),
        ),
        sa.CheckConstraint(
            "kind IN ('committee', 'working_committee', 'general_branch', 'branch', 'group')",
            name=op.f("ck_orgs_kind"),
        ),
        sa.CheckConstraint(
            "parent_id IS NULL OR parent_id <> id", name=op.f("ck_orgs_not_own_parent")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["registry.orgs.id"], name=op.f("fk_orgs_parent_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orgs")),
        sa.UniqueConstraint("code", name=op.f("uq_orgs_code")),
        sa.UniqueConstraint("path", name=op.f("uq_orgs_path")),
        sa.UniqueConstraint("seq", name=op.f("uq_orgs_seq")),
        schema="registry",
    )
    op.create_index(
        "ix_orgs_parent_id_name",
        "orgs",
        ["parent_id", "name", "id"],
        unique=False,
        schema="registry",
    )
    op.create_index(
        "ix_orgs_path_gist",
        "orgs",
        ["path"],
        unique=False,
        schema="registry",
        postgresql_using="gist",
    )
    op.create_table(
        "members",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("gender", sa.String(length=16), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("id_number_cipher", sa.LargeBinary(), nullable=True),
        sa.Column("id_number_hash", sa.LargeBinary(), nullable=True),
        sa.Column("id_number_masked", sa.String(length=18), nullable=True),
        sa.Column("phone_cipher", sa.LargeBinary(), nullable=True),
        sa.Column("phone_masked", sa.String(length=32), nullable=True),
        sa.Column("ethnicity", sa.String(length=32), nullable=True),
        sa.Column("education", sa.String(length=32), nullable=True),
        sa.Column("joined_on", sa.Date(), nullable=True),
        sa.Column("membership", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("relation", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), server_default="active", nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("residence_org_id", sa.UUID(), nullable=True),
        sa.Column("group_id", sa.UUID(), nullable=True),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("employer", sa.String(length=200), nullable=True),
        sa.Column(
            "skills", postgresql.ARRAY(sa.String(length=64)), server_default="{}", nullable=False
        ),
        sa.Column(
            "resume", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
        sa.Column("merged_into", sa.UUID(), nullable=True),
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
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.CheckConstraint(
            "category IN ('community_staff', 'new_economic_org', 'retired', 'laid_off', 'migrant_worker', 'rural_to_urban', 'in_service_resident', 'retired_unit_resident', 'other')",
            name=op.f("ck_members_category"),
        ),
        sa.CheckConstraint(
            "education IS NULL OR education IN ('junior_high_or_below', 'senior_high', 'college', 'bachelor', 'postgraduate')",
            name=op.f("ck_members_education"),
        ),
        sa.CheckConstraint("gender IN ('male', 'female')", name=op.f("ck_members_gender")),
        sa.CheckConstraint(
            "membership IN ('full', 'probationary')", name=op.f("ck_members_membership")
        ),
        sa.CheckConstraint(
            "relation IN ('enrolled', 'resident')", name=op.f("ck_members_relation")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'mobile', 'lost_contact', 'transferred_out', 'deceased', 'removed')",
            name=op.f("ck_members_status"),
        ),
        sa.CheckConstraint(
            "(id_number_cipher IS NULL) = (id_number_hash IS NULL)",
            name=op.f("ck_members_id_number_pair"),
        ),
        sa.CheckConstraint(
            "merged_into IS NULL OR merged_into <> id", name=op.f("ck_members_not_merged_into_self")
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["registry.orgs.id"], name=op.f("fk_members_group_id_orgs")
        ),
        sa.ForeignKeyConstraint(
            ["merged_into"], ["registry.members.id"], name=op.f("fk_members_merged_into_members")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["registry.orgs.id"], name=op.f("fk_members_org_id_orgs")
        ),
        sa.ForeignKeyConstraint(
            ["residence_org_id"],
            ["registry.orgs.id"],
            name=op.f("fk_members_residence_org_id_orgs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
        schema="registry",
    )
    op.create_index(
        "ix_members_birth_date", "members", ["birth_date"], unique=False, schema="registry"
    )
    op.create_index("ix_members_name", "members", ["name"], unique=False, schema="registry")
    op.create_index(
        "ix_members_org_id_id", "members", ["org_id", "id"], unique=False, schema="registry"
    )
    op.create_index(
        "ix_members_residence_org_id_id",
        "members",
        ["residence_org_id", "id"],
        unique=False,
        schema="registry",
    )
    op.create_index(
        op.f("ix_registry_members_merged_into"),
        "members",
        ["merged_into"],
        unique=False,
        schema="registry",
    )
    op.create_index(
        "uq_members_id_number_hash",
        "members",
        ["id_number_hash"],
        unique=True,
        schema="registry",
        postgresql_where=sa.text("merged_into IS NULL"),
    )
    op.create_table(
        "member_merges",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("from_id", sa.UUID(), nullable=False),
        sa.Column("into_id", sa.UUID(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("merged_by", sa.String(length=200), nullable=False),
        sa.Column(
            "merged_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["from_id"], ["registry.members.id"], name=op.f("fk_member_merges_from_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["into_id"], ["registry.members.id"], name=op.f("fk_member_merges_into_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_merges")),
        sa.UniqueConstraint("from_id", name=op.f("uq_member_merges_from_id")),
        schema="registry",
    )
    op.create_index(
        op.f("ix_registry_member_merges_into_id"),
        "member_merges",
        ["into_id"],
        unique=False,
        schema="registry",
    )
    op.create_table(
        "transfers",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("from_org_id", sa.UUID(), nullable=True),
        sa.Column("from_external_name", sa.String(length=200), nullable=True),
        sa.Column("from_external_code", sa.String(length=64), nullable=True),
        sa.Column("to_org_id", sa.UUID(), nullable=True),
        sa.Column("to_external_name", sa.String(length=200), nullable=True),
        sa.Column("to_external_code", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="requested", nullable=False),
        sa.Column("letter_no", sa.String(length=64), nullable=True),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
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
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.CheckConstraint(
            "status = 'requested' OR status = 'rejected' OR (letter_no IS NOT NULL AND valid_until IS NOT NULL)",
            name=op.f("ck_transfers_letter_when_issued"),
        ),
        sa.CheckConstraint(
            "status IN ('requested', 'issued', 'completed', 'rejected', 'expired')",
            name=op.f("ck_transfers_status"),
        ),
        sa.CheckConstraint(
            "(from_org_id IS NULL) <> (from_external_name IS NULL)",
            name=op.f("ck_transfers_one_origin"),
        ),
        sa.CheckConstraint(
            "(to_org_id IS NULL) <> (to_external_name IS NULL)",
            name=op.f("ck_transfers_one_destination"),
        ),
        sa.CheckConstraint(
            "from_org_id IS NOT NULL OR to_org_id IS NOT NULL",
            name=op.f("ck_transfers_touches_the_system"),
        ),
        sa.ForeignKeyConstraint(
            ["from_org_id"], ["registry.orgs.id"], name=op.f("fk_transfers_from_org_id_orgs")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["registry.members.id"], name=op.f("fk_transfers_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["to_org_id"], ["registry.orgs.id"], name=op.f("fk_transfers_to_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
        schema="registry",
    )
    op.create_index(
        op.f("ix_registry_transfers_member_id"),
        "transfers",
        ["member_id"],
        unique=False,
        schema="registry",
    )
    op.create_index(
        "ix_transfers_from_org_id_status",
        "transfers",
        ["from_org_id", "status", "valid_until"],
        unique=False,
        schema="registry",
    )
    op.create_index(
        "ix_transfers_issued_valid_until",
        "transfers",
        ["valid_until"],
        unique=False,
        schema="registry",
        postgresql_where=sa.text("status = 'issued'"),
    )
    op.create_index(
        "ix_transfers_to_org_id_status",
        "transfers",
        ["to_org_id", "status", "valid_until"],
        unique=False,
        schema="registry",
    )
    op.create_index(
        "uq_transfers_open_member",
        "transfers",
        ["member_id"],
        unique=True,
        schema="registry",
        postgresql_where=sa.text("status IN ('requested', 'issued')"),
    )
    for statement in append_only_sql("registry"):
        op.execute(statement)
    # The transfer state machine, enforced by the database as well as by the code.
    op.execute(TRANSITIONS_SQL)
    op.execute(
        "CREATE TRIGGER transfers_state_machine BEFORE INSERT OR UPDATE OF status "
        "ON registry.transfers FOR EACH ROW EXECUTE FUNCTION registry.transfers_check_transition()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS transfers_state_machine ON registry.transfers")
    op.execute("DROP FUNCTION IF EXISTS registry.transfers_check_transition()")
    for statement in drop_append_only_sql("registry"):
        op.execute(statement)
    op.drop_index(
        "uq_transfers_open_member",
        table_name="transfers",
        schema="registry",
        postgresql_where=sa.text("status IN ('requested', 'issued')"),
    )
    op.drop_index("ix_transfers_to_org_id_status", table_name="transfers", schema="registry")
    op.drop_index(
        "ix_transfers_issued_valid_until",
        table_name="transfers",
        schema="registry",
        postgresql_where=sa.text("status = 'issued'"),
    )
    op.drop_index("ix_transfers_from_org_id_status", table_name="transfers", schema="registry")
    op.drop_index(
        op.f("ix_registry_transfers_member_id"), table_name="transfers", schema="registry"
    )
    op.drop_table("transfers", schema="registry")
    op.drop_index(
        op.f("ix_registry_member_merges_into_id"), table_name="member_merges", schema="registry"
    )
    op.drop_table("member_merges", schema="registry")
    op.drop_index(
        "uq_members_id_number_hash",
        table_name="members",
        schema="registry",
        postgresql_where=sa.text("merged_into IS NULL"),
    )
    op.drop_index(op.f("ix_registry_members_merged_into"), table_name="members", schema="registry")
    op.drop_index("ix_members_residence_org_id_id", table_name="members", schema="registry")
    op.drop_index("ix_members_org_id_id", table_name="members", schema="registry")
    op.drop_index("ix_members_name", table_name="members", schema="registry")
    op.drop_index("ix_members_birth_date", table_name="members", schema="registry")
    op.drop_table("members", schema="registry")
    op.drop_index(
        "ix_orgs_path_gist", table_name="orgs", schema="registry", postgresql_using="gist"
    )
    op.drop_index("ix_orgs_parent_id_name", table_name="orgs", schema="registry")
    op.drop_table("orgs", schema="registry")
    op.drop_index(
        op.f("ix_registry_idempotency_keys_created_at"),
        table_name="idempotency_keys",
        schema="registry",
    )
    op.drop_table("idempotency_keys", schema="registry")
    op.drop_index(
        op.f("ix_registry_audit_log_subject_member_id"), table_name="audit_log", schema="registry"
    )
    op.drop_index(op.f("ix_registry_audit_log_at"), table_name="audit_log", schema="registry")
    op.drop_table("audit_log", schema="registry")
