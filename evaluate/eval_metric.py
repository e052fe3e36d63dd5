"""Metrics for SSD training and evaluation.

* :class:`MultiBoxMetric`: training losses (``CrossEntropy``, ``SmoothL1``) read from the
  outputs of the training graph.
* :class:`MApMetric` (VOC2010+ area under the monotone precision envelope) and
  :class:`VOC07MApMetric` (VOC2007 11-point interpolation): detection mean average precision,
  shared by training validation and ``evaluate.py``.
* :func:`describe_protocol`: the one-line statement of the protocol printed with every result.

The mAP metrics follow the VOC protocol with the upstream fixes (REFERENCE.md section 3.4):
detections sorted by descending score, IoU strictly above the threshold, greedy matching of
each detection to its best-overlapping ground truth (GT) of the same class, a GT matched a
second time makes the detection a false positive, detections matched to a difficult GT are
ignored unless ``use_difficult``, images without GT are skipped, and a class with detections
but no GT counts AP 0. Matching is vectorised over a whole batch; precision/recall are built
with one sort and cumulative sums per class when the result is read.
"""
from __future__ import annotations

from typing import Sequence

from config.mxnet_compat import mx
import numpy as np

from symbol.anchors import box_iou
from symbol.symbol_builder import METRIC_EPS

_TP, _FP, _IGNORE = 1, 2, 0


def _as_numpy(array) -> np.ndarray:
    """NDArray or array-like to a numpy array (no copy for numpy input)."""
    if hasattr(array, "asnumpy"):
        return array.asnumpy()
    return np.asarray(array)


class MultiBoxMetric(mx.metric.EvalMetric):
    """Training losses of the SSD graph: softmax cross-entropy and smooth-L1 localisation loss.

    Reads ``preds[0]`` ``cls_prob`` (B, C+1, N), ``preds[1]`` ``loc_loss`` (B, 4N) and
    ``preds[2]`` ``cls_label`` (B, N) (``-1`` = ignored anchor); labels are not used. Both values
    are normalised by the number of non-ignored anchors (positives plus mined negatives).

    The graph bound to train (``get_symbol_train(fast_ops=True)``) also outputs
    ``loss_sums`` (B, 3), these sums per image computed in its forward pass; when Module passes
    it (``update_dict``), only that small array is read (issue 18).

    Parameters
    ----------
    eps : float
        Added to the probability before the logarithm.
    """

    def __init__(self, eps: float = METRIC_EPS) -> None:
        self.eps = eps
        self.names = ["CrossEntropy", "SmoothL1"]
        self.num = len(self.names)
        super().__init__("MultiBox", has_global_stats=True)

    def reset(self) -> None:
        """Clear local and global sums."""
        self.num_inst = np.zeros(self.num)
        self.sum_metric = np.zeros(self.num)
        self.global_num_inst = np.zeros(self.num)
        self.global_sum_metric = np.zeros(self.num)

    def reset_local(self) -> None:
        """Clear the local sums (called by Speedometer every ``frequent`` batches)."""
        self.num_inst = np.zeros(self.num)
        self.sum_metric = np.zeros(self.num)

    def update_dict(self, labels, preds) -> None:
        """Module's entry: outputs by name; uses ``loss_sums`` when the graph has it."""
        sums = preds.get("loss_sums_output")
        if sums is None or self.eps != METRIC_EPS:
            self.update(labels, list(preds.values()))
            return
        cross_entropy, smooth_l1, valid_count = _as_numpy(sums).astype(np.float64).sum(axis=0)
        self._add(cross_entropy, smooth_l1, valid_count)

    def update(self, labels, preds) -> None:
        """Accumulate one batch of training outputs (labels are ignored)."""
        cls_prob = _as_numpy(preds[0])                      # (B, C+1, N)
        loc_loss = _as_numpy(preds[1])                      # (B, 4N)
        cls_label = _as_numpy(preds[2])                     # (B, N)
        valid = cls_label >= 0
        index = np.where(valid, cls_label, 0).astype(np.int64)[:, None, :]   # (B, 1, N)
        prob = np.take_along_axis(cls_prob, index, axis=1)[:, 0, :]          # (B, N)
        self._add(float(-np.log(prob[valid] + self.eps).sum()), float(loc_loss.sum()),
                  float(valid.sum()))

    def _add(self, cross_entropy: float, smooth_l1: float, valid_count: float) -> None:
        batch_sums = np.array([cross_entropy, smooth_l1])
        self.sum_metric += batch_sums
        self.global_sum_metric += batch_sums
        self.num_inst += valid_count
        self.global_num_inst += valid_count

    @staticmethod
    def _ratio(sums: np.ndarray, counts: np.ndarray) -> list[float]:
        return [float(s / c) if c > 0 else float("nan") for s, c in zip(sums, counts)]

    def get(self) -> tuple[list[str], list[float]]:
        """Local values since the last reset (NaN when no anchor was counted)."""
        return list(self.names), self._ratio(self.sum_metric, self.num_inst)

    def get_global(self) -> tuple[list[str], list[float]]:
        """Values since the last full reset (NaN when no anchor was counted)."""
        return list(self.names), self._ratio(self.global_sum_metric, self.global_num_inst)


