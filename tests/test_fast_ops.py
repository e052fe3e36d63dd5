"""The training-speed forms of the SSD head (``get_symbol_train(..., fast_ops=True)``).

Issue 18: the loc and cls prediction convolutions of a feature map run as one convolution
padded to a multiple of 16 output channels, and ``scale * L2Normalization`` as two 1x1
convolutions. They must be the same function with the same parameters as the plain graph
(the one that is saved, evaluated and deployed), up to float rounding.
"""
from __future__ import annotations

import json
import os
import pickle

from config.mxnet_compat import mx
import numpy as np
import pytest

from symbol.common import feature_channels, fused_predictions, scaled_l2_normalization
from symbol.resnet import strided_projection
from symbol.symbol_factory import get_symbol_train
from train_net import train_net

from conftest import tiny_train_kwargs


def _bind(sym: mx.sym.Symbol, **shapes) -> mx.executor.Executor:
    return sym.simple_bind(mx.cpu(), grad_req="write", **shapes)


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))


@pytest.mark.parametrize("num_anchors,widths", [(4, (4, 5)), (6, (4, 5)), (6, (4, 21)),
                                                (4, (4, 2)), (3, (4, 8))])
def test_fused_predictions_equal_two_convolutions(num_anchors, widths):
    channels, side = 32, 5
    data = mx.sym.Variable("data")
    plain = []
    for kind, width in zip(("loc", "cls"), widths):
        conv = mx.sym.Convolution(data, kernel=(3, 3), pad=(1, 1), num_filter=num_anchors * width,
                                  name=f"f_{kind}_pred_conv")
        plain.append(mx.sym.Reshape(mx.sym.transpose(conv, axes=(0, 2, 3, 1)),
                                    shape=(0, -1, width)))
    fused = fused_predictions(data, "f", channels, num_anchors, widths)
    shapes = {"data": (2, channels, side, side)}
    ex_plain, ex_fused = _bind(mx.sym.Group(plain), **shapes), _bind(mx.sym.Group(fused), **shapes)
    assert sorted(ex_plain.arg_dict) == sorted(ex_fused.arg_dict)
    rng = np.random.default_rng(0)
    for name, array in ex_plain.arg_dict.items():
        array[:] = rng.normal(size=array.shape)
        ex_fused.arg_dict[name][:] = array
    heads = [mx.nd.array(rng.normal(size=out.shape)) for out in ex_plain.outputs]
    for ex in (ex_plain, ex_fused):
        ex.forward(is_train=True)
        ex.backward(heads)
    for a, b in zip(ex_plain.outputs, ex_fused.outputs):
        assert a.shape == b.shape
        assert _rel_diff(a.asnumpy(), b.asnumpy()) < 1e-5
    for name in ex_plain.grad_dict:
        assert _rel_diff(ex_plain.grad_dict[name].asnumpy(),
                         ex_fused.grad_dict[name].asnumpy()) < 1e-5, name
    # one convolution, output channels a multiple of 16 (MKL-DNN's AVX-512 kernels)
    convs = [n for n in json.loads(mx.sym.Group(fused).tojson())["nodes"]
             if n["op"] == "Convolution"]
    assert len(convs) == 1
    total = num_anchors * sum(widths)
    assert int(convs[0]["attrs"]["num_filter"]) == -(-total // 16) * 16


def test_scaled_l2_normalization_equals_the_operator():
    channels = 24
    data = mx.sym.Variable("data")
    scale = mx.sym.Variable("s_scale", shape=(1, channels, 1, 1))
    plain = mx.sym.broadcast_mul(scale, mx.sym.L2Normalization(data, mode="channel"))
    fast = scaled_l2_normalization(data, scale, channels, "s")
    shapes = {"data": (2, channels, 7, 7)}
    ex_plain, ex_fast = _bind(plain, **shapes), _bind(fast, **shapes)
    assert sorted(ex_plain.arg_dict) == sorted(ex_fast.arg_dict) == ["data", "s_scale"]
    rng = np.random.default_rng(1)
    values = {"data": rng.normal(size=shapes["data"]) * 30,
              "s_scale": rng.uniform(5, 25, (1, channels, 1, 1))}
    values["data"][0, :, 0, 0] = 0                  # an all-zero pixel: eps keeps it finite
    for ex in (ex_plain, ex_fast):
        for name, value in values.items():
            ex.arg_dict[name][:] = value
    head = mx.nd.array(rng.normal(size=shapes["data"]))
    for ex in (ex_plain, ex_fast):
        ex.forward(is_train=True)
        ex.backward([head])
    assert np.isfinite(ex_fast.outputs[0].asnumpy()).all()
    assert _rel_diff(ex_plain.outputs[0].asnumpy(), ex_fast.outputs[0].asnumpy()) < 1e-5
    for name in ("data", "s_scale"):
        assert _rel_diff(ex_plain.grad_dict[name].asnumpy(),
                         ex_fast.grad_dict[name].asnumpy()) < 1e-4, name


@pytest.mark.parametrize("side", [9, 10])
def test_strided_projection_equals_the_strided_convolution(side):
    data = mx.sym.Variable("data")
    plain = mx.sym.Convolution(data, num_filter=32, kernel=(1, 1), stride=(2, 2), no_bias=True,
                               name="p_sc")
    fast = strided_projection(data, 32, 2, "p_sc")
    shapes = {"data": (2, 16, side, side)}
    ex_plain, ex_fast = _bind(plain, **shapes), _bind(fast, **shapes)
    assert sorted(ex_plain.arg_dict) == sorted(ex_fast.arg_dict) == ["data", "p_sc_weight"]
    rng = np.random.default_rng(2)
    for name, array in ex_plain.arg_dict.items():
        array[:] = rng.normal(size=array.shape)
        ex_fast.arg_dict[name][:] = array
    head = mx.nd.array(rng.normal(size=ex_plain.outputs[0].shape))
    for ex in (ex_plain, ex_fast):
        ex.forward(is_train=True)
        ex.backward([head])
    assert ex_plain.outputs[0].shape == ex_fast.outputs[0].shape
    assert _rel_diff(ex_plain.outputs[0].asnumpy(), ex_fast.outputs[0].asnumpy()) < 1e-5
    for name in ("data", "p_sc_weight"):
        assert _rel_diff(ex_plain.grad_dict[name].asnumpy(),
                         ex_fast.grad_dict[name].asnumpy()) < 1e-5, name


def test_feature_channels():
    data = mx.sym.Variable("data")
    assert feature_channels(mx.sym.Convolution(data, kernel=(3, 3), num_filter=40)) == 40
    assert feature_channels(mx.sym.FullyConnected(data, num_hidden=7)) is None


def _label(batch: int) -> np.ndarray:
    label = np.full((batch, 3, 6), -1.0, dtype=np.float32)
    label[:, 0] = [1, 0.1, 0.2, 0.5, 0.6, 0]
    label[0, 1] = [0, 0.5, 0.5, 0.9, 0.95, 0]
    return label


def _compare_graphs(network: str, side: int, num_classes: int, batch: int = 2):
    """Forward + backward of the plain and the fast training graph on the same values."""
    graphs = {fast: get_symbol_train(network, side, num_classes, with_det=False, fast_ops=fast)
              for fast in (False, True)}
    assert sorted(graphs[False].list_arguments()) == sorted(graphs[True].list_arguments())
    assert sorted(graphs[False].list_auxiliary_states()) == \
        sorted(graphs[True].list_auxiliary_states())
    shapes = {"data": (batch, 3, side, side), "label": (batch, 3, 6)}
    arg_shapes = {fast: dict(zip(g.list_arguments(), g.infer_shape(**shapes)[0]))
                  for fast, g in graphs.items()}
    assert arg_shapes[False] == arg_shapes[True]
    exes = {fast: _bind(g, **shapes) for fast, g in graphs.items()}
    rng = np.random.default_rng(0)
    plain = exes[False]
    for name, array in plain.arg_dict.items():
        if name == "label":
            array[:] = _label(batch)
        elif name == "data":
            array[:] = rng.uniform(-120, 130, array.shape)
        elif name.endswith("_scale"):
            array[:] = 20
        elif name.endswith("_gamma"):
            array[:] = 1
        else:
            array[:] = rng.normal(size=array.shape) * (0.02 if name.endswith("weight") else 0.01)
    for name, array in plain.aux_dict.items():
        array[:] = 1 if name.endswith("var") else 0
    for name in plain.arg_dict:
        exes[True].arg_dict[name][:] = plain.arg_dict[name]
    for name in plain.aux_dict:
        exes[True].aux_dict[name][:] = plain.aux_dict[name]
    for ex in exes.values():
        ex.forward(is_train=True)
        ex.backward()
    return exes


@pytest.mark.parametrize("network,side,num_classes", [
    ("tiny", 96, 4), ("tiny_photo", 96, 1),
    pytest.param("vgg16_reduced", 300, 20, marks=pytest.mark.slow)])
def test_fast_training_graph_matches_the_plain_one(network, side, num_classes):
    exes = _compare_graphs(network, side, num_classes)
    for a, b in zip(exes[False].outputs, exes[True].outputs):
        assert _rel_diff(a.asnumpy(), b.asnumpy()) < 1e-5
    for name, grad in exes[False].grad_dict.items():
        if grad is not None and name not in ("data", "label"):
            assert _rel_diff(grad.asnumpy(), exes[True].grad_dict[name].asnumpy()) < 1e-4, name


def _l2_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / (np.linalg.norm(a) + 1e-30))


