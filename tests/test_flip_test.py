"""--flip-test: each image's predictions averaged with its left-right mirror's, in the graph.

Against a numpy reference (the two heads' outputs paired anchor by anchor through the anchors'
own coordinates), as a property (the detections of a mirrored image are the mirrored
detections), through ONNX, and at the command line.
"""
from __future__ import annotations

import re
import shutil

from config.mxnet_compat import mx
import numpy as np
import onnx
import pytest

import deploy
from evaluate.detector import Detector, load_image
from export.onnx_detector import OnnxDetector, match_detections
from symbol.common import has_flip_test
from symbol.symbol_factory import check_flip_test, get_symbol
from tests.test_evaluate import load_cli
from tests.test_onnx import SIDE, assert_explained, check_layers, random_params

NETWORK, SIDE_PHOTO, CLASSES = "tiny_photo", 128, 3


def run_outputs(symbol, names, args, auxs, pixels):
    internals = symbol.get_internals()
    group = mx.sym.Group([internals[f"{n}_output"] for n in names])
    outs = group.bind(mx.cpu(), {"data": mx.nd.array(pixels), **args},
                      aux_states=auxs).forward(is_train=False)
    return [o.asnumpy() for o in outs]


def mirror_index(anchors: np.ndarray) -> np.ndarray:
    """For every anchor, the index of the anchor at its mirrored place (nearest corners)."""
    mirrored = np.stack([1 - anchors[:, 2], anchors[:, 1], 1 - anchors[:, 0], anchors[:, 3]], 1)
    return np.concatenate([np.abs(mirrored[i:i + 512, None] - anchors[None]).sum(-1).argmin(1)
                           for i in range(0, len(anchors), 512)])


@pytest.fixture(scope="module")
def graphs():
    plain = get_symbol(NETWORK, SIDE_PHOTO, CLASSES)
    flipped = get_symbol(NETWORK, SIDE_PHOTO, CLASSES, flip_test=True)
    args, auxs = random_params(plain, SIDE_PHOTO, seed=3)
    pixels = np.random.default_rng(4).normal(0, 60, (2, 3, SIDE_PHOTO, SIDE_PHOTO))
    return plain, flipped, args, auxs, pixels.astype(np.float32)


def test_graph_averages_each_anchor_with_its_mirror(graphs):
    """Logits and offsets equal the mean of the image's and the mirror's at the mirrored anchor
    (horizontal offset negated); the flip graph has the plain graph's parameters, no more."""
    plain, flipped, args, auxs, pixels = graphs
    assert set(flipped.list_arguments()) == set(plain.list_arguments())
    assert has_flip_test(flipped) and not has_flip_test(plain)
    names = ("multibox_cls_pred", "multibox_loc_pred", "multibox_anchors")
    logits, loc, anchors = run_outputs(plain, names, args, auxs, pixels)
    m_logits, m_loc, _ = run_outputs(plain, names, args, auxs, pixels[:, :, :, ::-1].copy())
    anchors = anchors.reshape(-1, 4)
    index = mirror_index(anchors)
    assert sorted(index) == list(range(len(anchors)))             # a pairing of the anchors
    batch = len(pixels)
    m_loc = m_loc.reshape(batch, -1, 4)[:, index] * np.array([-1, 1, 1, 1], np.float32)
    want_logits = (logits + m_logits[:, :, index]) / 2
    want_loc = (loc.reshape(batch, -1, 4) + m_loc) / 2
    got_logits, got_loc = run_outputs(flipped, names[:2], args, auxs, pixels)
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_loc.reshape(batch, -1, 4), want_loc, rtol=1e-4, atol=1e-4)
    assert np.abs(got_logits - logits).max() > 1e-2             # it is not the plain graph


def detections(symbol, args, auxs, pixels):
    out = run_outputs(symbol, ("detection",), args, auxs, pixels)[0]
    return [rows[rows[:, 0] >= 0] for rows in out]


def test_detections_of_a_mirrored_image_are_the_mirrored_detections(graphs):
    plain, flipped, args, auxs, pixels = graphs
    mirror = pixels[:, :, :, ::-1].copy()
    for image, (rows, m_rows) in enumerate(zip(detections(flipped, args, auxs, pixels),
                                               detections(flipped, args, auxs, mirror))):
        assert len(rows) > 10 and len(rows) == len(m_rows), image
        back = m_rows.copy()
        back[:, 2], back[:, 4] = 1 - m_rows[:, 4], 1 - m_rows[:, 2]
        key = np.lexsort((rows[:, 2], -rows[:, 1], rows[:, 0]))
        m_key = np.lexsort((back[:, 2], -back[:, 1], back[:, 0]))
        np.testing.assert_allclose(rows[key], back[m_key], atol=1e-4)
    # the plain graph has no such symmetry: mirrored random weights are other weights
    rows, m_rows = detections(plain, args, auxs, pixels)[0], detections(plain, args, auxs, mirror)[0]
    assert len(rows) != len(m_rows) or not np.allclose(np.sort(rows[:, 1]), np.sort(m_rows[:, 1]))


