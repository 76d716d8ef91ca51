"""What every benchmark hands to the suite (`python -m bench`): rows of one figure each, next
to the baseline measured in the same run, the ratio, and the target it must reach.

A module's JSON in `bench/results/<name>.json` carries its rows under `"rows"`; the suite
reads them back, prints one table and writes `bench/results/summary.json`.

A target is a string `"<ratio|value> <op> <limit>"`, e.g. `"ratio >= 0.75"` (higher is
better: throughput against its baseline) or `"value <= 12"` (a latency in the row's unit);
a row without one is reported, not judged."""

from __future__ import annotations

import json
import operator
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.scheduling import ProcessSettings

RESULTS = Path(__file__).resolve().parent / "results"

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


@dataclass
class Row:
    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    passed: bool | None = None
    note: str | None = None


def judge(target: str | None, value: float, ratio: float | None) -> bool | None:
    """`"ratio >= 0.75"` against the row: True/False, None when there is nothing to judge."""
    if not target:
        return None
    what, op, limit = target.split()
    subject = ratio if what == "ratio" else value
    if subject is None:
        return None
    return _OPS[op](subject, float(limit))


def row(
    name: str,
    value: float,
    unit: str,
    *,
    baseline_name: str | None = None,
    baseline_value: float | None = None,
    target: str | None = None,
    note: str | None = None,
    digits: int = 3,
) -> Row:
    ratio = None
    if baseline_value:
        ratio = round(value / baseline_value, 3)
    return Row(
        name=name,
        value=round(value, digits),
        unit=unit,
        baseline_name=baseline_name,
        baseline_value=None if baseline_value is None else round(baseline_value, digits),
        ratio=ratio,
        target=target,
        passed=judge(target, value, ratio),
        note=note,
    )


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        # The servers' CPU policy (common/scheduling.py); the load generators keep theirs.
        "servers_sched_batch": ProcessSettings().cpu_batch,
    }


def write(name: str, report: dict[str, Any], rows: list[Row], out: Path | None = None) -> Path:
    """The module's JSON, with its rows (what the suite reads)."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "bench": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **report,
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return path


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    """One line per figure: value, baseline, ratio, target, pass/fail."""
    head = (
        f"{'figure':<46}{'value':>11} {'unit':<8}{'baseline':<30}{'base':>10}"
        f"{'ratio':>8}  {'target':<15}{'':<5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        verdict = {True: "PASS", False: "FAIL", None: ""}[r.get("passed")]
        lines.append(
            f"{r['name'][:45]:<46}{_fmt(r['value']):>11} {r['unit'][:8]:<8}"
            f"{(r.get('baseline_name') or '')[:29]:<30}{_fmt(r.get('baseline_value')):>10}"
            f"{_fmt(r.get('ratio')):>8}  {(r.get('target') or ''):<15}{verdict:<5}"
        )
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as README shows it: figure, value with its unit, baseline, ratio, target,
    and the verdict (a failed one in bold)."""
    lines = [
        "| figure | value | baseline (same run) | ratio | target | |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = {True: "pass", False: "**fail**", None: ""}[r.get("passed")]
        base = "-"
        if r.get("baseline_value") is not None:
            base = f"{_fmt(r['baseline_value'])} ({r.get('baseline_name') or ''})"
        lines.append(
            f"| {r['name']} | {_fmt(r['value'])} {r['unit']} | {base} | "
            f"{_fmt(r.get('ratio'))} | {r.get('target') or ''} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
