"""Generated API clients, from the committed OpenAPI snapshot `openapi/lianxin.json`.

    python -m tools.clients          # (`make clients`) → dist/python/lianxin_client
                                     #                  + dist/typescript/

Python: the generator (`openapi-python-client`, pinned) lives in its own venv under
`.venv/tools/openapi-python-client`, created on first use, so its dependencies never mix
with the project's lock. The generated package needs only `httpx` and `attrs` at run
time.

TypeScript: `openapi-typescript` writes `schema.d.ts` (the types of every path and schema)
next to `lianxin.ts`, a small client over `openapi-fetch` (`clients/typescript/template/`);
the tools are the npm packages pinned in `clients/typescript/` (installed with `npm ci` by
`tools.node`), and `tsc --noEmit` type-checks the result. Every step is bounded."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tools import node

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "openapi" / "lianxin.json"
DIST = ROOT / "dist"
GENERATOR = "openapi-python-client==0.29.1"
TOOL_VENV = ROOT / ".venv" / "tools" / "openapi-python-client"
PACKAGE = "lianxin_client"
TS_TOOLS = ROOT / "clients" / "typescript"
TS_TEMPLATE = TS_TOOLS / "template"


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


def _run_node_tool(args: list[str], *, cwd: Path, what: str, timeout_s: float) -> str:
    result = subprocess.run(
        args,
        cwd=cwd,
        env=node.node_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({result.returncode}):\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )
    return result.stdout


def typecheck_typescript(folder: Path) -> None:
    """`tsc --noEmit` over the `*.ts` of a generated TypeScript client folder (its own
    `tsconfig.json`): a call that no longer fits the document fails here."""
    tsc = node.ensure_packages(TS_TOOLS) / "tsc"
    _run_node_tool([str(tsc), "--noEmit", "-p", str(folder)], cwd=folder, what="tsc", timeout_s=300)


def generate_typescript(
    out_dir: Path = DIST / "typescript", *, spec: Path = SNAPSHOT, check: bool = True
) -> Path:
    """Writes the TypeScript client into `out_dir` (emptied first): `schema.d.ts`,
    `lianxin.ts`, `tsconfig.json`, a `package.json` naming the run-time dependency
    (`openapi-fetch`, pinned) and a `node_modules` link to the pinned tools, so the folder
    type-checks and runs as it is; type-checks it (unless `check` is false: a caller adding
    files of its own checks them all at once) and returns `out_dir`."""
    bin_dir = node.ensure_packages(TS_TOOLS)
    if out_dir.is_symlink() or out_dir.is_file():
        out_dir.unlink()
    elif out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    _run_node_tool(
        [
            str(bin_dir / "openapi-typescript"),
            str(spec),
            "--output",
            str(out_dir / "schema.d.ts"),
            # A field with a default stays optional: request bodies share these schemas.
            "--default-non-nullable=false",
        ],
        cwd=TS_TOOLS,
        what="openapi-typescript",
        timeout_s=300,
    )
    for name in ("lianxin.ts", "tsconfig.json"):
        shutil.copyfile(TS_TEMPLATE / name, out_dir / name)
    pinned = json.loads((TS_TOOLS / "package.json").read_text(encoding="utf-8"))
    dev = pinned["devDependencies"]
    manifest = {
        "name": "lianxin-client",
        "private": True,
        "type": "module",
        "description": f"Generated from {spec.name} by `make clients`; do not edit.",
        "dependencies": {"openapi-fetch": dev["openapi-fetch"]},
        "devDependencies": {k: dev[k] for k in ("typescript", "@types/node")},
    }
    (out_dir / "package.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.symlink(TS_TOOLS / "node_modules", out_dir / "node_modules", target_is_directory=True)
    if check:
        typecheck_typescript(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the API clients into dist/.")
    parser.add_argument("--out", type=Path, default=DIST, help="default: dist/")
    args = parser.parse_args(argv)
    print(f"wrote {generate_python(args.out / 'python')}")
    print(f"wrote {generate_typescript(args.out / 'typescript')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
