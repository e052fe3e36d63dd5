"""Detection and training metrics: hand-computed cases and agreement with a plain loop."""
from __future__ import annotations

import math

from config.mxnet_compat import mx
import numpy as np
import pytest

from evaluate.eval_metric import (MApMetric, MultiBoxMetric, VOC07MApMetric, describe_protocol,
                                  voc07_11point_ap, voc_area_ap)

PAD = [-1.0] * 6
NO_DET = [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
BOX_A = [0.1, 0.1, 0.4, 0.4]
BOX_B = [0.5, 0.5, 0.9, 0.9]
BOX_C = [0.0, 0.6, 0.3, 0.95]


def gt(cls, box, difficult=0):
    return [cls, *box, difficult]


def det(cls, score, box):
    return [cls, score, *box]


def batch(rows_per_image, width):
    """Pad lists of rows into a (B, max_rows, width) array with -1 rows."""
    size = max(1, max(len(rows) for rows in rows_per_image))
    out = np.full((len(rows_per_image), size, width), -1.0)
    for i, rows in enumerate(rows_per_image):
        if rows:
            out[i, :len(rows)] = rows
    return out


def run(metric_cls, labels, dets, **kwargs):
    metric = metric_cls(**kwargs)
    metric.update([batch(labels, 6)], [batch(dets, 6)])
    return metric


# ---------------------------------------------------------------------------- AP formulas
def test_area_ap_hand_computed():
    # recall .5 @ precision 1, then recall 1 @ precision 2/3: area .5*1 + .5*2/3
    assert voc_area_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)


def test_11point_ap_hand_computed():
    # t = 0..0.5 -> 1, t = 0.6..1 -> 2/3
    value = voc07_11point_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    assert value == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_ap_uses_monotone_envelope():
    # precision rises after a dip: the envelope lifts the dip to the later maximum
    recall = np.array([0.25, 0.25, 0.5, 0.75])
    precision = np.array([1.0, 0.5, 2 / 3, 0.75])
    assert voc_area_ap(recall, precision) == pytest.approx(0.25 * 1 + 0.5 * 0.75)
    # 11-point: t=0..0.2 -> 1, t=0.3..0.7 -> 0.75, t=0.8..1 -> 0
    assert voc07_11point_ap(recall, precision) == pytest.approx((3 + 5 * 0.75) / 11)


def test_ap_empty_is_zero():
    assert voc_area_ap(np.zeros(0), np.zeros(0)) == 0.0
    assert voc07_11point_ap(np.zeros(0), np.zeros(0)) == 0.0


# ---------------------------------------------------------------------------- matching rules
def test_duplicate_detection_is_false_positive():
    labels = [[gt(0, BOX_A), gt(0, BOX_B)]]
    dets = [[det(0, 0.9, BOX_A), det(0, 0.8, BOX_A), det(0, 0.7, BOX_B)]]
    names, values = run(MApMetric, labels, dets, class_names=["a", "b"]).get()
    assert names == ["a", "b", "mAP"]
    assert values[0] == pytest.approx(5 / 6)
    assert math.isnan(values[1])                       # class b never evaluated
    assert values[2] == pytest.approx(5 / 6)
    _, values07 = run(VOC07MApMetric, labels, dets, class_names=["a", "b"]).get()
    assert values07[0] == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_detections_are_sorted_by_score_before_matching():
    # the lower-scoring duplicate comes first in the array; the 0.9 one must be the TP
    labels = [[gt(0, BOX_A)]]
    dets = [[det(0, 0.3, BOX_A), det(0, 0.9, BOX_A)]]
    curves = run(MApMetric, labels, dets).get_curves()
    recall, precision, num_gt = curves[0]
    assert num_gt == 1
    np.testing.assert_allclose(recall, [1.0, 1.0])
    np.testing.assert_allclose(precision, [1.0, 0.5])
    assert run(MApMetric, labels, dets).get()[1] == pytest.approx(1.0)


def test_iou_must_be_strictly_above_threshold():
    labels = [[gt(0, [0.0, 0.0, 1.0, 1.0])]]
    dets = [[det(0, 0.9, [0.0, 0.0, 0.5, 1.0])]]       # IoU exactly 0.5
    assert run(MApMetric, labels, dets, ovp_thresh=0.5).get()[1] == 0.0
    assert run(MApMetric, labels, dets, ovp_thresh=0.49).get()[1] == pytest.approx(1.0)


def test_wrong_class_is_false_positive_and_missing_class_counts_zero():
    # class 1 predicted where class 0 is: class 0 has GT and no TP (AP 0), class 1 has
    # detections but no GT (AP 0); mAP averages both
    labels = [[gt(0, BOX_A), gt(2, BOX_B)]]
    dets = [[det(1, 0.9, BOX_A), det(2, 0.8, BOX_B)]]
    names, values = run(MApMetric, labels, dets, class_names=["a", "b", "c"]).get()
    assert values[:3] == [0.0, 0.0, pytest.approx(1.0)]
    assert values[3] == pytest.approx(1 / 3)


