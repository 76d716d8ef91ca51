"""mobility: the projected members gain the building group and the skills (shared
`common.events.projection.projected_members_table`, added for activities' help-request
matching)

Revision ID: 0002_mobility_members_skills
Revises: 0001_mobility
Create Date: 2026-11-26 07:16:59.239930+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_mobility_members_skills"
down_revision: str | None = "0001_mobility"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("members", sa.Column("group_id", sa.UUID(), nullable=True), schema="mobility")
    op.add_column(
        "members",
        sa.Column("skills", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        schema="mobility",
    )


def downgrade() -> None:
    op.drop_column("members", "skills", schema="mobility")
    op.drop_column("members", "group_id", schema="mobility")
