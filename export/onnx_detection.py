"""MXNet 1.9.1's ``MultiBoxDetection`` rebuilt from ONNX operators, answer for answer.

What MXNet's CPU operator does, per image (``src/operator/contrib/multibox_detection.cc``,
measured against the wheel in ``tests/test_onnx.py``):

1. per anchor, the best non-background class (the first one on a tie) and its probability;
   the anchor is dropped when that probability is below ``threshold`` (0.01);
2. the box decoded from the anchor in centre form with the variances, clipped to [0, 1];
3. the kept rows stable-sorted by descending score (equal scores keep the anchor order), the
   first ``nms_topk`` kept; rows after them get class -1;
4. greedy suppression in that order: a row still alive suppresses every later row with
   IoU >= ``nms_threshold`` (of the same class unless ``force_suppress``); a suppressed row gets
   class -1 and keeps its score and box.

ONNX ``NonMaxSuppression`` is not used: it suppresses per class only, at IoU strictly above the
threshold, and its order among equal scores is not specified. Here the sort is ``TopK`` (ONNX
breaks ties by the lower index: a stable sort), the suppression pairs are one (N, K, K) mask
computed with MXNet's IoU formula in float32, and the greedy pass is a ``Loop`` over the rows,
as long as the longest list of kept rows in the batch.

The output is (N, K, 6) ``[class_id, score, xmin, ymin, xmax, ymax]`` with K = min(nms_topk,
anchors): MXNet's rows 0..K-1 (its rows after K are always class -1); empty rows are all -1.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto, helper

from export.onnx_graph import OnnxGraph, value_info


def anchor_constants(anchors: np.ndarray) -> tuple[np.ndarray, ...]:
    """Anchor width, height and centre (each (A,) float32), computed as MXNet computes them."""
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 4)
    left, top, right, bottom = (anchors[:, i] for i in range(4))
    two = np.float32(2)
    return right - left, bottom - top, (left + right) / two, (top + bottom) / two


def _column(g: OnnxGraph, tensor: str, index: int, base: str) -> str:
    """``tensor[..., index]``: (N, A, 4) -> (N, A)."""
    return g.op("Gather", [tensor, g.const(f"{base}_index", index, np.int64)], base, axis=2)


def _decode(g: OnnxGraph, loc_pred: str, anchors: np.ndarray, variances: Sequence[float],
            clip: bool) -> str:
    """Boxes (N, A, 4) corners from ``loc_pred`` (N, 4A) and the anchors (A, 4)."""
    width, height, centre_x, centre_y = anchor_constants(anchors)
    loc = g.op("Reshape", [loc_pred, g.const("loc_shape", [0, -1, 4], np.int64)], "loc")
    var = [g.const(f"variance_{i}", np.float32(v)) for i, v in enumerate(variances)]
    half = g.const("two", np.float32(2))
    corners = []
    for axis, (size, centre) in enumerate(((width, centre_x), (height, centre_y))):
        offset = _column(g, loc, axis, f"loc_{'xy'[axis]}")
        scale = _column(g, loc, axis + 2, f"loc_{'wh'[axis]}")
        size_c = g.const(f"anchor_{'wh'[axis]}", size)
        # o = p * v * a_size + a_centre; half = exp(p * v) * a_size / 2 (MXNet's order)
        moved = g.op("Mul", [g.op("Mul", [offset, var[axis]], f"off_{axis}_v"), size_c],
                     f"off_{axis}_scaled")
        centre_o = g.op("Add", [moved, g.const(f"anchor_c{'xy'[axis]}", centre)],
                        f"centre_{'xy'[axis]}")
        grown = g.op("Exp", [g.op("Mul", [scale, var[axis + 2]], f"scale_{axis}_v")],
                     f"exp_{axis}")
        extent = g.op("Div", [g.op("Mul", [grown, size_c], f"size_{axis}"), half],
                      f"half_{axis}")
        corners.append(g.op("Sub", [centre_o, extent], f"min_{'xy'[axis]}"))
        corners.append(g.op("Add", [centre_o, extent], f"max_{'xy'[axis]}"))
    xmin, xmax, ymin, ymax = corners
    ordered = []
    for name, corner in zip(("xmin", "ymin", "xmax", "ymax"), (xmin, ymin, xmax, ymax)):
        if clip:
            corner = g.op("Clip", [corner, g.const(f"{name}_lo", np.float32(0)),
                                   g.const(f"{name}_hi", np.float32(1))], f"{name}_clip")
        ordered.append(g.op("Unsqueeze", [corner, g.const(f"{name}_axis", [2], np.int64)],
                            f"{name}_col"))
    return g.op("Concat", ordered, "boxes", axis=2)                       # (N, A, 4)


def _pairwise_iou(g: OnnxGraph, boxes: str) -> str:
    """IoU of every pair of rows of ``boxes`` (N, K, 4) -> (N, K, K), MXNet's formula."""
    rows, cols = {}, {}
    for i, name in enumerate(("x0", "y0", "x1", "y1")):
        column = _column(g, boxes, i, f"k_{name}")                          # (N, K)
        rows[name] = g.op("Unsqueeze", [column, g.const(f"{name}_ax2", [2], np.int64)],
                          f"{name}_i")                                       # (N, K, 1)
        cols[name] = g.op("Unsqueeze", [column, g.const(f"{name}_ax1", [1], np.int64)],
                          f"{name}_j")                                       # (N, 1, K)
    zero = g.const("iou_zero", np.float32(0))
    sides = []
    for lo, hi in (("x0", "x1"), ("y0", "y1")):
        right = g.op("Min", [rows[hi], cols[hi]], f"inter_{hi}")
        left = g.op("Max", [rows[lo], cols[lo]], f"inter_{lo}")
        sides.append(g.op("Max", [zero, g.op("Sub", [right, left], f"inter_{lo}_len")],
                          f"inter_{lo}_side"))
    inter = g.op("Mul", sides, "inter")

    def area(t: dict, tag: str) -> str:
        return g.op("Mul", [g.op("Sub", [t["x1"], t["x0"]], f"w_{tag}"),
                            g.op("Sub", [t["y1"], t["y0"]], f"h_{tag}")], f"area_{tag}")

    union = g.op("Sub", [g.op("Add", [area(rows, "i"), area(cols, "j")], "areas"), inter],
                 "union")
    empty = g.op("LessOrEqual", [union, zero], "union_empty")
    return g.op("Where", [empty, zero, g.op("Div", [inter, union], "iou_raw")], "iou")


