"""Network zoo through the real CLIs: train.py on every preset, deploy → demo/evaluate.

- ``train.py`` (a subprocess, as a user runs it) trains one batch of every preset and writes
  ``-0001.params`` and ``-symbol.json``; ``tiny`` is fast, the big presets are marked slow.
- A checkpoint of a few epochs of ``tiny`` on the synthetic dataset goes through ``deploy.py``;
  the deploy checkpoint gives exactly the detections of ``get_symbol`` bound with the training
  checkpoint's parameters (``evaluate/detector.py``, ``demo.py``), and ``evaluate.py --deploy``
  gives exactly the mAP of ``evaluate.py`` without it.

The full timing table of every preset and shape is ``python -m benchmarks.check_presets``.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

from config.mxnet_compat import mx
import numpy as np
import pytest

import demo
import deploy
from evaluate.detector import Detector, load_image, preprocess
from symbol.symbol_factory import get_symbol
from benchmarks.check_presets import TRAIN_PY, checkpoint_prefix, make_record, train_command

# Big presets: one batch of one image each, the smaller shape of every backbone plus
# vgg16_reduced 512 (the only preset whose 512 graph differs in structure: 7 maps, steps),
# about a minute here. benchmarks/check_presets.py runs every preset at every shape (table in
# docs/NETWORKS.md).
SLOW_CASES = [("vgg16_reduced", 300), ("vgg16_reduced", 512), ("resnet50", 300),
              ("resnet101", 300), ("inceptionv3", 299), ("mobilenet", 300)]

EVALUATE_PY = os.path.join(os.path.dirname(TRAIN_PY), "evaluate.py")
TINY_SIDE = 128
NMS_THRESH = 0.45            # evaluate.py's default, per class (no --force)
EPOCHS = 4


def run_train(argv: list[str]) -> subprocess.CompletedProcess:
    """Run train.py (argv[0] is the interpreter) with one OpenMP thread; fail with its stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"train.py exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """One-image records keyed by side, generated on first use."""
    root = tmp_path_factory.mktemp("preset_records")
    made: dict[int, str] = {}

    def get(side: int) -> str:
        if side not in made:
            made[side] = make_record(str(root / f"data_{side}"), side, num_images=1)
        return made[side]
    return get


def check_one_batch(network: str, side: int, rec_path: str, folder) -> None:
    prefix = str(folder / "ssd")
    proc = run_train(train_command(network, side, rec_path, prefix, batch_size=1))
    saved = checkpoint_prefix(prefix, network, side)
    assert os.path.isfile(f"{saved}-0001.params"), proc.stderr[-2000:]
    assert os.path.isfile(f"{saved}-symbol.json")
    assert not os.path.exists(f"{saved}-0002.params")        # --end-epoch 1: one epoch only
    sym, args, auxs = mx.model.load_checkpoint(saved, 1)
    assert "det_out" in " ".join(sym.list_outputs())            # the original's saved graph
    missing = set(sym.list_arguments()) - set(args) - {"data", "label"}
    assert not missing
    assert set(sym.list_auxiliary_states()) == set(auxs)
    assert all(np.isfinite(v.asnumpy()).all() for v in args.values())


def test_tiny_trains_one_batch(records, tmp_path):
    check_one_batch("tiny", TINY_SIDE, records(TINY_SIDE), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("network,side", SLOW_CASES, ids=[f"{n}-{s}" for n, s in SLOW_CASES])
def test_preset_trains_one_batch(network, side, records, tmp_path):
    check_one_batch(network, side, records(side), tmp_path)


# ----------------------------------------------------------------------------- deploy
@pytest.fixture(scope="module")
def trained(synth_data, tmp_path_factory):
    """tiny at 128 px trained EPOCHS epochs on synth_data, then deploy.py (NMS 0.45 per class)."""
    folder = tmp_path_factory.mktemp("trained_tiny")
    argv = [sys.executable, TRAIN_PY, "--network", "tiny", "--data-shape", str(TINY_SIDE),
            "--train-path", synth_data.train_rec, "--val-path", synth_data.val_rec,
            "--num-class", str(synth_data.num_classes),
            "--class-names", ",".join(synth_data.class_names), "--pretrained", "",
            "--freeze", "", "--batch-size", "8", "--lr", "0.01", "--warmup-epochs", "1",
            "--end-epoch", str(EPOCHS), "--seed", "1", "--gpus", "",
            "--nms", str(NMS_THRESH), "--prefix", str(folder / "ssd"), "--log", ""]
    proc = run_train(argv)
    status = deploy.main(["--network", "tiny", "--data-shape", str(TINY_SIDE),
                          "--num-class", str(synth_data.num_classes),
                          "--prefix", str(folder / "ssd_"), "--epoch", str(EPOCHS),
                          "--nms", str(NMS_THRESH), "--no-force"])
    assert status == 0
    return folder, proc.stderr + proc.stdout


@pytest.fixture(scope="module")
def val_images(synth_data):
    paths = sorted(glob.glob(os.path.join(synth_data.devkit, "VOC2007", "JPEGImages", "*.jpg")))
    return paths[-4:]


def test_deploy_checkpoint_gives_training_detections(synth_data, trained, val_images):
    folder, _ = trained
    train_prefix = str(folder / f"ssd_tiny_{TINY_SIDE}")
    # reference: the inference graph of the preset bound with the training checkpoint's params
    _, args, auxs = mx.model.load_checkpoint(train_prefix, EPOCHS)
    net = get_symbol("tiny", TINY_SIDE, synth_data.num_classes, nms_thresh=NMS_THRESH,
                     force_suppress=False)
    images = [load_image(p) for p in val_images]
    data = np.stack([preprocess(im, (TINY_SIDE, TINY_SIDE), (123, 117, 104)) for im in images])
    needed = set(net.list_arguments())
    exe = net.bind(mx.cpu(), args={**{k: v for k, v in args.items() if k in needed},
                                   "data": mx.nd.array(data)}, aux_states=auxs)
    reference = exe.forward(is_train=False)[0].asnumpy()       # (B, N, 6)

    detector = Detector(None, str(folder / f"deploy_ssd_tiny_{TINY_SIDE}"), EPOCHS, TINY_SIDE,
                        batch_size=len(images))
    deployed = detector.detect_arrays(images)
    for i, dets in enumerate(deployed):
        kept = reference[i][reference[i, :, 0] >= 0]
        kept = kept[np.argsort(-kept[:, 1], kind="stable")]
        assert len(dets) > 0
        np.testing.assert_array_equal(dets, kept)
    scores = np.concatenate([d[:, 1] for d in deployed])
    assert scores.max() > 0.3 and scores.std() > 0.01       # a trained model, not constant output


def _demo_lines(argv: list[str], capsys) -> list[str]:
    assert demo.main(argv) == 0
    # detection lines: "path: name score [x1 y1 x2 y2]"
    return [line for line in capsys.readouterr().out.splitlines() if "[" in line]


def test_demo_deploy_equals_rebuilt_graph(synth_data, trained, val_images, tmp_path, capsys):
    folder, _ = trained
    common = ["--network", "tiny", "--data-shape", str(TINY_SIDE), "--epoch", str(EPOCHS),
              "--cpu", "--class-names", ",".join(synth_data.class_names), "--no-timer",
              "--images", ",".join(val_images), "--batch-size", "2", "--thresh", "0.2",
              "--nms", str(NMS_THRESH), "--no-force"]
    rebuilt = _demo_lines(common + ["--prefix", str(folder / "ssd_"),
                                    "--output-dir", str(tmp_path / "a")], capsys)
    deployed = _demo_lines(common + ["--prefix", str(folder / "deploy_ssd_"), "--deploy",
                                     "--output-dir", str(tmp_path / "b")], capsys)
    assert rebuilt and rebuilt == deployed
    assert len(os.listdir(tmp_path / "b")) == len(val_images)


def _evaluate_map(argv: list[str], out_dir) -> dict:
    # a subprocess: ``import evaluate`` is the evaluate/ package, which shadows evaluate.py
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, EVALUATE_PY, *argv, "--output-dir", str(out_dir)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out_dir, "results.json"), encoding="utf-8") as f:
        return json.load(f)


def test_evaluate_deploy_equals_training_graph(synth_data, trained, tmp_path):
    folder, train_log = trained
    common = ["--rec-path", synth_data.val_rec, "--network", "tiny",
              "--data-shape", str(TINY_SIDE), "--num-class", str(synth_data.num_classes),
              "--class-names", ",".join(synth_data.class_names), "--epoch", str(EPOCHS),
              "--cpu", "--batch-size", "8", "--nms", str(NMS_THRESH)]
    plain = _evaluate_map(common + ["--prefix", str(folder / "ssd_")], tmp_path / "plain")
    deployed = _evaluate_map(common + ["--prefix", str(folder / "deploy_ssd_"), "--deploy"],
                             tmp_path / "deploy")
    assert plain["mAP"] == deployed["mAP"]
    assert plain["class_ap"] == deployed["class_ap"]
    assert plain["mAP"] > 0
    # and the validation of the last training epoch logged the same number
    logged = [line for line in train_log.splitlines() if f"Epoch[{EPOCHS - 1}] Validation-mAP="
              in line]
    assert logged, train_log[-2000:]
    assert float(logged[-1].rsplit("=", 1)[1]) == pytest.approx(plain["mAP"], abs=1e-6)
