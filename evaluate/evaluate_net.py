"""Score a trained SSD checkpoint on a record file.

:func:`score_detections` is the one scoring loop, shared by training validation and
``evaluate.py``; :func:`evaluate_net` loads a checkpoint, binds the inference graph and reports
per-class AP, mAP (VOC area or 11-point), optionally COCO AP, with the protocol line.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Sequence

from config.mxnet_compat import mx
import numpy as np

from evaluate.eval_metric import MApMetric, VOC07MApMetric, describe_protocol
from training.checkpoint import atomic_write, load_arg_aux, load_symbol_file
from evaluate import refuse_flip_test_with_saved_graph
from symbol.common import has_flip_test

logger = logging.getLogger(__name__)


def parse_data_shape(data_shape) -> tuple[int, int]:
    """``300``, ``"300"``, ``"300,400"``, ``(300, 400)`` or ``(3, 300, 400)`` to (height, width).

    Raises
    ------
    ValueError
        Naming ``--data-shape`` and the value when it is not one or two positive integers.
    """
    if isinstance(data_shape, str):
        parts = [p for p in re.split(r"[,x\s]+", data_shape.strip()) if p]
    elif isinstance(data_shape, (int, np.integer)):
        parts = [data_shape]
    else:
        parts = list(data_shape)
        if len(parts) == 3:
            parts = parts[1:]
    try:
        values = [int(p) for p in parts]
    except (TypeError, ValueError):
        values = []
    if len(values) not in (1, 2) or min(values) <= 0:
        raise ValueError(f"--data-shape must be one positive integer or 'height,width', "
                         f"got {data_shape!r}")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def resolve_prefix(prefix: str, network: str, data_shape, epoch: int) -> str:
    """Checkpoint prefix as the original scripts resolve it.

    A prefix ending in ``_`` gets ``network + '_' + side`` appended (``model/ssd_`` ->
    ``model/ssd_vgg16_reduced_300``, what training writes). Any other prefix is used as
    given when its ``.params`` file exists, else the original's ``prefix + '_' + side``.
    """
    height, width = parse_data_shape(data_shape)
    side = str(height) if height == width else f"{height}_{width}"
    if prefix.endswith("_"):
        return f"{prefix}{network}_{side}"
    if os.path.isfile(f"{prefix}-{epoch:04d}.params"):
        return prefix
    alternative = f"{prefix}_{side}"
    if os.path.isfile(f"{alternative}-{epoch:04d}.params"):
        return alternative
    return prefix


def load_params(model_prefix: str, epoch: int) -> tuple[dict, dict]:
    """``arg_params, aux_params`` of ``{model_prefix}-{epoch:04d}.params``.

    Raises
    ------
    FileNotFoundError
        Naming the missing file and the epochs that do exist for this prefix.
    ValueError
        The file is truncated, corrupt or not a named-parameter file.
    """
    return load_arg_aux(f"{model_prefix}-{epoch:04d}.params", "--prefix/--epoch", model_prefix,
                        none_hint="no checkpoint exists for this prefix (check --prefix, "
                                  "--network and --data-shape)")


def check_params(symbol: mx.sym.Symbol, arg_params: dict, aux_params: dict,
                 data_shape: tuple[int, int, int, int], what: str = "") -> None:
    """Check a checkpoint against a graph before binding.

    Parameters
    ----------
    symbol : mx.sym.Symbol
        Inference graph (input ``data``).
    arg_params, aux_params : dict
        Loaded parameters.
    data_shape : tuple
        (B, 3, H, W) input shape.
    what : str
        Description of the graph for the message (network, classes).

    Raises
    ------
    ValueError
        Naming the first missing or mis-shaped parameter with both shapes.
    """
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=data_shape)
    expected = dict(zip(symbol.list_arguments(), arg_shapes))
    expected_aux = dict(zip(symbol.list_auxiliary_states(), aux_shapes))
    for table, params in ((expected, arg_params), (expected_aux, aux_params)):
        for name, shape in table.items():
            if name in ("data", "label"):
                continue
            if name not in params:
                raise ValueError(f"checkpoint has no parameter {name!r} needed by {what}: "
                                 f"wrong --network?")
            if tuple(params[name].shape) != tuple(shape):
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(params[name].shape)} in the checkpoint "
                    f"but {tuple(shape)} in {what}: check --network and --num-class "
                    f"(a class head has (num_class + 1) * anchors outputs)")


def _slice(arrays, count: int):
    return [a[:count] for a in arrays]


def fresh_binding(module):
    """A newly bound copy of a bound ``mx.mod.Module`` holding its current parameters.

    MXNet's MKL-DNN subgraph backend (on by default for CPU inference) fuses Convolution +
    BatchNorm and caches the fused weights at the first forward; new weights given later by
    ``set_params`` to the same bound module are not reliably picked up (new BatchNorm statistics
    alone are), so the module computes with partly stale weights
    (measured: training validation of ``tiny`` reusing one module gave mAP 0.0128 where the
    same checkpoint gives 0.0194 in a fresh binding). Rebinding is cheap and always right.
    Anything that is not a bound, initialised Module is returned unchanged.
    """
    if not isinstance(module, mx.mod.Module) or not (module.binded and module.params_initialized):
        return module
    arg_params, aux_params = module.get_params()
    fresh = mx.mod.Module(module.symbol, data_names=module.data_names,
                          label_names=module.label_names, context=module._context,
                          logger=module.logger)
    fresh.bind(data_shapes=module.data_shapes, label_shapes=module.label_shapes,
               for_training=False)
    fresh.set_params(arg_params, aux_params, allow_missing=False, force_init=True)
    return fresh


def score_detections(module: mx.mod.Module, data_iter: mx.io.DataIter, metric,
                     num_batch: int | None = None, progress: bool = False) -> int:
    """Run a bound inference module over a detection iterator and update a metric.

    Parameters
    ----------
    module : mx.mod.Module
        Bound module whose outputs hold the detections (B, N, 6) at the metric's
        ``pred_idx`` (the ``get_symbol`` graph: output 0). A bound ``mx.mod.Module`` is
        rebound with its current parameters first (see :func:`fresh_binding`), so reusing
        one module across epochs with ``set_params`` is safe.
    data_iter : mx.io.DataIter
        Yields batches with ``label[0]`` (B, M, 6); reset before scoring.
    metric : mx.metric.EvalMetric
        Reset, then updated with ``(batch.label, outputs)`` restricted to the non-padded
        images of each batch (a ``CompositeEvalMetric`` works too).
    num_batch : int, optional
        Score at most this many batches; ``None`` or a negative value scores all.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    int
        Number of images scored (padded images of the last batch excluded).
    """
    module = fresh_binding(module)          # never score with stale fused weights
    data_iter.reset()
    metric.reset()
    limit = None if num_batch is None or num_batch < 0 else int(num_batch)
    batches = data_iter
    if progress:
        from tqdm import tqdm
        batches = tqdm(data_iter, total=limit, unit="batch", desc="scoring")
    num_images = 0
    for index, batch in enumerate(batches):
        if limit is not None and index >= limit:
            break
        module.forward(batch, is_train=False)
        outputs = module.get_outputs()
        batch_size = batch.data[0].shape[0]
        num_valid = batch_size - int(batch.pad or 0)
        if num_valid <= 0:
            continue
        if num_valid < batch_size:
            metric.update(_slice(batch.label, num_valid), _slice(outputs, num_valid))
        else:
            metric.update(batch.label, outputs)
        num_images += num_valid
    expected = getattr(data_iter, "num_images", None)
    if limit is None and isinstance(expected, int) and num_images != expected:
        logger.warning("scored %d images but the record holds %d: the iterator did not start "
                       "its pass at the first record (C++ round_batch carry-over after reset)",
                       num_images, expected)
    return num_images


def build_metric(num_classes: int, class_names: Sequence[str] | None, ovp_thresh: float,
                 use_difficult: bool, voc07_metric: bool, pred_idx: int = 0):
    """The VOC mAP metric used by training validation and ``evaluate.py``."""
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"--class-names has {len(names)} names but --num-class is {num_classes}")
    metric_cls = VOC07MApMetric if voc07_metric else MApMetric
    return metric_cls(ovp_thresh=ovp_thresh, use_difficult=use_difficult, class_names=names,
                      pred_idx=pred_idx)


def load_inference_symbol(network: str, data_shape: tuple[int, int], num_classes: int,
                          model_prefix: str, nms_thresh: float, force_nms: bool, nms_topk: int,
                          deploy_net: bool, anchors: dict | None = None,
                          flip_test: bool = False) -> mx.sym.Symbol:
    """The detection graph: rebuilt from the preset, or the checkpoint's own with ``deploy_net``.

    ``anchors``: ``sizes`` / ``ratios`` overrides of the preset (``train.py --anchors``);
    ``flip_test``: each image's predictions averaged with its mirror's (``get_symbol``).
    """
    if deploy_net:
        return load_symbol_file(f"{model_prefix}-symbol.json", "--deploy")
    from symbol.symbol_factory import get_symbol
    side = data_shape[0] if data_shape[0] == data_shape[1] else data_shape
    return get_symbol(network, side, num_classes, nms_thresh=nms_thresh,
                      force_suppress=force_nms, nms_topk=nms_topk, flip_test=flip_test,
                      **(anchors or {}))


def _fit_batch_size(batch_size: int, path_imgrec: str, path_imglist: str,
                    num_devices: int) -> int:
    """``batch_size``, lowered to the number of images scored when it is larger.

    MXNet's record iterator fails in C++ on a batch larger than its record; evaluating a
    small validation set with the original README's ``--batch-size 128`` should just work.
    """
    from dataset.recordio_utils import count_records, read_lst
    num_images = len(read_lst(path_imglist)) if path_imglist else count_records(path_imgrec)
    if batch_size <= num_images:
        return batch_size
    fitted = max(num_devices, num_images - num_images % num_devices)
    logger.info("--batch-size %d is larger than the %d images of %s: using %d", batch_size,
                num_images, path_imglist or path_imgrec, fitted)
    return fitted


def evaluate_net(net: str, path_imgrec: str, num_classes: int, num_batch: int | None,
                 mean_pixels: Sequence[float], data_shape, model_prefix: str, epoch: int,
                 ctx: mx.Context | list[mx.Context] | None = None, batch_size: int = 32,
                 path_imglist: str = "", nms_thresh: float = 0.45, force_nms: bool = False,
                 ovp_thresh: float = 0.5, use_difficult: bool = False,
                 class_names: Sequence[str] | None = None, voc07_metric: bool = False,
                 deploy_net: bool = False, metric: str = "voc", output_dir: str | None = None,
                 nms_topk: int = 400, progress: bool = True,
                 anchors: dict | None = None, onnx_path: str | None = None,
                 flip_test: bool = False) -> dict:
    """Evaluate a checkpoint on a record file.

    Parameters
    ----------
    net : str
        Network preset (ignored with ``deploy_net``).
    path_imgrec : str
        ``.rec`` file with ``.idx`` beside it.
    num_classes : int
        Object classes, background excluded.
    num_batch : int or None
        Batches to score; None or negative = the whole record.
    mean_pixels : sequence of 3 floats
        RGB mean subtracted by the iterator.
    data_shape : int, str or tuple
        Network input side or (height, width).
    model_prefix : str
        Resolved checkpoint prefix (see :func:`resolve_prefix`).
    epoch : int
        Checkpoint epoch.
    ctx : mx.Context or list, optional
        Devices; default CPU.
    batch_size : int
        Images per batch.
    path_imglist : str
        Optional ``.lst`` whose labels override the record's.
    nms_thresh, force_nms, nms_topk
        Detection output settings.
    ovp_thresh, use_difficult, voc07_metric
        VOC metric settings.
    class_names : sequence of str, optional
        One name per class.
    deploy_net : bool
        Use the inference symbol stored with the checkpoint.
    metric : str
        ``'voc'`` or ``'coco'`` (COCO AP@[.5:.95], AP50, AP75 in addition to the VOC mAP).
    output_dir : str, optional
        Writes ``results.json`` and ``pr_curves.png`` there.
    progress : bool
        tqdm progress bar while scoring.
    onnx_path : str, optional
        Score this ``deploy.py --onnx`` file with onnxruntime instead of the checkpoint (its
        own mean, anchors and NMS settings; ``model_prefix`` and ``epoch`` unused).
    flip_test : bool
        Average every image's predictions with its left-right mirror's in the graph
        (``symbol_factory.get_symbol``); a deploy graph or ONNX file carries its own
        (``deploy.py --flip-test``), so it is refused with ``deploy_net`` and ``onnx_path``.

    Returns
    -------
    dict
        ``protocol`` (line), ``num_images``, ``class_ap`` {name: AP}, ``mAP``, ``metric``,
        ``images_per_sec``, ``coco`` {name: value} when asked, ``files`` written.
    """
    if metric not in ("voc", "coco"):
        raise ValueError(f"--metric must be 'voc' or 'coco', got {metric!r}")
    if len(mean_pixels) != 3:
        raise ValueError(f"mean pixels must be 3 values (R, G, B), got {list(mean_pixels)}")
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    if not os.path.isfile(path_imgrec):
        raise FileNotFoundError(f"--rec-path {path_imgrec} not found")
    refuse_flip_test_with_saved_graph(flip_test, deploy_net, onnx_path)
    height, width = parse_data_shape(data_shape)
    contexts = ctx if isinstance(ctx, (list, tuple)) else [ctx or mx.cpu()]
    batch_size = _fit_batch_size(batch_size, path_imgrec, path_imglist, len(contexts))
    voc_metric = build_metric(num_classes, class_names, ovp_thresh, use_difficult, voc07_metric)
    names = voc_metric.class_names

    from dataset.iterator import DetRecordIter
    from config.config import cfg
    if onnx_path:
        module, nms_thresh, force_nms, nms_topk = _onnx_module(onnx_path, (height, width),
                                                               num_classes)
        if [float(m) for m in mean_pixels] != module.detector.meta["mean_pixels"]:
            logger.warning("--onnx %s subtracts its own mean %s, not the mean flags %s",
                           onnx_path, module.detector.meta["mean_pixels"], list(mean_pixels))
        mean_pixels = (0.0, 0.0, 0.0)          # the file subtracts its own mean
        flip_test = module.detector.meta.get("flip_test") == "1"
    else:
        module = _bind_checkpoint(net, (height, width), num_classes, model_prefix, epoch,
                                  nms_thresh, force_nms, nms_topk, deploy_net, anchors,
                                  batch_size, contexts, flip_test)
        flip_test = flip_test or (deploy_net and has_flip_test(module.symbol))
    eval_iter = DetRecordIter(path_imgrec, batch_size, (3, height, width),
                              mean_pixels=tuple(mean_pixels), path_imglist=path_imglist,
                              **cfg.valid)

    metrics = [voc_metric]
    if metric == "coco":
        from evaluate.coco_metric import CocoMetric
        metrics.append(CocoMetric(num_classes, use_difficult=use_difficult,
                                  image_size=(height, width)))
    composite = _Both(metrics)
    start = time.perf_counter()
    num_images = score_detections(module, eval_iter, composite, num_batch, progress=progress)
    elapsed = time.perf_counter() - start
    if num_images == 0:
        raise ValueError(f"no image was scored from {path_imgrec} (--num-batch {num_batch})")

    _, values = voc_metric.get()
    protocol = describe_protocol(voc07_metric, ovp_thresh, use_difficult, nms_thresh,
                                 nms_topk, (height, width), num_images,
                                 force_suppress=force_nms, flip_test=flip_test)
    results = {
        "protocol": protocol,
        "metric": "VOC07 11-point" if voc07_metric else "VOC area",
        "checkpoint": onnx_path or f"{model_prefix}-{epoch:04d}.params",
        "rec_path": path_imgrec,
        "num_images": num_images,
        "images_per_sec": num_images / elapsed if elapsed > 0 else float("nan"),
        "class_ap": {name: _finite(v) for name, v in zip(names, values[:-1])},
        "mAP": _finite(values[-1]),
        "flip_test": bool(flip_test),
    }
    if metric == "coco":
        coco_names, coco_values = metrics[1].get()
        results["coco"] = {n: _finite(v) for n, v in zip(coco_names, coco_values)}
        results["coco_protocol"] = describe_protocol(
            voc07_metric, ovp_thresh, use_difficult, nms_thresh, nms_topk, (height, width),
            num_images, force_suppress=force_nms, metric="coco", flip_test=flip_test)
    if output_dir:
        results["files"] = write_outputs(results, voc_metric, output_dir)
    return results


def _bind_checkpoint(net: str, data_shape: tuple[int, int], num_classes: int, model_prefix: str,
                     epoch: int, nms_thresh: float, force_nms: bool, nms_topk: int,
                     deploy_net: bool, anchors: dict | None, batch_size: int,
                     contexts: list, flip_test: bool = False) -> mx.mod.Module:
    """The checkpoint's inference graph, checked and bound for ``batch_size``."""
    symbol = load_inference_symbol(net, data_shape, num_classes, model_prefix, nms_thresh,
                                   force_nms, nms_topk, deploy_net, anchors, flip_test)
    arg_params, aux_params = load_params(model_prefix, epoch)
    what = "the deploy graph" if deploy_net else f"network {net!r} with --num-class {num_classes}"
    check_params(symbol, arg_params, aux_params, (batch_size, 3) + tuple(data_shape), what)
    module = mx.mod.Module(symbol, data_names=("data",), label_names=None, context=contexts)
    module.bind(data_shapes=[("data", (batch_size, 3) + tuple(data_shape))], for_training=False)
    module.set_params(arg_params, aux_params, allow_missing=False, force_init=True)
    return module


