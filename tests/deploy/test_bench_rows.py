"""The benchmark suite's rows: targets judged on the ratio or the value, and the Markdown
table README carries."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from bench import _rows


def test_a_target_is_judged_on_the_ratio_or_the_value() -> None:
    fast = _rows.row(
        "read", 800, "req/s", baseline_name="bare", baseline_value=1000, target="ratio >= 0.75"
    )
    slow = _rows.row(
        "read", 700, "req/s", baseline_name="bare", baseline_value=1000, target="ratio >= 0.75"
    )
    latency = _rows.row("p99", 12.5, "ms", target="value <= 12")
    untargeted = _rows.row("p50", 3.0, "ms")
    assert (fast.ratio, fast.passed) == (0.8, True)
    assert (slow.ratio, slow.passed) == (0.7, False)
    assert latency.passed is False and latency.ratio is None
    assert untargeted.passed is None


def test_the_markdown_table_shows_every_row_and_bolds_failures() -> None:
    rows = [
        asdict(
            _rows.row(
                "sync",
                12_770,
                "rows/s",
                baseline_name="raw COPY",
                baseline_value=898_613,
                target="value >= 10000",
            )
        ),
        asdict(
            _rows.row(
                "via gateway",
                3_481,
                "req/s",
                baseline_name="direct",
                baseline_value=4_903,
                target="ratio >= 0.75",
            )
        ),
        asdict(_rows.row("p50", 1.85, "ms")),
    ]
    lines = _rows.markdown(rows).splitlines()
    assert lines[0].startswith("| figure | value |") and len(lines) == 2 + len(rows)
    assert lines[2] == (
        "| sync | 12,770 rows/s | 898,613 (raw COPY) | 0.014 | value >= 10000 | pass |"
    )
    assert lines[3] == (
        "| via gateway | 3,481 req/s | 4,903 (direct) | 0.71 | ratio >= 0.75 | **fail** |"
    )
    assert lines[4] == "| p50 | 1.85 ms | - | - |  |  |"


def test_the_results_say_which_cpu_policy_the_servers_ran_under(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LIANXIN_CPU_BATCH", raising=False)
    assert _rows.machine()["servers_sched_batch"] is True
    monkeypatch.setenv("LIANXIN_CPU_BATCH", "false")
    assert _rows.machine()["servers_sched_batch"] is False