def test_several_classes_and_images():
    labels = [[gt(0, BOX_A), gt(1, BOX_B)], [gt(1, BOX_C)]]
    dets = [[det(0, 0.9, BOX_A), det(1, 0.6, BOX_B), det(1, 0.95, BOX_C)],
            [det(1, 0.7, BOX_C), det(0, 0.4, BOX_A)]]
    metric = run(MApMetric, labels, dets, class_names=["a", "b"])
    # class a: TP(.9), FP(.4) -> AP 1; class b: FP(.95), TP(.7), TP(.6) of 2 GT
    # -> recall .5@p.5, 1@p2/3 -> area .5*2/3 + .5*2/3
    names, values = metric.get()
    assert values[0] == pytest.approx(1.0)
    assert values[1] == pytest.approx(2 / 3)
    assert values[2] == pytest.approx((1 + 2 / 3) / 2)


def test_difficult_ignored_by_default():
    labels = [[gt(0, BOX_A), gt(0, BOX_B, difficult=1)]]
    dets = [[det(0, 0.9, BOX_B), det(0, 0.8, BOX_A)]]
    metric = run(MApMetric, labels, dets)
    recall, precision, num_gt = metric.get_curves()[0]
    assert num_gt == 1                                 # the difficult GT is not counted
    np.testing.assert_allclose(recall, [1.0])          # the detection on it is neither TP nor FP
    np.testing.assert_allclose(precision, [1.0])
    assert metric.get()[1] == pytest.approx(1.0)


def test_difficult_counted_with_use_difficult():
    labels = [[gt(0, BOX_A), gt(0, BOX_B, difficult=1)]]
    dets = [[det(0, 0.9, BOX_B)]]
    metric = run(MApMetric, labels, dets, use_difficult=True)
    recall, precision, num_gt = metric.get_curves()[0]
    assert num_gt == 2
    np.testing.assert_allclose(recall, [0.5])
    assert metric.get()[1] == pytest.approx(0.5)


def test_duplicate_on_difficult_is_ignored_too():
    labels = [[gt(0, BOX_A, difficult=1), gt(0, BOX_B)]]
    dets = [[det(0, 0.9, BOX_A), det(0, 0.8, BOX_A), det(0, 0.7, BOX_B)]]
    recall, precision, _ = run(MApMetric, labels, dets).get_curves()[0]
    np.testing.assert_allclose(recall, [1.0])
    np.testing.assert_allclose(precision, [1.0])


def test_five_wide_labels_count_every_gt():
    metric = MApMetric()
    labels = batch([[gt(0, BOX_A, 1)[:5], gt(0, BOX_B, 1)[:5]]], 5)
    metric.update([labels], [batch([[det(0, 0.9, BOX_A)]], 6)])
    assert metric.get_curves()[0][2] == 2


def test_image_without_gt_is_skipped():
    labels = [[gt(0, BOX_A)], []]
    dets = [[det(0, 0.5, BOX_A)], [det(0, 0.99, BOX_B), det(0, 0.98, BOX_C)]]
    metric = run(MApMetric, labels, dets)
    recall, precision, _ = metric.get_curves()[0]
    np.testing.assert_allclose(precision, [1.0])       # the GT-less image's FPs are ignored
    assert metric.get()[1] == pytest.approx(1.0)


def test_padded_images_of_last_batch_not_counted():
    labels = [[gt(0, BOX_A)], [gt(0, BOX_B)]]
    dets = [[det(0, 0.9, BOX_A)], [det(0, 0.8, BOX_C)]]
    full = MApMetric()
    full.update([batch(labels, 6)], [batch(dets, 6)])
    # the same two images, then a last batch whose second image wraps around to image 0
    padded = MApMetric()
    padded.update([batch(labels[:1], 6)], [batch(dets[:1], 6)])
    padded.update([batch([labels[1], labels[0]], 6)], [batch([dets[1], dets[0]], 6)], num_valid=1)
    assert padded.num_images == 2
    assert padded.get()[1] == pytest.approx(full.get()[1])
    assert padded.get()[1] == pytest.approx(0.5)
    # without num_valid the wrapped image is double counted and the value changes
    doubled = MApMetric()
    doubled.update([batch(labels[:1], 6)], [batch(dets[:1], 6)])
    doubled.update([batch([labels[1], labels[0]], 6)], [batch([dets[1], dets[0]], 6)])
    assert doubled.get()[1] != pytest.approx(full.get()[1])


