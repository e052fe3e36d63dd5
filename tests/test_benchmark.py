"""benchmarks/benchmark.py runs end to end on tiny input and reports every field (no timing asserts)."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks import benchmark, workers

TINY_ARGS = ["--network", "tiny", "--data-shape", "64", "--batch-size", "4",
             "--compute-batches", "2", "--train-batches", "3", "--io-images", "32",
             "--io-threads", "1,2", "--baseline", "--baseline-batches", "2", "--repeat", "2"]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    code = benchmark.main(TINY_ARGS + ["--json", str(out)])
    assert code == 0
    with open(out) as f:
        return json.load(f)


def test_json_has_every_measurement(tiny_run):
    for key in ("settings", "threads", "compute", "train", "io", "baseline", "summary",
                "load_average_start", "load_average_end", "command"):
        assert key in tiny_run, key
    settings = tiny_run["settings"]
    assert settings["synthetic"] is True
    assert settings["network"] == "tiny" and settings["data_shape"] == 64
    # warm-up + max(train, baseline) batches of 4 images were generated
    assert settings["num_images"] == (1 + 3) * 4
    assert tiny_run["threads"]["cores"] >= 1


def test_rates_and_ratios_positive(tiny_run):
    summary = tiny_run["summary"]
    for key in ("compute_images_per_s", "train_images_per_s", "train_vs_compute",
                "io_best_images_per_s", "io_vs_train", "baseline_images_per_s",
                "speedup_vs_baseline", "peak_rss_mb"):
        assert _positive(summary[key]), (key, summary[key])
    assert 0.0 <= summary["data_wait_share"] < 1.0
    assert set(tiny_run["io"]["images_per_s_by_threads"]) == {"1", "2"}
    assert all(_positive(v) for v in tiny_run["io"]["images_per_s_by_threads"].values())


def test_train_loop_bounded_and_timed(tiny_run):
    train = tiny_run["train"]
    assert train["batches"] == 1 + 3 and train["warmup"] == 1
    assert len(train["s_per_batch"]) == train["batches"]
    assert all(_positive(v) for v in train["s_per_batch"])
    # one RSS sample per request to the iterator (the last one ends the loop)
    assert len(train["rss_mb"]) == train["batches"] + 1
    assert all(_positive(v) for v in train["rss_mb"])
    assert train["with_det"] is False and train["label_width"] == -1
    assert len(tiny_run["compute"]["s_per_batch"]) == 1 + 2


def test_baseline_switches_optimisations_off(tiny_run):
    base = tiny_run["baseline"]
    assert base["with_det"] is True
    assert base["label_width"] == benchmark.BASELINE_LABEL_WIDTH
    assert base["threads"]["OMP_NUM_THREADS"] is None      # MXNet picks its own default
    assert tiny_run["train"]["threads"]["OMP_NUM_THREADS"] is not None
    assert base["batches"] == 1 + 2


def test_console_table(tiny_run, capsys):
    text = benchmark.format_table(tiny_run)
    for label in ("compute-only", "train loop", "train / compute", "waited for data",
                  "memory", "iterator alone", "baseline loop", "speedup vs baseline",
                  "load average"):
        assert label in text


def test_bad_network_exits_2(capsys):
    assert benchmark.main(["--network", "nonet", "--skip", "compute,train,io"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nonet" in err and "tiny" in err


def test_missing_rec_exits_2(tmp_path, capsys):
    missing = tmp_path / "none.rec"
    assert benchmark.main(["--network", "tiny", "--data-shape", "64", "--rec",
                           str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_linear_slope():
    assert workers.linear_slope([1.0, 3.0, 5.0, 7.0]) == pytest.approx(2.0)
    assert workers.linear_slope([4.0, 4.0, 4.0]) == pytest.approx(0.0)
    assert workers.linear_slope([2.0]) == 0.0


def test_repeat_keeps_best_round(tiny_run):
    for name in ("compute", "train", "io", "baseline"):
        rounds = tiny_run[name]["rounds"]
        assert len(rounds) == 2 and all(_positive(r) for r in rounds)
    assert tiny_run["train"]["images_per_s"] == max(tiny_run["train"]["rounds"])
    assert tiny_run["summary"]["train_images_per_s"] == max(tiny_run["train"]["rounds"])


def test_cpu_utilisation_reported(tiny_run):
    for name in ("compute", "train", "baseline"):
        assert _positive(tiny_run[name]["cpu_util"]), name