def voc_area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP: area under the monotone (right-to-left max) precision envelope."""
    if recall.size == 0:
        return 0.0
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc07_11point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 AP: mean over t in {0, 0.1, ..., 1} of the max precision at recall >= t."""
    if recall.size == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]   # max precision at index >= i
    thresholds = np.linspace(0.0, 1.0, 11)
    # recall is non-decreasing, so the first index with recall >= t starts the admissible tail
    first = np.searchsorted(recall, thresholds, side="left")
    values = np.where(first < recall.size, envelope[np.minimum(first, recall.size - 1)], 0.0)
    return float(values.sum() / 11.0)


def match_detections(labels: np.ndarray, dets: np.ndarray, ovp_thresh: float,
                     use_difficult: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy VOC matching of a batch of detections to ground truth.

    Parameters
    ----------
    labels : np.ndarray
        (B, M, W) ``[cls, x1, y1, x2, y2(, difficult)]``, W >= 5, rows with cls < 0 are padding.
    dets : np.ndarray
        (B, N, 6) ``[cls, score, x1, y1, x2, y2]``, cls < 0 = no detection.
    ovp_thresh : float
        A detection matches when its best IoU with a same-class GT is strictly above this.
    use_difficult : bool
        Count difficult GT (column 5 > 0) like any other; otherwise detections matched to
        them are ignored and they are not counted.

    Returns
    -------
    det_cls : np.ndarray
        (K,) int class of each kept detection (images without GT and cls < 0 dropped).
    det_score : np.ndarray
        (K,) float score.
    det_flag : np.ndarray
        (K,) int8 1 = true positive, 2 = false positive, 0 = ignored (difficult).
    gt_cls : np.ndarray
        (G,) int class of each counted GT.
    """
    num_images = labels.shape[0]
    # drop the -1 padding columns shared by the whole batch (labels are padded to ~58 rows)
    rows_used = np.flatnonzero((labels[:, :, 0] >= 0).any(axis=0))
    labels = labels[:, :rows_used[-1] + 1] if rows_used.size else labels[:, :0]
    dets_used = np.flatnonzero((dets[:, :, 0] >= 0).any(axis=0))
    dets = dets[:, :dets_used[-1] + 1] if dets_used.size else dets[:, :0]
    gt_valid = labels[:, :, 0] >= 0                                 # (B, M)
    has_gt = gt_valid.any(axis=1)                                   # (B,)
    if labels.shape[2] >= 6 and not use_difficult:
        gt_difficult = gt_valid & (labels[:, :, 5] > 0)
    else:
        gt_difficult = np.zeros_like(gt_valid)
    gt_cls = labels[:, :, 0][gt_valid & ~gt_difficult].astype(np.int64)

    # detections of each image sorted by descending score (stable: ties keep their order)
    order = np.argsort(-dets[:, :, 1], axis=1, kind="stable")      # (B, N)
    dets = np.take_along_axis(dets, order[:, :, None], axis=1)     # (B, N, 6)
    det_valid = (dets[:, :, 0] >= 0) & has_gt[:, None]             # (B, N)

    iou = box_iou(dets[:, :, 2:6], labels[:, :, 1:5])              # (B, N, M)
    same_class = (dets[:, :, None, 0].astype(np.int64) == labels[:, None, :, 0].astype(np.int64))
    iou = np.where(same_class & gt_valid[:, None, :], iou, -1.0)
    best_gt = iou.argmax(axis=2) if iou.shape[2] else np.zeros(dets.shape[:2], np.int64)
    best_iou = (np.take_along_axis(iou, best_gt[:, :, None], axis=2)[:, :, 0]
                if iou.shape[2] else np.full(dets.shape[:2], -1.0))
    matched = det_valid & (best_iou > ovp_thresh)                   # (B, N)
    matched_difficult = matched & np.take_along_axis(gt_difficult, best_gt, axis=1)

    flag = np.full(dets.shape[:2], _FP, dtype=np.int8)
    flag[matched_difficult] = _IGNORE
    candidates = matched & ~matched_difficult
    # the first (highest-scoring) detection matched to a GT is its TP, later ones duplicates
    gt_key = (np.arange(num_images)[:, None] * labels.shape[1] + best_gt)[candidates]
    cand_pos = np.flatnonzero(candidates)                           # row-major = score order
    _, first = np.unique(gt_key, return_index=True)
    tp_mask = np.zeros(flag.size, dtype=bool)
    tp_mask[cand_pos[first]] = True
    flag.reshape(-1)[tp_mask] = _TP
    keep = det_valid.reshape(-1)
    return (dets[:, :, 0].reshape(-1)[keep].astype(np.int64),
            dets[:, :, 1].reshape(-1)[keep].astype(np.float64),
            flag.reshape(-1)[keep], gt_cls)


class MApMetric(mx.metric.EvalMetric):
    """Detection mean average precision, VOC2010+ area under the monotone envelope.

    Parameters
    ----------
    ovp_thresh : float
        IoU a detection must strictly exceed to match a ground truth.
    use_difficult : bool
        Count difficult objects (label column 5 > 0); by default they are neither TP nor FP.
    class_names : sequence of str, optional
        Names of the classes; when given, ``get()`` returns one AP per class plus ``mAP``.
    pred_idx : int
        Which output of the network holds the detections (B, N, 6).

    Notes
    -----
    ``update(labels, preds, num_valid=None)``: ``labels[0]`` (B, M, 6 or 5)
    ``[cls, x1, y1, x2, y2, difficult]`` normalised, -1 padded; ``preds[pred_idx]``
    (B, N, 6) ``[cls, score, x1, y1, x2, y2]``. ``num_valid`` keeps only the first images of
    the batch (drop the wrapped/padded images of the last batch).
    """

    def __init__(self, ovp_thresh: float = 0.5, use_difficult: bool = False,
                 class_names: Sequence[str] | None = None, pred_idx: int = 0) -> None:
        self.ovp_thresh = float(ovp_thresh)
        self.use_difficult = bool(use_difficult)
        self.class_names = list(class_names) if class_names is not None else None
        self.pred_idx = int(pred_idx)
        super().__init__("mAP")

    def reset(self) -> None:
        """Forget every record (start of an evaluation)."""
        self._det_cls: list[np.ndarray] = []
        self._det_score: list[np.ndarray] = []
        self._det_flag: list[np.ndarray] = []
        self._gt_cls: list[np.ndarray] = []
        self.num_images = 0
        self.num_inst = 0
        self.sum_metric = 0.0
        self.global_num_inst = 0
        self.global_sum_metric = 0.0

    def reset_local(self) -> None:
        """mAP is an epoch-level value: records are kept until :meth:`reset`."""

    def update(self, labels, preds, num_valid: int | None = None) -> None:
        """Match one batch of detections and store the records.

        Parameters
        ----------
        labels : list of NDArray
            ``labels[0]`` (B, M, W) ground truth.
        preds : list of NDArray
            ``preds[pred_idx]`` (B, N, 6) detections.
        num_valid : int, optional
            Number of leading images of the batch to score (``B - batch.pad``).
        """
        label = _as_numpy(labels[0]).astype(np.float64)
        det = _as_numpy(preds[self.pred_idx]).astype(np.float64)
        if label.ndim != 3 or label.shape[2] < 5:
            raise ValueError(f"labels[0] must be (B, M, 5 or 6), got shape {label.shape}")
        if det.ndim != 3 or det.shape[2] != 6:
            raise ValueError(f"preds[{self.pred_idx}] must be (B, N, 6) detections, got shape "
                             f"{det.shape}; is pred_idx right?")
        if num_valid is not None:
            label, det = label[:num_valid], det[:num_valid]
        det_cls, det_score, det_flag, gt_cls = match_detections(
            label, det, self.ovp_thresh, self.use_difficult)
        self._det_cls.append(det_cls)
        self._det_score.append(det_score)
        self._det_flag.append(det_flag)
        self._gt_cls.append(gt_cls)
        self.num_images += label.shape[0]

    def _average_precision(self, recall: np.ndarray, precision: np.ndarray) -> float:
        return voc_area_ap(recall, precision)

    def get_curves(self) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
        """Per-class precision-recall curves of the records so far.

        Returns
        -------
        dict
            class id -> (recall, precision, num_gt) for every class with a counted GT or a
            non-ignored detection; recall and precision are in descending score order.
        """
        det_cls = np.concatenate(self._det_cls) if self._det_cls else np.zeros(0, np.int64)
        det_score = np.concatenate(self._det_score) if self._det_score else np.zeros(0)
        det_flag = np.concatenate(self._det_flag) if self._det_flag else np.zeros(0, np.int8)
        gt_cls = np.concatenate(self._gt_cls) if self._gt_cls else np.zeros(0, np.int64)
        kept = det_flag != _IGNORE
        det_cls, det_score, det_flag = det_cls[kept], det_score[kept], det_flag[kept]
        # one sort: by class, then descending score (stable for equal scores)
        order = np.lexsort((-det_score, det_cls))
        det_cls, det_flag = det_cls[order], det_flag[order]
        classes = np.union1d(np.unique(det_cls), np.unique(gt_cls))
        gt_counts = dict(zip(*np.unique(gt_cls, return_counts=True)))
        starts = np.searchsorted(det_cls, classes, side="left")
        ends = np.searchsorted(det_cls, classes, side="right")
        curves = {}
        for cls, start, end in zip(classes.tolist(), starts, ends):
            flags = det_flag[start:end]
            tp = np.cumsum(flags == _TP)
            fp = np.cumsum(flags == _FP)
            num_gt = int(gt_counts.get(cls, 0))
            recall = tp / num_gt if num_gt > 0 else np.zeros(tp.shape)
            with np.errstate(divide="ignore", invalid="ignore"):
                precision = tp / np.maximum(tp + fp, 1)
            curves[cls] = (recall.astype(np.float64), precision.astype(np.float64), num_gt)
        return curves

    def get_class_aps(self) -> dict[int, float]:
        """AP of every evaluated class id (see :meth:`get_curves`)."""
        return {cls: self._average_precision(rec, prec)
                for cls, (rec, prec, _) in self.get_curves().items()}

    def get(self) -> tuple[list[str] | str, list[float] | float]:
        """Per-class AP (ids < number of class names, NaN if not evaluated) and mAP.

        mAP is the mean over every evaluated class, including classes with detections but
        no ground truth (AP 0); NaN when nothing was evaluated.
        """
        aps = self.get_class_aps()
        mean_ap = float(np.mean(list(aps.values()))) if aps else float("nan")
        if self.class_names is None:
            return "mAP", mean_ap
        values = [aps.get(cls, float("nan")) for cls in range(len(self.class_names))]
        return self.class_names + ["mAP"], values + [mean_ap]

    def get_global(self):
        """Same as :meth:`get` (records are only cleared by :meth:`reset`)."""
        return self.get()


class VOC07MApMetric(MApMetric):
    """Detection mAP with the VOC2007 11-point interpolated AP (see :class:`MApMetric`)."""

    def _average_precision(self, recall: np.ndarray, precision: np.ndarray) -> float:
        return voc07_11point_ap(recall, precision)


def describe_protocol(voc07_metric: bool, ovp_thresh: float, use_difficult: bool,
                      nms_thresh: float, nms_topk: int, data_shape, num_images: int,
                      force_suppress: bool = False, metric: str = "voc",
                      flip_test: bool = False) -> str:
    """One line stating how a result was obtained, printed with every mAP.

    Parameters
    ----------
    voc07_metric : bool
        VOC2007 11-point AP if True, else VOC2010+ area AP (ignored for ``metric='coco'``).
    ovp_thresh : float
        IoU threshold of the VOC metric.
    use_difficult : bool
        Whether difficult objects are counted.
    nms_thresh, nms_topk, force_suppress
        Non-maximum suppression settings of the detection output.
    data_shape : int or tuple
        Network input side (int) or (3, H, W) / (H, W).
    num_images : int
        Images actually scored (padded images excluded).
    metric : str
        ``'voc'`` or ``'coco'``.
    flip_test : bool
        Every image's predictions averaged with its mirror's (``--flip-test``).

    Returns
    -------
    str
        e.g. ``protocol: VOC07 11-point AP @ IoU>0.5, difficult ignored, NMS 0.45
        (top-k 400, per class), input 300x300, 4952 images``.
    """
    if metric == "coco":
        ap_text = "COCO AP@[.50:.95] (101-point, pycocotools), AP50, AP75"
    else:
        ap_text = ("VOC07 11-point AP" if voc07_metric else "VOC area AP") + f" @ IoU>{ovp_thresh:g}"
    difficult = "difficult counted" if use_difficult else "difficult ignored"
    if isinstance(data_shape, int):
        shape_text = f"{data_shape}x{data_shape}"
    else:
        hw = tuple(data_shape)[-2:]
        shape_text = f"{hw[0]}x{hw[1]}"
    suppress = "all classes" if force_suppress else "per class"
    return (f"protocol: {ap_text}, {difficult}, NMS {nms_thresh:g} (top-k {nms_topk}, "
            f"{suppress}), input {shape_text}{' + its mirror' if flip_test else ''}, "
            f"{num_images} images")
