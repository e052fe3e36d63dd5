"""What a user reads after training on photos: where the detector fails, in numbers and a picture.

From the test labels and the detections of each test photo (``analyse``):

* confusions: ground-truth boxes of class A that no detection of A found but a detection of
  class B covers at IoU >= ``iou_thresh`` (a count per (A, B) pair);
* missed boxes by size band (size = sqrt of the box area, a fraction of the photo side);
* per photo, the boxes missed: the worst photos (most missed) and the best.

A box is found when a detection of its class with score >= ``score_thresh`` overlaps it at
IoU >= ``iou_thresh`` (the operating point of ``demo.py --thresh``). Labels: (M, 5 or 6)
``[cls, x1, y1, x2, y2(, difficult)]`` normalised, padded rows -1; detections: (K, 6)
``[cls, score, x1, y1, x2, y2]``, cls -1 = none.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import cv2
import numpy as np

from training.checkpoint import atomic_write
from symbol.anchors import box_iou

# size bands (upper edges, fraction of the photo side): small, medium, large
SIZE_BANDS = (("small", 0.2), ("medium", 0.4), ("large", float("inf")))


def ground_truth(label: np.ndarray) -> np.ndarray:
    """The boxes of a photo's label that count: padding rows and difficult boxes left out."""
    gt = label[label[:, 0] >= 0]
    return gt[gt[:, 5] <= 0] if gt.shape[1] > 5 else gt


def size_band(box: np.ndarray) -> str:
    """``small`` / ``medium`` / ``large`` of a normalised box (sqrt of its area)."""
    side = float(np.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)))
    return next(name for name, upper in SIZE_BANDS if side < upper)


def match_photo(label: np.ndarray, dets: np.ndarray, iou_thresh: float = 0.5,
                score_thresh: float = 0.5) -> list[tuple[int, str, int | None]]:
    """Per ground-truth box: (class, ``found``/``confused``/``missed``, confusing class).

    Each detection finds at most one box (greedy by score); difficult boxes are left out.
    """
    gt = ground_truth(label)
    dets = dets[(dets[:, 0] >= 0) & (dets[:, 1] >= score_thresh)]
    dets = dets[np.argsort(-dets[:, 1], kind="stable")]
    overlap = box_iou(gt[:, 1:5], dets[:, 2:6]) if len(gt) and len(dets) else np.zeros((len(gt), 0))
    found = np.zeros(len(gt), bool)
    for k in range(len(dets)):                              # greedy: highest score first
        same = (gt[:, 0] == dets[k, 0]) & ~found & (overlap[:, k] >= iou_thresh)
        if same.any():
            found[np.argmax(np.where(same, overlap[:, k], -1.0))] = True
    result = []
    for i in range(len(gt)):
        cls = int(gt[i, 0])
        if found[i]:
            result.append((cls, "found", None))
            continue
        other = (dets[:, 0] != cls) & (overlap[i] >= iou_thresh) if len(dets) else np.zeros(0, bool)
        if other.any():
            result.append((cls, "confused", int(dets[np.argmax(np.where(other, overlap[i], -1)), 0])))
        else:
            result.append((cls, "missed", None))
    return result


def analyse(labels: Sequence[np.ndarray], detections: Sequence[np.ndarray],
            iou_thresh: float = 0.5, score_thresh: float = 0.5) -> dict:
    """Confusions, misses by size band and misses per photo over a test set.

    Returns
    -------
    dict
        ``confusions`` {(true, predicted): count}, ``bands`` {band: [not found, boxes]},
        ``missed_per_photo`` (list of int: boxes not found, confused ones included),
        ``found``, ``boxes``.
    """
    confusions: Counter = Counter()
    bands = {name: [0, 0] for name, _ in SIZE_BANDS}
    missed_per_photo = []
    found = boxes = 0
    for label, dets in zip(labels, detections):
        gt = ground_truth(label)
        outcome = match_photo(label, dets, iou_thresh, score_thresh)
        missed = 0
        for row, (cls, what, other) in zip(gt, outcome):
            band = bands[size_band(row[1:5])]
            band[1] += 1
            boxes += 1
            if what == "found":
                found += 1
                continue
            band[0] += 1
            missed += 1
            if what == "confused":
                confusions[(cls, other)] += 1
        missed_per_photo.append(missed)
    return {"confusions": dict(confusions), "bands": bands, "missed_per_photo": missed_per_photo,
            "found": found, "boxes": boxes}


