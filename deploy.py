"""Rewrite a training checkpoint with the inference symbol (``detection_output``).

Example::

    python deploy.py --network vgg16_reduced --data-shape 300 --prefix model/ssd_ --epoch 240

reads ``model/ssd_vgg16_reduced_300-{symbol.json,0240.params}`` and writes
``model/deploy_ssd_vgg16_reduced_300-symbol.json`` and ``-0240.params`` next to it; with
``--onnx`` also ``-0240.onnx``, the same detector for onnxruntime (docs/ONNX.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from config.runtime import setup_threads

setup_threads()
from config.mxnet_compat import mx  # noqa: E402  (after setup_threads)

from training.checkpoint import FileWriteError, atomic_write, load_param_file, save_params  # noqa: E402
from evaluate import (VOC_CLASSES, add_anchors_arg, add_flip_test_arg, add_mean_args,  # noqa: E402
                      parse_class_names, parse_mean)
from symbol.symbol_factory import data_side, get_symbol  # noqa: E402

logger = logging.getLogger("deploy")


def get_parser() -> argparse.ArgumentParser:
    """Command-line flags of the original ``deploy.py`` (REFERENCE.md section 2.4)."""
    parser = argparse.ArgumentParser(description="Convert a trained SSD checkpoint into a "
                                     "deployable inference model")
    parser.add_argument("--network", type=str, default="vgg16_reduced",
                        help="network preset name (default: vgg16_reduced)")
    parser.add_argument("--epoch", type=int, default=0,
                        help="epoch of the checkpoint to convert (default: 0)")
    parser.add_argument("--prefix", type=str, default=os.path.join(os.getcwd(), "model", "ssd_"),
                        help="checkpoint prefix; one ending in '_' gets <network>_<data-shape> "
                             "appended (default: $CWD/model/ssd_)")
    parser.add_argument("--data-shape", type=int, default=300,
                        help="input side in pixels (default: 300)")
    parser.add_argument("--num-class", dest="num_classes", type=int, default=20,
                        help="number of object classes, background excluded (default: 20)")
    parser.add_argument("--nms", dest="nms_thresh", type=float, default=0.5,
                        help="non-maximum suppression IoU threshold (default: 0.5)")
    parser.add_argument("--no-force", dest="force_nms", action="store_false",
                        help="suppress only boxes of the same class (default: NMS across "
                             "classes)")
    parser.add_argument("--topk", dest="nms_topk", type=int, default=400,
                        help="keep the top k detections before NMS (default: 400)")
    add_anchors_arg(parser)
    add_flip_test_arg(parser)
    parser.add_argument("--onnx", action="store_true",
                        help="also write <deploy prefix>-<epoch>.onnx for onnxruntime: RGB "
                             "0-255 in, detections out (docs/ONNX.md)")
    parser.add_argument("--class-names", dest="class_names", default="",
                        help="comma list or file of names stored in the ONNX file (default: "
                             "the 20 VOC names with --num-class 20, else class_0, class_1, ...)")
    add_mean_args(parser)
    return parser


def resolve_prefix(prefix: str, network: str, data_shape: int) -> str:
    """The original's rule: a prefix ending in ``_`` gets ``<network>_<data_shape>`` appended."""
    if prefix.endswith("_"):
        return f"{prefix}{network}_{data_shape}"
    return prefix


def deploy_prefix(prefix: str) -> str:
    """``dir/name`` -> ``dir/deploy_name`` (``name`` -> ``deploy_name`` in the same folder)."""
    folder, name = os.path.split(prefix)
    return os.path.join(folder, "deploy_" + name)


def check_params(symbol: mx.sym.Symbol, data_shape: int, arg_params: dict, aux_params: dict,
                 params_path: str) -> None:
    """Every parameter of ``symbol`` must be in the checkpoint with the same shape.

    Raises
    ------
    ValueError
        Naming the first missing or mismatched parameter and both shapes.
    """
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, data_shape, data_shape))
    expected = list(zip(symbol.list_arguments(), arg_shapes, [arg_params] * len(arg_shapes)))
    expected += zip(symbol.list_auxiliary_states(), aux_shapes, [aux_params] * len(aux_shapes))
    for name, shape, stored in expected:
        if name == "data":
            continue
        if name not in stored:
            raise ValueError(f"{params_path} has no parameter {name!r} needed by this network; "
                             "check --network and --data-shape")
        if tuple(stored[name].shape) != tuple(shape):
            raise ValueError(f"parameter {name!r} has shape {tuple(stored[name].shape)} in "
                             f"{params_path} but the network expects {tuple(shape)}; "
                             "check --network and --num-class")


def _save_atomically(save_prefix: str, epoch: int, symbol: mx.sym.Symbol, arg_params: dict,
                     aux_params: dict) -> tuple[str, str]:
    """Write ``-symbol.json`` and ``-%04d.params`` through :mod:`checkpoint`'s atomic writes."""
    json_path = f"{save_prefix}-symbol.json"
    params_path = f"{save_prefix}-{epoch:04d}.params"
    atomic_write(json_path, symbol.save)
    save_params(params_path, arg_params, aux_params)
    return json_path, params_path