@pytest.mark.slow
def test_fast_resnet_graph_differs_only_by_rounding():
    """ResNet's gradients are ill-conditioned (BatchNorm on batch 2, ReLU masks that flip under
    float rounding), so the fast graph's gradients are held to the plain graph's own spread:
    no worse than 5x what a 1e-7 relative change of the input does to the plain graph."""
    exes = _compare_graphs("resnet50", 300, 4)
    for a, b in zip(exes[False].outputs, exes[True].outputs):
        assert _rel_diff(a.asnumpy(), b.asnumpy()) < 1e-5
    plain = exes[False]
    before = {k: g.asnumpy() for k, g in plain.grad_dict.items() if g is not None}
    data = plain.arg_dict["data"].asnumpy()
    plain.arg_dict["data"][:] = data * (1 + 1e-7 * np.random.default_rng(5).normal(size=data.shape))
    plain.forward(is_train=True)
    plain.backward()
    names = [name for name in before if name not in ("data", "label")]
    reference = np.concatenate([before[name].ravel() for name in names])
    spread = _l2_rel(reference, np.concatenate([plain.grad_dict[n].asnumpy().ravel()
                                                for n in names]))
    fast = np.concatenate([exes[True].grad_dict[n].asnumpy().ravel() for n in names])
    assert _l2_rel(reference, fast) <= 5 * spread, (_l2_rel(reference, fast), spread)
    for name in names:        # a wiring error would move a parameter's gradient by ~100 %
        assert _l2_rel(before[name], exes[True].grad_dict[name].asnumpy()) < 0.2, name


