"""`python -m tools.serve <app>`: one Lianxin app in the foreground, as a container runs it
(`lianxin registry|mobility|activities|gateway|migrate`). Apps listen on 0.0.0.0 at their
settings' port (`LIANXIN_PORT` overrides); `migrate` applies every schema's migrations to
`DATABASE_URL` and exits."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from common.settings import BaseAppSettings

# app name -> (ASGI module, settings class path)
APPS: dict[str, tuple[str, str]] = {
    "registry": ("services.registry.app", "services.registry.settings:RegistrySettings"),
    "mobility": ("services.mobility.app", "services.mobility.settings:MobilitySettings"),
    "activities": (
        "services.activities.app",
        "services.activities.settings:ActivitiesSettings",
    ),
    "gateway": ("gateway.app", "gateway.settings:GatewaySettings"),
}


def settings_class(app: str) -> type[BaseAppSettings]:
    import importlib

    module, _, name = APPS[app][1].partition(":")
    cls: type[BaseAppSettings] = getattr(importlib.import_module(module), name)
    return cls


def probe(app: str, endpoint: str) -> int:
    """The app's own `/healthz` or `/readyz` on 127.0.0.1 (no curl in the slim image)."""
    import urllib.error
    import urllib.request

    port = int(os.environ.get("LIANXIN_PORT") or settings_class(app).model_fields["port"].default)
    url = f"http://127.0.0.1:{port}/{endpoint}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lianxin")
    parser.add_argument("app", choices=[*APPS, "migrate"])
    parser.add_argument("--host", default=os.environ.get("LIANXIN_HOST", "0.0.0.0"))  # noqa: S104
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--probe",
        choices=["healthz", "readyz"],
        help="instead of serving: exit 0 when the running app answers 200 there (healthchecks)",
    )
    args = parser.parse_args(argv)

    if args.probe:
        if args.app == "migrate":
            parser.error("migrate has nothing to probe")
        return probe(args.app, args.probe)

    if args.app == "migrate":
        from common.settings import DatabaseSettings
        from tools import migrate

        url = DatabaseSettings().database_url  # `_FILE` and the password secret applied
        if not url:
            parser.error("migrate needs DATABASE_URL")
        migrate.upgrade_all(url)
        print("migrations applied: " + ", ".join(migrate.histories()), flush=True)
        return 0

    settings = settings_class(args.app)()  # refuses bad production settings before binding
    port = int(getattr(settings, "port"))  # noqa: B009 - every app's settings have a port

    import uvicorn

    from tools.servers import serving_args

    uvicorn.run(
        f"{APPS[args.app][0]}:app",
        host=args.host,
        port=port,
        workers=args.workers,
        access_log=False,  # common/metrics.py logs each request (no query string, no body)
        proxy_headers=False,
        server_header=False,  # no `server: uvicorn` (OWASP API8: no stack fingerprint)
        loop="uvloop",
        http=serving_args(f"{APPS[args.app][0]}:app")[-1],
        log_config=None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