def deploy_net(network: str, epoch: int, prefix: str, data_shape: int, num_classes: int,
               nms_thresh: float = 0.5, force_nms: bool = True, nms_topk: int = 400,
               anchors: dict | None = None, flip_test: bool = False) -> tuple[str, str]:
    """Convert ``prefix``'s checkpoint of ``epoch`` to an inference checkpoint.

    Parameters
    ----------
    network, data_shape, num_classes
        Preset the checkpoint was trained with.
    epoch : int
        Checkpoint epoch (``{prefix}-{epoch:04d}.params``).
    prefix : str
        Checkpoint prefix (already resolved, see ``resolve_prefix``).
    nms_thresh, force_nms, nms_topk
        MultiBoxDetection settings stored in the new symbol.
    anchors : dict, optional
        ``sizes`` / ``ratios`` overrides the model was trained with (``train.py --anchors``).
    flip_test : bool
        The graph averages every image's predictions with its mirror's (``--flip-test``):
        the same parameters, twice the compute, carried into ``--onnx``.

    Returns
    -------
    tuple of str
        Paths of the written symbol json and params files.
    """
    params_path = f"{prefix}-{epoch:04d}.params"
    if not os.path.isfile(params_path):
        raise FileNotFoundError(f"checkpoint {params_path} not found (--prefix {prefix!r}, "
                                f"--epoch {epoch})")
    side = data_side(data_shape)
    net = get_symbol(network, side, num_classes, nms_thresh=nms_thresh,
                     force_suppress=force_nms, nms_topk=nms_topk, flip_test=flip_test,
                     **(anchors or {}))
    saved = load_param_file(params_path, f"--prefix {prefix} --epoch {epoch}")
    arg_params = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    aux_params = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    check_params(net, side, arg_params, aux_params, params_path)
    needed_args = set(net.list_arguments())
    needed_aux = set(net.list_auxiliary_states())
    arg_params = {k: v for k, v in arg_params.items() if k in needed_args}
    aux_params = {k: v for k, v in aux_params.items() if k in needed_aux}
    save_prefix = deploy_prefix(prefix)
    if os.path.abspath(save_prefix) == os.path.abspath(prefix):
        raise ValueError(f"refusing to overwrite the source checkpoint {prefix!r}")
    return _save_atomically(save_prefix, epoch, net, arg_params, aux_params)


def default_class_names(value: str, num_classes: int) -> list[str]:
    """``--class-names``, or VOC's 20 names for 20 classes, or ``class_0``, ``class_1``, ..."""
    if not value and num_classes != len(VOC_CLASSES):
        return [f"class_{i}" for i in range(num_classes)]
    return parse_class_names(value, num_classes)


def export_deploy_onnx(network: str, epoch: int, save_prefix: str, data_shape: int,
                       class_names: Sequence[str], mean_pixels: Sequence[float]) -> str:
    """Export the deploy checkpoint ``save_prefix`` of ``epoch`` to ``{save_prefix}-%04d.onnx``.

    Raises
    ------
    ValueError
        The graph holds an operator the exporter does not convert (named), or a parameter is
        missing; no file is written then.
    """
    from training.checkpoint import load_arg_aux, load_symbol_file
    from export.onnx_file import export_metadata, export_onnx
    params_path = f"{save_prefix}-{epoch:04d}.params"
    symbol = load_symbol_file(f"{save_prefix}-symbol.json", "--prefix")
    arg_params, aux_params = load_arg_aux(params_path, "--prefix/--epoch", save_prefix)
    side = (data_side(data_shape),) * 2
    metadata = export_metadata(network, side, class_names, mean_pixels,
                               os.path.basename(params_path))
    return export_onnx(symbol, arg_params, aux_params, side, mean_pixels, metadata,
                       f"{save_prefix}-{epoch:04d}.onnx", what=params_path)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logger.info("arguments: %s", vars(args))
    try:
        prefix = resolve_prefix(args.prefix, args.network, args.data_shape)
        class_names = default_class_names(args.class_names, args.num_classes)
        mean = parse_mean(args.mean_r, args.mean_g, args.mean_b)
        from symbol.anchors import load_anchor_file
        anchors = load_anchor_file(args.anchors) if args.anchors else None
        json_path, params_path = deploy_net(args.network, args.epoch, prefix, args.data_shape,
                                            args.num_classes, nms_thresh=args.nms_thresh,
                                            force_nms=args.force_nms, nms_topk=args.nms_topk,
                                            anchors=anchors, flip_test=args.flip_test)
        onnx_path = (export_deploy_onnx(args.network, args.epoch, deploy_prefix(prefix),
                                        args.data_shape, class_names, mean)
                     if args.onnx else "")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileWriteError as err:        # disk full, file size limit: names the file
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Saved model: {json_path}")
    print(f"Saved params: {params_path}")
    if onnx_path:
        print(f"Saved ONNX: {onnx_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
