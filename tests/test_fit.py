"""fit.py / train_net.py behaviour: devices, non-finite guard, freeze, finetune, cards."""
from __future__ import annotations

import json
import logging
import os

from config.mxnet_compat import mx
import numpy as np
import pytest

import fit
from training.detection_module import NonFiniteError
from evaluate.eval_metric import MultiBoxMetric
from symbol.symbol_factory import get_symbol_train
from conftest import tiny_train_kwargs
from train_net import train_net


def _kwargs(synth, prefix, **overrides):
    return tiny_train_kwargs(synth, prefix, **overrides)


def _card(path):
    with open(path) as f:
        return json.load(f)


def _params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(path).items()}


# ---------------------------------------------------------------- synthetic-batch training
class _InjectNaN(mx.io.DataIter):
    """Wraps an iterator; batch ``at`` (0-based, counted over all epochs) gets NaN data."""

    def __init__(self, base: mx.io.DataIter, at: int) -> None:
        super().__init__(base.batch_size)
        self.base, self.at, self.count = base, at, 0

    @property
    def provide_data(self):
        return self.base.provide_data

    @property
    def provide_label(self):
        return self.base.provide_label

    def reset(self):
        self.base.reset()

    def next(self):
        batch = self.base.next()
        if self.count == self.at:
            batch = mx.io.DataBatch([batch.data[0] * np.nan], batch.label, pad=batch.pad)
        self.count += 1
        return batch


def _duplicated_batches(num_batches=2, half=2, side=64, seed=0):
    """Batches whose two halves are identical images and labels (see the 2-device test)."""
    rng = np.random.RandomState(seed)
    data = rng.uniform(-60, 60, (num_batches, half, 3, side, side)).astype(np.float32)
    label = -np.ones((num_batches, half, 3, 6), np.float32)
    for b in range(num_batches):
        for i in range(half):
            x1, y1 = rng.uniform(0.05, 0.5, 2)
            label[b, i, 0] = [rng.randint(3), x1, y1, x1 + 0.4, y1 + 0.4, 0]
    data = np.concatenate([data, data], axis=1).reshape(-1, 3, side, side)  # (2*N*half, ...)
    label = np.concatenate([label, label], axis=1).reshape(-1, 3, 6)
    return mx.io.NDArrayIter(data, label, batch_size=2 * half, label_name="label")


def _init_params(symbol, data_iter):
    mx.random.seed(0)
    module = mx.mod.Module(symbol, label_names=("label",), context=mx.cpu())
    module.bind(data_iter.provide_data, data_iter.provide_label)
    module.init_params(mx.init.Xavier())
    return module.get_params()


def _fit_small(tmp_path, contexts, kvstore=None, data_iter=None, nan_policy="stop", tag="a",
               epochs=1):
    symbol = get_symbol_train("tiny", 64, 3, with_det=False)
    data_iter = data_iter or _duplicated_batches()
    args, auxs = _init_params(symbol, data_iter.base if hasattr(data_iter, "base") else data_iter)
    params = fit.get_optimizer_params("sgd", 0.05, 0.9, 0.0, None, len(contexts))
    module = fit.fit(symbol, data_iter, None, contexts=contexts,
                     prefix=str(tmp_path / tag), begin_epoch=0, end_epoch=epochs,
                     arg_params=args, aux_params=auxs, fixed_param_names=None,
                     eval_metric=MultiBoxMetric(), valid_metric=None, optimizer="sgd",
                     optimizer_params=params, save_symbol=symbol,
                     kvstore=fit.create_kvstore(kvstore, len(contexts)), nan_policy=nan_policy)
    return module


