"""Network zoo: presets, anchor counts, parameter/output names, graph wiring (shape inference)."""
from __future__ import annotations

import json

from config.mxnet_compat import mx
import numpy as np
import pytest

from symbol.symbol_factory import (count_anchors, describe_feature_layers, get_config,
                                   get_symbol, get_symbol_train, list_networks, list_shapes)

# (network, side) -> anchors; the original's counts (REFERENCE.md 3.2), verified there by
# building the original symbols
REFERENCE_ANCHORS = {
    ("vgg16_reduced", 300): 8732,
    ("resnet50", 300): 2268,
    ("resnet50", 512): 6132,
    ("resnet101", 300): 2268,
    ("resnet101", 512): 6132,
    ("inceptionv3", 299): 1668,
    ("inceptionv3", 512): 5186,
}

ALL_PRESETS = [(net, side) for net in list_networks() for side in list_shapes(net)]


def _ops(symbol: mx.sym.Symbol) -> list[str]:
    return [node["op"] for node in json.loads(symbol.tojson())["nodes"]]


def _node(symbol: mx.sym.Symbol, name: str) -> dict:
    nodes = [n for n in json.loads(symbol.tojson())["nodes"] if n["name"] == name]
    assert len(nodes) == 1, name
    return nodes[0]


def test_list_networks():
    assert list_networks() == ["inceptionv3", "mobilenet", "resnet101", "resnet50", "tiny",
                               "tiny_photo", "vgg16_reduced"]
    assert list_shapes("inceptionv3") == [299, 512]
    assert list_shapes("tiny") == list(range(64, 513, 32))


@pytest.mark.parametrize("network,side", sorted(REFERENCE_ANCHORS))
def test_reference_anchor_counts(network, side):
    assert count_anchors(network, side) == REFERENCE_ANCHORS[(network, side)]


@pytest.mark.parametrize("network,side", ALL_PRESETS)
def test_train_graph_shapes_every_preset(network, side):
    num_classes = 3
    sym = get_symbol_train(network, side, num_classes)
    assert sym.list_outputs() == ["cls_prob_output", "loc_loss_output", "cls_label_output",
                                  "det_out_output"]
    n = count_anchors(network, side)
    _, out_shapes, _ = sym.infer_shape(data=(2, 3, side, side), label=(2, 4, 6))
    assert out_shapes == [(2, num_classes + 1, n), (2, 4 * n), (2, n), (2, n, 6)]


def test_feature_maps_vgg300_and_mobilenet():
    vgg = describe_feature_layers("vgg16_reduced", 300)
    assert [layer["name"] for layer in vgg] == [
        "relu4_3", "relu7", "multi_feat_2_conv_3x3_relu", "multi_feat_3_conv_3x3_relu",
        "multi_feat_4_conv_3x3_relu", "multi_feat_5_conv_3x3_relu"]
    assert [layer["shape"][1:] for layer in vgg] == [(38, 38), (19, 19), (10, 10), (5, 5),
                                                     (3, 3), (1, 1)]
    assert [layer["anchors_per_location"] for layer in vgg] == [4, 6, 6, 6, 4, 4]
    assert [layer["anchors"] for layer in vgg] == [5776, 2166, 600, 150, 36, 4]
    mobile = describe_feature_layers("mobilenet", 300)
    assert [layer["shape"] for layer in mobile[:2]] == [(512, 19, 19), (1024, 10, 10)]
    assert sum(layer["anchors"] for layer in mobile) == count_anchors("mobilenet", 300)


def test_vgg512_paper_default_and_original_variant():
    """Ours: 1x1 last map (24564, the paper); strides[-1] = 1 rebuilds the original (24576)."""
    original_strides = [-1, -1, 2, 2, 2, 2, 1]
    assert count_anchors("vgg16_reduced", 512) == 24564
    assert count_anchors("vgg16_reduced", 512, strides=original_strides) == 24576
    assert describe_feature_layers("vgg16_reduced", 512)[-1]["shape"] == (256, 1, 1)
    original = describe_feature_layers("vgg16_reduced", 512, strides=original_strides)
    assert original[-1]["shape"] == (256, 2, 2)
    ours = get_symbol_train("vgg16_reduced", 512, 20)
    theirs = get_symbol_train("vgg16_reduced", 512, 20, strides=original_strides)
    shape = {"data": (1, 3, 512, 512), "label": (1, 2, 6)}
    args_ours = dict(zip(ours.list_arguments(), ours.infer_shape(**shape)[0]))
    args_theirs = dict(zip(theirs.list_arguments(), theirs.infer_shape(**shape)[0]))
    assert args_ours == args_theirs


