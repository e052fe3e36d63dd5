"""ONNX export (deploy.py --onnx): MultiBoxDetection rebuilt from ONNX operators against MXNet's
operator, the layers against MXNet, a trained model's detections and mAP both ways, demo.py and
evaluate.py --onnx, tools/detect_onnx.py with no MXNet, and bad input.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from config.mxnet_compat import mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import deploy
from evaluate.detector import Detector, load_image
from export.onnx_detection import add_multibox_detection
from export.onnx_detector import OnnxDetector, match_detections
from export.onnx_file import PROJECT_VERSION, build_onnx_model
from export.onnx_graph import OPSET, OnnxGraph, value_info
from symbol.symbol_factory import get_symbol
from tests.conftest import ONNX_SIDE
from tests.test_evaluate import load_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = ONNX_SIDE


# ------------------------------------------------------------- MultiBoxDetection alone
def detection_session(anchors: np.ndarray, num_classes: int, **settings):
    """onnxruntime session of the rebuilt MultiBoxDetection alone (inputs cls_prob, loc_pred)."""
    g = OnnxGraph()
    for name in ("cls_prob", "loc_pred"):
        g.fresh(name)
    out = add_multibox_detection(g, "cls_prob", "loc_pred", anchors, **settings)
    num = anchors.shape[0]
    graph = helper.make_graph(g.nodes, "det", [value_info("cls_prob", ["N", num_classes + 1, num]),
                                               value_info("loc_pred", ["N", 4 * num])],
                              [value_info(out, ["N", "K", 6])], initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def mxnet_detection(prob, loc, anchors, **settings) -> np.ndarray:
    return mx.nd.contrib.MultiBoxDetection(
        mx.nd.array(prob), mx.nd.array(loc), mx.nd.array(anchors[np.newaxis]),
        nms_threshold=settings["nms_threshold"], force_suppress=settings["force_suppress"],
        nms_topk=settings["nms_topk"], variances=(0.1, 0.1, 0.2, 0.2)).asnumpy()


def assert_same_as_mxnet(prob, loc, anchors, **settings) -> np.ndarray:
    """ONNX rows == MXNet's first K rows (classes exact, values 1e-6); MXNet's later rows empty."""
    got = detection_session(anchors, prob.shape[1] - 1, **settings).run(
        None, {"cls_prob": prob, "loc_pred": loc})[0]
    ref = mxnet_detection(prob, loc, anchors, **settings)
    rows = got.shape[1]
    assert (ref[:, rows:, 0] == -1).all()
    np.testing.assert_array_equal(got[..., 0], ref[:, :rows, 0])
    np.testing.assert_allclose(got, ref[:, :rows], atol=1e-6, rtol=0)
    return got


def random_case(seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    num, classes, batch = int(rng.integers(20, 400)), int(rng.integers(1, 6)), 3
    centre, size = rng.random((num, 2)) * 0.8, rng.random((num, 2)) * 0.4 + 0.02
    anchors = np.concatenate([centre, centre + size], 1).astype(np.float32)
    logits = (rng.integers(0, 4, (batch, classes + 1, num)) if ties
              else rng.normal(size=(batch, classes + 1, num)) * 3).astype(np.float32)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    loc = rng.normal(size=(batch, 4 * num)).astype(np.float32) * (0 if ties else 1)
    return prob.astype(np.float32), loc, anchors


@pytest.mark.parametrize("seed,ties,force,topk,nms", [
    (0, False, False, 400, 0.45), (1, True, False, 400, 0.5), (2, False, True, 30, 0.5),
    (3, True, True, -1, 0.3), (4, True, False, 7, 0.7), (5, False, False, -1, 0.5)])
def test_detection_matches_mxnet_operator(seed, ties, force, topk, nms):
    """Random probabilities (quantised ones: many equal scores), both NMS modes, top-k."""
    prob, loc, anchors = random_case(seed, ties)
    got = assert_same_as_mxnet(prob, loc, anchors, nms_threshold=nms, force_suppress=force,
                               nms_topk=topk)
    kept, suppressed = (got[..., 0] >= 0).sum(), ((got[..., 0] == -1) & (got[..., 1] > 0)).sum()
    assert kept > 0 and (suppressed > 0 or topk == 7)       # top-7 of 3 images: none overlap


def test_equal_scores_keep_anchor_order_and_iou_at_threshold_suppresses():
    """Five equal scores come out in anchor order; IoU exactly 0.5 suppresses (ONNX's
    NonMaxSuppression would keep it: it suppresses above the threshold only)."""
    anchors = np.array([[.625, .625, .75, .75], [0, 0, .5, .5], [0, 0, .5, .25],
                        [.75, 0, 1, .25], [0, .75, .25, 1]], np.float32)   # decoded exactly
    prob = np.zeros((1, 2, 5), np.float32)
    prob[0, 0], prob[0, 1] = 0.5, 0.5                     # every anchor scores 0.5
    loc = np.zeros((1, 20), np.float32)
    got = assert_same_as_mxnet(prob, loc, anchors, nms_threshold=0.5, force_suppress=False,
                               nms_topk=400)[0]
    np.testing.assert_array_equal(got[:, 2:], anchors)   # the anchor order kept
    assert got[:, 0].tolist() == [0, 0, -1, 0, 0]        # IoU([0,0,.5,.5], [0,0,.5,.25]) = 0.5


def test_match_detections_explains_tie_effects():
    """Swapped near-equal scores, an equal-score pair decided the other way by NMS, a row at
    the top-k cut, and a real difference, each counted as such."""
    ref = np.array([[0, .9, .1, .1, .3, .3], [1, .5, .5, .5, .7, .7], [1, .5, .6, .6, .8, .8],
                    [2, .4, .0, .0, .2, .2], [0, .1, .4, .4, .6, .6]], np.float32)
    other = np.array([[0, .9, .1, .1, .3, .3], [1, .5 + 1e-7, .6, .6, .8, .8],
                      [1, .5, .5, .5, .7, .7], [2, .45, .0, .0, .2, .2],
                      [0, .1, .7, .7, .9, .9]], np.float32)
    report = match_detections([ref], [other])
    assert (report["in_place"], report["swapped"]) == (1, 2)
    assert len(report["tie_choice"]) == 0 and len(report["at_cut"]) == 2   # score 0.1: lowest
    assert [r[0] for _, r in report["unmatched_reference"]] == [2]
    assert [r[0] for _, r in report["unmatched_other"]] == [2]
    for box, paired in (([.55, .5, .75, .7], 1), ([.8, .8, 1, 1], 0)):     # IoU 0.6, 0
        pair = match_detections([ref[[0, 1, 4]]],
                                [np.array([ref[0], [1, .5] + box, ref[4]], np.float32)])
        assert len(pair["tie_choice"]) == paired
        assert len(pair["unmatched_reference"]) == len(pair["unmatched_other"]) == 1 - paired


# ------------------------------------------------------------- the layers of the zoo
def random_params(symbol, side: int, seed: int = 0):
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, side, side))
    rng = np.random.default_rng(seed)
    args = {n: mx.nd.array(rng.normal(0, 1 / np.sqrt(np.prod(s[1:]) if len(s) > 1 else 20), s))
            for n, s in zip(symbol.list_arguments(), arg_shapes) if n != "data"}   # fan-in scaled
    auxs = {n: mx.nd.array(rng.uniform(0.5, 1.5, s)) for n, s in
            zip(symbol.list_auxiliary_states(), aux_shapes)}
    return args, auxs


def check_layers(network: str, side: int, **overrides) -> None:
    """The exported file's class probabilities and box offsets equal MXNet's (1e-4), and the
    whole file runs at batch 1 and 2 (dynamic batch)."""
    symbol = get_symbol(network, side, 3, **overrides)
    args, auxs = random_params(symbol, side)
    model = build_onnx_model(symbol, args, auxs, (side, side), (123, 117, 104), {})
    probe = ("cls_prob", "multibox_loc_pred")
    for name in probe:
        model.graph.output.append(value_info(name, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(1).integers(0, 256, (2, 3, side, side)).astype(np.float32)
    dets, *got = session.run(None, {"data": pixels})
    assert dets.shape == (2, 400, 6)
    assert session.run(None, {"data": pixels[:1]})[0].shape == (1, 400, 6)
    internals = symbol.get_internals()
    group = mx.sym.Group([internals[f"{n}_output"] for n in probe])
    mean = np.array([123, 117, 104], np.float32).reshape(1, 3, 1, 1)
    ref = group.bind(mx.cpu(), {"data": mx.nd.array(pixels - mean), **args},
                     aux_states=auxs).forward(is_train=False)
    for name, a, b in zip(probe, got, ref):
        np.testing.assert_allclose(a, b.asnumpy(), atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("network,side", [("tiny", 96), ("tiny_photo", 128)])
def test_layers_match_mxnet(network, side):
    check_layers(network, side)


def test_fitted_anchors_are_exported():
    """Anchors of train.py --anchors (5 per place instead of the preset's 4) travel in the file."""
    fitted = {"sizes": [[.1, .15], [.2, .3], [.4, .5], [.6, .7], [.8, .9]],
              "ratios": [[1, 1.5, 0.7, 2.4]] * 5}
    check_layers("tiny_photo", 128, **fitted)
    symbol = get_symbol("tiny_photo", 128, 3, **fitted)
    model = build_onnx_model(symbol, *random_params(symbol, 128), (128, 128), (0, 0, 0), {})
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    expected = mx.nd.contrib.MultiBoxPrior(mx.nd.zeros((1, 1, 16, 16)), sizes=(.1, .15),
                                           ratios=(1, 1.5, 0.7, 2.4)).asnumpy().reshape(-1, 4)
    width = stored["anchor_w"]
    assert width.shape == (5 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1),)
    np.testing.assert_array_equal(width[:len(expected)], expected[:, 2] - expected[:, 0])


