"""Anchor coverage of a preset on a dataset's boxes, and anchors fitted to those boxes.

SSD trains an anchor as a positive when its IoU with a ground-truth box is at least 0.5
(``MultiBoxTarget``'s ``overlap_threshold``); a box with no such anchor is only matched to its
best anchor, however poor. :func:`coverage` counts, per feature layer, the boxes that find an
anchor at the threshold (anchors from MXNet's own ``MultiBoxPrior``); :func:`propose_anchors`
fits sizes and ratios to the boxes:

* ratios: 1-D k-means on log(width / height) of the boxes (``len(ratios)`` clusters, the
  middle one first, as the preset's ``1`` is);
* sizes: k-means of the boxes' sqrt(area) into two sizes per layer, sorted and dealt to the
  layers from the finest map to the coarsest; then a coordinate search over each layer's
  sizes that keeps a change only if it raises the number of covered boxes, with sizes
  increasing from layer to layer and at most ``MAX_SIZE_IN_STEPS`` anchor steps of their map.
  It starts from the preset's sizes (the k-means sizes only if they cover more boxes), so the
  proposal never covers fewer boxes than the preset, and a preset that already covers every
  box keeps its sizes (only the ratios follow the data).

The command line is ``tools/anchors.py``; ``train.py --anchors fit|FILE`` uses a proposal.
The anchors themselves come from :mod:`symbol.anchors` (the network's ``MultiBoxPrior``).
"""
from __future__ import annotations

import numpy as np

from dataset.recordio_utils import read_labels, read_lst
from symbol.anchors import box_iou, layer_anchors, load_anchor_file
from symbol.symbol_factory import get_config


def load_boxes(path: str) -> np.ndarray:
    """Ground-truth boxes of a ``.rec`` (with its ``.idx``) or a detection ``.lst``.

    Returns
    -------
    np.ndarray
        (G, 4) float64 ``[x1, y1, x2, y2]`` normalised to [0, 1].
    """
    if path.endswith(".lst"):
        labels = [label[int(label[0]):].reshape(-1, int(label[1]))  # (len-2,) -> (N, W)
                  for _, label, _ in read_lst(path)]
    elif path.endswith(".rec"):
        labels = read_labels(path)
    else:
        raise ValueError(f"boxes file {path!r}: need a .rec (with its .idx) or a .lst")
    rows = [lb[lb[:, 0] >= 0, 1:5] for lb in labels if lb.size]
    boxes = np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 4))
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if not len(boxes):
        raise ValueError(f"boxes file {path}: no boxes with a positive area")
    return boxes