def test_stride2_last_layer_equals_cell_00_of_stride1():
    """Why the original's SSD512 checkpoints still fit: on a 2x2 map a 3x3/p1 convolution
    with stride 2 computes exactly the stride-1 output at cell (0, 0)."""
    side = 128  # tiny: the last extra layer sees a 2x2 map
    stride2 = get_config("tiny", side)
    assert stride2["strides"][-1] == 2
    name = "multi_feat_4_conv_3x3_relu_output"
    outs = []
    for strides in (None, [-1, -1, -1, 2, 1]):
        overrides = {"strides": strides} if strides else {}
        sym = get_symbol_train("tiny", side, 2, with_det=False, **overrides)
        outs.append(sym.get_internals()[name])
    rng = np.random.default_rng(0)
    arg_shapes, _, aux_shapes = outs[0].infer_shape(data=(1, 3, side, side))
    args = {n: mx.nd.array(rng.normal(0, 0.1, s)) for n, s in
            zip(outs[0].list_arguments(), arg_shapes)}
    auxs = {n: mx.nd.ones(s) for n, s in zip(outs[0].list_auxiliary_states(), aux_shapes)}
    results = [o.bind(mx.cpu(), args=args, aux_states=auxs).forward()[0].asnumpy()
               for o in outs]
    assert results[0].shape[2:] == (1, 1) and results[1].shape[2:] == (2, 2)
    np.testing.assert_allclose(results[0][:, :, 0, 0], results[1][:, :, 0, 0], rtol=1e-5,
                               atol=1e-6)
    assert np.abs(results[0]).sum() > 0


# The original vgg16_reduced SSD300 (VOC, 20 classes) arguments, in graph order.
VGG300_ARGUMENTS = (
    ["data"]
    + [f"conv{g}_{i}_{p}" for g, n in ((1, 2), (2, 2), (3, 3), (4, 3)) for i in range(1, n + 1)
       for p in ("weight", "bias")]
    + ["relu4_3_scale", "relu4_3_loc_pred_conv_weight", "relu4_3_loc_pred_conv_bias"]
    + [f"conv5_{i}_{p}" for i in (1, 2, 3) for p in ("weight", "bias")]
    + ["fc6_weight", "fc6_bias", "fc7_weight", "fc7_bias",
       "relu7_loc_pred_conv_weight", "relu7_loc_pred_conv_bias"]
    + [name for k in (2, 3, 4, 5) for name in (
        f"multi_feat_{k}_conv_1x1_conv_weight", f"multi_feat_{k}_conv_1x1_conv_bias",
        f"multi_feat_{k}_conv_3x3_conv_weight", f"multi_feat_{k}_conv_3x3_conv_bias",
        f"multi_feat_{k}_conv_3x3_relu_loc_pred_conv_weight",
        f"multi_feat_{k}_conv_3x3_relu_loc_pred_conv_bias")]
    + ["relu4_3_cls_pred_conv_weight", "relu4_3_cls_pred_conv_bias",
       "relu7_cls_pred_conv_weight", "relu7_cls_pred_conv_bias"]
    + [name for k in (2, 3, 4, 5) for name in (
        f"multi_feat_{k}_conv_3x3_relu_cls_pred_conv_weight",
        f"multi_feat_{k}_conv_3x3_relu_cls_pred_conv_bias")]
    + ["label"]
)


def test_vgg300_argument_names_pinned():
    sym = get_symbol_train("vgg16_reduced", 300, 20)
    assert sorted(sym.list_arguments()) == sorted(VGG300_ARGUMENTS)
    assert len(sym.list_arguments()) == 73  # 71 parameters + data + label
    assert sym.list_auxiliary_states() == []
    arg_shapes = dict(zip(sym.list_arguments(),
                          sym.infer_shape(data=(1, 3, 300, 300), label=(1, 3, 6))[0]))
    assert arg_shapes["relu4_3_scale"] == (1, 512, 1, 1)
    assert arg_shapes["relu4_3_cls_pred_conv_weight"] == (4 * 21, 512, 3, 3)
    assert arg_shapes["relu7_loc_pred_conv_weight"] == (6 * 4, 1024, 3, 3)
    assert arg_shapes["multi_feat_2_conv_1x1_conv_weight"] == (256, 1024, 1, 1)
    assert arg_shapes["fc6_weight"] == (1024, 512, 3, 3)
    n_params = sum(int(np.prod(s)) for name, s in arg_shapes.items()
                   if name not in ("data", "label"))
    assert n_params == 26285486