def _suppression_mask(g: OnnxGraph, boxes: str, classes: str, num_rows: int,
                      nms_threshold: float, force_suppress: bool) -> str:
    """(N, K, K) bool: row i suppresses row j when i < j, IoU >= threshold (and same class)."""
    iou = _pairwise_iou(g, boxes)
    mask = g.op("GreaterOrEqual", [iou, g.const("nms_threshold", np.float32(nms_threshold))],
                "iou_over")
    later = np.triu(np.ones((num_rows, num_rows), dtype=bool), k=1)          # j > i
    mask = g.op("And", [mask, g.const("later_rows", later, np.bool_)], "suppress_later")
    if not force_suppress:
        same = g.op("Equal", [
            g.op("Unsqueeze", [classes, g.const("cls_ax2", [2], np.int64)], "cls_i"),
            g.op("Unsqueeze", [classes, g.const("cls_ax1", [1], np.int64)], "cls_j")],
            "same_class")
        mask = g.op("And", [mask, same], "suppress_same_class")
    return mask


def _greedy_body(suppress: str) -> object:
    """Loop body: ``keep &= ~(keep[:, i] & suppress[:, i, :])`` for the row ``i``."""
    nodes = [
        helper.make_node("Gather", [suppress, "i"], ["row"], axis=1),          # (N, K)
        helper.make_node("Gather", ["keep_in", "i"], ["alive"], axis=1),       # (N,)
        helper.make_node("Unsqueeze", ["alive", "axis1"], ["alive_col"]),      # (N, 1)
        helper.make_node("And", ["alive_col", "row"], ["killed"]),
        helper.make_node("Not", ["killed"], ["spared"]),
        helper.make_node("And", ["keep_in", "spared"], ["keep_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    axis = helper.make_tensor("axis1", TensorProto.INT64, [1], [1])
    return helper.make_graph(
        nodes, "greedy_nms_step",
        [value_info("i", [], TensorProto.INT64), value_info("cond_in", [], TensorProto.BOOL),
         value_info("keep_in", ["N", "K"], TensorProto.BOOL)],
        [value_info("cond_out", [], TensorProto.BOOL),
         value_info("keep_out", ["N", "K"], TensorProto.BOOL)],
        initializer=[axis])


def _greedy_nms(g: OnnxGraph, suppress: str, valid: str) -> str:
    """Rows (N, K) that survive the greedy pass; loops over the longest valid prefix."""
    counts = g.op("ReduceSum", [g.op("Cast", [valid], "valid_int", to=TensorProto.INT64),
                                g.const("count_axis", [1], np.int64)], "valid_count",
                  keepdims=0)                                                  # (N,)
    trips = g.op("ReduceMax", [counts], "loop_trips", keepdims=0)              # ()
    keep = g.fresh("keep")                 # the body reads ``suppress`` from the outer scope
    g.nodes.append(helper.make_node("Loop", [trips, "", valid], [keep], name="greedy_nms",
                                    body=_greedy_body(suppress)))
    return keep


def add_multibox_detection(g: OnnxGraph, cls_prob: str, loc_pred: str, anchors: np.ndarray,
                           threshold: float = 0.01, clip: bool = True,
                           variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
                           nms_threshold: float = 0.5, force_suppress: bool = False,
                           nms_topk: int = -1, output: str = "detections") -> str:
    """Append MultiBoxDetection to ``g``; returns the (N, K, 6) output name.

    Parameters
    ----------
    cls_prob : str
        (N, C+1, A) class probabilities, background first.
    loc_pred : str
        (N, 4A) box offsets.
    anchors : np.ndarray
        (A, 4) or (1, A, 4) corner anchors (``MultiBoxPrior``'s output).
    threshold, clip, variances, nms_threshold, force_suppress, nms_topk
        MultiBoxDetection's parameters, same meaning.
    """
    num_anchors = int(np.asarray(anchors).size // 4)
    num_rows = num_anchors if nms_topk <= 0 else min(int(nms_topk), num_anchors)
    foreground = g.op("Slice", [cls_prob, g.const("fg_start", [1], np.int64),
                                g.const("fg_end", [np.iinfo(np.int64).max], np.int64),
                                g.const("fg_axis", [1], np.int64)], "fg_prob")  # (N, C, A)
    score = g.op("ReduceMax", [foreground], "best_score", axes=[1], keepdims=0)  # (N, A)
    label = g.op("ArgMax", [foreground], "best_class", axis=1, keepdims=0)      # first on ties
    thresh = g.const("score_threshold", np.float32(threshold))
    minus_one = g.const("minus_one", np.float32(-1))
    ranked = g.op("Where", [g.op("GreaterOrEqual", [score, thresh], "above"), score, minus_one],
                  "ranked_score")
    top_score, order = g.op("TopK", [ranked, g.const("topk", [num_rows], np.int64)], "top_score",
                            num_outputs=2, axis=1, largest=1, sorted=1)       # (N, K)
    boxes = _decode(g, loc_pred, anchors, variances, clip)                      # (N, A, 4)
    top_boxes = g.op("GatherND", [boxes, g.op("Unsqueeze", [order, g.const(
        "order_axis", [2], np.int64)], "order_col")], "top_boxes", batch_dims=1)  # (N, K, 4)
    top_label = g.op("GatherElements", [label, order], "top_class", axis=1)     # (N, K)
    valid = g.op("GreaterOrEqual", [top_score, thresh], "top_valid")
    suppress = _suppression_mask(g, top_boxes, top_label, num_rows, nms_threshold,
                                 force_suppress)
    keep = _greedy_nms(g, suppress, valid)
    class_id = g.op("Where", [keep, g.op("Cast", [top_label], "top_class_f",
                                         to=TensorProto.FLOAT), minus_one], "class_id")
    valid_col = g.op("Unsqueeze", [valid, g.const("valid_axis", [2], np.int64)], "valid_col")
    box_out = g.op("Where", [valid_col, top_boxes, minus_one], "box_out")
    columns = [g.op("Unsqueeze", [t, g.const(f"{t}_axis", [2], np.int64)], f"{t}_col")
               for t in (class_id, top_score)]
    return g.op("Concat", columns + [box_out], output, axis=2)
