"""Every guide in `docs/guides/` works as written: its ```sh blocks, in order, in one bash
session per guide (so `$ACCESS` set in one block is there in the next), against a real
running system (`tests/contract/system.py`, conftest's `system`). Each block must succeed:
the guides' curl calls use `--fail-with-body`, and the session runs with `set -euo pipefail`."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract.system import ADMIN_PASSWORD, ADMIN_USER, System

GUIDES = Path(__file__).resolve().parents[2] / "docs" / "guides"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
GUIDE_LIMIT_S = 120


def guides() -> list[Path]:
    return sorted(p for p in GUIDES.glob("*.md") if p.name != "README.md")


def blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def test_there_are_guides_with_commands() -> None:
    names = [p.name for p in guides()]
    assert len(names) >= 5, names
    for path in guides():
        assert blocks(path), f"{path.name} has no ```sh block"


def script(path: Path) -> str:
    """The guide's blocks, each announced on stderr, in one `set -euo pipefail` session."""
    parts = ["set -euo pipefail"]
    for n, block in enumerate(blocks(path), 1):
        parts.append(f"echo '>>> block {n}' >&2")
        parts.append(block)
    parts.append("echo '>>> done' >&2")
    return "\n".join(parts)


@pytest.mark.parametrize("guide", guides(), ids=lambda p: p.stem)
def test_guide(guide: Path, system: System, tmp_path: Path) -> None:
    bash, curl = shutil.which("bash"), shutil.which("curl")
    assert bash and curl, "the guides need bash and curl on PATH"
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "LIANXIN_URL": system.gateway_url,
        "LIANXIN_USER": ADMIN_USER,
        "LIANXIN_PASSWORD": ADMIN_PASSWORD,
        # The webhooks guide runs its receiver with the project's Python.
        "PYTHONPATH": str(GUIDES.parents[1]),
    }
    # Its own process group: whatever a guide starts in the background ends with it.
    proc = subprocess.Popen(  # noqa: S603  (bash running the guide's own blocks)
        [bash, "--noprofile", "--norc", "-c", script(guide)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr_b = proc.communicate(timeout=GUIDE_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr_b = proc.communicate(timeout=30)
        ran = [ln for ln in stderr_b.decode().splitlines() if ln.startswith(">>> ")]
        pytest.fail(f"{guide.name}: still running after {GUIDE_LIMIT_S} s in {ran[-1:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the session, if any
    stderr = stderr_b.decode(errors="replace")
    ran = [line for line in stderr.splitlines() if line.startswith(">>> ")]
    assert proc.returncode == 0 and ran[-1:] == [">>> done"], (
        f"{guide.name}: failed in {ran[-1] if ran else 'setup'} (exit {proc.returncode})\n"
        f"--- stdout:\n{stdout.decode(errors='replace')[-3000:]}\n--- stderr:\n"
        f"{stderr[-3000:]}\n{system.logs()}"
    )