def test_scale_and_bias_attributes():
    sym = get_symbol_train("vgg16_reduced", 300, 20)
    attrs = sym.attr_dict()
    assert attrs["relu4_3_scale"]["__wd_mult__"] == "0.1"
    assert "20" in attrs["relu4_3_scale"]["__init__"]
    assert attrs["relu7_cls_pred_conv_bias"]["__lr_mult__"] == "2.0"


def test_backbone_parameter_names():
    resnet = get_symbol_train("resnet50", 300, 20).list_arguments()
    for name in ("bn_data_gamma", "conv0_weight", "bn0_beta", "stage1_unit1_bn1_gamma",
                 "stage1_unit1_conv1_weight", "stage1_unit1_sc_weight",
                 "stage3_unit6_conv3_weight", "stage4_unit3_conv3_weight",
                 "stage3_unit6_plus_loc_pred_conv_weight",
                 "stage4_unit3_plus_cls_pred_conv_bias", "multi_feat_2_conv_1x1_conv_weight"):
        assert name in resnet, name
    assert "stage4_unit4_conv1_weight" not in resnet
    resnet_aux = get_symbol_train("resnet50", 300, 20).list_auxiliary_states()
    assert "stage2_unit1_bn3_moving_var" in resnet_aux
    inception = get_symbol_train("inceptionv3", 299, 20).list_arguments()
    for name in ("conv_conv2d_weight", "conv_4_batchnorm_gamma", "mixed_conv_conv2d_weight",
                 "mixed_tower_conv_1_conv2d_weight", "mixed_tower_2_conv_conv2d_weight",
                 "mixed_8_tower_1_conv_3_conv2d_weight",
                 "mixed_10_tower_1_mixed_conv_1_conv2d_weight",
                 "ch_concat_mixed_7_chconcat_loc_pred_conv_weight"):
        assert name in inception, name
    mobilenet = get_symbol_train("mobilenet", 300, 20).list_arguments()
    for name in ("conv_1_conv2d_weight", "conv_2_dw_conv2d_weight", "conv_14_batchnorm_beta",
                 "conv_12_relu_loc_pred_conv_weight", "multi_feat_6_conv_3x3_conv_weight"):
        assert name in mobilenet, name


def test_two_resnets_in_one_process():
    """The original's auto-named _plus12 broke on the second build; ours are stable."""
    first = get_symbol_train("resnet50", 300, 20)
    other = get_symbol_train("resnet101", 512, 20)
    second = get_symbol_train("resnet50", 300, 20)
    assert first.list_arguments() == second.list_arguments()
    assert first.tojson() == second.tojson()
    shape = {"data": (1, 3, 300, 300), "label": (1, 2, 6)}
    assert first.infer_shape(**shape)[1] == second.infer_shape(**shape)[1]
    assert "stage3_unit23_plus_loc_pred_conv_weight" in other.list_arguments()


def test_loss_wiring_matches_reference():
    sym = get_symbol_train("tiny", 128, 3, nms_thresh=0.45, force_suppress=True, nms_topk=200,
                           minimum_negative_samples=7)
    target = _node(sym, "multibox_target")["attrs"]
    assert target["overlap_threshold"] == "0.5"
    assert target["negative_mining_ratio"] == "3"
    assert target["negative_mining_thresh"] == "0.5"
    assert target["minimum_negative_samples"] == "7"
    assert target["ignore_label"] == "-1"
    assert target["variances"] == "(0.1, 0.1, 0.2, 0.2)"
    softmax = _node(sym, "cls_prob")
    assert softmax["op"] == "SoftmaxOutput"
    assert softmax["attrs"]["normalization"] == "valid"
    assert softmax["attrs"]["multi_output"] == "True"
    assert softmax["attrs"]["use_ignore"] == "True"
    loc_loss = _node(sym, "loc_loss")
    assert loc_loss["op"] == "MakeLoss" and loc_loss["attrs"]["normalization"] == "valid"
    assert _node(sym, "loc_loss_")["op"] == "smooth_l1"
    assert _node(sym, "cls_label")["attrs"]["grad_scale"] == "0"
    assert _node(sym, "det_out")["attrs"]["grad_scale"] == "0"
    detection = _node(sym, "detection")["attrs"]
    assert detection["nms_threshold"] == "0.45"
    assert detection["force_suppress"] == "True"
    assert detection["nms_topk"] == "200"
    default = get_symbol_train("tiny", 128, 3)
    assert _node(default, "multibox_target")["attrs"]["minimum_negative_samples"] == "0"


