"""gateway: the security_admin role (accounts, roles and API keys; separate duties)

Revision ID: 0003_gateway
Revises: 0002_gateway
Create Date: 2026-11-26 09:50:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_gateway"
down_revision: str | None = "0002_gateway"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("admin", "org_admin", "org_viewer", "member", "auditor")
AFTER = (*BEFORE, "security_admin")


def _roles(values: Sequence[str]) -> str:
    return "role IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_users_role"), "users", schema="gateway", type_="check")
    op.create_check_constraint(op.f("ck_users_role"), "users", _roles(AFTER), schema="gateway")


def downgrade() -> None:
    op.execute("DELETE FROM gateway.users WHERE role = 'security_admin'")  # tokens cascade
    op.drop_constraint(op.f("ck_users_role"), "users", schema="gateway", type_="check")
    op.create_check_constraint(op.f("ck_users_role"), "users", _roles(BEFORE), schema="gateway")