def test_train_net_binds_the_fast_graph_and_saves_the_plain_one(synth_data, tmp_path, monkeypatch):
    import fit

    bound = []
    original_fit = fit.fit

    def spy(symbol, *rest, **kwargs):
        bound.append(symbol)
        return original_fit(symbol, *rest, **kwargs)

    monkeypatch.setattr("train_net.fit.fit", spy)
    prefix = os.path.join(str(tmp_path), "ssd")
    module = train_net(**tiny_train_kwargs(synth_data, prefix))
    ops = {n["op"] for n in json.loads(bound[0].tojson())["nodes"]}
    assert "slice_axis" in ops                              # the fused head was trained
    saved_path = os.path.join(str(tmp_path), "ssd_tiny_64-symbol.json")
    saved_symbol = mx.sym.load(saved_path)
    # the optimizer state is written in the saved (plain) graph's parameter order
    assert bound[0].list_arguments() != saved_symbol.list_arguments()
    params = [n for n in saved_symbol.list_arguments() if n not in ("data", "label")]
    arg_params = module.get_params()[0]
    with open(os.path.join(str(tmp_path), "ssd_tiny_64-0001.states"), "rb") as f:
        states = pickle.loads(f.read())
    assert sorted(states) == list(range(len(params)))
    for index, name in enumerate(params):
        assert states[index].shape == arg_params[name].shape, name
    with open(saved_path) as f:
        saved = json.load(f)["nodes"]
    names = {n["name"] for n in saved if n["op"] == "Convolution"}
    assert any(name.endswith("_loc_pred_conv") for name in names)
    assert any(name.endswith("_cls_pred_conv") for name in names)
    assert not any(name.endswith("_pred_conv") and "_loc_" not in name and "_cls_" not in name
                   for name in names)


