"""mobility: every row that belongs to a member carries the member's distribution key
(common/sharding.py), filled for rows that exist; primary keys (shard_key, id)

`mobile_cards`, `links`, `transfers` and `last_org_life` take their member's key in the
projection (`mobility.members.shard_key`, `UNSHARDED` for a member the projection does not
know); `contacts` their card's and `feedback` their link's, which is the same key. The
primary keys become `(shard_key, id)` (a sharded engine requires the distribution column
in every unique key), and the foreign keys between them `(shard_key, card_id)` and
`(shard_key, link_id)`: a card and its contacts, a link and its feedback are on one shard,
and contacts and feedback follow their card or link when it is re-keyed (`ON UPDATE
CASCADE`; on Citus the re-homing of docs/scaling.md moves them instead).
Each table keeps a unique index on its id alone: while there is one node, lookups, foreign
keys and conflict targets by id keep working unchanged; on Citus it becomes a lookup
through the key (docs/scaling.md). References that would cross counties (a card's
responsible or host org, a link's residence or workplace org) were never foreign keys:
the service checks them against the projection.

Revision ID: 0006_mobility_row_keys
Revises: 0005_mobility_keys
Create Date: 2026-11-26 13:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from common.sharding import UNSHARDED

revision: str = "0006_mobility_row_keys"
down_revision: str | None = "0005_mobility_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "mobility"
# table → its id column
KEYED = {
    "mobile_cards": "id",
    "contacts": "id",
    "links": "id",
    "feedback": "id",
    "transfers": "transfer_id",
    "last_org_life": "member_id",
}
# The tables holding the member id themselves.
BY_MEMBER = ("mobile_cards", "links", "transfers", "last_org_life")
# child → (its column naming the parent, the parent)
CHILDREN = {"contacts": ("card_id", "mobile_cards"), "feedback": ("link_id", "links")}


def upgrade() -> None:
    for table in KEYED:
        op.add_column(table, sa.Column("shard_key", sa.UUID(), nullable=True), schema=SCHEMA)
    for table in BY_MEMBER:
        op.execute(
            f"""UPDATE {SCHEMA}.{table} t SET shard_key = coalesce(
                (SELECT m.shard_key FROM {SCHEMA}.members m WHERE m.member_id = t.member_id),
                '{UNSHARDED}'::uuid)"""  # noqa: S608 - constant identifiers
        )
    for child, (column, parent) in CHILDREN.items():
        op.execute(
            f"""UPDATE {SCHEMA}.{child} c SET shard_key = p.shard_key
            FROM {SCHEMA}.{parent} p WHERE p.id = c.{column}"""  # noqa: S608
        )
    for child, (column, parent) in CHILDREN.items():
        op.drop_constraint(
            f"fk_{child}_{column}_{parent}", child, type_="foreignkey", schema=SCHEMA
        )
    for table, id_column in KEYED.items():
        op.alter_column(table, "shard_key", nullable=False, schema=SCHEMA)
        op.create_index(f"uq_{table}_{id_column}", table, [id_column], unique=True, schema=SCHEMA)
        op.drop_constraint(f"pk_{table}", table, type_="primary", schema=SCHEMA)
        op.create_primary_key(f"pk_{table}", table, ["shard_key", id_column], schema=SCHEMA)
    for child, (column, parent) in CHILDREN.items():
        op.create_foreign_key(
            f"fk_{child}_shard_key_{parent}",
            child,
            parent,
            ["shard_key", column],
            ["shard_key", "id"],
            source_schema=SCHEMA,
            referent_schema=SCHEMA,
            onupdate="CASCADE",
        )
    # The re-keying after a member moves finds every card of the member, not only the open one.
    op.create_index(
        op.f("ix_mobility_mobile_cards_member_id"),
        "mobile_cards",
        ["member_id"],
        unique=False,
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_mobility_mobile_cards_member_id"), table_name="mobile_cards", schema=SCHEMA
    )
    for child, (_, parent) in CHILDREN.items():
        op.drop_constraint(
            f"fk_{child}_shard_key_{parent}", child, type_="foreignkey", schema=SCHEMA
        )
    for table, id_column in KEYED.items():
        op.drop_constraint(f"pk_{table}", table, type_="primary", schema=SCHEMA)
        op.create_primary_key(f"pk_{table}", table, [id_column], schema=SCHEMA)
        op.drop_index(f"uq_{table}_{id_column}", table_name=table, schema=SCHEMA)
    for child, (column, parent) in CHILDREN.items():
        op.create_foreign_key(
            f"fk_{child}_{column}_{parent}",
            child,
            parent,
            [column],
            ["id"],
            source_schema=SCHEMA,
            referent_schema=SCHEMA,
        )
    for table in KEYED:
        op.drop_column(table, "shard_key", schema=SCHEMA)
