"""mobility: tracking cards and contacts of mobile members, dual-management links and
feedback, read models of transfers and organizational life, members' birth date

Revision ID: 0003_mobility_cards_links
Revises: 0002_mobility_members_skills
Create Date: 2026-11-26 07:17:29.244808+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_mobility_cards_links"
down_revision: str | None = "0002_mobility_members_skills"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("change_seq", schema="mobility")))
    op.create_table(
        "last_org_life",
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("last_attended_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_last_org_life")),
        schema="mobility",
    )
    op.create_table(
        "links",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("workplace_org_id", sa.UUID(), nullable=True),
        sa.Column("workplace_external_name", sa.String(length=200), nullable=True),
        sa.Column("workplace_external_code", sa.String(length=64), nullable=True),
        sa.Column("residence_org_id", sa.UUID(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("reported_on", sa.Date(), nullable=True),
        sa.Column("ended_on", sa.Date(), nullable=True),
        sa.Column("external_id", sa.String(length=100), nullable=True),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column(
            "change_seq",
            sa.BigInteger(),
            server_default=sa.text("nextval('mobility.change_seq')"),
            nullable=False,
        ),
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
            "(status = 'ended') = (ended_on IS NOT NULL)", name=op.f("ck_links_ended_on")
        ),
        sa.CheckConstraint(
            "(status = 'reported') <= (reported_on IS NOT NULL)", name=op.f("ck_links_reported_on")
        ),
        sa.CheckConstraint("mode IN ('direct', 'assisted', 'proxy')", name=op.f("ck_links_mode")),
        sa.CheckConstraint(
            "status IN ('pending', 'reported', 'ended')", name=op.f("ck_links_status")
        ),
        sa.CheckConstraint(
            "(workplace_org_id IS NULL) <> (workplace_external_name IS NULL)",
            name=op.f("ck_links_one_workplace"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links")),
        schema="mobility",
    )
    op.create_index(
        op.f("ix_mobility_links_change_seq"),
        "links",
        ["change_seq"],
        unique=False,
        schema="mobility",
    )
    op.create_index(
        op.f("ix_mobility_links_member_id"), "links", ["member_id"], unique=False, schema="mobility"
    )
    op.create_index(
        op.f("ix_mobility_links_residence_org_id"),
        "links",
        ["residence_org_id", "id"],
        unique=False,
        schema="mobility",
    )
    op.create_index(
        "uq_links_open_member_workplace",
        "links",
        ["workplace_org_id", "member_id"],
        unique=True,
        schema="mobility",
        postgresql_where=sa.text("status <> 'ended' AND workplace_org_id IS NOT NULL"),
    )
    op.create_table(
        "mobile_cards",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("place_cipher", sa.LargeBinary(), nullable=False),
        sa.Column("host_org_id", sa.UUID(), nullable=True),
        sa.Column("left_on", sa.Date(), nullable=False),
        sa.Column("expected_return_on", sa.Date(), nullable=True),
        sa.Column("contact_phone_cipher", sa.LargeBinary(), nullable=True),
        sa.Column("contact_phone_masked", sa.String(length=32), nullable=True),
        sa.Column("tracker", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("last_contact_on", sa.Date(), nullable=True),
        sa.Column("returned_on", sa.Date(), nullable=True),
        sa.Column("lost_reported", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
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
            "(status = 'returned') = (returned_on IS NOT NULL)",
            name=op.f("ck_mobile_cards_returned_on"),
        ),
        sa.CheckConstraint(
            "direction IN ('outflow', 'inflow')", name=op.f("ck_mobile_cards_direction")
        ),
        sa.CheckConstraint("status IN ('active', 'returned')", name=op.f("ck_mobile_cards_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mobile_cards")),
        schema="mobility",
    )
    op.create_index(
        op.f("ix_mobility_mobile_cards_org_id"),
        "mobile_cards",
        ["org_id", "id"],
        unique=False,
        schema="mobility",
    )
    op.create_index(
        "uq_mobile_cards_active_member",
        "mobile_cards",
        ["member_id"],
        unique=True,
        schema="mobility",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("from_org_id", sa.UUID(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("transfer_id", name=op.f("pk_transfers")),
        schema="mobility",
    )
    op.create_index(
        op.f("ix_mobility_transfers_member_id"),
        "transfers",
        ["member_id"],
        unique=False,
        schema="mobility",
    )
    op.create_table(
        "contacts",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("card_id", sa.UUID(), nullable=False),
        sa.Column("on", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("attended_org_life", sa.Boolean(), nullable=False),
        sa.Column("notes_cipher", sa.LargeBinary(), nullable=True),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "channel IN ('phone', 'visit', 'online', 'letter')", name=op.f("ck_contacts_channel")
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["mobility.mobile_cards.id"], name=op.f("fk_contacts_card_id_mobile_cards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        schema="mobility",
    )
    op.create_index(
        op.f("ix_mobility_contacts_card_id"),
        "contacts",
        ["card_id", "on"],
        unique=False,
        schema="mobility",
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("link_id", sa.UUID(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("rating", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("given_by", sa.String(length=200), nullable=False),
        sa.Column(
            "change_seq",
            sa.BigInteger(),
            server_default=sa.text("nextval('mobility.change_seq')"),
            nullable=False,
        ),
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
            "rating IN ('excellent', 'good', 'fair', 'poor')", name=op.f("ck_feedback_rating")
        ),
        sa.ForeignKeyConstraint(
            ["link_id"], ["mobility.links.id"], name=op.f("fk_feedback_link_id_links")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.UniqueConstraint("link_id", "year", name=op.f("uq_feedback_link_id")),
        schema="mobility",
    )
    op.create_index(
        op.f("ix_mobility_feedback_change_seq"),
        "feedback",
        ["change_seq"],
        unique=False,
        schema="mobility",
    )
    op.add_column("members", sa.Column("birth_date", sa.Date(), nullable=True), schema="mobility")


def downgrade() -> None:
    op.drop_column("members", "birth_date", schema="mobility")
    op.drop_index(op.f("ix_mobility_feedback_change_seq"), table_name="feedback", schema="mobility")
    op.drop_table("feedback", schema="mobility")
    op.drop_index(op.f("ix_mobility_contacts_card_id"), table_name="contacts", schema="mobility")
    op.drop_table("contacts", schema="mobility")
    op.drop_index(
        op.f("ix_mobility_transfers_member_id"), table_name="transfers", schema="mobility"
    )
    op.drop_table("transfers", schema="mobility")
    op.drop_index(
        "uq_mobile_cards_active_member",
        table_name="mobile_cards",
        schema="mobility",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_index(
        op.f("ix_mobility_mobile_cards_org_id"), table_name="mobile_cards", schema="mobility"
    )
    op.drop_table("mobile_cards", schema="mobility")
    op.drop_index(
        "uq_links_open_member_workplace",
        table_name="links",
        schema="mobility",
        postgresql_where=sa.text("status <> 'ended' AND workplace_org_id IS NOT NULL"),
    )
    op.drop_index(op.f("ix_mobility_links_residence_org_id"), table_name="links", schema="mobility")
    op.drop_index(op.f("ix_mobility_links_member_id"), table_name="links", schema="mobility")
    op.drop_index(op.f("ix_mobility_links_change_seq"), table_name="links", schema="mobility")
    op.drop_table("links", schema="mobility")
    op.drop_table("last_org_life", schema="mobility")
    op.execute(sa.schema.DropSequence(sa.Sequence("change_seq", schema="mobility")))
