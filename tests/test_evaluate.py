"""evaluate_net / evaluate.py end to end on the synthetic records, COCO metric, scoring loop."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil

from config.mxnet_compat import mx
import numpy as np
import pytest

from evaluate.coco_metric import CocoMetric
from evaluate.eval_metric import MApMetric, VOC07MApMetric
from evaluate.evaluate_net import (evaluate_net, parse_data_shape, resolve_prefix,
                                   score_detections)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = 128


def load_cli(name: str):
    """Import a top-level CLI script (``evaluate.py`` is shadowed by the ``evaluate`` package)."""
    spec = importlib.util.spec_from_file_location(f"cli_{name}", os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_random_checkpoint(prefix: str, num_classes: int, epoch: int = 1) -> None:
    """Randomly initialised ``tiny`` training checkpoint (symbol with det_out + params)."""
    from symbol.symbol_factory import get_symbol_train
    symbol = get_symbol_train("tiny", SHAPE, num_classes)
    module = mx.mod.Module(symbol, label_names=("label",), context=mx.cpu())
    module.bind([("data", (1, 3, SHAPE, SHAPE))], [("label", (1, 5, 6))], for_training=False)
    mx.random.seed(3)
    module.init_params(mx.init.Xavier())
    module.save_checkpoint(prefix, epoch)


@pytest.fixture(scope="module")
def checkpoint(synth_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    save_random_checkpoint(str(folder / f"ssd_tiny_{SHAPE}"), synth_data.num_classes)
    return folder


def cli_args(synth_data, checkpoint, *extra):
    return ["--rec-path", synth_data.val_rec, "--network", "tiny", "--data-shape", str(SHAPE),
            "--num-class", str(synth_data.num_classes),
            "--class-names", ",".join(synth_data.class_names),
            "--prefix", str(checkpoint / "ssd_"), "--epoch", "1", "--cpu", *extra]


# ---------------------------------------------------------------------------- helpers
def test_prefix_resolution(tmp_path):
    assert resolve_prefix("model/ssd_", "vgg16_reduced", 300, 0) == "model/ssd_vgg16_reduced_300"
    # the original appended '_<shape>' to any other prefix: kept when that file exists
    (tmp_path / "ssd_300-0002.params").write_bytes(b"")
    assert resolve_prefix(str(tmp_path / "ssd"), "x", 300, 2) == str(tmp_path / "ssd_300")
    (tmp_path / "full-0002.params").write_bytes(b"")
    assert resolve_prefix(str(tmp_path / "full"), "x", 300, 2) == str(tmp_path / "full")


@pytest.mark.parametrize("value, expected", [(300, (300, 300)), ("512", (512, 512)),
                                             ("300,400", (300, 400)), ((3, 64, 96), (64, 96))])
def test_parse_data_shape(value, expected):
    assert parse_data_shape(value) == expected


@pytest.mark.parametrize("value", ["", "a", "0", "1,2,3", -5])
def test_parse_data_shape_rejects(value):
    with pytest.raises(ValueError, match="--data-shape"):
        parse_data_shape(value)


# ---------------------------------------------------------------------------- scoring loop
class GroundTruthModule:
    """Stand-in for a bound module: "detects" exactly the ground truth of each batch."""

    def __init__(self, drop_last_object: bool = False):
        self.drop_last_object = drop_last_object
        self._outputs = None

    def forward(self, batch, is_train=False):
        label = batch.label[0].asnumpy()                         # (B, M, 6)
        dets = np.full(label.shape[:2] + (6,), -1.0, dtype=np.float32)
        valid = label[:, :, 0] >= 0
        dets[:, :, 0] = np.where(valid, label[:, :, 0], -1)
        dets[:, :, 1] = np.where(valid, 0.9, 0)
        dets[:, :, 2:] = label[:, :, 1:5]
        if self.drop_last_object:                                # miss one object per image
            last = valid.sum(axis=1) - 1
            dets[np.arange(len(last)), np.maximum(last, 0), 0] = -1
        self._outputs = [mx.nd.array(dets)]

    def get_outputs(self):
        return self._outputs


def make_val_iter(synth_data, batch_size):
    from config.config import cfg
    from dataset.iterator import DetRecordIter
    return DetRecordIter(synth_data.val_rec, batch_size, (3, SHAPE, SHAPE), **cfg.valid)


@pytest.mark.parametrize("batch_size", [5, 16])
def test_score_detections_perfect_detector_gives_map_one(synth_data, batch_size):
    metric = VOC07MApMetric(class_names=synth_data.class_names)
    num = score_detections(GroundTruthModule(), make_val_iter(synth_data, batch_size), metric)
    assert num == synth_data.num_val                             # wrapped images not scored
    assert metric.num_images == synth_data.num_val
    names, values = metric.get()
    assert names[-1] == "mAP"
    np.testing.assert_allclose(values, 1.0)


def test_score_detections_padding_and_num_batch(synth_data):
    # one object missed per image: recall < 1, and the value must not depend on the batching
    results = []
    for batch_size in (5, 16, 3):
        metric = MApMetric(class_names=synth_data.class_names)
        num = score_detections(GroundTruthModule(True), make_val_iter(synth_data, batch_size), metric)
        assert num == synth_data.num_val
        results.append(metric.get()[1])
    assert results[0][-1] < 1.0
    np.testing.assert_allclose(results[0], results[1])
    np.testing.assert_allclose(results[0], results[2])
    metric = MApMetric()
    assert score_detections(GroundTruthModule(), make_val_iter(synth_data, 5), metric,
                            num_batch=2) == 10


# ---------------------------------------------------------------------------- COCO metric
def test_coco_metric_known_answers():
    label = np.array([[[0, 0.1, 0.1, 0.5, 0.5, 0], [-1] * 6]])
    exact = np.array([[[0, 0.9, 0.1, 0.1, 0.5, 0.5]]])
    metric = CocoMetric(num_classes=2)
    metric.update([label], [exact])
    np.testing.assert_allclose(metric.get()[1], [1.0, 1.0, 1.0])
    # IoU 0.62: a match at thresholds .50, .55, .60 only -> AP 3/10, AP50 1, AP75 0
    shifted = np.array([[[0, 0.9, 0.1, 0.1, 0.5, 0.5 - 0.152]]])
    metric = CocoMetric(num_classes=2)
    metric.update([label], [shifted])
    np.testing.assert_allclose(metric.get()[1], [0.3, 1.0, 0.0], atol=1e-9)


def test_coco_metric_difficult_and_padding():
    label = np.array([[[0, 0.1, 0.1, 0.5, 0.5, 0], [0, 0.6, 0.6, 0.9, 0.9, 1]],
                      [[0, 0.1, 0.1, 0.5, 0.5, 0], [-1] * 6]])
    dets = np.array([[[0, 0.9, 0.1, 0.1, 0.5, 0.5], [0, 0.8, 0.6, 0.6, 0.9, 0.9]],
                     [[0, 0.9, 0.6, 0.6, 0.9, 0.9], [-1, 0, 0, 0, 0, 0]]])
    ignored = CocoMetric(num_classes=1)
    ignored.update([label], [dets], num_valid=1)                 # second image is padding
    assert ignored.num_images == 1
    np.testing.assert_allclose(ignored.get()[1], [1.0, 1.0, 1.0])   # det on difficult ignored
    counted = CocoMetric(num_classes=1, use_difficult=True)
    counted.update([label], [dets], num_valid=1)
    np.testing.assert_allclose(counted.get()[1], [1.0, 1.0, 1.0])   # both objects found
    both = CocoMetric(num_classes=1)
    both.update([label], [dets])                                 # now a FP ranks first
    assert both.get()[1][1] < 1.0


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_evaluate_cli_end_to_end(synth_data, checkpoint, tmp_path, capsys):
    cli = load_cli("evaluate")
    out_dir = tmp_path / "eval"
    status = cli.main(cli_args(synth_data, checkpoint, "--batch-size", "5", "--metric", "coco",
                               "--output-dir", str(out_dir), "--no-voc07"))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    for name in synth_data.class_names:
        assert any(line.startswith(name) for line in captured.out.splitlines())
    assert f"VOC area AP @ IoU>0.5, difficult ignored, NMS 0.45 (top-k 400, per class), " \
           f"input {SHAPE}x{SHAPE}, {synth_data.num_val} images" in captured.out
    assert "AP@[.50:.95]" in captured.out
    results = json.loads((out_dir / "results.json").read_text())
    assert results["num_images"] == synth_data.num_val
    assert set(results["class_ap"]) == set(synth_data.class_names)
    assert 0.0 <= results["mAP"] <= 1.0
    assert set(results["coco"]) == {"AP@[.50:.95]", "AP50", "AP75"}
    assert (out_dir / "pr_curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_evaluate_net_same_result_for_any_batch_size(synth_data, checkpoint):
    results = [evaluate_net("tiny", synth_data.val_rec, synth_data.num_classes, -1,
                            (123, 117, 104), SHAPE, str(checkpoint / f"ssd_tiny_{SHAPE}"), 1,
                            mx.cpu(), batch_size=batch_size, class_names=synth_data.class_names,
                            progress=False)
               for batch_size in (5, 16, 128)]   # 128 > the 16 images: lowered to 16
    assert [r["num_images"] for r in results] == [synth_data.num_val] * 3
    for other in results[1:]:
        for name in synth_data.class_names:
            assert results[0]["class_ap"][name] == pytest.approx(other["class_ap"][name])
        assert results[0]["mAP"] == pytest.approx(other["mAP"])


def test_evaluate_cli_wrong_num_class_is_clear(synth_data, checkpoint, capsys):
    cli = load_cli("evaluate")
    args = cli_args(synth_data, checkpoint)
    args[args.index("--num-class") + 1] = "3"
    args[args.index("--class-names") + 1] = "a,b,c"
    status = cli.main(args)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: parameter ") and "cls_pred" in err
    assert "in the checkpoint" in err and "--num-class" in err


def test_evaluate_cli_missing_checkpoint_and_names(synth_data, checkpoint, capsys):
    cli = load_cli("evaluate")
    args = cli_args(synth_data, checkpoint)
    args[args.index("--epoch") + 1] = "7"
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "0007.params not found" in err and "epochs saved under" in err and err.endswith(": 1\n")
    args = cli_args(synth_data, checkpoint)
    args[args.index("--class-names") + 1] = "a,b"
    assert cli.main(args) == 2
    assert "--class-names 'a,b' has 2 names but --num-class is 4" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_deploy_checkpoint(synth_data, checkpoint, tmp_path, capsys):
    from symbol.symbol_factory import get_symbol
    prefix = str(checkpoint / f"ssd_tiny_{SHAPE}")
    deploy_prefix = str(tmp_path / f"deploy_ssd_tiny_{SHAPE}")
    get_symbol("tiny", SHAPE, synth_data.num_classes, nms_thresh=0.45).save(
        deploy_prefix + "-symbol.json")
    shutil.copy(prefix + "-0001.params", deploy_prefix + "-0001.params")
    common = dict(net="tiny", path_imgrec=synth_data.val_rec, num_classes=synth_data.num_classes,
                  num_batch=-1, mean_pixels=(123, 117, 104), data_shape=SHAPE, epoch=1,
                  batch_size=8, progress=False)
    rebuilt = evaluate_net(model_prefix=prefix, **common)
    deployed = evaluate_net(model_prefix=deploy_prefix, deploy_net=True, **common)
    assert deployed["mAP"] == pytest.approx(rebuilt["mAP"])
    # --deploy on a training checkpoint: pointed to deploy.py
    cli = load_cli("evaluate")
    assert cli.main(cli_args(synth_data, checkpoint, "--deploy")) == 2
    assert "deploy.py" in capsys.readouterr().err


def test_second_pass_scores_every_image_again(synth_data):
    data_iter = make_val_iter(synth_data, 5)                    # 16 images: last batch padded
    counts = []
    for _ in range(2):                                          # e.g. validation of two epochs
        metric = MApMetric()
        counts.append(score_detections(GroundTruthModule(True), data_iter, metric))
    assert counts == [synth_data.num_val, synth_data.num_val]


def test_reused_module_scores_with_its_current_parameters(synth_data, checkpoint):
    """set_params on a bound CPU module leaves MKL-DNN's fused conv(+BN) weights stale; the
    scoring loop must still use the new parameters (training validation reuses one module)."""
    from symbol.symbol_factory import get_symbol
    from evaluate.evaluate_net import load_params
    symbol = get_symbol("tiny", SHAPE, synth_data.num_classes, nms_thresh=0.45)
    args, auxs = load_params(str(checkpoint / f"ssd_tiny_{SHAPE}"), 1)
    rng = np.random.default_rng(0)
    updated = {name: value + mx.nd.array(rng.normal(0, 0.05, value.shape))
               for name, value in args.items()}                   # as after an epoch of SGD

    def bound(arg_params):
        module = mx.mod.Module(symbol, label_names=None)
        module.bind([("data", (8, 3, SHAPE, SHAPE))], for_training=False)
        module.set_params(arg_params, auxs)
        return module

    def score(module):
        metric = MApMetric(class_names=synth_data.class_names)
        score_detections(module, make_val_iter(synth_data, 8), metric)
        curves = metric.get_curves()
        return metric.get()[1], sum(len(recall) for recall, _, _ in curves.values())

    reused = bound(args)
    score(reused)                                                  # first forward fuses
    reused.set_params(updated, auxs, force_init=True)
    expected = score(bound(updated))
    assert score(reused) == expected
    assert expected != score(bound(args))                         # the change matters


def test_load_params_corrupt_files(tmp_path):
    from evaluate.evaluate_net import load_params
    (tmp_path / "cut-0001.params").write_bytes(b"\x12\x01\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(ValueError, match=r"cut-0001\.params \(\d+ bytes\) is not a readable"):
        load_params(str(tmp_path / "cut"), 1)
    mx.nd.save(str(tmp_path / "list-0001.params"), [mx.nd.zeros((2,))])
    with pytest.raises(ValueError, match="holds a list"):
        load_params(str(tmp_path / "list"), 1)