def _onnx_module(onnx_path: str, data_shape: tuple[int, int], num_classes: int):
    """An onnxruntime stand-in for the bound module, and the file's NMS settings."""
    from export.onnx_detector import OnnxDetector, OnnxModule
    detector = OnnxDetector(onnx_path, data_shape, num_classes)
    meta = detector.meta
    logger.info("scoring %s with onnxruntime (mean %s, NMS %s, force %s, top-k %s: the file's)",
                onnx_path, meta["mean_pixels"], meta.get("nms_threshold"),
                meta.get("force_suppress"), meta.get("nms_topk"))
    return (OnnxModule(detector), float(meta.get("nms_threshold", "nan")),
            meta.get("force_suppress") == "True", int(meta.get("nms_topk", -1)))


class _Both(mx.metric.EvalMetric):
    """Feeds one batch to several metrics (each keeps its own ``update`` signature)."""

    def __init__(self, metrics: list) -> None:
        self.metrics = metrics
        super().__init__("both")

    def reset(self) -> None:
        for metric in getattr(self, "metrics", []):
            metric.reset()

    def update(self, labels, preds) -> None:
        for metric in self.metrics:
            metric.update(labels, preds)


def _finite(value: float) -> float | None:
    """NaN to None so the JSON stays valid."""
    return None if value is None or not np.isfinite(value) else float(value)