@pytest.mark.slow
@pytest.mark.parametrize("network,side", [("mobilenet", 300), ("inceptionv3", 299),
                                          ("vgg16_reduced", 300)])
def test_zoo_layers_match_mxnet(network, side):
    """Grouped convolutions, average pooling, ceil pooling, L2Normalization (the ResNets:
    python -m benchmarks.onnx_check --zoo)."""
    check_layers(network, side)


# ------------------------------------------------------------- a trained model
# the fixture ``trained`` (conftest.py): tiny trained 10 epochs at SIDE px, deployed with --onnx


def test_deploy_writes_a_checked_file_with_metadata(trained, synth_data):
    model = onnx.load(trained["onnx"])
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["network"] == "tiny" and meta["data_shape"] == f"3,{SIDE},{SIDE}"
    assert json.loads(meta["class_names"]) == synth_data.class_names
    assert meta["project_version"] == PROJECT_VERSION
    assert meta["nms_threshold"] == "0.45" and meta["force_suppress"] == "False"
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "data" and out.name == "detections"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 3, SIDE, SIDE]
    assert not [f for f in os.listdir(trained["folder"]) if ".tmp" in f]


def test_project_version_is_setup_py_version():
    with open(os.path.join(REPO, "setup.py")) as f:
        text = f.read()
    assert re.search(r'version="([^"]+)"', text).group(1) == PROJECT_VERSION


