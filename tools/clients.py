"""Generated API clients, from the committed OpenAPI snapshot `openapi/lianxin.json`.

    python -m tools.clients          # (`make clients`) → dist/python/lianxin_client

The generator (`openapi-python-client`, pinned) lives in its own venv under
`.venv/tools/openapi-python-client`, created on first use, so its dependencies never mix
with the project's lock. The generated package needs only `httpx` and `attrs` at run
time. Every step is bounded."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "openapi" / "lianxin.json"
DIST = ROOT / "dist"
GENERATOR = "openapi-python-client==0.29.1"
TOOL_VENV = ROOT / ".venv" / "tools" / "openapi-python-client"
PACKAGE = "lianxin_client"


def generator() -> Path:
    """The generator's executable, installing it into its own venv first if needed."""
    exe = TOOL_VENV / "bin" / "openapi-python-client"
    stamp = TOOL_VENV / ".installed"
    if not (exe.exists() and stamp.exists() and stamp.read_text().strip() == GENERATOR):
        subprocess.run([sys.executable, "-m", "venv", str(TOOL_VENV)], check=True, timeout=300)
        subprocess.run(
            [
                str(TOOL_VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                GENERATOR,
            ],
            check=True,
            timeout=600,
        )
        stamp.write_text(GENERATOR)
    return exe


def generate_python(out_dir: Path = DIST / "python", *, spec: Path = SNAPSHOT) -> Path:
    """Generates the Python client package into `out_dir/lianxin_client`; returns its path.
    Fails if the generator had to leave any schema or endpoint out."""
    target = out_dir / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            str(generator()),
            "generate",
            "--path",
            str(spec),
            "--output-path",
            str(target),
            "--meta",
            "none",
            "--overwrite",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # The generator only warns about what it skips; a client missing parts is a failure.
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith(("Unable to", "WARNING", "Failure", "Cannot parse"))
    ]
    if result.returncode != 0 or problems:
        raise RuntimeError(
            f"openapi-python-client failed ({result.returncode}):\n"
            + "\n".join(problems or [result.stdout[-3000:], result.stderr[-3000:]])
        )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the API clients into dist/.")
    parser.add_argument("--out", type=Path, default=DIST / "python")
    args = parser.parse_args(argv)
    print(f"wrote {generate_python(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
