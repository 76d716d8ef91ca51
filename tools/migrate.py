"""Apply every service's migration history (each in its own schema) to a database."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config

from common.db import plain_url

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ("registry", "mobility", "activities", "gateway")


def config(schema: str, url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"), ini_section=schema)
    cfg.attributes["url"] = url
    return cfg


def histories() -> list[str]:
    return [s for s in SCHEMAS if (ROOT / "alembic" / s / "env.py").exists()]


def upgrade_all(
    url: str,
    revision: str = "head",
    *,
    roles: bool = True,
    role_passwords: Mapping[str, str] | None = None,
) -> None:
    """Every history to `revision`, then (unless `roles=False`) the services' database roles
    and grants (tools/db_roles.py; passwords from the environment unless given). `url` is
    the owner's."""
    for schema in histories():
        command.upgrade(config(schema, url), revision)
    if revision == "head":
        extend_partitions(url)
    if roles:
        from tools.db_roles import apply_roles

        apply_roles(url, role_passwords)


def extend_partitions(url: str) -> None:
    """The coming ranges of every partitioned table (common/partitions.py): each deploy tops
    them up, the services' upkeep between deploys."""
    from common.audit import AUDIT_MONTHS_AHEAD
    from common.events.outbox_partitions import LAYOUT as OUTBOX

    async def run() -> None:
        conn = await asyncpg.connect(plain_url(url))
        try:
            for schema in histories():
                for table, count in (("audit_log", AUDIT_MONTHS_AHEAD), ("outbox", OUTBOX.ahead)):
                    function = f"{schema}.{table}_add_partitions"
                    if await conn.fetchval(
                        "SELECT to_regprocedure($1) IS NOT NULL", f"{function}(date, integer)"
                    ):
                        await conn.execute(
                            f"SELECT {function}((now() AT TIME ZONE 'UTC')::date, $1)", count
                        )
        finally:
            await conn.close()

    asyncio.run(run())


def downgrade_all(url: str) -> None:
    for schema in reversed(histories()):
        command.downgrade(config(schema, url), "base")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.migrate")
    parser.add_argument("action", choices=["upgrade", "downgrade"])
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    if args.action == "upgrade":
        upgrade_all(args.url)
    else:
        downgrade_all(args.url)


if __name__ == "__main__":
    main()
