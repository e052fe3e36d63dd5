"""The non-finite guard of DetectionModule (issue 18): one fused multi_sum_sq per device for
the small arrays, one all_finite for each large one.

Its answer must equal the element-wise check of every output and updated gradient: the first
array (outputs first, then gradients in parameter order) holding a NaN or Inf, and None for
finite values however large (a sum of squares overflows above ~1.8e19).
"""
from __future__ import annotations

from config.mxnet_compat import mx
import numpy as np
import pytest

from training import detection_module
from training.detection_module import DetectionModule
from symbol.symbol_factory import get_symbol_train


def _module(contexts, fixed=None):
    rng = np.random.RandomState(0)
    batch = 2 * len(contexts)
    label = -np.ones((batch, 3, 6), np.float32)
    for i in range(batch):
        x, y = rng.uniform(0.05, 0.5, 2)
        label[i, 0] = [rng.randint(3), x, y, x + 0.4, y + 0.4, 0]
    data = mx.io.DataBatch([mx.nd.array(rng.uniform(-60, 60, (batch, 3, 64, 64)))],
                           [mx.nd.array(label)])
    module = DetectionModule(get_symbol_train("tiny", 64, 3, with_det=False),
                             label_names=("label",), context=contexts,
                             fixed_param_names=fixed)
    module.bind([("data", (batch, 3, 64, 64))], [("label", label.shape)])
    mx.random.seed(0)
    module.init_params(mx.init.Xavier())
    module.forward_backward(data)
    return module


def _reference(module):
    """Element-wise answer over the same arrays, in the same order."""
    for name, array in module._guarded_arrays():
        if not np.isfinite(array.asnumpy()).all():
            return name
    return None


@pytest.mark.parametrize("own_check_size", [None, 1, 500])   # default, all large, mixed
@pytest.mark.parametrize("contexts", [[mx.cpu()], [mx.cpu(0), mx.cpu(1)]])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 3e19, -1e30])
def test_guard_matches_elementwise_check(contexts, value, own_check_size, monkeypatch):
    if own_check_size is not None:
        monkeypatch.setattr(detection_module, "_OWN_CHECK_SIZE", own_check_size)
    module = _module(contexts)
    pairs = module._guarded_arrays()
    assert module._first_non_finite() is None
    names = [name for name, _ in pairs]
    assert names[0].startswith("output ") and names[-1].startswith("gradient of ")
    # poison one gradient in the middle and one later: the first one is reported
    rng = np.random.RandomState(1)
    picks = sorted(rng.choice(np.arange(len(pairs) // 2, len(pairs)), 2, replace=False))
    for index in picks:
        array = pairs[index][1]
        flat = array.reshape((-1,))
        flat[int(rng.randint(flat.size))] = value
    expected = None if np.isfinite(value) else names[picks[0]]
    assert _reference(module) == expected
    assert module._first_non_finite() == expected


def test_guard_names_a_non_finite_output_first():
    module = _module([mx.cpu()])
    pairs = module._guarded_arrays()
    grad = next(array for name, array in pairs if name.startswith("gradient"))
    grad[:] = np.nan
    out_name, out = next((name, array) for name, array in pairs if "loc_loss" in name)
    out.reshape((-1,))[0] = np.inf
    assert out_name.startswith("output ")
    assert module._first_non_finite() == out_name == _reference(module)


def test_guard_skips_frozen_parameters():
    module = _module([mx.cpu()], fixed=["tiny_conv1_weight"])
    names = [name for name, _ in module._guarded_arrays()]
    assert "gradient of tiny_conv1_weight" not in names
    assert "gradient of tiny_conv2_weight" in names
