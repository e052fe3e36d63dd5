"""Resume: exact continuation, missing epochs, Ctrl-C checkpoints (tiny preset, 64 px)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from config.mxnet_compat import mx
import numpy as np
import pytest

from conftest import tiny_train_kwargs
from train_net import train_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kwargs(synth, prefix, **overrides):
    defaults = dict(end_epoch=2, lr_refactor_step="1", lr_refactor_ratio=0.5, seed=11)
    return tiny_train_kwargs(synth, prefix, **{**defaults, **overrides})


def _read(path):
    with open(path) as f:
        return f.read()


def _params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(path).items()}


def test_resume_equals_uninterrupted_training(synth_data, tmp_path):
    """2 epochs == 1 epoch + --resume 1 + 1 epoch: weights, momentum and the LR decay at
    epoch 1 all continue (shuffle and augmentation on: the iterator of epoch e is seeded
    with seed + e, so the resumed epoch sees the same data)."""
    full = str(tmp_path / "full")
    train_net(**_kwargs(synth_data, full, end_epoch=2))
    split = str(tmp_path / "split")
    train_net(**_kwargs(synth_data, split, end_epoch=1))
    module = train_net(**_kwargs(synth_data, split, end_epoch=2, resume=1))
    assert module._optimizer.learning_rate == pytest.approx(0.01)   # pre-decayed on resume
    a = _params(full + "_tiny_64-0002.params")
    b = _params(split + "_tiny_64-0002.params")
    assert a.keys() == b.keys()
    moved = max(np.abs(a[k] - _params(full + "_tiny_64-0001.params")[k]).max() for k in a)
    assert moved > 1e-3        # the second epoch really changed the weights
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_resume_missing_epoch_lists_existing(synth_data, tmp_path):
    prefix = str(tmp_path / "m")
    train_net(**_kwargs(synth_data, prefix, end_epoch=1))
    with pytest.raises(FileNotFoundError, match=r"epochs saved under .*: 1$"):
        train_net(**_kwargs(synth_data, prefix, end_epoch=3, resume=5))


def test_resume_other_class_count_is_refused(synth_data, tmp_path):
    prefix = str(tmp_path / "c")
    train_net(**_kwargs(synth_data, prefix, end_epoch=1))
    with pytest.raises(ValueError, match="not saved by this network"):
        train_net(**_kwargs(synth_data, prefix, end_epoch=2, resume=1, num_classes=6,
                            class_names=None))


@pytest.mark.slow
def test_sigint_saves_checkpoint_and_resume_continues(synth_data, tmp_path):
    prefix = str(tmp_path / "sig")
    log = str(tmp_path / "sig.log")
    base = [sys.executable, "train.py", "--train-path", synth_data.train_rec, "--val-path", "",
            "--network", "tiny", "--data-shape", "64", "--num-class", str(synth_data.num_classes),
            "--class-names", ",".join(synth_data.class_names), "--pretrained", "",
            "--batch-size", "8", "--prefix", prefix, "--log", log, "--frequent", "1",
            "--lr", "0.01", "--seed", "5"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.Popen(base + ["--end-epoch", "1000"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:       # wait until batches are running
            if os.path.exists(log) and "Epoch[0] Batch" in _read(log):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "--resume interrupted" in err
    assert "Traceback" not in err
    interrupted = prefix + "_tiny_64-interrupted"
    for ext in ("params", "states", "json"):
        assert os.path.isfile(f"{interrupted}.{ext}")
    card = json.loads(_read(interrupted + ".json"))
    completed = card["epoch"]
    # the printed command resumes; run it with a small --end-epoch
    out = subprocess.run(base + ["--end-epoch", str(completed + 1), "--resume", "interrupted"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert os.path.isfile(f"{prefix}_tiny_64-{completed + 1:04d}.params")
    assert "Resume from" in _read(log)
