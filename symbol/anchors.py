"""Anchors of a preset's feature layers, computed as the network computes them, and the anchor file.

:func:`layer_anchors` runs MXNet's own ``MultiBoxPrior`` over every feature layer of a preset
(with the sizes and ratios it is given, or the preset's); :func:`box_iou` is the IoU the
matching and the metrics use; :func:`load_anchor_file` reads the ``{"sizes", "ratios"}`` JSON
that ``train.py --anchors FILE`` and the inference CLIs take. Fitting anchors to a data set's
boxes reads records, so it lives with the data: :mod:`dataset.anchor_fit`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

from config.mxnet_compat import mx
import numpy as np

from symbol.symbol_factory import describe_feature_layers, get_config


def layer_anchors(network: str, data_shape: int, sizes: Sequence[Sequence[float]] | None = None,
                  ratios: Sequence[Sequence[float]] | None = None) -> list[dict]:
    """Anchors of every feature layer, computed by ``MultiBoxPrior`` as the network does.

    Returns
    -------
    list of dict
        Per layer: ``name``, ``map`` (H, W), ``sizes``, ``ratios`` and ``anchors``
        (N_k, 4) ``[x1, y1, x2, y2]`` normalised.
    """
    overrides = {k: v for k, v in (("sizes", sizes), ("ratios", ratios)) if v is not None}
    config = get_config(network, data_shape, **overrides)
    layers = []
    for k, layer in enumerate(describe_feature_layers(network, data_shape, **overrides)):
        channels, height, width = layer["shape"]
        step = (config["steps"][k],) * 2 if config["steps"] else (-1.0, -1.0)
        anchors = mx.nd.contrib.MultiBoxPrior(mx.nd.zeros((1, 1, height, width)),
                                              sizes=config["sizes"][k], ratios=config["ratios"][k],
                                              steps=step, clip=False)
        layers.append({"name": layer["name"], "map": (height, width),
                       "sizes": list(config["sizes"][k]), "ratios": list(config["ratios"][k]),
                       "anchors": anchors.asnumpy().reshape(-1, 4)})  # (1, N_k, 4) -> (N_k, 4)
    return layers


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes in normalised coordinates (no +1 on widths).

    Parameters
    ----------
    boxes_a : np.ndarray
        (..., N, 4) ``[x1, y1, x2, y2]``.
    boxes_b : np.ndarray
        (..., M, 4), same leading dimensions.

    Returns
    -------
    np.ndarray
        (..., N, M) intersection over union; 0 where the union is empty.
    """
    a = boxes_a[..., :, None, :]                            # (..., N, 1, 4)
    b = boxes_b[..., None, :, :]                            # (..., 1, M, 4)
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return iou


def load_anchor_file(path: str, flag: str = "--anchors") -> dict:
    """``{"sizes": ..., "ratios": ...}`` from a JSON file written by ``--output``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: file does not exist (write it with "
                                "python tools/anchors.py TRAIN.rec --output FILE)")
    try:
        with open(path) as f:
            content = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} {path}: not valid JSON ({err})") from None
    if not isinstance(content, dict) or not {"sizes", "ratios"} <= set(content):
        raise ValueError(f"{flag} {path}: need a JSON object with 'sizes' and 'ratios' "
                         "(as written by tools/anchors.py --output)")
    return {"sizes": content["sizes"], "ratios": content["ratios"]}