def test_grids_that_do_not_mirror_onto_themselves_are_refused():
    check_flip_test("tiny_photo", 256)
    check_flip_test("resnet50", 512)
    check_flip_test("vgg16_reduced", 512)          # its steps tile the maps exactly at 512
    with pytest.raises(ValueError) as err:
        get_symbol("vgg16_reduced", 300, 20, flip_test=True)
    message = str(err.value)
    for fragment in ("--flip-test", "'vgg16_reduced'", "relu4_3", "38 columns", "1.0133"):
        assert fragment in message, message


def test_onnx_layers_of_the_flip_graph_match_mxnet():
    """The exporter converts the flip graph's stack, reverse, slice_axis, scalar products and
    reshapes with MXNet's -2/-3/-4 codes (batch 1 and 2)."""
    check_layers(NETWORK, SIDE_PHOTO, flip_test=True)


# ------------------------------------------------------------- a trained model, end to end
@pytest.fixture(scope="module")
def flip_deployed(trained, synth_data, tmp_path_factory):
    """The trained synthetic model of tests/test_onnx.py deployed again with --flip-test
    --onnx: its folder (``deploy_ssd_tiny_<SIDE>-0010.{params,onnx}`` and symbol)."""
    folder = tmp_path_factory.mktemp("flip_model")
    for suffix in ("-0010.params", "-symbol.json"):
        shutil.copy(f"{trained['prefix']}_tiny_{SIDE}{suffix}", f"{folder}/ssd_tiny_{SIDE}{suffix}")
    status = deploy.main(["--network", "tiny", "--data-shape", str(SIDE), "--num-class",
                          str(synth_data.num_classes), "--prefix", str(folder / "ssd_"),
                          "--epoch", "10", "--nms", "0.45", "--no-force", "--flip-test",
                          "--onnx", "--class-names", ",".join(synth_data.class_names)])
    assert status == 0
    return folder


def test_deploy_flip_test_gives_mxnet_detections_in_onnx(flip_deployed, trained, synth_data):
    prefix = str(flip_deployed / f"deploy_ssd_tiny_{SIDE}")
    meta = {p.key: p.value for p in onnx.load(f"{prefix}-0010.onnx").metadata_props}
    assert meta["flip_test"] == "1"
    arrays = [load_image(p) for p in trained["images"][:24]]
    mxnet = Detector(None, prefix, 10, SIDE, batch_size=8).detect_arrays(arrays)
    plain = Detector(None, trained["deploy"], 10, SIDE, batch_size=8).detect_arrays(arrays)
    report = match_detections(mxnet, OnnxDetector(f"{prefix}-0010.onnx", (SIDE, SIDE),
                                                  synth_data.num_classes,
                                                  batch_size=8).detect_arrays(arrays))
    assert report["rows"] > 300
    assert_explained(report)
    assert not all(np.array_equal(a, b) for a, b in zip(mxnet, plain))


def test_evaluate_flip_test_says_so_and_refuses_a_deploy_graph(flip_deployed, trained, synth_data,
                                                               capsys):
    cli = load_cli("evaluate")
    common = ["--rec-path", synth_data.val_rec, "--network", "tiny", "--data-shape", str(SIDE),
              "--num-class", str(synth_data.num_classes), "--class-names",
              ",".join(synth_data.class_names), "--cpu", "--batch-size", "8"]
    maps = {}
    for name, extra in (("plain", ["--prefix", trained["prefix"] + "_", "--epoch", "10"]),
                        ("flip", ["--prefix", trained["prefix"] + "_", "--epoch", "10",
                                  "--flip-test"]),
                        ("deployed", ["--prefix", str(flip_deployed / f"deploy_ssd_tiny_{SIDE}"),
                                      "--epoch", "10", "--deploy"]),
                        ("onnx", ["--onnx",
                                  str(flip_deployed / f"deploy_ssd_tiny_{SIDE}-0010.onnx")])):
        assert cli.main(common + extra) == 0, name
        out = capsys.readouterr().out
        maps[name] = float(re.search(r"^mAP:\s+([0-9.]+)", out, re.M)[1])
        assert (f"input {SIDE}x{SIDE} + its mirror" in out) == (name != "plain"), out
    assert maps["flip"] == maps["deployed"] and maps["flip"] != maps["plain"]
    assert abs(maps["onnx"] - maps["flip"]) <= 1e-4      # as tests/test_onnx.py: tie effects
    assert cli.main(common + ["--prefix", str(flip_deployed / f"deploy_ssd_tiny_{SIDE}"),
                              "--epoch", "10", "--deploy", "--flip-test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --flip-test") and "leave --flip-test out" in err


def test_demo_refuses_flip_test_with_a_deploy_graph(trained, capsys):
    cli = load_cli("demo")
    status = cli.main(["--network", "tiny", "--data-shape", str(SIDE), "--prefix",
                       trained["deploy"], "--epoch", "10", "--deploy", "--flip-test", "--cpu",
                       "--images", trained["images"][0]])
    assert status == 2
    assert "--flip-test" in capsys.readouterr().err