def test_trained_model_gives_mxnet_detections(trained, synth_data):
    """Every synthetic photo: the same rows kept, classes equal, scores 1e-5, corners 1e-4."""
    arrays = [load_image(p) for p in trained["images"]]
    mxnet = Detector(None, trained["deploy"], 10, SIDE, batch_size=8).detect_arrays(arrays)
    onnx_rows = OnnxDetector(trained["onnx"], (SIDE, SIDE), synth_data.num_classes,
                             batch_size=8).detect_arrays(arrays)
    report = match_detections(mxnet, onnx_rows)
    assert report["rows"] > 1000 and max(d[:, 1].max() for d in mxnet) > 0.5
    assert_explained(report)


def assert_explained(report: dict) -> None:
    """Every row matched, or one of the two explained float32 tie effects (docs/ONNX.md)."""
    assert report["unmatched_reference"] == [] and report["unmatched_other"] == []
    unexplained = (report["rows"] - report["in_place"] - report["swapped"]
                   - len(report["tie_choice"])
                   - sum(side == "reference" for _, side, _ in report["at_cut"]))
    assert unexplained == 0
    assert len(report["tie_choice"]) + len(report["at_cut"]) <= 0.01 * report["rows"]
    assert report["max_score_diff"] <= 1e-5 and report["max_corner_diff"] <= 1e-4


def test_evaluate_onnx_gives_the_same_map(trained, synth_data, capsys):
    cli = load_cli("evaluate")
    common = ["--rec-path", synth_data.val_rec, "--network", "tiny", "--data-shape", str(SIDE),
              "--num-class", str(synth_data.num_classes), "--class-names",
              ",".join(synth_data.class_names), "--cpu", "--batch-size", "8"]
    maps = []
    for extra in (["--prefix", trained["deploy"], "--epoch", "10", "--deploy"],
                  ["--onnx", trained["onnx"]]):
        assert cli.main(common + extra) == 0
        maps.append(float(re.search(r"^mAP:\s+([0-9.]+)", capsys.readouterr().out, re.M)[1]))
    assert maps[0] > 0 and abs(maps[0] - maps[1]) <= 1e-4