@pytest.mark.parametrize("kvstore", ["device", "local"])
def test_two_cpu_contexts_equal_one(tmp_path, kvstore):
    """The losses use normalization='valid' per device, so with N devices each computes the
    mean over its own half and the kvstore sums them; rescale_grad = 1/N turns that sum
    into the average of per-device means. That equals the single-device gradient only when
    every device has the same valid-anchor count, so the batch's halves are identical
    (BatchNorm statistics of duplicated halves are unchanged too)."""
    one = _fit_small(tmp_path, [mx.cpu(0)], tag="one")
    two = _fit_small(tmp_path, [mx.cpu(0), mx.cpu(1)], kvstore=kvstore, tag="two")
    a, _ = one.get_params()
    b, _ = two.get_params()
    init, _ = _init_params(get_symbol_train("tiny", 64, 3, with_det=False), _duplicated_batches())
    assert max(np.abs(a[k].asnumpy() - init[k].asnumpy()).max() for k in a) > 1e-3
    for key in a:
        np.testing.assert_allclose(a[key].asnumpy(), b[key].asnumpy(), rtol=1e-4, atol=2e-5,
                                   err_msg=key)


def test_nan_stops_before_update_and_keeps_checkpoint(tmp_path, caplog):
    # 2 batches per epoch: batch 3 overall is the 2nd batch of the 2nd epoch
    data = _InjectNaN(_duplicated_batches(), at=3)
    with pytest.raises(NonFiniteError, match=r"epoch 1 .*batch 2.*--lr"):
        _fit_small(tmp_path, [mx.cpu()], data_iter=data, tag="nan", epochs=3)
    first = str(tmp_path / "nan-0001.params")
    assert os.path.isfile(first)
    assert not os.path.exists(str(tmp_path / "nan-0002.params"))
    assert all(np.isfinite(v).all() for v in _params(first).values())


def test_nan_skip_policy_skips_that_update(tmp_path, caplog):
    data = _InjectNaN(_duplicated_batches(), at=1)
    with caplog.at_level(logging.WARNING):
        module = _fit_small(tmp_path, [mx.cpu()], data_iter=data, tag="skip", epochs=2,
                            nan_policy="skip")
    assert module.num_skipped == 1
    assert "update skipped" in caplog.text
    arg, _ = module.get_params()
    assert all(np.isfinite(v.asnumpy()).all() for v in arg.values())
    card = _card(str(tmp_path / "skip-0002.json"))
    assert card["skipped_batches"] == 1


def test_nccl_on_cpu_build_is_a_clear_error():
    if mx.runtime.Features().is_enabled("NCCL"):
        pytest.skip("this build has NCCL")
    with pytest.raises(ValueError, match="--kv-store nccl"):
        fit.create_kvstore("nccl", 2)


# ---------------------------------------------------------------- train_net on records
def test_card_and_best_checkpoint(synth_data, tmp_path):
    prefix = str(tmp_path / "card")
    train_net(**_kwargs(synth_data, prefix, val_path=synth_data.val_rec, end_epoch=2))
    full = prefix + "_tiny_64"
    card = _card(full + "-0002.json")
    assert card["epoch"] == 2 and card["seed"] == 3 and card["network"] == "tiny"
    assert card["environment"]["mxnet"] == mx.__version__
    assert "mAP" in card["metrics"]["validation"]
    assert "CrossEntropy" in card["metrics"]["train"]
    best = _card(full + "-best.json")
    assert best["metrics"]["validation"]["mAP"] == max(
        _card(f"{full}-{e:04d}.json")["metrics"]["validation"]["mAP"] for e in (1, 2))
    assert os.path.isfile(full + "-best.params") and os.path.isfile(full + "-0002.states")
    sym, args, _ = mx.model.load_checkpoint(full, 2)       # original-compatible format
    assert "det_out_output" in sym.list_outputs()
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_freeze_keeps_parameters(synth_data, tmp_path, caplog):
    src = str(tmp_path / "src")
    train_net(**_kwargs(synth_data, src))
    dst = str(tmp_path / "dst")
    with caplog.at_level(logging.INFO):
        train_net(**_kwargs(synth_data, dst, pretrained=src + "_tiny_64", epoch=1,
                            freeze_layer_pattern=r"^tiny_conv[12]_.*"))
    assert "Frozen parameters (2): tiny_conv1_weight, tiny_conv2_weight" in caplog.text
    before = _params(src + "_tiny_64-0001.params")
    after = _params(dst + "_tiny_64-0001.params")
    for key in ("arg:tiny_conv1_weight", "arg:tiny_conv2_weight"):
        np.testing.assert_array_equal(before[key], after[key])
    assert np.abs(before["arg:tiny_conv3_weight"] - after["arg:tiny_conv3_weight"]).max() > 0


