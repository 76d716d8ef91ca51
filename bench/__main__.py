"""`python -m bench [name ...]` (`make bench`, `make bench BENCH="gateway_overhead"`): runs
the named benchmarks (`bench/<name>.py`), or the whole suite, one after another, each in its
own process with a time budget, then prints ONE table — each figure next to the baseline
measured in the same run, the ratio, the target and pass/fail — and writes it to
`bench/results/summary.json`.

A module takes part in the suite unless its source says `IN_SUITE = False` (a dataset
generator, say); it reports its figures as rows (`bench/_rows.py`) in
`bench/results/<name>.json`. A module that runs past its budget gets SIGINT (its `finally`
blocks stop its servers and remove its database), then SIGKILL after a grace period."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._rows import RESULTS, machine, markdown, table

HERE = Path(__file__).resolve().parent
# The suite's order: quick, independent figures first.
ORDER = ("gateway_overhead", "mobility_sync", "registry_bulk", "event_lag")
BUDGET_S = 900.0  # per module, unless it declares `BUDGET_S = <seconds>`
GRACE_S = 30.0
_BUDGET = re.compile(r"^BUDGET_S\s*=\s*([0-9_.]+)", re.MULTILINE)
_OUT = re.compile(r"^IN_SUITE\s*=\s*False", re.MULTILINE)
# Run only when named: the province-sized dataset (issue 10) takes far longer than a suite.
BY_NAME_ONLY = frozenset({"province"})


def suite() -> list[str]:
    found = {
        p.stem: p.read_text()
        for p in HERE.glob("*.py")
        if not p.stem.startswith("_") and p.stem != "__main__"
    }
    names = [n for n in found if n not in BY_NAME_ONLY and not _OUT.search(found[n])]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def budget(name: str) -> float:
    match = _BUDGET.search((HERE / f"{name}.py").read_text())
    return float(match.group(1).replace("_", "")) if match else BUDGET_S


def run_one(name: str, limit_s: float, *, quick: bool) -> tuple[int, float]:
    """The module in its own process group, bounded in time: (exit status, seconds)."""
    started = time.monotonic()
    env = {**os.environ, **({"LIANXIN_BENCH_QUICK": "1"} if quick else {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}"], start_new_session=True, env=env
    )
    try:
        return proc.wait(timeout=limit_s), time.monotonic() - started
    except subprocess.TimeoutExpired:
        print(f"!! bench.{name} over its budget of {limit_s:.0f} s: interrupting", flush=True)
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=GRACE_S)
        return 124, time.monotonic() - started
    except BaseException:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=GRACE_S)
        raise


def rows_of(name: str, since: float) -> list[dict[str, Any]]:
    path = RESULTS / f"{name}.json"
    if not path.exists() or path.stat().st_mtime < since:
        return []
    try:
        report = json.loads(path.read_text())
    except ValueError:
        return []
    return [{"bench": name, **r} for r in report.get("rows", [])]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help="bench modules (default: the whole suite)")
    parser.add_argument("--budget", type=float, default=None, help="seconds per module")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter measurements (LIANXIN_BENCH_QUICK=1 for the modules that read it)",
    )
    args = parser.parse_args(argv)
    names = args.names or suite()
    started_at = datetime.now(UTC)
    before = machine()
    runs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    status = 0
    for name in names:
        if not (HERE / f"{name}.py").exists():
            print(f"== bench.{name}: no such benchmark", flush=True)
            status |= 2
            continue
        limit = args.budget or budget(name)
        load = os.getloadavg()[0]
        print(f"== bench.{name} (budget {limit:.0f} s, load {load:.2f})", flush=True)
        since = time.time()
        code, seconds = run_one(name, limit, quick=args.quick)
        got = rows_of(name, since)
        status |= 1 if code else 0
        runs.append(
            {
                "bench": name,
                "exit": code,
                "seconds": round(seconds, 1),
                "load_avg_before": round(load, 2),
                "rows": len(got),
            }
        )
        if code:
            print(f"!! bench.{name} exited {code}", flush=True)
        rows.extend(got)

    print()
    print(f"Lianxin benchmarks, {started_at:%Y-%m-%d %H:%M} UTC, {before['cpus']} CPUs")
    print(table(rows))
    judged = [r for r in rows if r.get("passed") is not None]
    failed = [r for r in judged if not r["passed"]]
    print(f"\n{len(judged) - len(failed)}/{len(judged)} targets met")
    for run in runs:
        if not run["rows"]:
            print(f"(bench.{run['bench']}: no rows; see bench/results/{run['bench']}.json)")
    summary = {
        "at": started_at.isoformat(timespec="seconds"),
        "machine": before,
        "load_avg_after": machine()["load_avg"],
        "note": "load generator, apps and PostgreSQL share the machine; other work on it "
        "shows in the load averages",
        "runs": runs,
        "rows": rows,
        "targets_met": len(judged) - len(failed),
        "targets": len(judged),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "summary.json"
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / "summary.md").write_text(markdown(rows))  # README's table
    print(f"written: {out.relative_to(HERE.parent)} and summary.md")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