def test_demo_onnx_prints_the_mxnet_detections(trained, tmp_path, capsys):
    cli = load_cli("demo")
    images = ",".join(trained["images"][:4])
    lines = []
    for extra in (["--network", "tiny", "--data-shape", str(SIDE), "--prefix", trained["deploy"],
                   "--epoch", "10", "--deploy", "--cpu", "--class-names",
                   "circle,square,triangle,cross"],
                  ["--onnx", trained["onnx"]]):
        out_dir = tmp_path / str(len(lines))
        assert cli.main(extra + ["--images", images, "--thresh", "0.2", "--no-timer",
                                 "--output-dir", str(out_dir)]) == 0
        lines.append([line for line in capsys.readouterr().out.splitlines() if "[" in line])
        assert len(list(out_dir.glob("*.png"))) == 4
    assert lines[0] and lines[0] == lines[1]


def no_mxnet_env(tmp_path) -> dict:
    """Environment in which ``import mxnet`` fails (a shadowing package that raises)."""
    blocker = tmp_path / "blocker" / "mxnet"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('mxnet is blocked for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker.parent), OMP_NUM_THREADS="1")
    return env


def test_detect_onnx_runs_without_mxnet(trained, synth_data, tmp_path):
    env = no_mxnet_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import mxnet"], env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr
    photos = trained["images"][:6]
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "detect_onnx.py"),
                           trained["onnx"], ",".join(photos), "--thresh", "0.05",
                           "--output-dir", str(tmp_path / "drawn")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "drawn").glob("*.png"))) == len(photos)
    printed = {}
    for line in proc.stdout.splitlines():
        path, _, rest = line.partition(": ")
        fields = rest.split()
        if len(fields) == 6 and "->" not in rest:
            printed.setdefault(path, []).append(
                [synth_data.class_names.index(fields[0])] + [float(f) for f in fields[1:]])
    detector = Detector(None, trained["deploy"], 10, SIDE)
    for path, rows in zip(photos, detector.im_detect(photos)):
        rows = rows[rows[:, 1] >= 0.05]
        got = np.array(printed.get(path, []), np.float32).reshape(-1, 6)
        report = match_detections([rows], [got], score_tol=2e-5, corner_tol=1e-4)
        assert report["in_place"] + report["swapped"] == report["rows"] == len(got), path
    assert sum(len(v) for v in printed.values()) > 0
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    bad = subprocess.run([sys.executable, os.path.join(REPO, "tools", "detect_onnx.py"),
                          str(junk), photos[0]], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith(f"error: onnx: {junk} cannot be loaded")


# ------------------------------------------------------------- bad input
def test_unsupported_operator_is_named_and_nothing_written(trained, tmp_path, capsys):
    with open(f"{trained['deploy']}-symbol.json") as f:
        graph = json.load(f)
    for node in graph["nodes"]:
        if node["op"] == "softmax":
            node["op"] = "log_softmax"
    prefix = tmp_path / "odd"
    (tmp_path / "odd-symbol.json").write_text(json.dumps(graph))
    os.symlink(f"{trained['deploy']}-0010.params", tmp_path / "odd-0010.params")
    with pytest.raises(ValueError, match=r"odd-0010.params: node 'cls_prob' \(log_softmax\)"):
        deploy.export_deploy_onnx("tiny", 10, str(prefix), SIDE, ["a", "b", "c", "d"],
                                  (123, 117, 104))
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp*"))


def test_checkpoint_of_another_network_is_refused(trained, capsys):
    status = deploy.main(["--network", "tiny_photo", "--data-shape", str(SIDE), "--num-class",
                          "4", "--prefix", trained["prefix"], "--epoch", "10", "--onnx"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "tiny_photo" not in os.listdir(trained["folder"])


def test_onnx_file_that_differs_from_the_flags(trained, synth_data, tmp_path, capsys):
    cli = load_cli("evaluate")
    common = ["--rec-path", synth_data.val_rec, "--network", "tiny", "--cpu",
              "--onnx", trained["onnx"]]
    assert cli.main(common + ["--data-shape", "128", "--num-class", "4", "--class-names",
                              "a,b,c,d"]) == 2
    err = capsys.readouterr().err
    assert f"error: --onnx {trained['onnx']} was exported with data shape 96x96 " \
           "(--data-shape gives 128x128)" in err
    assert cli.main(common + ["--data-shape", str(SIDE), "--num-class", "3", "--class-names",
                              "a,b,c"]) == 2
    assert "with 4 classes (--num-class / --class-names give 3)" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert cli.main(common[:-1] + [str(junk), "--data-shape", str(SIDE), "--num-class", "4",
                                   "--class-names", "a,b,c,d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --onnx {junk} cannot be loaded by onnxruntime")


def test_failed_write_leaves_no_partial_file(trained, tmp_path, monkeypatch):
    from training.checkpoint import FileWriteError

    def half_write(model, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", half_write)
    prefix = tmp_path / "copy"
    os.symlink(f"{trained['deploy']}-symbol.json", tmp_path / "copy-symbol.json")
    os.symlink(f"{trained['deploy']}-0010.params", tmp_path / "copy-0010.params")
    with pytest.raises(FileWriteError, match="copy-0010.onnx"):
        deploy.export_deploy_onnx("tiny", 10, str(prefix), SIDE, ["a", "b", "c", "d"],
                                  (123, 117, 104))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy-0010.params", "copy-symbol.json"]


# ------------------------------------------------------------- real photographs
RACCOON = os.path.join(REPO, "..", "shared", "data", "raccoon")


@pytest.fixture(scope="module")
def raccoon_model(tmp_path_factory):
    """tiny_photo trained 4 epochs (128 px) on the 160 raccoon photos, deployed with --onnx.

    A fixture, not the test's body: training installs a log handler on the stream of the
    moment, which must not be a test's captured (then closed) stderr.
    """
    devkit = os.path.join(RACCOON, "VOCdevkit")
    if not os.path.isdir(devkit):
        pytest.skip(f"real-photo data not found at {os.path.abspath(RACCOON)} (the raccoon set "
                    "of ../shared/data; see its README)")
    from tools.prepare_dataset import prepare_dataset
    from train_net import train_net
    tmp_path = tmp_path_factory.mktemp("raccoon")
    sets = {}
    for name in ("trainval", "test"):
        sets[name] = prepare_dataset("pascal", name, devkit, str(tmp_path / f"{name}.lst"),
                                     shuffle=name == "trainval", class_names=["raccoon"],
                                     resize=256, seed=0, progress=False)
    prefix = str(tmp_path / "ssd")
    train_net(net="tiny_photo", train_path=sets["trainval"]["rec"], num_classes=1, batch_size=8,
              data_shape=128, mean_pixels=[123, 117, 104], resume=-1, finetune=-1,
              pretrained="", epoch=0, prefix=prefix, ctx=[mx.cpu()], begin_epoch=0,
              end_epoch=4, frequent=100, learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
              lr_refactor_step="10", lr_refactor_ratio=0.1, num_example=160,
              label_pad_width=-1, class_names=["raccoon"], val_path="", seed=1)
    assert deploy.main(["--network", "tiny_photo", "--data-shape", "128", "--num-class", "1",
                        "--class-names", "raccoon", "--prefix", prefix + "_", "--epoch", "4",
                        "--onnx"]) == 0
    return {"deploy": str(tmp_path / "deploy_ssd_tiny_photo_128"), "sets": sets,
            "devkit": devkit}


@pytest.mark.slow
def test_raccoon_model_gives_mxnet_detections_and_map(raccoon_model, capsys):
    """On the 40 raccoon test photos the same rows as MXNet's deploy graph, and the same VOC07
    mAP (the model of ``raccoon_model``)."""
    deployed, sets, devkit = (raccoon_model[k] for k in ("deploy", "sets", "devkit"))
    with open(sets["test"]["lst"]) as f:
        photos = [os.path.join(devkit, line.rstrip("\n").split("\t")[-1]) for line in f]
    arrays = [load_image(p) for p in photos]
    mxnet = Detector(None, deployed, 4, 128, batch_size=8).detect_arrays(arrays)
    onnx_rows = OnnxDetector(f"{deployed}-0004.onnx", (128, 128), 1,
                             batch_size=8).detect_arrays(arrays)
    report = match_detections(mxnet, onnx_rows)
    assert len(arrays) == 40 and report["rows"] > 400
    assert_explained(report)
    cli = load_cli("evaluate")
    common = ["--rec-path", sets["test"]["rec"], "--network", "tiny_photo", "--data-shape",
              "128", "--num-class", "1", "--class-names", "raccoon", "--cpu", "--nms", "0.45"]
    maps = []
    capsys.readouterr()
    for extra in (["--prefix", deployed, "--epoch", "4", "--deploy"],
                  ["--onnx", f"{deployed}-0004.onnx"]):
        assert cli.main(common + extra) == 0
        maps.append(float(re.search(r"^mAP:\s+([0-9.]+)", capsys.readouterr().out, re.M)[1]))
    assert maps[0] > 0.01 and abs(maps[0] - maps[1]) <= 1e-4
