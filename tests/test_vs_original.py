"""benchmarks/vs_original.py: rates from batch-end stamps, alternating legs, the skip message.

The original's code is not part of the project: a stand-in ``train.py`` that calls MXNet's
Speedometer at a known pace plays the original's leg.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.vs_original import batch_end_rate, first_records, parse_speeds, steady_rate
from dataset.recordio_utils import read_idx

REPO = Path(__file__).resolve().parent.parent

STAND_IN = """import argparse, time
import mxnet as mx   # as the original does: the launcher has made it importable
p = argparse.ArgumentParser()
p.add_argument("--batch-size", type=int)
p.add_argument("--frequent", type=int)
args, _ = p.parse_known_args()
speedometer = mx.callback.Speedometer(args.batch_size, args.frequent)
for n in range(6):
    time.sleep(0.1)
    speedometer(mx.model.BatchEndParam(epoch=0, nbatch=n, eval_metric=None, locals=None))
"""


def test_batch_end_rate_leaves_out_warmup():
    log = "\n".join(f"VS_ORIGINAL_BATCH_END {n} {t} {t / 2}" for n, t in
                    [(0, 10.0), (1, 30.0), (2, 31.0), (3, 32.0), (4, 34.0)])
    # warm-up 1: batches 2..4 over 34 - 30 s, 8 images each
    assert batch_end_rate(log, 8, 1) == pytest.approx(3 * 8 / 4.0)
    assert batch_end_rate(log, 8, 0) == pytest.approx(4 * 8 / 24.0)
    assert batch_end_rate(log, 8, 4) is None
    # CPU clock: half the wall time here, so twice the rate
    assert batch_end_rate(log, 8, 1, "cpu") == pytest.approx(2 * 3 * 8 / 4.0)


def test_speedometer_lines_parsed_and_weighted_by_time():
    log = ("INFO:root:Epoch[0] Batch [0-1]\tSpeed: 0.50 samples/sec\tCrossEntropy=1\n"
           "2026 Epoch[0] Batch [1-2]\tSpeed: 2.00 samples/sec\n"
           "Epoch[0] Batch [2-3]\tSpeed: 4.00 samples/sec\n")
    speeds = parse_speeds(log)
    assert speeds == [(0, 1, 0.5), (1, 2, 2.0), (2, 3, 4.0)]
    # batches 2 and 3: 16 images in 4 + 2 s
    assert steady_rate(speeds, 8, 1) == pytest.approx(16 / 6.0)


def _run(tmp_path, original, *extra, rounds="2"):
    out = tmp_path / "vs.json"
    proc = subprocess.run([sys.executable, "benchmarks/vs_original.py", "--original", original,
                           "--network", "tiny", "--data-shape", "64", "--batch-size", "2",
                           "--warmup", "1", "--batches", "2", "--rounds", rounds, "--threads",
                           "1", "--json", str(out), *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_legs_alternate_and_ratio_is_reported(tmp_path):
    fake = tmp_path / "original"
    fake.mkdir()
    (fake / "train.py").write_text(STAND_IN)
    text, result = _run(tmp_path, str(fake))
    first, second = result["rounds"]
    assert list(first)[:2] == ["project", "original"]
    assert list(second)[:2] == ["original", "project"]          # order alternates
    for row in result["rounds"]:
        # the stand-in ends a batch of 2 every 0.1 s
        assert 12 < row["original"]["images_per_s"] < 21
        assert row["project"]["images_per_s"] > 0
        assert row["original"]["images_per_cpu_s"] > row["original"]["images_per_s"]  # sleeps
        assert row["ratio"] == pytest.approx(row["project"]["images_per_s"] /
                                             row["original"]["images_per_s"])
    assert result["median_ratio"] is not None
    assert "median of per-round ratios (project / original)" in text
    assert "per CPU-second" in text
    assert "load" in text and "CPU" in text


@pytest.mark.slow
def test_missing_original_skips_its_leg_with_a_message(tmp_path):
    text, result = _run(tmp_path, str(tmp_path / "nowhere"))
    assert "no train.py there; the original's leg is skipped" in text
    assert all(list(row) == ["project"] for row in result["rounds"])
    assert result["median_ratio"] is None


def test_first_records_copies_the_head_of_a_record(synth_data, tmp_path):
    dst = first_records(synth_data.train_rec, str(tmp_path / "head.rec"), 5)
    assert [key for key, _ in read_idx(str(tmp_path / "head.idx"))] == [0, 1, 2, 3, 4]
    from config.mxnet_compat import mx
    src = mx.recordio.MXIndexedRecordIO(synth_data.train_idx, synth_data.train_rec, "r")
    head = mx.recordio.MXIndexedRecordIO(str(tmp_path / "head.idx"), dst, "r")
    first_key = read_idx(synth_data.train_idx)[0][0]
    assert head.read_idx(0) == src.read_idx(first_key)
    with pytest.raises(SystemExit, match=r"48 images, but .* need 50"):
        first_records(synth_data.train_rec, str(tmp_path / "all.rec"), 50)


@pytest.mark.slow
def test_a_large_rec_stops_each_leg_after_the_benchmarked_batches(synth_data, tmp_path):
    """--rec of 48 images, batch 2, 1 warm-up + 2 timed: 4 batches, not the 24 of an epoch."""
    _, result = _run(tmp_path, str(tmp_path / "nowhere"), "--rec", synth_data.train_rec,
                     rounds="1")
    assert result["rounds"][0]["project"]["batches"] == 4
