"""`python -m bench [name ...]`: runs the named benchmarks (`bench/<name>.py`), or all of
them, one after another, each in its own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))
    status = 0
    for name in names:
        print(f"== bench.{name}", flush=True)
        status |= subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False).returncode
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
