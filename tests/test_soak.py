"""benchmarks.soak's memory summary (the soak itself runs for minutes: docs/RELIABILITY.md)."""
from __future__ import annotations

import pytest

from benchmarks.soak import main, rss_summary, run_clock


def _rows(segment: str, start_t: float, values: list[float]) -> list[dict]:
    return [{"t": start_t + i, "rss_mb": v, "segment": segment} for i, v in enumerate(values)]


def test_run_clock_removes_the_gaps_between_segments():
    rows = _rows("interrupted-0", 100.0, [1, 2, 3]) + _rows("interrupted-1", 500.0, [4, 5])
    assert run_clock(rows) == [100.0, 101.0, 102.0, 102.0, 103.0]


def test_trend_is_zero_for_flat_memory_after_warm_up():
    rows = _rows("baseline", 0.0, [100, 200, 300] + [800.0] * 40)
    summary = rss_summary(rows, "baseline")
    assert summary["peak_mb"] == 800.0
    assert summary["trend_mb_per_10min"] == pytest.approx(0.0, abs=1e-9)


def test_trend_measures_growth_in_mib_per_10_minutes():
    # 0.1 MiB a second = 60 MiB per 10 minutes, across two segments of the interrupted run
    values = [500 + 0.1 * i for i in range(60)]
    rows = _rows("interrupted-0", 0.0, values[:30]) + _rows("interrupted-1", 900.0, values[30:])
    summary = rss_summary(rows, "interrupted")
    assert summary["trend_mb_per_10min"] == pytest.approx(60.0, rel=0.05)
    assert rss_summary(rows, "baseline") == {}


def test_parallel_needs_the_interrupt_period(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path), "--parallel"]) == 2
    assert "--interrupt-every" in capsys.readouterr().err
