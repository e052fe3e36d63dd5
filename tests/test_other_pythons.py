"""A checkpoint trained here scores the same mAP under the other supported Pythons.

The other Pythons' environments are the ones ``.ci/other_pythons`` makes (one venv per Python,
cached by the hash of requirements.txt); CI runs that script before ``make test``, so this test
runs there. Where no such venv exists the test skips and says where it looked.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_train_kwargs

REPO = Path(__file__).resolve().parent.parent
SHAPE = 128
EPOCHS = 30


def other_python_venvs() -> tuple[list[Path], Path]:
    """Interpreters of the cached venvs made for this requirements.txt, and the cache folder."""
    cache = Path(os.environ.get("SSD_CI_CACHE", Path.home() / ".cache" / "mxnet-ssd-ci"))
    digest = hashlib.sha256((REPO / "requirements.txt").read_bytes()).hexdigest()[:12]
    found = sorted(cache.glob(f"py3.*-{digest}/.complete"))
    own = f"py{sys.version_info[0]}.{sys.version_info[1]}-"
    return [p.parent / "bin" / "python" for p in found if not p.parent.name.startswith(own)], cache


def evaluate_with(python: str | Path, synth, prefix: str, out_dir: Path) -> dict:
    """Run evaluate.py under ``python`` and return its results.json."""
    # the training record: the small model finds more there, so more rows are compared
    cmd = [str(python), "evaluate.py", "--rec-path", synth.train_rec, "--network", "tiny",
           "--data-shape", str(SHAPE), "--num-class", str(synth.num_classes),
           "--class-names", ",".join(synth.class_names), "--prefix", prefix, "--epoch", str(EPOCHS),
           "--cpu", "--batch-size", "8", "--output-dir", str(out_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out_dir / "results.json").read_text())


@pytest.mark.slow
def test_checkpoint_trained_here_scores_the_same_on_other_pythons(synth_data, tmp_path):
    pythons, cache = other_python_venvs()
    if not pythons:
        pytest.skip(f"no venv of another Python in {cache} (made by .ci/other_pythons)")
    from train_net import train_net
    prefix = str(tmp_path / "ssd")
    train_net(**tiny_train_kwargs(synth_data, prefix, data_shape=SHAPE, end_epoch=EPOCHS,
                                  learning_rate=0.1, lr_refactor_step="20,26"))
    prefix += f"_tiny_{SHAPE}"                  # train_net appends <network>_<data_shape>
    here = evaluate_with(sys.executable, synth_data, prefix, tmp_path / "here")
    assert here["mAP"] > 0.05, "the small model must detect something for the check to mean much"
    for python in pythons:
        there = evaluate_with(python, synth_data, prefix, tmp_path / python.parent.parent.name)
        assert there["num_images"] == here["num_images"]
        assert there["class_ap"] == pytest.approx(here["class_ap"], abs=1e-6), python
        assert there["mAP"] == pytest.approx(here["mAP"], abs=1e-6), python
        print(f"mAP {here['mAP']:.6f} here (Python {sys.version.split()[0]}), "
              f"{there['mAP']:.6f} with {python}")
