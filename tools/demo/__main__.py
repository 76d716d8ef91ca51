"""`python -m tools.demo [--seed N] [--year 2003]`: load the demo city into DATABASE_URL (a
migrated database; unset: the embedded server `make run` starts, as the apps default to).
Does nothing when the city is there already."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date

from services.registry.settings import RegistrySettings
from tools.demo.load import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__)
    parser.add_argument("--seed", type=int, default=2004, help="same seed, same city")
    parser.add_argument("--year", type=int, default=2003, help="the survey year (flows, talks…)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="defaults to DATABASE_URL, else the local embedded server",
    )
    args = parser.parse_args(argv)
    url = args.database_url or RegistrySettings().database_url
    if not 2000 <= args.year < date.today().year:
        parser.error("--year must be a past year from 2000 on")
    loaded = asyncio.run(load(url, seed=args.seed, year=args.year))
    if loaded is None:
        print("The demo city (嘉兴市, code JX) is there already: nothing to do.")
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in loaded.counts.items())
    print(
        f"Demo city loaded in {loaded.seconds:.1f}s (seed {args.seed}, year {args.year}): {counts}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
