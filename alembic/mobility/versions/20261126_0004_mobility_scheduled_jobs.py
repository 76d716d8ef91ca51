"""mobility: scheduled_jobs (the last tick each periodic job claimed, once across replicas)

Revision ID: 0004_mobility_scheduled_jobs
Revises: 0003_mobility_cards_links
Create Date: 2026-11-26 09:40:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_mobility_scheduled_jobs"
down_revision: str | None = "0003_mobility_cards_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduled_jobs",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("runs", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduled_jobs")),
        schema="mobility",
    )


def downgrade() -> None:
    op.drop_table("scheduled_jobs", schema="mobility")
