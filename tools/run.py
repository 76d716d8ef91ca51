"""`make run`: PostgreSQL (embedded unless DATABASE_URL is set), migrations, then every app
under one supervisor, each as its own database role (tools/db_roles.py; passwords in
.data/secrets/). Ctrl-C stops them all, and the embedded server; data stays in .data/."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from tools import migrate, pg
from tools.db_roles import SCHEMAS, passwords_from_env, role_url
from tools.keys import ensure_signing_keys
from tools.servers import serving_args

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LIANXIN_DATA_DIR", ROOT / ".data"))

APPS = [
    # name, module, port
    ("registry", "services.registry.app", 8001),
    ("mobility", "services.mobility.app", 8002),
    ("activities", "services.activities.app", 8003),
    ("gateway", "gateway.app", 8000),
]


def _exists(module: str) -> bool:
    return (ROOT / (module.replace(".", "/") + ".py")).exists()


def _load_demo_if_empty(url: str) -> None:
    """An empty registry gets the demo city (tools/demo): something to look at from the
    first start. Keys and settings come from this environment, as the apps' do."""
    import asyncio

    from tools.demo import load, registry_is_empty
    from tools.demo.load import with_sessionmaker

    if not asyncio.run(with_sessionmaker(url, registry_is_empty)):
        return
    print(
        "The registry is empty: loading the demo city (嘉兴市, seed 2004, year 2003)…", flush=True
    )
    loaded = asyncio.run(load(url))
    if loaded is not None:
        print(f"Demo city loaded in {loaded.seconds:.0f}s (LIANXIN_DEMO=0 skips it).", flush=True)


def db_role_passwords(folder: Path) -> dict[str, str]:
    """The apps' database passwords: from the environment (`LIANXIN_<S>_DB_PASSWORD[_FILE]`),
    else random ones kept in `folder/db_<schema>_password` (0600), made on first use."""
    found = passwords_from_env()
    for schema in SCHEMAS:
        if schema in found:
            continue
        file = folder / f"db_{schema}_password"
        if not file.exists():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            file.touch(mode=0o600)
            file.write_text(secrets.token_urlsafe(24))
        found[schema] = file.read_text().strip()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.run")
    parser.add_argument("--migrate-only", action="store_true")
    parser.add_argument(
        "--no-demo", action="store_true", help="do not load the demo city into an empty database"
    )
    args = parser.parse_args()

    embedded = "DATABASE_URL" not in os.environ
    if embedded:
        port = int(os.environ.get("LIANXIN_PG_PORT", "5544"))
        url = pg.start(DATA / "pg", port).url
        print(f"PostgreSQL (embedded, data in {DATA / 'pg'}): {url}", flush=True)
    else:
        url = os.environ["DATABASE_URL"]
    private, public = ensure_signing_keys(DATA / "keys")
    service_private, service_public = ensure_signing_keys(DATA / "keys", name="service")
    role_passwords = db_role_passwords(DATA / "secrets")
    migrate.upgrade_all(url, role_passwords=role_passwords)
    print("Migrations applied: " + ", ".join(migrate.histories()), flush=True)
    if args.migrate_only:
        return 0
    if not args.no_demo and os.environ.get("LIANXIN_DEMO", "1") != "0":
        try:
            _load_demo_if_empty(url)
        except Exception as exc:  # the apps start anyway; the demo is a convenience
            print(f"Loading the demo city failed ({exc!r}); starting without it.", flush=True)

    from honcho.manager import Manager
    from honcho.printer import Printer

    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": url,
            "LIANXIN_JWT_PUBLIC_KEY_FILE": str(public),
            "LIANXIN_JWT_PRIVATE_KEY_FILE": str(private),
            "LIANXIN_SERVICE_PUBLIC_KEY_FILE": str(service_public),
            "LIANXIN_SERVICE_PRIVATE_KEY_FILE": str(service_private),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("LIANXIN_ADMIN_USER", "admin")
    env.setdefault("LIANXIN_ADMIN_PASSWORD", "lianxin-admin")
    env.setdefault("LIANXIN_SECURITY_ADMIN_USER", "security")
    env.setdefault("LIANXIN_SECURITY_ADMIN_PASSWORD", "lianxin-security")
    manager = Manager(Printer(sys.stdout))
    started = []
    for name, module, port in APPS:
        if not _exists(module):
            continue
        cmd = " ".join(
            [
                f"{sys.executable} -m uvicorn {module}:app --host 127.0.0.1 --port {port}",
                "--no-access-log --no-server-header",
                *serving_args(f"{module}:app"),
            ]
        )
        # Each app as its own database role (tools/db_roles.py), never as the owner.
        app_env = {**env, "DATABASE_URL": role_url(url, name, role_passwords.get(name))}
        manager.add_process(name, cmd, env=app_env)
        started.append((name, port))
    print("\nLianxin is starting:", flush=True)
    for name, port in started:
        print(f"  {name:<10} http://127.0.0.1:{port}", flush=True)
    print("  API docs   http://127.0.0.1:8000/docs", flush=True)
    print("  dashboard  http://127.0.0.1:8000/dashboard", flush=True)
    print(
        f"  admin login: {env['LIANXIN_ADMIN_USER']} / {env['LIANXIN_ADMIN_PASSWORD']}", flush=True
    )
    print(
        f"  security admin login (accounts, API keys): {env['LIANXIN_SECURITY_ADMIN_USER']} / "
        f"{env['LIANXIN_SECURITY_ADMIN_PASSWORD']}",
        flush=True,
    )
    print("Ctrl-C stops everything.\n", flush=True)
    try:
        manager.loop()
    finally:
        if embedded:
            pg.stop(DATA / "pg")
            print("PostgreSQL stopped.", flush=True)
    return int(manager.returncode or 0)


if __name__ == "__main__":
    raise SystemExit(main())
