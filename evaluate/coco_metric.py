"""COCO-style detection AP (AP@[.50:.95], AP50, AP75) computed with pycocotools.

The metric collects the same detections and ground truth that the VOC metrics see (same
``update(labels, preds, num_valid=None)`` interface) and hands them to ``COCOeval`` at
``get()``. Boxes are normalised in the record, so they are scaled to ``image_size`` pixels
(the network input) before evaluation; only the area-range breakdown depends on that scale and
it is not reported. Difficult objects (label column 5 > 0) become ``iscrowd`` regions unless
``use_difficult``: detections on them are ignored and they are not counted, as in VOC (COCO
measures overlap with a crowd region as intersection over the detection's area). Images
without ground truth are evaluated as COCO does: their detections are false positives.
"""
from __future__ import annotations

import contextlib
import io

from config.mxnet_compat import mx
import numpy as np

from evaluate.eval_metric import _as_numpy


class CocoMetric(mx.metric.EvalMetric):
    """COCO AP through pycocotools.

    Parameters
    ----------
    num_classes : int
        Number of object classes (ids 0..num_classes-1).
    use_difficult : bool
        Count difficult objects like any other.
    image_size : tuple of int
        (height, width) in pixels that normalised coordinates are scaled to.
    pred_idx : int
        Output holding the (B, N, 6) detections.
    max_dets : int
        Detections per image kept by COCOeval (the COCO standard is 100).
    """

    names = ["AP@[.50:.95]", "AP50", "AP75"]

    def __init__(self, num_classes: int, use_difficult: bool = False,
                 image_size: tuple[int, int] = (1000, 1000), pred_idx: int = 0,
                 max_dets: int = 100) -> None:
        self.num_classes = int(num_classes)
        self.use_difficult = bool(use_difficult)
        self.image_size = tuple(int(v) for v in image_size)
        self.pred_idx = int(pred_idx)
        self.max_dets = int(max_dets)
        super().__init__("coco")

    def reset(self) -> None:
        """Forget every collected image."""
        self._labels: list[np.ndarray] = []
        self._dets: list[np.ndarray] = []
        self.num_images = 0
        self.num_inst = 0
        self.sum_metric = 0.0
        self.global_num_inst = 0
        self.global_sum_metric = 0.0
        self._stats: np.ndarray | None = None

    def reset_local(self) -> None:
        """Records are kept until :meth:`reset` (epoch-level value)."""

    def update(self, labels, preds, num_valid: int | None = None) -> None:
        """Store one batch; ``num_valid`` keeps only its first images (drop padding)."""
        label = _as_numpy(labels[0]).astype(np.float64)
        det = _as_numpy(preds[self.pred_idx]).astype(np.float64)
        if num_valid is not None:
            label, det = label[:num_valid], det[:num_valid]
        for i in range(label.shape[0]):
            self._labels.append(label[i][label[i, :, 0] >= 0])
            self._dets.append(det[i][det[i, :, 0] >= 0])
        self.num_images += label.shape[0]
        self._stats = None

    def _build(self):
        """Ground-truth dataset and detection list in COCO json form."""
        height, width = self.image_size
        scale = np.array([width, height, width, height], dtype=np.float64)
        images, annotations, results = [], [], []
        for image_id, (label, det) in enumerate(zip(self._labels, self._dets)):
            images.append({"id": image_id, "height": height, "width": width})
            for row in label:
                x1, y1, x2, y2 = row[1:5] * scale
                crowd = int(label.shape[1] >= 6 and row[5] > 0 and not self.use_difficult)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": int(row[0]) + 1, "iscrowd": crowd,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                                    "area": float((x2 - x1) * (y2 - y1))})
            for row in det:
                x1, y1, x2, y2 = row[2:6] * scale
                results.append({"image_id": image_id, "category_id": int(row[0]) + 1,
                                "score": float(row[1]), "bbox": [x1, y1, x2 - x1, y2 - y1]})
        categories = [{"id": c + 1, "name": str(c)} for c in range(self.num_classes)]
        dataset = {"images": images, "annotations": annotations, "categories": categories}
        return dataset, results

    def compute(self) -> np.ndarray:
        """Run COCOeval; returns its 12 summary statistics (-1 where undefined)."""
        if self._stats is not None:
            return self._stats
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        dataset, results = self._build()
        if not dataset["annotations"] or not results:
            self._stats = np.full(12, -1.0) if not dataset["annotations"] else np.zeros(12)
            return self._stats
        with contextlib.redirect_stdout(io.StringIO()):     # pycocotools prints progress
            coco_gt = COCO()
            coco_gt.dataset = dataset
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
            evaluator.params.maxDets = [1, 10, self.max_dets]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        self._stats = np.asarray(evaluator.stats, dtype=np.float64)
        return self._stats

    def get(self) -> tuple[list[str], list[float]]:
        """``(['AP@[.50:.95]', 'AP50', 'AP75'], values)``; NaN when there is no ground truth."""
        stats = self.compute()
        values = [float(v) if v >= 0 else float("nan") for v in stats[:3]]
        return list(self.names), values

    def get_global(self):
        """Same as :meth:`get`."""
        return self.get()