def _layer_match(boxes: np.ndarray, anchors: np.ndarray, thresh: float,
                 chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(G,) best IoU and (G,) count of anchors at ``thresh``, in chunks of boxes (memory)."""
    best = np.zeros(len(boxes))
    count = np.zeros(len(boxes), dtype=np.int64)
    for start in range(0, len(boxes), chunk):
        overlaps = box_iou(boxes[start:start + chunk], anchors)      # (chunk, N)
        best[start:start + chunk] = overlaps.max(axis=1)
        count[start:start + chunk] = (overlaps >= thresh).sum(axis=1)
    return best, count


def coverage(boxes: np.ndarray, layers: list[dict], thresh: float = 0.5) -> dict:
    """How many boxes find an anchor with IoU >= ``thresh``, per layer and on any layer.

    Returns
    -------
    dict
        ``boxes`` (G), ``per_layer`` (list of dict: name, map, sizes, ratios, covered,
        positives = anchors with IoU >= thresh summed over the boxes), ``covered`` (on any
        layer), ``fraction``, ``mean_best_iou`` and ``median_positives`` (per box).
    """
    best = np.zeros(len(boxes))
    positives = np.zeros(len(boxes), dtype=np.int64)
    per_layer = []
    for layer in layers:
        layer_best, layer_pos = _layer_match(boxes, layer["anchors"], thresh)
        best = np.maximum(best, layer_best)
        positives += layer_pos
        per_layer.append({"name": layer["name"], "map": layer["map"], "sizes": layer["sizes"],
                          "ratios": layer["ratios"], "covered": int((layer_best >= thresh).sum()),
                          "positives": int(layer_pos.sum())})
    covered = int((best >= thresh).sum())
    return {"boxes": len(boxes), "per_layer": per_layer, "covered": covered,
            "fraction": covered / len(boxes), "mean_best_iou": float(best.mean()),
            "median_positives": float(np.median(positives))}


def _kmeans_1d(values: np.ndarray, k: int, iterations: int = 50) -> np.ndarray:
    """Sorted centres of a 1-D k-means started at evenly spaced quantiles."""
    k = max(1, min(k, len(np.unique(values))))
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        assign = np.abs(values[:, None] - centres[None, :]).argmin(axis=1)
        new = np.array([values[assign == j].mean() if np.any(assign == j) else centres[j]
                        for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def kmeans_ratios(boxes: np.ndarray, num_ratios: int) -> list[float]:
    """Aspect ratios (width / height) from k-means on log ratio; the middle cluster first."""
    log_ratio = np.log((boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1]))
    centres = list(np.exp(_kmeans_1d(log_ratio, num_ratios)))
    middle = centres.pop(len(centres) // 2)
    ratios = [middle] + centres
    while len(ratios) < num_ratios:       # fewer distinct shapes than ratios asked for
        ratios.append(ratios[-1] * 1.5)
    return [round(float(r), 3) for r in ratios]


def kmeans_sizes(boxes: np.ndarray, num_layers: int, per_layer: int = 2) -> list[list[float]]:
    """``per_layer`` sizes per layer from k-means on sqrt(box area), smallest on layer 0."""
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    centres = _kmeans_1d(np.log(side), num_layers * per_layer)
    centres = np.exp(centres)
    if len(centres) < num_layers * per_layer:    # few distinct sizes: spread them out
        centres = np.geomspace(side.min(), min(1.0, side.max() * 1.2), num_layers * per_layer)
    return [[round(float(s), 3) for s in centres[k * per_layer:(k + 1) * per_layer]]
            for k in range(num_layers)]


# A layer's first anchor size stays within this many anchor steps of its map: below ~2.5 steps
# an object between two anchor centres finds no anchor with IoU > 0.5 (docs/RECIPE.md); far
# above ~8 steps a fine map would predict objects much larger than its receptive field.
MAX_SIZE_IN_STEPS = 8.0


def propose_anchors(boxes: np.ndarray, network: str, data_shape: int, thresh: float = 0.5,
                    rounds: int = 2, grid: int = 24) -> tuple[list[list[float]], list[list[float]]]:
    """Sizes and ratios per layer that raise the coverage of ``boxes`` (see module doc).

    Parameters
    ----------
    boxes : np.ndarray
        (G, 4) normalised ground-truth boxes.
    network, data_shape : str, int
        Preset and input side; the layer count and anchors per location are kept.
    thresh : float
        IoU a box needs with an anchor to count as covered.
    rounds : int
        Passes of the coordinate search over the layers.
    grid : int
        Candidate sizes per search step (geometric from 0.03 to 1.0).

    Returns
    -------
    tuple of (list of list of float, list of list of float)
        ``(sizes, ratios)`` for ``get_config(network, data_shape, sizes=..., ratios=...)``.
    """
    config = get_config(network, data_shape)
    maps = [layer["map"] for layer in layer_anchors(network, data_shape)]
    num_layers = len(config["from_layers"])
    num_ratios = len(config["ratios"][0])
    per_layer = len(config["sizes"][0])
    steps = config["steps"] or [1.0 / max(m) for m in maps]
    upper = [min(1.0, MAX_SIZE_IN_STEPS * step) for step in steps]
    ratios = [kmeans_ratios(boxes, num_ratios)] * num_layers

    def score(sizes: list[list[float]]) -> tuple[int, float]:
        result = coverage(boxes, layer_anchors(network, data_shape, sizes, ratios), thresh)
        return result["covered"], result["mean_best_iou"]

    def rescale(layer_sizes: list[float], first: float) -> list[float]:
        # the layer's other sizes keep their ratio to the first (the preset's spacing)
        return [round(float(min(1.0, first * s / layer_sizes[0])), 3) for s in layer_sizes]

    fitted = kmeans_sizes(boxes, num_layers, per_layer)
    fitted = [rescale(fitted[k], min(fitted[k][0], upper[k])) for k in range(num_layers)]
    sizes = [list(s) for s in config["sizes"]]
    best = score(sizes)
    if score(fitted)[0] > best[0]:          # the preset wins ties: change only what helps
        sizes, best = fitted, score(fitted)
    grid_sizes = np.round(np.geomspace(0.03, 1.0, grid), 3)
    for _ in range(rounds):
        changed = False
        for k in range(num_layers):
            low = sizes[k - 1][0] if k > 0 else 0.0
            high = min(sizes[k + 1][0] if k + 1 < num_layers else 1.0, upper[k])
            for first in grid_sizes[(grid_sizes >= low) & (grid_sizes <= high)]:
                trial = [list(s) for s in sizes]
                trial[k] = rescale(sizes[k], float(first))
                trial_score = score(trial)
                if trial_score[0] > best[0]:
                    best, sizes, changed = trial_score, trial, True
        if not changed:
            break
    return sizes, ratios


def format_coverage(result: dict, title: str) -> str:
    """The per-layer coverage table as text lines."""
    lines = [f"{title}: {result['covered']}/{result['boxes']} boxes "
             f"({100 * result['fraction']:.1f} %) have an anchor with IoU >= the threshold; "
             f"mean best IoU {result['mean_best_iou']:.3f}, median positive anchors per box "
             f"{result['median_positives']:g}",
             f"  {'layer':<30} {'map':>7} {'sizes':<18} {'ratios':<22} {'covered':>8} "
             f"{'positives':>9}"]
    for layer in result["per_layer"]:
        sizes = ",".join(f"{s:g}" for s in layer["sizes"])
        ratios = ",".join(f"{r:g}" for r in layer["ratios"])
        lines.append(f"  {layer['name']:<30} {layer['map'][0]:>3}x{layer['map'][1]:<3} "
                     f"{sizes:<18} {ratios:<22} {layer['covered']:>8} {layer['positives']:>9}")
    return "\n".join(lines)


def resolve_anchors(value: str, network: str, data_shape: int, train_path: str,
                    flag: str = "--anchors") -> dict:
    """Config overrides (``sizes``, ``ratios``) that ``--anchors`` asks for.

    Parameters
    ----------
    value : str
        ``''``: the preset's anchors (no overrides); ``fit``: :func:`propose_anchors` on the
        boxes of ``train_path``; otherwise a JSON file written by ``tools/anchors.py --output``.
    network, data_shape : str, int
        The preset and input side trained.
    train_path : str
        The training record (read for ``fit``).

    Returns
    -------
    dict
        ``{}`` or ``{"sizes": ..., "ratios": ...}`` for ``get_config`` / ``get_symbol_train``.
    """
    if not value:
        return {}
    if value == "fit":
        sizes, ratios = propose_anchors(load_boxes(train_path), network, data_shape)
        overrides = {"sizes": sizes, "ratios": ratios}
    else:
        overrides = load_anchor_file(value, flag)
    try:
        get_config(network, data_shape, **overrides)
    except ValueError as err:
        raise ValueError(f"{flag} {value}: anchors do not fit {network} at {data_shape}: {err}") from None
    return overrides


def coverage_lines(train_path: str, network: str, data_shape: int, overrides: dict,
                   max_boxes: int = 2000, seed: int = 0) -> list[str]:
    """Coverage table(s) of the training boxes for the training log (preset, and overrides).

    At most ``max_boxes`` boxes (a seeded sample) are scored, to keep large datasets cheap.
    """
    boxes = load_boxes(train_path)
    note = f"{len(boxes)} training boxes"
    if len(boxes) > max_boxes:
        boxes = boxes[np.random.default_rng(seed).choice(len(boxes), max_boxes, replace=False)]
        note += f", a sample of {max_boxes}"
    lines = [f"Anchor coverage ({note}, IoU >= 0.5):"]
    lines += format_coverage(coverage(boxes, layer_anchors(network, data_shape)),
                             f"preset {network}").splitlines()
    if overrides:
        lines += format_coverage(coverage(boxes, layer_anchors(network, data_shape, **overrides)),
                                 "anchors used (--anchors)").splitlines()
    return lines
