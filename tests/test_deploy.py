"""deploy.py: round trip, --no-force, prefix rules, never overwriting, mismatch errors."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from config.mxnet_compat import mx
import numpy as np

import deploy
from symbol.symbol_factory import get_symbol_train

SIDE = 64
NUM_CLASSES = 3


def _make_checkpoint(prefix: Path, epoch: int = 1, num_classes: int = NUM_CLASSES,
                     force_suppress: bool = True) -> tuple[mx.sym.Symbol, dict, dict]:
    """Save a tiny training checkpoint (with_det graph) with random weights."""
    sym = get_symbol_train("tiny", SIDE, num_classes, nms_thresh=0.5,
                           force_suppress=force_suppress, nms_topk=400)
    mod = mx.mod.Module(sym, label_names=("label",), context=mx.cpu())
    mod.bind(data_shapes=[("data", (1, 3, SIDE, SIDE))], label_shapes=[("label", (1, 2, 6))],
             for_training=False)
    mx.random.seed(3)
    mod.init_params(initializer=mx.init.Xavier(magnitude=3))
    args, auxs = mod.get_params()
    # non-trivial BatchNorm statistics so that aux params matter
    auxs = {k: mx.nd.array(np.random.default_rng(4).uniform(0.5, 1.5, v.shape)) for k, v in
            auxs.items()}
    mx.model.save_checkpoint(str(prefix), epoch, sym, args, auxs)
    return sym, args, auxs


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_gives_training_graph_detections(tmp_path):
    train_sym, args, auxs = _make_checkpoint(tmp_path / "ssd_tiny_64")
    status = deploy.main(["--network", "tiny", "--data-shape", str(SIDE), "--num-class",
                          str(NUM_CLASSES), "--prefix", str(tmp_path / "ssd_"), "--epoch", "1"])
    assert status == 0
    deploy_sym, d_args, d_auxs = mx.model.load_checkpoint(str(tmp_path / "deploy_ssd_tiny_64"), 1)
    assert deploy_sym.list_outputs() == ["detection_output"]
    assert set(d_args) == set(args) and set(d_auxs) == set(auxs)

    image = mx.nd.array(np.random.default_rng(5).uniform(-120, 120, (1, 3, SIDE, SIDE)))
    label = mx.nd.full((1, 2, 6), -1)
    train_exe = train_sym.bind(mx.cpu(), args={**args, "data": image, "label": label},
                               aux_states=auxs)
    det_train = train_exe.forward(is_train=False)[3].asnumpy()
    deploy_exe = deploy_sym.bind(mx.cpu(), args={**d_args, "data": image}, aux_states=d_auxs)
    det_deploy = deploy_exe.forward(is_train=False)[0].asnumpy()
    assert det_deploy.shape == det_train.shape == (1, 344, 6)
    assert (det_deploy[0, :, 0] >= 0).sum() > 10  # random weights still give detections
    np.testing.assert_allclose(det_deploy, det_train, rtol=1e-5, atol=1e-6)


def _detection_attrs(json_path: Path) -> dict:
    nodes = json.loads(json_path.read_text())["nodes"]
    return next(n["attrs"] for n in nodes if n["op"] == "_contrib_MultiBoxDetection")


def test_force_and_no_force_reach_the_saved_symbol(tmp_path):
    _make_checkpoint(tmp_path / "ssd_tiny_64")
    base = ["--network", "tiny", "--data-shape", str(SIDE), "--num-class", str(NUM_CLASSES),
            "--prefix", str(tmp_path / "ssd_tiny_64"), "--epoch", "1"]
    json_path = tmp_path / "deploy_ssd_tiny_64-symbol.json"
    assert deploy.main(base + ["--nms", "0.3", "--topk", "50"]) == 0
    attrs = _detection_attrs(json_path)
    assert attrs["force_suppress"] == "True"
    assert attrs["nms_threshold"] == "0.3" and attrs["nms_topk"] == "50"
    assert deploy.main(base + ["--no-force"]) == 0
    assert _detection_attrs(json_path)["force_suppress"] == "False"


def test_prefix_without_folder_writes_deploy_copy_beside_source(tmp_path, monkeypatch, capsys):
    _make_checkpoint(tmp_path / "ssd_tiny_64")
    sources = [tmp_path / "ssd_tiny_64-symbol.json", tmp_path / "ssd_tiny_64-0001.params"]
    before = [_digest(p) for p in sources]
    monkeypatch.chdir(tmp_path)
    assert deploy.main(["--network", "tiny", "--data-shape", str(SIDE), "--num-class",
                        str(NUM_CLASSES), "--prefix", "ssd_tiny_64", "--epoch", "1"]) == 0
    assert [_digest(p) for p in sources] == before
    assert (tmp_path / "deploy_ssd_tiny_64-symbol.json").is_file()
    assert (tmp_path / "deploy_ssd_tiny_64-0001.params").is_file()
    assert not list(tmp_path.glob("*.tmp"))
    assert "deploy_ssd_tiny_64-0001.params" in capsys.readouterr().out


def test_prefix_resolution():
    assert deploy.resolve_prefix("model/ssd_", "vgg16_reduced", 300) == \
        "model/ssd_vgg16_reduced_300"
    assert deploy.resolve_prefix("model/mine", "vgg16_reduced", 300) == "model/mine"
    assert deploy.deploy_prefix("model/ssd_x") == "model/deploy_ssd_x"
    assert deploy.deploy_prefix("ssd_x") == "deploy_ssd_x"


def test_num_class_mismatch_is_reported(tmp_path, capsys):
    _make_checkpoint(tmp_path / "ssd_tiny_64", num_classes=NUM_CLASSES)
    status = deploy.main(["--network", "tiny", "--data-shape", str(SIDE), "--num-class", "20",
                          "--prefix", str(tmp_path / "ssd_"), "--epoch", "1"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: parameter 'tiny_relu3_cls_pred_conv_weight'")
    assert "(16, 64, 3, 3)" in err and "(84, 64, 3, 3)" in err
    assert not list(tmp_path.glob("deploy_*"))


def test_wrong_network_and_missing_checkpoint(tmp_path, capsys):
    _make_checkpoint(tmp_path / "ssd_tiny_64")
    status = deploy.main(["--network", "mobilenet", "--data-shape", "300", "--num-class", "3",
                          "--prefix", str(tmp_path / "ssd_tiny_64"), "--epoch", "1"])
    assert status == 2
    assert "has no parameter 'conv_1_conv2d_weight'" in capsys.readouterr().err
    status = deploy.main(["--network", "tiny", "--data-shape", str(SIDE), "--num-class", "3",
                          "--prefix", str(tmp_path / "ssd_"), "--epoch", "7"])
    assert status == 2
    assert "ssd_tiny_64-0007.params not found" in capsys.readouterr().err
    status = deploy.main(["--network", "tiny", "--data-shape", "100", "--prefix",
                          str(tmp_path / "ssd_tiny_64"), "--epoch", "1"])
    assert status == 2
    assert "data_shape 100" in capsys.readouterr().err


def test_parser_defaults():
    args = deploy.get_parser().parse_args([])
    assert (args.network, args.epoch, args.data_shape, args.num_classes) == \
        ("vgg16_reduced", 0, 300, 20)
    assert (args.nms_thresh, args.force_nms, args.nms_topk) == (0.5, True, 400)
    assert args.prefix.endswith("model/ssd_")
    assert deploy.get_parser().parse_args(["--no-force"]).force_nms is False
