"""Checkpoints, symbol files and pretrained backbones of the original example load unchanged.

The original's parameter names and shapes are written out here from its symbol files (apache/mxnet
v1.x ``example/ssd/symbol/{vgg16_reduced,resnet,inceptionv3,common,symbol_factory}.py`` and
zhreshold/mxnet-ssd's ``symbol/mobilenet.py``), independently of this project's builders, so a
renamed or reshaped layer here fails a test. Its ResNet presets tap the residual sums at
MXNet's auto-generated names ``_plusN`` (N counts the sums from 0); everything else agrees.
"""
from __future__ import annotations

import logging
from pathlib import Path

from config.mxnet_compat import mx
import numpy as np
import pytest

from symbol.legacy import convert_legacy_params, convert_legacy_symbol, legacy_to_current
from symbol.symbol_factory import get_symbol, get_symbol_train, list_networks, list_shapes

NUM_CLASSES = 20


# ------------------------------------------------ the original's names and shapes, by its rules
class Params:
    """Argument and auxiliary shapes by name, in the order the original creates them."""

    def __init__(self) -> None:
        self.args: dict[str, tuple] = {}
        self.auxs: dict[str, tuple] = {}

    def conv(self, name: str, out: int, inp: int, kernel=(3, 3), bias: bool = True,
             group: int = 1) -> None:
        self.args[f"{name}_weight"] = (out, inp // group) + tuple(kernel)
        if bias:
            self.args[f"{name}_bias"] = (out,)

    def bn(self, name: str, channels: int) -> None:
        self.args[f"{name}_gamma"] = self.args[f"{name}_beta"] = (channels,)
        self.auxs[f"{name}_moving_mean"] = self.auxs[f"{name}_moving_var"] = (channels,)

    def conv_bn(self, name: str, out: int, inp: int, kernel=(1, 1), group: int = 1) -> int:
        """The original inceptionv3 / mobilenet ``Conv``: ``{name}_conv2d`` + ``_batchnorm``."""
        self.conv(f"{name}_conv2d", out, inp, kernel, bias=False, group=group)
        self.bn(f"{name}_batchnorm", out)
        return out


def original_vgg16_reduced() -> tuple[Params, dict[str, int], list[str]]:
    """(params, channels of the tapped layers, ImageNet classifier parameters)."""
    p, channels = Params(), 3
    for group, (num, width) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], 1):
        for i in range(1, num + 1):
            p.conv(f"conv{group}_{i}", width, channels)
            channels = width
    p.conv("fc6", 1024, 512)
    p.conv("fc7", 1024, 1024, (1, 1))
    return p, {"relu4_3": 512, "relu7": 1024}, ["fc8_weight", "fc8_bias"]


