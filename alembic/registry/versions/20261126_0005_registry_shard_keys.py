"""registry: Citus-ready keys — `shard_key` on orgs, members, member_merges and transfers,
primary keys `(shard_key, id)`, the lookup tables that keep ID numbers and org codes
unique, and the upper org tree (docs/scaling.md, "Migrations that make the schema ready")

- `shard_key uuid NOT NULL` (common/sharding.py): orgs by the rule from the root down
  (`backfill_org_keys`), members by their relation org's key else their residence org's
  else `UNSHARDED`, member_merges by the survivor's key, transfers by their member's.
- Primary keys become `(shard_key, id)` — on Citus the distribution column must be part of
  every primary and unique key. Until Citus there is one node, and the id alone is still
  unique: each table keeps a UNIQUE constraint (index) on `id`, which lookups by id, the
  foreign keys that stay and the ORM's identity use. The foreign keys referring to
  `orgs.id` and `members.id` are recreated against those constraints.
- References that may cross counties stop being foreign keys (the service checks them):
  a member's residence org and party group, a transfer's origin and destination.
- `member_identities` (ID number hash → live record) and `org_codes` (code → org) are the
  unique keys now; the unique indexes on `members.id_number_hash` and `orgs.code` become
  plain indexes (every write path goes through the lookup tables in its transaction).
- `upper_orgs`: a copy of the city-level orgs, kept with the tree by the service.

Revision ID: 0005_registry_keys
Revises: 0004_registry_outbox_key
Create Date: 2026-11-26 13:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import common.db
from common.sharding import UNSHARDED, backfill_org_keys

revision: str = "0005_registry_keys"
down_revision: str | None = "0004_registry_outbox_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "registry"
SHARDED = ("orgs", "members", "member_merges", "transfers")

# (table, column, referred table) of every foreign key to orgs.id or members.id; those in
# CROSSING are not recreated.
FOREIGN_KEYS = (
    ("orgs", "parent_id", "orgs"),
    ("members", "org_id", "orgs"),
    ("members", "residence_org_id", "orgs"),
    ("members", "group_id", "orgs"),
    ("members", "merged_into", "members"),
    ("member_merges", "from_id", "members"),
    ("member_merges", "into_id", "members"),
    ("transfers", "member_id", "members"),
    ("transfers", "from_org_id", "orgs"),
    ("transfers", "to_org_id", "orgs"),
)
CROSSING = {
    ("members", "residence_org_id"),
    ("members", "group_id"),
    ("transfers", "from_org_id"),
    ("transfers", "to_org_id"),
}


def _fk_name(table: str, column: str, referred: str) -> str:
    return f"fk_{table}_{column}_{referred}"


def _create_fk(table: str, column: str, referred: str) -> None:
    op.create_foreign_key(
        _fk_name(table, column, referred),
        table,
        referred,
        [column],
        ["id"],
        source_schema=SCHEMA,
        referent_schema=SCHEMA,
    )


def upgrade() -> None:
    conn = op.get_bind()
    for table in SHARDED:
        op.add_column(table, sa.Column("shard_key", sa.UUID(), nullable=True), schema=SCHEMA)
    backfill_org_keys(conn, f"{SCHEMA}.orgs")
    op.execute(
        sa.text(
            "UPDATE registry.members m SET shard_key = coalesce("
            "(SELECT o.shard_key FROM registry.orgs o WHERE o.id = m.org_id), "
            "(SELECT o.shard_key FROM registry.orgs o WHERE o.id = m.residence_org_id), "
            ":unsharded)"
        ).bindparams(sa.bindparam("unsharded", UNSHARDED, type_=sa.UUID()))
    )
    op.execute(
        "UPDATE registry.member_merges g SET shard_key = m.shard_key "
        "FROM registry.members m WHERE m.id = g.into_id"
    )
    op.execute(
        "UPDATE registry.transfers t SET shard_key = m.shard_key "
        "FROM registry.members m WHERE m.id = t.member_id"
    )
    for table in SHARDED:
        op.alter_column(table, "shard_key", nullable=False, schema=SCHEMA)

    # Primary keys (shard_key, id); the id stays unique by a constraint of its own.
    for table, column, referred in FOREIGN_KEYS:
        op.drop_constraint(
            _fk_name(table, column, referred), table, type_="foreignkey", schema=SCHEMA
        )
    for table in SHARDED:
        op.drop_constraint(f"pk_{table}", table, type_="primary", schema=SCHEMA)
        op.create_primary_key(f"pk_{table}", table, ["shard_key", "id"], schema=SCHEMA)
        op.create_unique_constraint(f"uq_{table}_id", table, ["id"], schema=SCHEMA)
    for table, column, referred in FOREIGN_KEYS:
        if (table, column) not in CROSSING:
            _create_fk(table, column, referred)

    # Global uniqueness through lookup tables.
    op.create_table(
        "member_identities",
        sa.Column("id_number_hash", sa.LargeBinary(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("shard_key", sa.UUID(), nullable=False),
        sa.PrimaryKeyConstraint("id_number_hash", name=op.f("pk_member_identities")),
        schema=SCHEMA,
    )
    op.execute(
        "INSERT INTO registry.member_identities (id_number_hash, member_id, shard_key) "
        "SELECT id_number_hash, id, shard_key FROM registry.members "
        "WHERE id_number_hash IS NOT NULL AND merged_into IS NULL"
    )
    op.drop_index("uq_members_id_number_hash", table_name="members", schema=SCHEMA)
    op.create_index(
        "ix_members_id_number_hash",
        "members",
        ["id_number_hash"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text("merged_into IS NULL"),
    )
    op.create_table(
        "org_codes",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("shard_key", sa.UUID(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_org_codes")),
        schema=SCHEMA,
    )
    op.execute(
        "INSERT INTO registry.org_codes (code, org_id, shard_key) "
        "SELECT code, id, shard_key FROM registry.orgs"
    )
    op.drop_constraint("uq_orgs_code", "orgs", type_="unique", schema=SCHEMA)
    op.create_index("ix_orgs_code", "orgs", ["code"], unique=False, schema=SCHEMA)

    # The upper tree.
    op.create_table(
        "upper_orgs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("parent_id", sa.UUID(), nullable=True),
        sa.Column("path", common.db.LTree(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("area_level", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upper_orgs")),
        schema=SCHEMA,
    )
    op.execute(
        "INSERT INTO registry.upper_orgs (id, parent_id, path, code, name, kind, area_level) "
        "SELECT id, parent_id, path, code, name, kind, area_level FROM registry.orgs "
        "WHERE area_level = 'city'"
    )


def downgrade() -> None:
    op.drop_table("upper_orgs", schema=SCHEMA)
    op.drop_index("ix_orgs_code", table_name="orgs", schema=SCHEMA)
    op.create_unique_constraint("uq_orgs_code", "orgs", ["code"], schema=SCHEMA)
    op.drop_table("org_codes", schema=SCHEMA)
    op.drop_index("ix_members_id_number_hash", table_name="members", schema=SCHEMA)
    op.create_index(
        "uq_members_id_number_hash",
        "members",
        ["id_number_hash"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("merged_into IS NULL"),
    )
    op.drop_table("member_identities", schema=SCHEMA)
    for table, column, referred in FOREIGN_KEYS:
        if (table, column) not in CROSSING:
            op.drop_constraint(
                _fk_name(table, column, referred), table, type_="foreignkey", schema=SCHEMA
            )
    for table in SHARDED:
        op.drop_constraint(f"uq_{table}_id", table, type_="unique", schema=SCHEMA)
        op.drop_constraint(f"pk_{table}", table, type_="primary", schema=SCHEMA)
        op.create_primary_key(f"pk_{table}", table, ["id"], schema=SCHEMA)
    for table, column, referred in FOREIGN_KEYS:
        _create_fk(table, column, referred)
    for table in SHARDED:
        op.drop_column(table, "shard_key", schema=SCHEMA)
