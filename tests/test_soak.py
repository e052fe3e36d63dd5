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


# ---- the memory soak (--straight) ------------------------------------------------------------
def test_parse_leg():
    from benchmarks.soak import parse_leg
    assert parse_leg("arena:MALLOC_ARENA_MAX=2,MALLOC_TRIM_THRESHOLD_=131072") == (
        "arena", {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "131072"})
    for bad in ("arena", "baseline:A=1", "a b:A=1", "arena:A", "arena:1A=2", "arena:"):
        with pytest.raises(ValueError, match="--leg"):
            parse_leg(bad)


@pytest.mark.parametrize("argv, message", [
    (["--leg", "x:A=1"], "--leg needs --straight"),
    (["--straight", "0"], "--straight 0: minutes must be > 0"),
    (["--straight", "1", "--leg", "x:A=1", "--leg", "x:B=2"], "--leg names must differ"),
    (["--straight", "1", "--leg", "x"], "--leg 'x'"),
])
def test_straight_bad_flags(tmp_path, capsys, argv, message):
    assert main(["--workdir", str(tmp_path)] + argv) == 2
    assert message in capsys.readouterr().err


def test_epoch_end_times_reads_the_time_cost_lines(tmp_path):
    import time
    from benchmarks.soak import epoch_end_times
    log = tmp_path / "x.log"
    log.write_text("2026-12-01 02:48:30,500 Node[0] Epoch[0] Batch [0-20]\tSpeed: 1\n"
                   "2026-12-01 02:48:31,250 Node[0] Epoch[0] Time cost=8.732\n"
                   "2026-12-01 02:48:31,300 Node[0] Epoch[0] Validation-mAP=0.1\n"
                   "2026-12-01 02:48:41,000 Node[0] Epoch[1] Time cost=9.7\n")
    clock0 = time.mktime(time.strptime("2026-12-01 02:48:30", "%Y-%m-%d %H:%M:%S"))
    assert epoch_end_times(str(log), clock0) == pytest.approx([1.25, 11.0])
    assert epoch_end_times(str(tmp_path / "missing.log"), clock0) == []


def test_quarter_slopes_against_time_and_epochs():
    from benchmarks.soak import quarter_slopes
    # 40 minutes, one sample a minute; +2 MiB a minute in the first half, flat after;
    # one epoch every 4 minutes
    rows = [{"t": 60.0 * i, "rss_mb": 500.0 + 2.0 * min(i, 20)} for i in range(41)]
    ends = [240.0 * (k + 1) for k in range(10)]
    memory = quarter_slopes(rows, ends)
    assert memory["epochs"] == 10 and memory["minutes"] == 40.0
    slopes = [q["mb_per_10min"] for q in memory["quarters"]]
    assert slopes[0] == pytest.approx(20.0) and slopes[3] == pytest.approx(0.0, abs=1e-9)
    assert memory["quarters"][0]["mb_per_100_epochs"] == pytest.approx(800.0)
    assert memory["quarters"][3]["epochs"][1] == pytest.approx(10.0)
    assert len(memory["tenths_mb"]) == 10
    assert quarter_slopes(rows[:5], ends) == {}


@pytest.mark.slow
def test_straight_soak_runs_two_legs(tmp_path):
    """A 20-second memory soak of two legs: both stopped by SIGINT, summary and picture."""
    import json
    status = main(["--workdir", str(tmp_path), "--num-train", "16", "--num-val", "8",
                   "--data-shape", "64", "--epochs", "500", "--straight", "0.33",
                   "--sample-s", "0.5", "--leg", "arena:MALLOC_ARENA_MAX=2"])
    summary = json.loads((tmp_path / "soak.json").read_text())
    assert status == 0, {n: r["stderr_tail"] for n, r in summary["runs"].items()}
    assert set(summary["memory"]) == {"baseline", "arena"}
    for name in ("baseline", "arena"):
        assert summary["runs"][name]["returncode"] == 130    # stopped by the SIGINT
        assert summary["memory"][name]["epochs"] >= 1
        assert len(summary["memory"][name]["quarters"]) == 4
    assert (tmp_path / "soak_rss.png").stat().st_size > 0
