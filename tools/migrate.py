"""Apply every service's migration history (each in its own schema) to a database."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from alembic import command
from alembic.config import Config

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
    if roles:
        from tools.db_roles import apply_roles

        apply_roles(url, role_passwords)


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
