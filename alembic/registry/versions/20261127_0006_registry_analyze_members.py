"""registry: `registry.analyze_members(changed)`, the members' statistics renewed at once
after a bulk write

A card import may add 100,000 members in one transaction. Until
autovacuum's next look at the table (up to a minute after the commit, and only then if it
is due), the planner still plans for the table it last analysed — after a TRUNCATE, or on
a new database, an empty one — and a page of a county's members became a scan of every
member (11.5 pages/s against 300 a minute later, in the benchmark). The service's role
does not own the table, so it may not ANALYZE it; this function (SECURITY DEFINER, owned
by the migration's owner, EXECUTE granted to the service's role by `tools/db_roles.py`)
analyses `members` and `member_identities` when the write changed at least 1,000 rows and
at least a tenth of the rows the planner knows of: autovacuum's own rule, applied in the
writing transaction (ANALYZE counts that transaction's own new rows), not a minute later.

Revision ID: 0006_registry_analyze
Revises: 0005_registry_keys
Create Date: 2026-11-27 11:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_registry_analyze"
down_revision: str | None = "0005_registry_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """CREATE FUNCTION registry.analyze_members(changed bigint) RETURNS boolean
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            known double precision;
        BEGIN
            SELECT greatest(reltuples, 0) INTO known FROM pg_class
            WHERE oid = 'registry.members'::regclass;
            IF changed < 1000 OR changed < 0.1 * known THEN
                RETURN false;
            END IF;
            ANALYZE registry.members;
            ANALYZE registry.member_identities;
            RETURN true;
        END $$"""
    )
    op.execute("REVOKE ALL ON FUNCTION registry.analyze_members(bigint) FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION registry.analyze_members(bigint)")