def test_finetune_to_other_class_count(synth_data, tmp_path, caplog):
    """Seed semantics: loaded same-shape parameters are fixed except *pred*."""
    prefix = str(tmp_path / "ft")
    train_net(**_kwargs(synth_data, prefix, num_classes=6, class_names=None))
    with caplog.at_level(logging.INFO):
        train_net(**_kwargs(synth_data, prefix, finetune=1, end_epoch=2))
    assert "Skipped (shape differs)" in caplog.text and "cls_pred_conv_weight" in caplog.text
    assert "Left to initialize" in caplog.text
    before = _params(prefix + "_tiny_64-0001.params")
    after = _params(prefix + "_tiny_64-0002.params")
    np.testing.assert_array_equal(before["arg:tiny_conv3_weight"], after["arg:tiny_conv3_weight"])
    loc = [k for k in after if "loc_pred_conv_weight" in k][0]
    assert np.abs(before[loc] - after[loc]).max() > 0          # *pred* layers train
    cls = [k for k in after if "cls_pred_conv_weight" in k][0]
    assert before[cls].shape != after[cls].shape               # 6 -> 4 classes


def test_pretrained_at_other_shape_and_classes(synth_data, tmp_path, caplog):
    src = str(tmp_path / "big")
    train_net(**_kwargs(synth_data, src, data_shape=96, num_classes=6, class_names=None))
    with caplog.at_level(logging.INFO):
        train_net(**_kwargs(synth_data, str(tmp_path / "small"), pretrained=src + "_tiny_96",
                            epoch=1))
    assert "loaded" in caplog.text and "Skipped (shape differs)" in caplog.text
    assert os.path.isfile(str(tmp_path / "small_tiny_64-0001.params"))


def test_checkpoint_of_another_network_is_refused(synth_data, tmp_path):
    other = str(tmp_path / "other")
    mx.nd.save(other + "-0001.params", {"arg:fc_weight": mx.nd.zeros((2, 2))})
    with pytest.raises(ValueError, match="another network"):
        train_net(**_kwargs(synth_data, str(tmp_path / "x"), pretrained=other, epoch=1))


def test_label_width_too_small_names_needed_width(synth_data, tmp_path):
    with pytest.raises(ValueError, match=r"--label-width 8 is too small.*at least 32"):
        train_net(**_kwargs(synth_data, str(tmp_path / "w"), label_pad_width=8))


def test_class_ids_beyond_num_class_are_refused(synth_data, tmp_path):
    with pytest.raises(ValueError, match=r"--num-class 2: .* at least 4"):
        train_net(**_kwargs(synth_data, str(tmp_path / "n"), num_classes=2, class_names=None))


def test_reading_ahead_trains_the_same_parameters(synth_data, tmp_path, monkeypatch):
    """Two epochs through train_net with and without the background read of the next batch
    (issue 18): the same batches reach the same updates, so the parameters are bitwise equal."""
    import train_net as recipe
    from dataset.iterator import DetRecordIter

    class WithoutReadAhead(DetRecordIter):
        def next(self):  # noqa: D102
            batch = super().next()
            del batch.read_ahead
            return batch

    ahead = str(tmp_path / "ahead")
    train_net(**_kwargs(synth_data, ahead, end_epoch=2))
    monkeypatch.setattr(recipe, "DetRecordIter", WithoutReadAhead)
    plain = str(tmp_path / "plain")
    train_net(**_kwargs(synth_data, plain, end_epoch=2))
    a, b = _params(ahead + "_tiny_64-0002.params"), _params(plain + "_tiny_64-0002.params")
    assert a.keys() == b.keys()
    init = get_symbol_train("tiny", 64, synth_data.num_classes, with_det=False)
    assert set(init.list_arguments()) - {"data", "label"} <= {k[4:] for k in a if k.startswith("arg:")}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