def test_reset_clears_records_and_nothing_gives_nan():
    metric = run(MApMetric, [[gt(0, BOX_A)]], [[det(0, 0.9, BOX_A)]])
    metric.reset_local()                               # Speedometer must not wipe mAP
    assert metric.get()[1] == pytest.approx(1.0)
    metric.reset()
    assert math.isnan(metric.get()[1])


def test_pred_idx_selects_output_and_bad_shape_is_clear():
    metric = MApMetric(pred_idx=1)
    labels = batch([[gt(0, BOX_A)]], 6)
    metric.update([labels], [np.zeros((1, 7)), batch([[det(0, 0.9, BOX_A)]], 6)])
    assert metric.get()[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pred_idx"):
        MApMetric(pred_idx=0).update([labels], [np.zeros((1, 7))])


# ---------------------------------------------------------------------------- agreement
def reference_map(labels, dets, ovp_thresh, use_difficult, voc07):
    """Straightforward per-image, per-class, per-detection loop (the upstream algorithm)."""
    records, counts = {}, {}
    for label, det_rows in zip(labels, dets):
        label = label[label[:, 0] >= 0]
        if label.shape[0] == 0:
            continue
        for row in label:
            cid = int(row[0])
            counted = use_difficult or row[5] <= 0
            counts[cid] = counts.get(cid, 0) + int(counted)
        det_rows = det_rows[det_rows[:, 0] >= 0]
        for cid in np.unique(det_rows[:, 0]).astype(int):
            cdets = det_rows[det_rows[:, 0] == cid]
            cdets = cdets[np.argsort(-cdets[:, 1], kind="stable")]
            cgts = label[label[:, 0] == cid]
            found = np.zeros(len(cgts), bool)
            for d in cdets:
                best, best_iou = -1, -1.0
                for j, g in enumerate(cgts):
                    iw = max(0.0, min(d[4], g[3]) - max(d[2], g[1]))
                    ih = max(0.0, min(d[5], g[4]) - max(d[3], g[2]))
                    inter = iw * ih
                    union = (d[4] - d[2]) * (d[5] - d[3]) + (g[3] - g[1]) * (g[4] - g[2]) - inter
                    iou = inter / union if union > 0 else 0.0
                    if iou > best_iou:
                        best, best_iou = j, iou
                flag = 2
                if best >= 0 and best_iou > ovp_thresh:
                    if not use_difficult and cgts[best, 5] > 0:
                        flag = 0
                    elif not found[best]:
                        flag, found[best] = 1, True
                if flag:
                    records.setdefault(cid, []).append((d[1], flag))
    aps = []
    for cid in set(records) | {c for c, n in counts.items() if n > 0}:
        rec = sorted(records.get(cid, []), key=lambda r: -r[0])
        tp = np.cumsum([f == 1 for _, f in rec]).astype(float)
        fp = np.cumsum([f == 2 for _, f in rec]).astype(float)
        n = counts.get(cid, 0)
        recall = tp / n if n > 0 else tp * 0
        precision = tp / np.maximum(tp + fp, 1)
        aps.append(voc07_11point_ap(recall, precision) if voc07 else voc_area_ap(recall, precision))
    return float(np.mean(aps)) if aps else float("nan")


def random_batch(rng, num_images, num_classes):
    labels = np.full((num_images, 6, 6), -1.0)
    dets = np.full((num_images, 12, 6), -1.0)
    for i in range(num_images):
        n_gt = rng.integers(0, 5)
        xy = rng.uniform(0, 0.6, size=(n_gt, 2))
        wh = rng.uniform(0.1, 0.4, size=(n_gt, 2))
        labels[i, :n_gt, 0] = rng.integers(0, num_classes, n_gt)
        labels[i, :n_gt, 1:3] = xy
        labels[i, :n_gt, 3:5] = xy + wh
        labels[i, :n_gt, 5] = rng.random(n_gt) < 0.2
        n_det = rng.integers(0, 12)
        src = rng.integers(0, max(n_gt, 1), n_det)
        jitter = rng.normal(0, 0.05, size=(n_det, 4))
        boxes = labels[i, src, 1:5] + jitter if n_gt else rng.uniform(0, 1, (n_det, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.01)
        cls = labels[i, src, 0] if n_gt else rng.integers(0, num_classes, n_det)
        swap = rng.random(n_det) < 0.2
        cls = np.where(swap, rng.integers(0, num_classes, n_det), cls)
        dets[i, :n_det, 0] = cls
        dets[i, :n_det, 1] = np.round(rng.random(n_det), 2)   # ties happen
        dets[i, :n_det, 2:] = boxes
    return labels, dets


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_difficult", [False, True])
def test_vectorised_map_agrees_with_plain_loop(seed, use_difficult):
    rng = np.random.default_rng(seed)
    labels, dets = random_batch(rng, 40, 4)
    for cls, voc07 in ((MApMetric, False), (VOC07MApMetric, True)):
        metric = cls(ovp_thresh=0.5, use_difficult=use_difficult)
        for start in range(0, 40, 16):                 # several batches, last one short
            metric.update([labels[start:start + 16]], [dets[start:start + 16]])
        expected = reference_map(labels, dets, 0.5, use_difficult, voc07)
        assert metric.get()[1] == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------- training metric
def test_multibox_metric_hand_computed():
    cls_prob = np.array([[[0.5, 0.2, 0.9],
                          [0.5, 0.8, 0.1]]])           # (B=1, C+1=2, N=3)
    loc_loss = np.array([[1.0, 2.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    cls_label = np.array([[0.0, 1.0, -1.0]])
    metric = MultiBoxMetric()
    metric.update(None, [cls_prob, loc_loss, cls_label])
    names, values = metric.get()
    assert names == ["CrossEntropy", "SmoothL1"]
    expected_ce = -(np.log(0.5 + 1e-8) + np.log(0.8 + 1e-8)) / 2
    assert values[0] == pytest.approx(expected_ce)
    assert values[1] == pytest.approx(4.0 / 2)


def test_multibox_metric_reset_local_keeps_global_and_nan_when_empty():
    metric = MultiBoxMetric()
    assert all(math.isnan(v) for v in metric.get()[1])
    cls_prob = np.full((1, 2, 2), 0.5)
    metric.update(None, [cls_prob, np.ones((1, 8)), np.array([[0.0, 1.0]])])
    metric.reset_local()
    assert all(math.isnan(v) for v in metric.get()[1])
    assert metric.get_global()[1][1] == pytest.approx(4.0)
    metric.update(None, [cls_prob, np.ones((1, 8)), np.array([[-1.0, -1.0]])])
    assert all(math.isnan(v) for v in metric.get()[1])  # no valid anchor in the local window
    metric.reset()
    assert all(math.isnan(v) for v in metric.get_global()[1])


def test_describe_protocol_states_everything():
    line = describe_protocol(True, 0.5, False, 0.45, 400, 300, 4952)
    for part in ("VOC07 11-point", "IoU>0.5", "difficult ignored", "NMS 0.45", "top-k 400",
                 "300x300", "4952 images"):
        assert part in line
    line = describe_protocol(False, 0.7, True, 0.5, 200, (3, 256, 320), 10, force_suppress=True)
    assert "VOC area AP" in line and "difficult counted" in line and "256x320" in line


def test_batch_without_any_gt_or_detection():
    metric = MApMetric(class_names=["a"])
    metric.update([np.full((2, 4, 6), -1.0)], [np.full((2, 3, 6), -1.0)])
    assert math.isnan(metric.get()[1][-1])
    metric.update([batch([[gt(0, BOX_A)], []], 6)], [np.full((2, 3, 6), -1.0)])
    assert metric.get()[1] == [0.0, 0.0]                # one GT, nothing detected: AP 0
    assert metric.num_images == 4


def test_multibox_metric_reads_the_graphs_loss_sums():
    """The bound training graph's ``loss_sums`` gives the values the host computation gives."""
    from collections import OrderedDict

    from symbol.symbol_factory import get_symbol_train
    rng = np.random.RandomState(0)
    sym = get_symbol_train("tiny", 64, 3, with_det=False, fast_ops=True)
    assert sym.list_outputs()[-1] == "loss_sums_output"
    label = -np.ones((4, 3, 6), np.float32)
    for i in range(4):
        x, y = rng.uniform(0.05, 0.5, 2)
        label[i, 0] = [rng.randint(3), x, y, x + 0.4, y + 0.4, 0]
    module = mx.mod.Module(sym, label_names=("label",), context=mx.cpu())
    module.bind([("data", (4, 3, 64, 64))], [("label", label.shape)])
    module.init_params(mx.init.Xavier())
    from_graph, on_host = MultiBoxMetric(), MultiBoxMetric()
    for _ in range(2):                  # two batches: the sums accumulate
        batch = mx.io.DataBatch([mx.nd.array(rng.uniform(-60, 60, (4, 3, 64, 64)))],
                                [mx.nd.array(label)])
        module.forward(batch, is_train=True)
        module.update_metric(from_graph, batch.label)                  # uses loss_sums
        on_host.update(None, module.get_outputs()[:3])
        assert from_graph.num_inst[0] == on_host.num_inst[0] > 0
        np.testing.assert_allclose(from_graph.get()[1], on_host.get()[1], rtol=1e-5)
    outputs = OrderedDict(zip(sym.list_outputs()[:3], module.get_outputs()[:3]))
    without, last = MultiBoxMetric(), MultiBoxMetric()
    without.update_dict(None, outputs)                                   # a graph without it
    last.update(None, module.get_outputs()[:3])
    assert without.get()[1] == last.get()[1]
