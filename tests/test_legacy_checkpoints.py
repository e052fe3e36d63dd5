"""Checkpoints, symbol files and pretrained backbones of the original example load unchanged.

The original's parameter names and shapes are written out here from its symbol files (apache/mxnet
v1.x ``example/ssd/symbol/{vgg16_reduced,resnet,inceptionv3,common,symbol_factory}.py`` and
zhreshold/mxnet-ssd's ``symbol/mobilenet.py``), independently of this project's builders, so a
renamed or reshaped layer here fails a test. Its ResNet presets tap the residual sums at
MXNet's auto-generated names ``_plusN`` (N counts the sums from 0); everything else agrees.
"""
from __future__ import annotations

import logging

import mxnet as mx
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


PRESETS = [(n, s) for n in list_networks() if n != "tiny" for s in list_shapes(n)]


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


def legacy_symbol(symbol: mx.sym.Symbol) -> mx.sym.Symbol:
    """``symbol`` with the original's variable names (what its saved -symbol.json holds)."""
    import json
    graph = json.loads(symbol.tojson())
    for node in graph["nodes"]:
        for ours, old in (("stage3_unit6_plus_", "_plus12_"), ("stage4_unit3_plus_", "_plus15_")):
            if node["op"] == "null" and node["name"].startswith(ours):
                node["name"] = old + node["name"][len(ours):]
    return mx.sym.load_json(json.dumps(graph))


def test_convert_symbol_renames_variables_only():
    ours = get_symbol("resnet50", 300, NUM_CLASSES)
    old = legacy_symbol(ours)
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
