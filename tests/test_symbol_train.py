"""One real forward/backward/update step of every preset (the big ones marked slow)."""
from __future__ import annotations

import json
import time

from config.mxnet_compat import mx
import numpy as np
import pytest

from symbol.symbol_factory import get_symbol_train


def _label(batch: int) -> np.ndarray:
    """(B, 3, 6) [cls, x1, y1, x2, y2, difficult]; one -1 padding row per image."""
    label = np.full((batch, 3, 6), -1.0, dtype=np.float32)
    label[:, 0] = [0, 0.1, 0.2, 0.5, 0.6, 0]
    label[:, 1] = [1, 0.55, 0.5, 0.95, 0.9, 1]
    return label


def _module(network: str, side: int, batch: int, num_classes: int = 2) -> mx.mod.Module:
    sym = get_symbol_train(network, side, num_classes, with_det=False)
    mod = mx.mod.Module(sym, data_names=("data",), label_names=("label",), context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch, 3, side, side))],
             label_shapes=[("label", (batch, 3, 6))])
    mx.random.seed(0)
    mod.init_params(initializer=mx.init.Xavier())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01,
                                                          "momentum": 0.9, "wd": 5e-4})
    return mod


def _train_step(network: str, side: int, batch: int) -> float:
    """Bind, run one step, check the outputs and the update; return the step's seconds."""
    mod = _module(network, side, batch)
    rng = np.random.default_rng(0)
    data = mx.nd.array(rng.uniform(-100, 100, (batch, 3, side, side)))
    batch_data = mx.io.DataBatch([data], [mx.nd.array(_label(batch))])
    before = {k: v.copy() for k, v in mod.get_params()[0].items()}
    start = time.perf_counter()
    mod.forward_backward(batch_data)
    mod.update()
    cls_prob, loc_loss, cls_label = [out.asnumpy() for out in mod.get_outputs()]
    seconds = time.perf_counter() - start
    assert np.isfinite(cls_prob).all() and np.isfinite(loc_loss).all()
    np.testing.assert_allclose(cls_prob.sum(axis=1), 1.0, rtol=1e-4)
    # matched anchors: positives get class id + 1, mined negatives 0, the rest -1
    assert set(np.unique(cls_label)) <= {-1.0, 0.0, 1.0, 2.0}
    assert (cls_label == 1).any() and (cls_label == 2).any() and (cls_label == 0).any()
    assert loc_loss.sum() > 0
    after = mod.get_params()[0]
    changed = [k for k in before if not np.array_equal(before[k].asnumpy(), after[k].asnumpy())]
    assert any(k.endswith("cls_pred_conv_weight") for k in changed)
    assert any(k.endswith("loc_pred_conv_weight") for k in changed)
    print(f"{network}@{side} batch {batch}: train step {seconds:.3f} s")
    return seconds


def test_tiny_train_step():
    _train_step("tiny", 128, 2)


@pytest.mark.slow
@pytest.mark.parametrize("network,side", [("vgg16_reduced", 300), ("resnet50", 300),
                                          ("resnet101", 300), ("inceptionv3", 299),
                                          ("mobilenet", 300)])
def test_preset_train_step(network, side):
    _train_step(network, side, 1)


def test_tiny_learns_a_fixed_batch():
    """Twenty SGD steps on one batch lower the classification loss of the tiny preset."""
    mod = _module("tiny", 128, 2)
    rng = np.random.default_rng(1)
    image = rng.uniform(-30, 30, (2, 3, 128, 128)).astype(np.float32)
    image[:, :, 13:77, 26:90] += 80  # a bright square where label row 0 is
    label = _label(2)
    label[:, 0] = [0, 26 / 128, 13 / 128, 90 / 128, 77 / 128, 0]
    batch = mx.io.DataBatch([mx.nd.array(image)], [mx.nd.array(label)])

    def cross_entropy() -> float:
        mod.forward(batch, is_train=True)
        prob, _, target = [out.asnumpy() for out in mod.get_outputs()]
        b, n = np.nonzero(target >= 0)
        return float(-np.log(prob[b, target[b, n].astype(int), n] + 1e-8).mean())

    first = cross_entropy()
    for _ in range(20):
        mod.forward_backward(batch)
        mod.update()
    assert cross_entropy() < 0.5 * first


def _concat_ranks(sym: mx.sym.Symbol, side: int, batch: int) -> dict[str, int]:
    """Rank of the output of every Concat node of ``sym`` for a (batch, 3, side, side) input."""
    internals = sym.get_internals()
    names = [n["name"] for n in json.loads(sym.tojson())["nodes"] if n["op"] == "Concat"]
    outputs = [internals[f"{name}_output"] for name in names]
    _, shapes, _ = mx.sym.Group(outputs).infer_shape(data=(batch, 3, side, side))
    return {name: len(shape) for name, shape in zip(names, shapes)}


@pytest.mark.parametrize("network,side", [("tiny", 160), ("vgg16_reduced", 300),
                                          ("mobilenet", 300), ("resnet50", 300)])
@pytest.mark.parametrize("fast_ops", [False, True])
def test_head_concats_avoid_the_leaking_mkldnn_concat(network, side, fast_ops):
    # MXNet 1.9's MKL-DNN Concat (2-D and 4-D inputs) leaks native memory at every training
    # step; the SSD head must join 3-D tensors, which MXNet's own Concat handles (the fast
    # head also stacks its loc + cls weights and biases)
    sym = get_symbol_train(network, side, 3, with_det=False, fast_ops=fast_ops)
    ranks = _concat_ranks(sym, side, 2)
    head = {name: rank for name, rank in ranks.items() if name.startswith("multibox_")}
    assert set(head) == {"multibox_loc_concat", "multibox_cls_concat", "multibox_anchors"}
    stacks = {name: rank for name, rank in ranks.items() if name.endswith("_stack")}
    assert bool(stacks) == fast_ops
    assert all(rank == 3 for rank in ranks.values()), ranks
    assert ranks == {**head, **stacks}     # these trunks have no concatenation of their own


@pytest.mark.parametrize("ratio", [3.0, 6.0])
def test_negative_mining_ratio_reaches_multibox_target(ratio):
    sym = get_symbol_train("tiny", 128, 2, with_det=False, negative_mining_ratio=ratio)
    node = next(n for n in json.loads(sym.tojson())["nodes"]
                if n["op"] == "_contrib_MultiBoxTarget")
    assert float(node["attrs"]["negative_mining_ratio"]) == ratio
    # more mined background anchors per image: more cls targets of 0
    mod_targets = []
    for value in (3.0, ratio * 2):
        graph = get_symbol_train("tiny", 128, 2, with_det=False, negative_mining_ratio=value)
        ex = graph.simple_bind(mx.cpu(), data=(2, 3, 128, 128), label=(2, 3, 6), grad_req="null")
        for name, array in ex.arg_dict.items():
            array[:] = _label(2) if name == "label" else np.random.default_rng(0).normal(
                size=array.shape) * 0.01
        ex.forward(is_train=True)
        mod_targets.append(int((ex.outputs[2].asnumpy() == 0).sum()))
    assert mod_targets[1] > mod_targets[0]