def format_report(class_ap: dict, analysis: dict, class_names: Sequence[str],
                  iou_thresh: float = 0.5, score_thresh: float = 0.5, top: int = 5) -> str:
    """The report as text: per-class AP, top confusions, misses by size band."""
    width = max([len(n) for n in class_names] + [5])
    lines = [f"{'class':<{width}}  AP"]
    lines += [f"{name:<{width}}  {'n/a' if ap is None else f'{ap:.3f}'}"
              for name, ap in class_ap.items()]
    lines.append(f"boxes found (a detection of the class, score >= {score_thresh:g}, IoU >= "
                 f"{iou_thresh:g}): {analysis['found']} of {analysis['boxes']}")
    pairs = sorted(analysis["confusions"].items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    if pairs:
        lines.append(f"most confused (a box of the first class detected as the second at "
                     f"IoU >= {iou_thresh:g}):")
        lines += [f"  {class_names[a]} -> {class_names[b]}: {n}" for (a, b), n in pairs]
    else:
        lines.append("most confused: none (no box was detected as another class)")
    bands = ", ".join(f"{name} {miss} of {total}" for name, (miss, total) in analysis["bands"].items())
    edges = " / ".join(f"< {upper:g}" for _, upper in SIZE_BANDS[:-1])
    lines.append(f"boxes not found by size (side {edges} of the photo, larger): {bands}")
    return "\n".join(lines)


def pick_worst_best(missed_per_photo: Sequence[int], boxes_per_photo: Sequence[int],
                    count: int = 3) -> tuple[list[int], list[int]]:
    """Indices of the photos with the most missed boxes and of those with the fewest."""
    order = sorted(range(len(missed_per_photo)),
                   key=lambda i: (-missed_per_photo[i], -boxes_per_photo[i], i))
    worst = [i for i in order[:count] if missed_per_photo[i] > 0]
    best = [i for i in reversed(order) if i not in worst][:count]
    return worst, best


def _draw(image: np.ndarray, label: np.ndarray, dets: np.ndarray, names: Sequence[str],
          score_thresh: float, height: int) -> np.ndarray:
    """A BGR tile: label boxes green, detections (score >= thresh) orange with class names."""
    scale = height / image.shape[0]
    tile = cv2.resize(image, (max(1, int(round(image.shape[1] * scale))), height))
    h, w = tile.shape[:2]
    for row in label[label[:, 0] >= 0]:
        x1, y1, x2, y2 = (int(v) for v in row[1:5] * [w, h, w, h])
        cv2.rectangle(tile, (x1, y1), (x2, y2), (0, 200, 0), 2)
    for det in dets[(dets[:, 0] >= 0) & (dets[:, 1] >= score_thresh)]:
        x1, y1, x2, y2 = (int(v) for v in det[2:6] * [w, h, w, h])
        cv2.rectangle(tile, (x1, y1), (x2, y2), (0, 140, 255), 1)
        cv2.putText(tile, f"{names[int(det[0])]} {det[1]:.2f}", (x1 + 2, max(12, y1 + 12)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 140, 255), 1)
    return tile


def _row(tiles: list[np.ndarray], title: str, height: int) -> np.ndarray:
    gap = np.full((height, 6, 3), 255, np.uint8)              # white between two photos
    spaced = [part for tile in tiles for part in (tile, gap)][:-1]
    row = np.concatenate(spaced, axis=1) if tiles else np.full((height, 200, 3), 255, np.uint8)
    band = np.full((22, row.shape[1], 3), 255, np.uint8)
    cv2.putText(band, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return np.concatenate([band, row], axis=0)


def worst_best_picture(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                       detections: Sequence[np.ndarray], worst: Sequence[int],
                       best: Sequence[int], names: Sequence[str], output_path: str,
                       score_thresh: float = 0.5, height: int = 240) -> str:
    """Write a JPEG: the worst photos (BGR ``images``) in a row above the best; returns its path."""
    rows = []
    for title, picks in (("worst: most boxes missed (green: label, orange: detection)", worst),
                         ("best", best)):
        tiles = []
        for i in picks:
            if images[i] is not None:
                tiles.append(_draw(images[i], labels[i], detections[i], names, score_thresh, height))
        rows.append(_row(tiles, title, height))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    ok, encoded = cv2.imencode(".jpg", np.concatenate(rows, axis=0))
    if not ok:
        raise ValueError(f"cannot encode the picture for {output_path}")
    atomic_write(output_path, lambda tmp: encoded.tofile(tmp))
    return output_path
