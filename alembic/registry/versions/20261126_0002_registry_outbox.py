"""registry: outbox (published events) and consumer cursors (the NATS relay's)

Revision ID: 0002_registry
Revises: 0001_registry
Create Date: 2026-11-26 06:40:49.827810+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import common.events.outbox
from common.events.outbox import drop_outbox_sql, outbox_sql

revision: str = "0002_registry"
down_revision: str | None = "0001_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Records that predate the outbox enter the stream as if just created (parents first), so
# a read model built from the start of the stream holds them too. Same payloads as
# services/registry/events.py.
BACKFILL_ORGS = """
INSERT INTO registry.outbox
    (event_id, type, aggregate_type, aggregate_id, aggregate_version, occurred_at, org_paths,
     payload)
SELECT gen_random_uuid(), 'org.created', 'org', o.id, o.version, o.updated_at,
       ARRAY[o.path::text],
       jsonb_build_object('org_id', o.id, 'parent_id', o.parent_id, 'code', o.code,
                          'name', o.name, 'kind', o.kind, 'area_level', o.area_level,
                          'path', o.path::text, 'version', o.version)
FROM registry.orgs o
ORDER BY nlevel(o.path), o.seq
"""
BACKFILL_MEMBERS = """
INSERT INTO registry.outbox
    (event_id, type, aggregate_type, aggregate_id, aggregate_version, occurred_at, org_paths,
     payload)
SELECT gen_random_uuid(), 'member.registered', 'member', m.id, m.version, m.updated_at,
       array_remove(ARRAY[o.path::text, r.path::text], NULL),
       jsonb_build_object('member_id', m.id, 'name', m.name, 'status', m.status,
                          'category', m.category, 'relation', m.relation,
                          'membership', m.membership, 'org_id', m.org_id,
                          'org_path', o.path::text, 'residence_org_id', m.residence_org_id,
                          'residence_path', r.path::text, 'group_id', m.group_id,
                          'merged_into', m.merged_into, 'version', m.version)
FROM registry.members m
LEFT JOIN registry.orgs o ON o.id = m.org_id
LEFT JOIN registry.orgs r ON r.id = m.residence_org_id
ORDER BY m.created_at, m.id
"""


def upgrade() -> None:
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
        schema="registry",
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
        schema="registry",
    )
    op.create_index(
        op.f("ix_registry_outbox_txid"), "outbox", ["txid", "id"], unique=False, schema="registry"
    )
    for statement in outbox_sql("registry"):
        op.execute(statement)
    op.execute(BACKFILL_ORGS)
    op.execute(BACKFILL_MEMBERS)


def downgrade() -> None:
    for statement in drop_outbox_sql("registry"):
        op.execute(statement)
    op.drop_index(op.f("ix_registry_outbox_txid"), table_name="outbox", schema="registry")
    op.drop_table("outbox", schema="registry")
    op.drop_table("consumer_cursors", schema="registry")
