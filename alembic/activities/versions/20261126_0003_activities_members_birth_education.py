"""activities: the projected members gain the birth date and the education level (party
workers by age and education band in the statistics); rows projected before fill in with
the members' next event, or a replay of the registry stream

Revision ID: 0003_activities_members
Revises: 0002_activities
Create Date: 2026-11-26 08:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_activities_members"
down_revision: str | None = "0002_activities"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("members", sa.Column("birth_date", sa.Date(), nullable=True), schema="activities")
    op.add_column(
        "members", sa.Column("education", sa.String(length=32), nullable=True), schema="activities"
    )


def downgrade() -> None:
    op.drop_column("members", "education", schema="activities")
    op.drop_column("members", "birth_date", schema="activities")