def test_optimizer_state_of_the_plain_graph_resumes_into_the_fast_one(tmp_path):
    """A .states file written before the fast head (plain parameter order) still resumes."""
    from training.detection_module import DetectionModule

    side, batch = 96, 2
    plain = get_symbol_train("tiny", side, 4, with_det=False)
    fast = get_symbol_train("tiny", side, 4, with_det=False, fast_ops=True)
    order = get_symbol_train("tiny", side, 4, with_det=True).list_arguments()
    states_path = str(tmp_path / "plain.states")
    shapes = dict(data_shapes=[("data", (batch, 3, side, side))],
                  label_shapes=[("label", (batch, 3, 6))])
    optimizer = dict(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9})

    old = DetectionModule(plain, label_names=("label",), context=mx.cpu())
    old.bind(**shapes)
    mx.random.seed(0)
    old.init_params(initializer=mx.init.Xavier())
    old.init_optimizer(**optimizer)
    data = mx.nd.array(np.random.default_rng(0).uniform(-100, 100, (batch, 3, side, side)))
    old.forward_backward(mx.io.DataBatch([data], [mx.nd.array(_label(batch))]))
    old.update()
    old.save_optimizer_states(states_path)

    new = DetectionModule(fast, label_names=("label",), context=mx.cpu(), param_order=order,
                          states_path=states_path)
    new.bind(**shapes)
    new.init_params(arg_params=old.get_params()[0], aux_params=old.get_params()[1])
    new.init_optimizer(**optimizer)
    old_index = {name: k for k, name in enumerate(old._param_names)}
    new_index = {name: k for k, name in enumerate(new._param_names)}
    assert old_index != new_index
    for name in old._param_names:
        np.testing.assert_array_equal(new._updater.states[new_index[name]].asnumpy(),
                                      old._updater.states[old_index[name]].asnumpy())
    # and written back in the plain order
    new.save_optimizer_states(str(tmp_path / "again.states"))
    with open(tmp_path / "again.states", "rb") as f:
        again = pickle.loads(f.read())
    for name, k in old_index.items():
        np.testing.assert_array_equal(again[k].asnumpy(), old._updater.states[k].asnumpy())


def test_fast_resnet_slices_only_the_last_stage_projection():
    """The slice form is used where it measured faster: the 2048-filter projection only."""
    from symbol.symbol_factory import get_symbol_train
    sym = get_symbol_train("resnet50", 300, 4, with_det=False, fast_ops=True)
    sliced = [name for name in sym.get_internals().list_outputs()
              if name.endswith("_sc_subsample_output")]
    assert sliced == ["stage4_unit1_sc_subsample_output"]
    plain = get_symbol_train("resnet50", 300, 4, with_det=False)
    assert set(plain.list_arguments()) == set(sym.list_arguments())    # same parameters
