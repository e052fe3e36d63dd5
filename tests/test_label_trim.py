"""Label rows trimmed to the batch before MultiBoxTarget (issue 18): identical results.

MultiBoxTarget reads each image's label rows up to its first ``-1`` row but computes an IoU
for every anchor and row, padding included. DetectionModule cuts the padding to the batch's
real maximum (rounded up to LABEL_ROW_STEP) through executors that share everything with the
bound one; targets, outputs, parameters and BatchNorm statistics must not change.
"""
from __future__ import annotations

from config.mxnet_compat import mx
import numpy as np
import pytest

from config.config import cfg
from dataset.iterator import DetRecordIter
from training.detection_module import LABEL_ROW_STEP, DetectionModule
from symbol.symbol_factory import get_symbol_train


def _random_labels(rng, batch, rows, max_real, width=6):
    label = -np.ones((batch, rows, width), np.float32)
    for i in range(batch):
        for j in range(rng.randint(0, max_real + 1)):
            x, y = rng.uniform(0.0, 0.7, 2)
            w, h = rng.uniform(0.02, 0.3, 2)
            label[i, j] = [rng.randint(3), x, y, x + w, y + h, 0][:width]
    return label


def _targets(anchors, label, cls_preds):
    out = mx.nd.contrib.MultiBoxTarget(anchors, mx.nd.array(label), cls_preds,
                                       overlap_threshold=.5, ignore_label=-1,
                                       negative_mining_ratio=3, minimum_negative_samples=0,
                                       negative_mining_thresh=.5,
                                       variances=(0.1, 0.1, 0.2, 0.2))
    return [o.asnumpy() for o in out]


def _assert_same_targets(label, num_anchors=500, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.uniform(0, 1, (num_anchors, 2))
    sizes = rng.uniform(0.05, 0.4, (num_anchors, 2))
    anchors = mx.nd.array(np.concatenate([centers - sizes / 2, centers + sizes / 2],
                                         axis=1)[None])            # (1, N, 4)
    cls_preds = mx.nd.array(rng.randn(label.shape[0], 4, num_anchors))  # (B, C+1, N)
    rows = DetectionModule.label_rows_needed(None, label)
    assert rows <= label.shape[1]
    for full, cut in zip(_targets(anchors, label, cls_preds),
                         _targets(anchors, label[:, :rows], cls_preds)):
        np.testing.assert_array_equal(full, cut)
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_trimmed_random_labels_give_identical_targets(seed):
    rng = np.random.RandomState(seed)
    label = _random_labels(rng, batch=8, rows=40, max_real=int(rng.randint(0, 12)))
    rows = _assert_same_targets(label, seed=seed)
    real = int((label[:, :, 0] >= 0).sum(axis=1).max())
    assert rows == min(40, max(LABEL_ROW_STEP, -(-real // LABEL_ROW_STEP) * LABEL_ROW_STEP))


def test_trimmed_record_labels_give_identical_targets(synth_data):
    it = DetRecordIter(synth_data.train_rec, 4, 64, label_pad_width=350, **dict(cfg.train))
    for _ in range(3):
        label = it.next().label[0].asnumpy()          # (4, 58, 6): padded to width 350
        assert label.shape[1] > 40
        assert _assert_same_targets(label) < label.shape[1]


def test_rows_needed_stops_at_first_padding_row():
    label = -np.ones((2, 9, 5), np.float32)
    label[0, :2] = [0, .1, .1, .2, .2]
    label[1, 0] = [1, .1, .1, .2, .2]
    label[1, 6] = [1, .1, .1, .2, .2]                   # after a -1 row: MultiBoxTarget stops
    assert DetectionModule.label_rows_needed(None, label) == LABEL_ROW_STEP
    assert DetectionModule.label_rows_needed(None, -np.ones((2, 3, 5))) == 3
    full = np.zeros((1, 9, 5), np.float32)
    assert DetectionModule.label_rows_needed(None, full) == 9


def _train(trim, batches, rows):
    mx.random.seed(0)
    module = DetectionModule(get_symbol_train("tiny", 64, 3, with_det=False),
                             label_names=("label",), context=mx.cpu(), trim_label_rows=trim)
    module.bind([("data", (4, 3, 64, 64))], [("label", (4, rows, 6))])
    mx.random.seed(0)
    module.init_params(mx.init.Xavier())
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.05,
                                                             "momentum": 0.9, "wd": 5e-4})
    outputs, shapes = [], []
    for batch in batches:
        module.forward_backward(batch)
        module.update()
        outputs.append([o.asnumpy() for o in module.get_outputs()])
        shapes.append(module._exec_group.label_shapes[0].shape[1])
    arg, aux = module.get_params()
    return outputs, shapes, {k: v.asnumpy() for k, v in {**arg, **aux}.items()}


def test_training_with_trimmed_rows_is_identical():
    rng = np.random.RandomState(3)
    batches = [mx.io.DataBatch([mx.nd.array(rng.uniform(-60, 60, (4, 3, 64, 64)))],
                               [mx.nd.array(_random_labels(rng, 4, 14, max_real=k))])
               for k in (1, 6, 2, 3, 1)]
    plain_out, plain_rows, plain = _train(False, batches, 14)
    trim_out, trim_rows, trimmed = _train(True, batches, 14)
    assert plain_rows == [14] * 5
    assert trim_rows[0] == 4 and max(trim_rows) == 8       # several executors were used
    for a, b in zip(plain_out, trim_out):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    for key in plain:
        np.testing.assert_array_equal(plain[key], trimmed[key], err_msg=key)