def original_resnet(num_layers: int) -> tuple[Params, dict[str, int], list[str]]:
    units = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[num_layers]
    p = Params()
    p.bn("bn_data", 3)
    p.conv("conv0", 64, 3, (7, 7), bias=False)
    p.bn("bn0", 64)
    channels, taps, plus = 64, {}, 0
    for stage, (count, width) in enumerate(zip(units, (256, 512, 1024, 2048)), 1):
        for unit in range(1, count + 1):
            name = f"stage{stage}_unit{unit}"
            p.bn(f"{name}_bn1", channels)
            p.conv(f"{name}_conv1", width // 4, channels, (1, 1), bias=False)
            p.bn(f"{name}_bn2", width // 4)
            p.conv(f"{name}_conv2", width // 4, width // 4, (3, 3), bias=False)
            p.bn(f"{name}_bn3", width // 4)
            p.conv(f"{name}_conv3", width, width // 4, (1, 1), bias=False)
            if unit == 1:
                p.conv(f"{name}_sc", width, channels, (1, 1), bias=False)
            channels = width
            if unit == count and stage in (3, 4):      # the last sum of stages 3 and 4
                taps[f"_plus{plus}"] = width
            plus += 1
    return p, taps, ["bn1_gamma", "bn1_beta", "bn1_moving_mean", "bn1_moving_var",
                     "fc1_weight", "fc1_bias"]


def original_inceptionv3() -> tuple[Params, dict[str, int], list[str]]:
    p = Params()

    def tower(prefix: str, inp: int, layers) -> int:
        for i, (out, kernel) in enumerate(layers):
            inp = p.conv_bn(prefix + ("_conv" if i == 0 else f"_conv_{i}"), out, inp, kernel)
        return inp

    k1, k3, k5, k17, k71 = (1, 1), (3, 3), (5, 5), (1, 7), (7, 1)
    c = p.conv_bn("conv", 32, 3, k3)
    c = p.conv_bn("conv_1", 32, c, k3)
    c = p.conv_bn("conv_2", 64, c, k3)
    c = p.conv_bn("conv_3", 80, c, k1)
    c = p.conv_bn("conv_4", 192, c, k3)
    for name, proj in (("mixed", 32), ("mixed_1", 64), ("mixed_2", 64)):          # 7A
        c = (p.conv_bn(f"{name}_conv", 64, c) + tower(f"{name}_tower", c, [(48, k1), (64, k5)])
             + tower(f"{name}_tower_1", c, [(64, k1), (96, k3), (96, k3)])
             + p.conv_bn(f"{name}_tower_2_conv", proj, c))
    c = (p.conv_bn("mixed_3_conv", 384, c, k3)                                       # 7B
         + tower("mixed_3_tower", c, [(64, k1), (96, k3), (96, k3)]) + c)
    for name, w in (("mixed_4", 128), ("mixed_5", 160), ("mixed_6", 160), ("mixed_7", 192)):
        c = (p.conv_bn(f"{name}_conv", 192, c)                                       # 7C
             + tower(f"{name}_tower", c, [(w, k1), (w, k17), (192, k71)])
             + tower(f"{name}_tower_1", c, [(w, k1), (w, k71), (w, k17), (w, k71), (192, k17)])
             + p.conv_bn(f"{name}_tower_2_conv", 192, c))
    c = (tower("mixed_8_tower", c, [(192, k1), (320, k3)])                           # 7D
         + tower("mixed_8_tower_1", c, [(192, k1), (192, k17), (192, k71), (192, k3)]) + c)
    for name in ("mixed_9", "mixed_10"):                                             # 7E
        d3 = p.conv_bn(f"{name}_tower_conv", 384, c)
        d33 = tower(f"{name}_tower_1", c, [(448, k1), (384, k3)])
        c = (p.conv_bn(f"{name}_conv", 320, c)
             + p.conv_bn(f"{name}_tower_mixed_conv", 384, d3, (1, 3))
             + p.conv_bn(f"{name}_tower_mixed_conv_1", 384, d3, (3, 1))
             + p.conv_bn(f"{name}_tower_1_mixed_conv", 384, d33, (1, 3))
             + p.conv_bn(f"{name}_tower_1_mixed_conv_1", 384, d33, (3, 1))
             + p.conv_bn(f"{name}_tower_2_conv", 192, c))
    assert c == 2048
    return p, {"ch_concat_mixed_7_chconcat": 768, "ch_concat_mixed_10_chconcat": 2048}, \
        ["fc1_weight", "fc1_bias"]


def original_mobilenet() -> tuple[Params, dict[str, int], list[str]]:
    p = Params()
    c = p.conv_bn("conv_1", 32, 3, (3, 3))
    for index, width in zip(range(2, 15), (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512,
                                           1024, 1024)):
        p.conv_bn(f"conv_{index}_dw", c, c, (3, 3), group=c)
        c = p.conv_bn(f"conv_{index}", width, c)
    return p, {"conv_12_relu": 512, "conv_14_relu": 1024}, ["fc_weight", "fc_bias"]


ORIGINAL_BACKBONES = {
    "vgg16_reduced": original_vgg16_reduced, "resnet50": lambda: original_resnet(50),
    "resnet101": lambda: original_resnet(101), "inceptionv3": original_inceptionv3,
    "mobilenet": original_mobilenet,
}
# the original's presets: extra-layer widths, anchors per location, normalised taps
_A6, _A7 = [4, 6, 6, 6, 4, 4], [4, 6, 6, 6, 6, 4, 4]
ORIGINAL_HEADS = {
    ("vgg16_reduced", 300): ([512, 256, 256, 256], _A6, {"relu4_3": 512}),
    ("vgg16_reduced", 512): ([512, 256, 256, 256, 256], _A7, {"relu4_3": 512}),
    "resnet50": ([512, 256, 256, 128], _A6, {}),
    "resnet101": ([512, 256, 256, 128], _A6, {}),
    "inceptionv3": ([512, 256, 256, 128], _A6, {}),
    "mobilenet": ([512, 256, 256, 256, 256], _A7, {}),
}


def original_ssd_params(network: str, side: int, num_classes: int = NUM_CLASSES) -> Params:
    """Every parameter of the original's training symbol for a preset, by its names."""
    p, taps, _ = ORIGINAL_BACKBONES[network]()
    extras, anchors, scaled = ORIGINAL_HEADS.get((network, side)) or ORIGINAL_HEADS[network]
    layers = list(taps.items())
    for k, width in enumerate(extras, start=len(taps)):
        inp = layers[-1][1]
        p.conv(f"multi_feat_{k}_conv_1x1_conv", max(128, width // 2), inp, (1, 1))
        p.conv(f"multi_feat_{k}_conv_3x3_conv", width, max(128, width // 2), (3, 3))
        layers.append((f"multi_feat_{k}_conv_3x3_relu", width))
    for (name, channels), num_anchors in zip(layers, anchors):
        if name in scaled:
            p.args[f"{name}_scale"] = (1, channels, 1, 1)
        p.conv(f"{name}_loc_pred_conv", num_anchors * 4, channels)
        p.conv(f"{name}_cls_pred_conv", num_anchors * (num_classes + 1), channels)
    return p


def our_shapes(network: str, side: int, num_classes: int = NUM_CLASSES
               ) -> tuple[dict[str, tuple], dict[str, tuple]]:
    symbol = get_symbol_train(network, side, num_classes)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, side, side), label=(1, 3, 6))
    args = {n: tuple(s) for n, s in zip(symbol.list_arguments(), arg_shapes)
            if n not in ("data", "label")}
    return args, {n: tuple(s) for n, s in zip(symbol.list_auxiliary_states(), aux_shapes)}


# tiny and tiny_photo are ours: the original has no checkpoint of them
PRESETS = [(n, s) for n in list_networks() if not n.startswith("tiny") for s in list_shapes(n)]


@pytest.mark.parametrize("network,side", PRESETS)
def test_original_names_and_shapes_convert_to_ours(network, side):
    original = original_ssd_params(network, side)
    args, renamed = convert_legacy_params(original.args)
    auxs, renamed_aux = convert_legacy_params(original.auxs)
    ours_args, ours_auxs = our_shapes(network, side)
    assert args == ours_args
    assert auxs == ours_auxs
    assert not renamed_aux
    # only the resnet heads on the two tapped sums have other names: 2 layers x loc/cls x w/b
    assert len(renamed) == (8 if network.startswith("resnet") else 0)
    assert all(old.startswith("_plus") for old, _ in renamed)


def test_resnet_taps_are_the_original_plus_numbers():
    """The original's from_layers, and ours, name the same residual sums."""
    assert set(original_resnet(50)[1]) == {"_plus12", "_plus15"}
    assert set(original_resnet(101)[1]) == {"_plus29", "_plus32"}
    assert legacy_to_current("_plus12_loc_pred_conv_weight") == \
        "stage3_unit6_plus_loc_pred_conv_weight"
    assert legacy_to_current("arg:_plus32_cls_pred_conv_bias") == \
        "arg:stage4_unit3_plus_cls_pred_conv_bias"
    # not a head parameter, or not a tapped sum: unchanged
    assert legacy_to_current("_plus12") is None
    assert legacy_to_current("_plus13_loc_pred_conv_weight") is None
    assert legacy_to_current("stage3_unit6_plus_loc_pred_conv_weight") is None


def test_convert_keeps_values_and_order_and_refuses_duplicates():
    params = {"arg:conv0_weight": 1, "arg:_plus12_loc_pred_conv_weight": 2, "aux:bn0_moving_var": 3}
    converted, renamed = convert_legacy_params(params)
    assert list(converted.items()) == [("arg:conv0_weight", 1),
                                       ("arg:stage3_unit6_plus_loc_pred_conv_weight", 2),
                                       ("aux:bn0_moving_var", 3)]
    assert renamed == [("arg:_plus12_loc_pred_conv_weight",
                        "arg:stage3_unit6_plus_loc_pred_conv_weight")]
    both = {"_plus12_loc_pred_conv_weight": 1, "stage3_unit6_plus_loc_pred_conv_weight": 2}
    with pytest.raises(ValueError, match="stored twice"):
        convert_legacy_params(both)


def test_convert_symbol_renames_variables_only():
    ours = get_symbol("resnet50", 300, NUM_CLASSES)
    old = legacy_symbol_of(ours, "resnet50")
    assert "_plus12_loc_pred_conv_weight" in old.list_arguments()
    converted, renamed = convert_legacy_symbol(old)
    assert len(renamed) == 8
    assert converted.list_arguments() == ours.list_arguments()
    assert converted.tojson() == ours.tojson()
    same, none = convert_legacy_symbol(ours)
    assert same is ours and none == []


def test_inception_and_mobilenet_batchnorm_eps_are_the_originals():
    """The original's Conv used BatchNorm's default eps (1e-3); resnet sets 2e-5."""
    import json
    for network, side, eps in (("inceptionv3", 299, "0.001"), ("mobilenet", 300, None),
                               ("resnet50", 300, "2e-05")):
        nodes = json.loads(get_symbol(network, side, NUM_CLASSES).tojson())["nodes"]
        found = {n["attrs"].get("eps") for n in nodes if n["op"] == "BatchNorm"}
        assert found == {eps}, network


# ---------------------------------------------------------- the original's pretrained backbones
def write_pretrained(path: str, network: str) -> dict[str, float]:
    """An ImageNet backbone file as the original used: its names, shapes and classifier.

    Every array holds its own constant, returned by key, so a test can see where it landed.
    """
    p, _, classifier = ORIGINAL_BACKBONES[network]()
    shapes = {f"arg:{k}": v for k, v in p.args.items()}
    shapes.update({f"aux:{k}": v for k, v in p.auxs.items()})
    head = {"fc8_weight": (1000, 1024, 1, 1), "fc8_bias": (1000,), "fc1_bias": (1000,),
            "fc_bias": (1000,), "fc_weight": (1000, 1024), "bn1_gamma": (2048,),
            "bn1_beta": (2048,), "bn1_moving_mean": (2048,), "bn1_moving_var": (2048,),
            "fc1_weight": (1000, 2048)}
    for name in classifier:
        shapes[("aux:" if "moving" in name else "arg:") + name] = head[name]
    values = {key: float(i + 1) for i, key in enumerate(shapes)}
    mx.nd.save(path, {key: mx.nd.full(shape, values[key]) for key, shape in shapes.items()})
    return values


PRETRAINED = [("vgg16_reduced", 300, 1), ("resnet50", 512, 0),
              pytest.param("resnet101", 300, 0, marks=pytest.mark.slow),
              ("inceptionv3", 299, 1), ("mobilenet", 300, 0)]


@pytest.mark.parametrize("network,side,epoch", PRETRAINED)
def test_original_pretrained_backbone_loads_every_parameter(network, side, epoch, tmp_path,
                                                            caplog):
    from training.weights import load_start_params
    prefix = str(tmp_path / network)
    values = write_pretrained(f"{prefix}-{epoch:04d}.params", network)
    arg_shapes, aux_shapes = our_shapes(network, side)
    with caplog.at_level(logging.INFO):
        loaded = load_start_params(network, str(tmp_path / "ssd"), -1, -1, prefix, epoch, 0,
                              arg_shapes, aux_shapes, "")
    backbone, _, classifier = ORIGINAL_BACKBONES[network]()
    # every backbone parameter of the preset came from the file, with its own value
    assert set(loaded["arg_params"]) == set(backbone.args)
    assert set(loaded["aux_params"]) == set(backbone.auxs)
    for table in ("arg_params", "aux_params"):
        for name, array in loaded[table].items():
            kind = "arg" if table == "arg_params" else "aux"
            assert array.shape == (arg_shapes if kind == "arg" else aux_shapes)[name]
            assert float(array.reshape((-1,))[0].asscalar()) == values[f"{kind}:{name}"]
    text = caplog.text
    assert "Skipped (shape differs)" not in text
    unused = [line.split(": ", 1)[1] for line in text.splitlines() if "(unused)" in line]
    assert len(unused) == 1 and set(unused[0].split(", ")) == set(classifier)
    # left to initialise: exactly the SSD layers the backbone does not have
    left = [line for line in text.splitlines() if "Left to initialize" in line]
    assert len(left) == 1
    assert all(name.startswith("multi_feat_") or "_pred_conv_" in name or name.endswith("_scale")
               for name in left[0].split(": ", 1)[1].split(", "))


# ------------------------------------------ records written by the original's tools / im2rec
def _im2rec_path() -> str:
    import os
    return os.path.join(os.path.dirname(mx.__file__), "tools", "im2rec.py")


def _record_labels(rec_path: str) -> list[tuple[int, list[float]]]:
    import os
    record = mx.recordio.MXIndexedRecordIO(os.path.splitext(rec_path)[0] + ".idx", rec_path, "r")
    labels = []
    for key in sorted(record.keys):
        header, _ = mx.recordio.unpack(record.read_idx(key))
        labels.append((int(header.id), [float(v) for v in np.asarray(header.label).ravel()]))
    record.close()
    return labels


REPO_ROOT = str(Path(__file__).resolve().parent.parent)
RUN_UNDER_COMPAT = ("import runpy, sys; from config.mxnet_compat import mx; "
                    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.fixture(scope="module")
def im2rec_records(synth_data, tmp_path_factory):
    """The synthetic .lst files (the original's format) packed by MXNet's own im2rec.py, as
    the original's tools/prepare_dataset.py called it: ``im2rec.py <list> <root> --pack-label``."""
    import shutil
    import subprocess
    import sys
    folder = tmp_path_factory.mktemp("im2rec")
    paths = {}
    for name, lst in (("train", synth_data.train_lst), ("val", synth_data.val_lst)):
        target = str(folder / f"{name}.lst")
        shutil.copy(lst, target)
        # im2rec.py imports mxnet itself: on numpy >= 1.24 (Python 3.12+) it needs the
        # project's compat import first, as any MXNet 1.9.1 script does there
        subprocess.run([sys.executable, "-c", RUN_UNDER_COMPAT, _im2rec_path(), target,
                        synth_data.devkit, "--pack-label", "--num-thread", "1", "--no-shuffle"],
                       check=True, capture_output=True, timeout=120, cwd=REPO_ROOT)
        paths[name] = str(folder / f"{name}.rec")
    return paths


def test_im2rec_records_hold_the_same_labels(synth_data, im2rec_records):
    for name in ("train", "val"):
        theirs = _record_labels(im2rec_records[name])
        ours = _record_labels(getattr(synth_data, f"{name}_rec"))
        assert [key for key, _ in theirs] == [key for key, _ in ours]
        for (_, a), (_, b) in zip(theirs, ours):
            assert a[:2] == [2.0, 6.0]
            np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_im2rec_records_train_and_evaluate(synth_data, im2rec_records, tmp_path):
    """No conversion: train_net and evaluate_net read im2rec's records and its .lst directly."""
    from conftest import tiny_train_kwargs
    from evaluate.evaluate_net import evaluate_net
    from train_net import train_net
    prefix = str(tmp_path / "im2rec")
    train_net(**tiny_train_kwargs(synth_data, prefix, train_path=im2rec_records["train"],
                                  val_path=im2rec_records["val"],
                                  train_list=im2rec_records["train"][:-4] + ".lst"))
    results = evaluate_net("tiny", im2rec_records["val"], synth_data.num_classes, None,
                           (123, 117, 104), 64, f"{prefix}_tiny_64", 1, batch_size=8,
                           path_imglist=im2rec_records["val"][:-4] + ".lst",
                           class_names=synth_data.class_names, progress=False)
    assert results["num_images"] == synth_data.num_val
    assert results["mAP"] is not None


# ---------------------- an original checkpoint evaluates exactly as the same weights saved here
EVAL_PRESETS = [pytest.param("vgg16_reduced", 300, marks=pytest.mark.slow), ("resnet50", 300),
                pytest.param("resnet101", 512, marks=pytest.mark.slow), ("inceptionv3", 299),
                ("mobilenet", 300)]


FIRST_CONVS = {"conv1_1_weight", "conv0_weight", "conv_conv2d_weight", "conv_1_conv2d_weight"}


def random_weights(network: str, side: int, num_classes: int, seed: int = 0
                   ) -> tuple[dict, dict]:
    """He-initialised convolutions, identity batch norms, near-anchor box regressions."""
    rng = np.random.RandomState(seed)
    arg_shapes, aux_shapes = our_shapes(network, side, num_classes)
    args = {}
    for name, shape in sorted(arg_shapes.items()):
        if name.endswith("_weight"):
            fan_in = int(np.prod(shape[1:]))
            # boxes near the anchors: regression from the (per-layer) biases only
            std = 0.0 if "loc_pred" in name else np.sqrt((1.0 if "cls_pred" in name else 2.0)
                                                         / fan_in)
            if name in FIRST_CONVS:                  # inputs are pixels (+-128): features ~1
                std /= 128.0
            if name.endswith("_conv3_weight"):      # resnet: small residual branches, bounded sums
                std *= 0.05
            value = rng.normal(0, std, shape)
        elif name.endswith("_scale"):
            value = np.full(shape, 20.0)
        elif name.endswith("_gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        else:                                        # biases, betas
            value = rng.normal(0, 0.1 if "loc_pred" in name else 0.01, shape)
        args[name] = mx.nd.array(value.astype(np.float32))
    auxs = {name: mx.nd.array(rng.uniform(0.5, 1.5, shape) if name.endswith("_var")
                              else rng.normal(0, 0.1, shape)) for name, shape in aux_shapes.items()}
    return args, auxs


def original_names(network: str) -> dict[str, str]:
    """Our head-layer prefix -> the original's, for the presets whose names differ."""
    if not network.startswith("resnet"):
        return {}
    units = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}[network]
    taps = sorted(original_resnet(int(network[6:]))[1], key=lambda n: int(n[5:]))
    return {f"stage3_unit{units[2]}_plus": taps[0], f"stage4_unit{units[3]}_plus": taps[1]}


def save_checkpoint(prefix: str, epoch: int, args: dict, auxs: dict,
                    renames: dict[str, str] | None = None) -> None:
    """``{prefix}-{epoch:04d}.params`` with the layer prefixes of ``renames`` replaced."""
    def rename(name: str) -> str:
        for ours, theirs in (renames or {}).items():
            if name.startswith(ours + "_"):
                return theirs + name[len(ours):]
        return name
    saved = {f"arg:{rename(k)}": v for k, v in args.items()}
    saved.update({f"aux:{rename(k)}": v for k, v in auxs.items()})
    mx.nd.save(f"{prefix}-{epoch:04d}.params", saved)


@pytest.mark.parametrize("network,side", EVAL_PRESETS)
def test_original_checkpoint_evaluates_to_the_same_map(network, side, synth_data, tmp_path,
                                                       caplog):
    from evaluate.detector import Detector, load_image
    from evaluate.evaluate_net import evaluate_net
    args, auxs = random_weights(network, side, synth_data.num_classes)
    ours, original = str(tmp_path / "ours"), str(tmp_path / "original")
    save_checkpoint(ours, 0, args, auxs)
    save_checkpoint(original, 0, args, auxs, original_names(network))
    results = {}
    for prefix in (ours, original):
        with caplog.at_level(logging.INFO):
            caplog.clear()
            # overlap 0.1: random weights then score above zero, so the mAP is a real figure
            result = evaluate_net(network, synth_data.val_rec, synth_data.num_classes, 1,
                                  (123, 117, 104), side, prefix, 0, batch_size=2,
                                  class_names=synth_data.class_names, ovp_thresh=0.1,
                                  progress=False)
        converted = [r.getMessage() for r in caplog.records if "original example" in
                     r.getMessage()]
        assert len(converted) == (1 if prefix == original and original_names(network) else 0)
        for key in ("images_per_sec", "checkpoint"):
            result.pop(key)
        results[prefix] = result
    assert results[original] == results[ours]
    assert results[ours]["num_images"] == 2 and results[ours]["mAP"] > 0
    print(f"{network} {side}: mAP {results[ours]['mAP']} (ours) == {results[original]['mAP']} "
          f"(original names)")
    # the detections themselves, bit for bit
    images = [load_image(f"{synth_data.devkit}/VOC2007/JPEGImages/{n:06d}.jpg")
              for n in (49, 50)]
    detections = []
    for prefix in (ours, original):
        symbol = get_symbol(network, side, synth_data.num_classes)
        detections.append(Detector(symbol, prefix, 0, side).detect_arrays(images))
    assert sum(len(d) for d in detections[0]) > 0
    for a, b in zip(*detections):
        np.testing.assert_array_equal(a, b)


# ------------------------------ every reader of checkpoints on an original resnet50 checkpoint
READER_NET, READER_SIDE = "resnet50", 300


def legacy_symbol_of(symbol: mx.sym.Symbol, network: str = READER_NET) -> mx.sym.Symbol:
    """``symbol`` with the original's variable names, as its saved ``-symbol.json`` holds."""
    import json
    graph = json.loads(symbol.tojson())
    for node in graph["nodes"]:
        for ours, theirs in original_names(network).items():
            if node["op"] == "null" and node["name"].startswith(ours + "_"):
                node["name"] = theirs + node["name"][len(ours):]
    return mx.sym.load_json(json.dumps(graph))


def original_deploy_graph(network: str, side: int, num_classes: int) -> mx.sym.Symbol:
    """The inference graph as the original's deploy.py saved it: its head assembly (NHWC
    predictions flattened to 2-D and concatenated, anchors flattened, reshaped back) on the
    same layers, with its variable names. Same computation as ours, other structure."""
    from symbol.common import multi_layer_feature
    from symbol.symbol_builder import VARIANCES, get_body
    from symbol.symbol_factory import get_config
    config = get_config(network, side)
    layers = multi_layer_feature(get_body(config["backbone"], config["backbone_args"]),
                                 config["from_layers"], config["num_filters"],
                                 config["strides"], config["pads"], config["min_filter"])
    locs, clss, anchors = [], [], []
    for k, layer in enumerate(layers):
        name = layer.name
        if config["normalizations"][k] > 0:
            scale = mx.sym.Variable(f"{name}_scale", shape=(1, config["num_filters"][k], 1, 1))
            layer = mx.sym.broadcast_mul(scale, mx.sym.L2Normalization(layer, mode="channel"))
        num_anchors = len(config["sizes"][k]) - 1 + len(config["ratios"][k])
        for kind, width, out in (("loc", 4, locs), ("cls", num_classes + 1, clss)):
            pred = mx.sym.Convolution(layer, kernel=(3, 3), pad=(1, 1),
                                      num_filter=num_anchors * width,
                                      name=f"{name}_{kind}_pred_conv")
            out.append(mx.sym.Flatten(mx.sym.transpose(pred, axes=(0, 2, 3, 1))))
        step = config["steps"][k] if config["steps"] else -1.0
        anchors.append(mx.sym.Flatten(mx.sym.contrib.MultiBoxPrior(
            layer, sizes=config["sizes"][k], ratios=config["ratios"][k], steps=(step, step))))
    loc = mx.sym.Concat(*locs, dim=1)
    cls = mx.sym.transpose(mx.sym.Reshape(mx.sym.Concat(*clss, dim=1),
                                          shape=(0, -1, num_classes + 1)), axes=(0, 2, 1))
    anchor = mx.sym.Reshape(mx.sym.Concat(*anchors, dim=1), shape=(0, -1, 4))
    det = mx.sym.contrib.MultiBoxDetection(mx.sym.softmax(cls, axis=1), loc, anchor,
                                           force_suppress=True, variances=VARIANCES,
                                           nms_threshold=0.5, nms_topk=400, name="detection")
    return legacy_symbol_of(det, network)


@pytest.fixture(scope="module")
def readers(synth_data, tmp_path_factory):
    """Two folders with the same random resnet50-300 weights: ``ours`` saved by this project's
    names, ``original`` by the original's (params, training -symbol.json, and the deploy_
    checkpoint its deploy.py wrote, in its graph structure); plus a 2-image record."""
    import types
    from tools.pack_rec import pack_rec
    root = tmp_path_factory.mktemp("readers")
    args, auxs = random_weights(READER_NET, READER_SIDE, synth_data.num_classes, seed=1)
    base = f"ssd_{READER_NET}_{READER_SIDE}"
    train_sym = get_symbol_train(READER_NET, READER_SIDE, synth_data.num_classes)
    deploy_sym = get_symbol(READER_NET, READER_SIDE, synth_data.num_classes, force_suppress=True)
    for name, renames in (("ours", None), ("original", original_names(READER_NET))):
        folder = root / name
        folder.mkdir()
        save_checkpoint(str(folder / base), 1, args, auxs, renames)
        save_checkpoint(str(folder / f"deploy_{base}"), 1, args, auxs, renames)
        if renames:
            train_sym_saved = legacy_symbol_of(train_sym)
            deploy_sym_saved = original_deploy_graph(READER_NET, READER_SIDE,
                                                     synth_data.num_classes)
        else:
            train_sym_saved, deploy_sym_saved = train_sym, deploy_sym
        train_sym_saved.save(str(folder / f"{base}-symbol.json"))
        deploy_sym_saved.save(str(folder / f"deploy_{base}-symbol.json"))
    lst = root / "two.lst"
    lst.write_text("".join(Path(synth_data.val_lst).read_text().splitlines(True)[:2]))
    pack_rec(str(lst), synth_data.devkit)
    return types.SimpleNamespace(root=root, ours=root / "ours", original=root / "original",
                                 base=base, two_rec=str(root / "two.rec"))


def converted_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "names of the original example" in r.getMessage()]


def run_both(cli_name: str, make_args, readers, capsys, caplog) -> dict[str, str]:
    """Run a CLI on both folders; returns stdout by folder name, checks the conversion log."""
    from tests.test_evaluate import load_cli
    cli = load_cli(cli_name)
    outputs = {}
    for name in ("ours", "original"):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            status = cli.main(make_args(getattr(readers, name)))
        captured = capsys.readouterr()
        assert status == 0, captured.err
        lines = converted_lines(caplog)
        assert bool(lines) == (name == "original"), lines
        outputs[name] = captured.out
    return outputs


def eval_args(synth_data, readers, *extra):
    return lambda folder: ["--rec-path", readers.two_rec, "--network", READER_NET,
                           "--data-shape", str(READER_SIDE), "--num-class",
                           str(synth_data.num_classes), "--class-names",
                           ",".join(synth_data.class_names), "--prefix", str(folder / "ssd_"),
                           "--epoch", "1", "--cpu", "--batch-size", "2", *extra]


def _without_speed(text: str) -> list[str]:
    return [line for line in text.splitlines() if "images/s" not in line and "ms" not in line]


def test_evaluate_cli_reads_original_checkpoint(synth_data, readers, capsys, caplog):
    out = run_both("evaluate", eval_args(synth_data, readers), readers, capsys, caplog)
    assert "mAP" in out["original"]
    assert _without_speed(out["original"]) == _without_speed(out["ours"])


def test_evaluate_deploy_reads_original_symbol_json(synth_data, readers, capsys, caplog):
    saved = (readers.original / f"deploy_{readers.base}-symbol.json").read_text()
    assert '"Flatten"' in saved and "_plus12_loc_pred_conv_weight" in saved   # its structure
    make = eval_args(synth_data, readers, "--deploy")
    out = run_both("evaluate", lambda f: [a.replace("/ssd_", "/deploy_ssd_") for a in make(f)],
                   readers, capsys, caplog)
    assert "mAP" in out["original"]
    assert _without_speed(out["original"]) == _without_speed(out["ours"])


def test_demo_reads_original_checkpoint_and_symbol(synth_data, readers, tmp_path, capsys,
                                                   caplog):
    image = f"{synth_data.devkit}/VOC2007/JPEGImages/000049.jpg"
    for extra in ([], ["--deploy"]):
        def make(folder, extra=extra):
            prefix = "deploy_ssd_" if extra else "ssd_"
            return ["--network", READER_NET, "--data-shape", str(READER_SIDE), "--images", image,
                    "--prefix", str(folder / prefix), "--epoch", "1", "--cpu", "--thresh", "0.1",
                    "--class-names", ",".join(synth_data.class_names), "--no-timer",
                    "--output-dir", str(tmp_path / folder.name), *extra]
        out = run_both("demo", make, readers, capsys, caplog)
        detections = {name: [line.split(" -> ")[0] for line in out[name].splitlines()
                             if line.startswith(image)] for name in out}
        assert len(detections["original"]) >= 2
        assert detections["original"] == detections["ours"]


def test_deploy_cli_converts_original_checkpoint(synth_data, readers, tmp_path, capsys, caplog):
    import shutil
    folders = {}
    for name in ("ours", "original"):             # deploy writes beside the source: copy first
        folders[name] = tmp_path / name
        folders[name].mkdir()
        shutil.copy(getattr(readers, name) / f"{readers.base}-0001.params", folders[name])
    run_both("deploy", lambda folder: [
        "--network", READER_NET, "--data-shape", str(READER_SIDE), "--epoch", "1",
        "--num-class", str(synth_data.num_classes),
        "--prefix", str(folders[folder.name] / "ssd_")], readers, capsys, caplog)
    deployed = [mx.nd.load(str(folders[n] / f"deploy_{readers.base}-0001.params"))
                for n in ("ours", "original")]
    assert sorted(deployed[0]) == sorted(deployed[1])          # this project's names in both
    assert "arg:stage3_unit6_plus_loc_pred_conv_weight" in deployed[1]
    for key in deployed[0]:
        np.testing.assert_array_equal(deployed[0][key].asnumpy(), deployed[1][key].asnumpy())


def test_benchmark_score_reads_original_deploy_files(synth_data, readers, capsys, caplog):
    out = run_both("benchmark_score", lambda folder: [
        "--network", READER_NET, "--shape", str(READER_SIDE), "--class_num",
        str(synth_data.num_classes), "--deploy", "--prefix", str(folder / "deploy_ssd_"),
        "--epoch", "1", "-b", "1", "--num-batches", "1", "--warmup", "0", "--repeat", "1"],
        readers, capsys, caplog)
    assert any(line.startswith("fp32") for line in out["original"].splitlines())


@pytest.mark.slow
def test_quantization_reads_original_checkpoint(synth_data, readers, tmp_path, capsys, caplog):
    out = run_both("quantization", lambda folder: [
        "--network", READER_NET, "--data-shape", str(READER_SIDE),
        "--num-class", str(synth_data.num_classes),
        "--class-names", ",".join(synth_data.class_names), "--prefix", str(folder / "ssd_"),
        "--epoch", "1", "--rec-path", readers.two_rec, "--batch-size", "2",
        "--num-calib-batches", "1", "--calib-mode", "naive", "--bench-batch", "1",
        "--bench-batches", "1", "--output-dir", str(tmp_path / folder.name)],
        readers, capsys, caplog)
    fp32 = [[line for line in out[n].splitlines() if line.startswith("fp32")] for n in out]
    assert fp32[0] and fp32[0][0].split()[:2] == fp32[1][0].split()[:2]     # model, mAP


@pytest.mark.parametrize("mode", ["resume", "finetune", "pretrained"])
def test_train_loads_original_checkpoint(synth_data, readers, mode, caplog):
    """Training's reader (weights.load_start_params) on both folders: the same arrays under our names."""
    from training.weights import load_start_params
    arg_shapes, aux_shapes = our_shapes(READER_NET, READER_SIDE, synth_data.num_classes)
    loaded = {}
    for name in ("ours", "original"):
        prefix = str(getattr(readers, name) / readers.base)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            loaded[name] = load_start_params(
                READER_NET, prefix, 1 if mode == "resume" else -1,
                1 if mode == "finetune" else -1, prefix if mode == "pretrained" else "", 1, 0,
                arg_shapes, aux_shapes, "^(conv1_|conv2_).*")
        assert bool(converted_lines(caplog)) == (name == "original")
        assert "Left to initialize" not in caplog.text
    ours, original = loaded["ours"], loaded["original"]
    assert ours["fixed_param_names"] == original["fixed_param_names"]
    for table in ("arg_params", "aux_params"):
        assert sorted(ours[table]) == sorted(original[table])
        for key, value in ours[table].items():
            np.testing.assert_array_equal(value.asnumpy(), original[table][key].asnumpy())


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--resume", "1"], ["--finetune", "1"],
                                   ["--pretrained", "ORIGINAL", "--epoch", "1"]])
def test_train_cli_trains_from_original_checkpoint(synth_data, readers, flags, tmp_path, capsys,
                                                  caplog):
    """train.py --resume / --finetune / --pretrained on the original's resnet50 checkpoint
    trains one more epoch and saves it under this project's names."""
    import shutil
    from tests.test_evaluate import load_cli
    folder = tmp_path / "model"
    folder.mkdir()
    for suffix in ("-0001.params", "-symbol.json"):
        shutil.copy(readers.original / f"{readers.base}{suffix}", folder)
    flags = [str(readers.original / readers.base) if f == "ORIGINAL" else f for f in flags]
    end_epoch = "1" if flags[0] == "--pretrained" else "2"
    cli = load_cli("train")
    with caplog.at_level(logging.INFO):
        status = cli.main(["--train-path", readers.two_rec, "--val-path", "",
                           "--network", READER_NET, "--data-shape", str(READER_SIDE),
                           "--num-class", str(synth_data.num_classes),
                           "--class-names", ",".join(synth_data.class_names),
                           "--prefix", str(folder / "ssd"), *flags, "--end-epoch", end_epoch,
                           "--batch-size", "2", "--gpus", "", "--lr", "0.0001",
                           "--log", str(tmp_path / "train.log")])
    assert status == 0, capsys.readouterr().err
    assert len(converted_lines(caplog)) == 1
    assert "Left to initialize" not in caplog.text
    saved = mx.nd.load(str(folder / f"{readers.base}-{int(end_epoch):04d}.params"))
    assert "arg:stage3_unit6_plus_loc_pred_conv_weight" in saved
    assert not any("_plus" in key.split(":")[1][:5] for key in saved)


# ------------------------------------------------------------ a missing pretrained backbone
def test_missing_default_pretrained_says_what_and_where(synth_data, tmp_path, capsys):
    """`python train.py` without model/vgg16_reduced-0001.params: what the file is, where the
    original documented it, and that --pretrained '' trains from scratch."""
    from tests.test_evaluate import load_cli
    cli = load_cli("train")
    model = tmp_path / "model"
    status = cli.main(["--train-path", synth_data.train_rec, "--val-path", "",
                       "--network", "tiny", "--data-shape", "64", "--num-class", "4",
                       "--class-names", ",".join(synth_data.class_names), "--gpus", "",
                       "--pretrained", str(model / "vgg16_reduced"), "--prefix", str(model / "ssd"),
                       "--batch-size", "8", "--log", str(tmp_path / "train.log")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(err) == 1 and err[0].startswith("error: --pretrained ")
    for words in ("vgg16_reduced-0001.params not found",
                  "the converted pretrained vgg16_reduced model",
                  "releases/download/v0.2-beta/vgg16_reduced.zip",
                  "--pretrained '' trains from scratch"):
        assert words in err[0]


def test_missing_pretrained_of_another_network_names_its_backbone():
    from symbol.legacy import describe_pretrained
    text = describe_pretrained("resnet50", "/x/model/vgg16_reduced-0001.params")
    assert "vgg16_reduced-0001.params is the ImageNet VGG16-reduced" in text
    assert "for --network resnet50 start from the ImageNet ResNet-50" in text
    assert "--pretrained model/resnet-50 --epoch 0" in text
    assert text.endswith("--pretrained '' trains from scratch (no file needed)")
    assert describe_pretrained("inceptionv3", "/m/Inception-7-0001.params").startswith(
        "Inception-7-0001.params is the ImageNet Inception-v3 of MXNet's model zoo")