def format_results(results: dict) -> str:
    """Console table as the original's ``name: value`` lines: one per class, then mAP (and
    COCO AP), then the protocol line."""
    names = list(results["class_ap"]) + ["mAP"] + list(results.get("coco", {}))
    width = max(len(n) for n in names) + 1

    def line(name: str, value: float | None, missing: str = "n/a") -> str:
        return f"{name + ':':<{width}} " + (missing if value is None else f"{value:.4f}")

    lines = [line(name, value, "n/a (no GT, no detection)")
             for name, value in results["class_ap"].items()]
    lines.append(line("mAP", results["mAP"]))
    lines.append(results["protocol"])
    if "coco" in results:
        lines.extend(line(name, value) for name, value in results["coco"].items())
        lines.append(results["coco_protocol"])
    lines.append(f"speed: {results['images_per_sec']:.1f} images/s (data loading included)")
    return "\n".join(lines)


def write_outputs(results: dict, voc_metric: MApMetric, output_dir: str) -> list[str]:
    """Write ``results.json`` and ``pr_curves.png`` (one curve per evaluated class).

    Each file is written under a temporary name and renamed; a failed write (disk full, file
    size limit) raises ``checkpoint.FileWriteError`` naming the file, the previous file kept.
    """
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "results.json")

    def write_json(tmp_path: str) -> None:
        with open(tmp_path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)

    atomic_write(json_path, write_json)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = voc_metric.get_curves()
    aps = voc_metric.get_class_aps()
    names = voc_metric.class_names or []
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab20")
    for cls, (recall, precision, num_gt) in sorted(curves.items()):
        label = names[cls] if cls < len(names) else f"class {cls}"
        if recall.size:
            ax.step(np.concatenate(([0.0], recall)), np.concatenate(([precision[0]], precision)),
                    where="post", color=cmap(cls % 20),
                    label=f"{label} AP {aps[cls]:.3f} ({num_gt} GT)")
        else:
            ax.plot([], [], color=cmap(cls % 20), label=f"{label} AP 0 (no detection)")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    mean_ap = results["mAP"]
    ax.set_title(f"{results['metric']} mAP " + ("n/a" if mean_ap is None else f"{mean_ap:.4f}"),
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.text(0.01, 0.005, results["protocol"], fontsize=6)
    png_path = os.path.join(output_dir, "pr_curves.png")
    try:
        atomic_write(png_path, lambda tmp_path: fig.savefig(tmp_path, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return [json_path, png_path]