def test_without_detection_has_no_nms():
    with_det = get_symbol_train("tiny", 128, 3)
    without = get_symbol_train("tiny", 128, 3, with_det=False)
    assert "_contrib_MultiBoxDetection" in _ops(with_det)
    assert "_contrib_MultiBoxDetection" not in _ops(without)
    assert without.list_outputs() == ["cls_prob_output", "loc_loss_output", "cls_label_output"]
    assert without.list_arguments() == with_det.list_arguments()
    assert without.list_auxiliary_states() == with_det.list_auxiliary_states()


def test_inference_symbol():
    sym = get_symbol("vgg16_reduced", 300, 20, nms_thresh=0.45, force_suppress=True)
    assert sym.list_outputs() == ["detection_output"]
    assert "label" not in sym.list_arguments()
    _, out_shapes, _ = sym.infer_shape(data=(2, 3, 300, 300))
    assert out_shapes == [(2, 8732, 6)]
    assert _node(sym, "cls_prob")["op"] == "softmax"
    assert _node(sym, "detection")["attrs"]["force_suppress"] == "True"
    train_params = set(get_symbol_train("vgg16_reduced", 300, 20).list_arguments())
    assert set(sym.list_arguments()) == train_params - {"label"}


def test_tiny_accepts_multiples_of_32_and_overrides():
    for side in (64, 96, 160, 224, 320, 512):
        layers = describe_feature_layers("tiny", side)
        assert layers[0]["shape"][1:] == (side // 8, side // 8)
    default = get_config("tiny", 128)
    sizes = [[0.1, 0.15], [0.2, 0.3], [0.35, 0.45], [0.5, 0.6], [0.7, 0.8, 0.9]]
    custom = get_config("tiny", 128, sizes=sizes, ratios=[1, 2, 0.5, 3])
    assert custom["sizes"] == sizes
    assert custom["ratios"] == [[1, 2, 0.5, 3]] * 5
    assert default["ratios"] == [[1, 2, 0.5]] * 5  # the preset itself is unchanged
    # anchors per location = len(sizes) - 1 + len(ratios): 5 everywhere, 6 on the last layer
    per_map = [16 * 16, 8 * 8, 4 * 4, 2 * 2, 1]
    expected = sum(cells * 5 for cells in per_map[:4]) + per_map[4] * 6
    assert count_anchors("tiny", 128, sizes=sizes, ratios=[1, 2, 0.5, 3]) == expected
    sym = get_symbol_train("tiny", 128, 2, sizes=sizes, ratios=[1, 2, 0.5, 3])
    assert sym.infer_shape(data=(1, 3, 128, 128), label=(1, 2, 6))[1][0] == (1, 3, expected)


def test_get_config_returns_independent_copies():
    config = get_config("vgg16_reduced", 300)
    config["sizes"][0][0] = 0.5
    config["from_layers"].append("x")
    assert get_config("vgg16_reduced", 300)["sizes"][0][0] == 0.1
    assert len(get_config("vgg16_reduced", 300)["from_layers"]) == 6
    assert get_config("vgg16_reduced", (3, 300, 300))["steps"][0] == pytest.approx(8 / 300)


@pytest.mark.parametrize("call,fragments", [
    (lambda: get_config("vgg19", 300), ["vgg19", "vgg16_reduced", "tiny", "resnet50"]),
    (lambda: get_config("vgg16_reduced", 320), ["320", "300, 512"]),
    (lambda: get_config("inceptionv3", 300), ["300", "299, 512"]),
    (lambda: get_config("tiny", 100), ["100", "multiples of 32 from 64 to 512"]),
    (lambda: get_config("tiny", (3, 128, 96)), ["(3, 128, 96)"]),
    (lambda: get_config("tiny", 128, sizes=[[0.1, 0.2]] * 4),
     ["sizes has 4 entries", "from_layers has 5", "tiny/128"]),
    (lambda: get_config("tiny", 128, ratio=[1, 2]), ["ratio", "ratios"]),
    (lambda: get_config("tiny", 128, ratios=[[1], [], [1], [1], [1]]), ["ratios[1]"]),
    (lambda: get_config("vgg16_reduced", 300, steps=[0.1, 0.2]), ["steps has 2 entries"]),
    (lambda: get_config("vgg16_reduced", 300, num_filters=[-1, -1, 512, 256, 256, 256]),
     ["normalizations[0]", "num_filters[0]"]),
    (lambda: get_symbol_train("tiny", 128, 0), ["num_classes", "0"]),
    (lambda: get_symbol("tiny", 128, 3, nms_thresh=1.5), ["nms_thresh", "1.5"]),
    (lambda: get_symbol_train("tiny", 128, 3, minimum_negative_samples=-1),
     ["minimum_negative_samples"]),
])
def test_bad_input_raises_value_error(call, fragments):
    with pytest.raises(ValueError) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value)
