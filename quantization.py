"""INT8 inference on CPU: quantize a trained SSD with MXNet's MKL-DNN backend, then compare it
with fp32 (mAP on a record file and forward speed).

Example::

    python quantization.py --network tiny --data-shape 128 --num-class 4 \
        --class-names circle,square,triangle,cross --prefix model/ssd_ --epoch 10 \
        --rec-path data/val.rec --calib-mode naive --num-calib-batches 5

Steps: load the checkpoint and the inference graph, fuse it for MKL-DNN, calibrate on
``--num-calib-batches`` batches of ``--rec-path`` (``naive``: min/max, ``entropy``: KL, ``none``:
ranges computed at run time), save ``<dir>/qssd_<name>`` (calib none) or ``<dir>/cqssd_<name>``,
then evaluate both models on ``--val-path`` and time both. The MultiBox ops (prior, detection),
softmax, reshape/transpose/concat stay fp32: MXNet leaves ops without an INT8 kernel in fp32 and
inserts the (de)quantize nodes itself.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys

from config.runtime import setup_threads
from evaluate import add_mean_args


def get_parser() -> argparse.ArgumentParser:
    """Flags of the original ``quantization.py`` plus the model and data flags it hard-coded."""
    parser = argparse.ArgumentParser(description="Quantize an SSD checkpoint to INT8 (MKL-DNN)")
    cwd = os.getcwd()
    parser.add_argument("--network", default="vgg16_reduced", help="network preset (default vgg16_reduced)")
    parser.add_argument("--data-shape", dest="data_shape", type=int, default=300,
                        help="input side in pixels (default 300)")
    parser.add_argument("--num-class", dest="num_class", type=int, default=20,
                        help="object classes (default 20)")
    parser.add_argument("--class-names", dest="class_names", default="",
                        help="comma list or file of names (default the 20 VOC names)")
    parser.add_argument("--prefix", default=os.path.join(cwd, "model", "ssd_"),
                        help="fp32 checkpoint prefix; one ending in '_' gets '<network>_<shape>' "
                             "appended (default ./model/ssd_)")
    parser.add_argument("--epoch", type=int, default=0, help="checkpoint epoch (default 0)")
    parser.add_argument("--deploy", dest="deploy_net", action="store_true",
                        help="use the inference symbol saved with the checkpoint (deploy.py)")
    parser.add_argument("--rec-path", dest="rec_path", default=os.path.join(cwd, "data", "val.rec"),
                        help="calibration record (default ./data/val.rec)")
    parser.add_argument("--val-path", dest="val_path", default="",
                        help="record to evaluate both models on (default --rec-path)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=32,
                        help="calibration/evaluation batch (default 32)")
    parser.add_argument("--num-calib-batches", dest="num_calib_batches", type=int, default=5,
                        help="batches used for calibration (default 5)")
    parser.add_argument("--exclude-first-conv", dest="exclude_first_conv", action="store_true",
                        help="keep the first convolution in fp32")
    parser.add_argument("--shuffle-dataset", dest="shuffle_dataset", action="store_true",
                        default=True, help="shuffle the calibration records (default on)")
    parser.add_argument("--no-shuffle-dataset", dest="shuffle_dataset", action="store_false",
                        help="calibrate on the first records")
    parser.add_argument("--shuffle-chunk-seed", dest="shuffle_chunk_seed", type=int,
                        default=3982304, help="accepted for compatibility; unused by the "
                                              "detection iterator (default 3982304)")
    parser.add_argument("--shuffle-seed", dest="shuffle_seed", type=int, default=48564309,
                        help="calibration shuffle seed (default 48564309)")
    parser.add_argument("--calib-mode", dest="calib_mode", default="naive",
                        choices=("none", "naive", "entropy"),
                        help="none: ranges at run time; naive: min/max; entropy: KL (default naive)")
    parser.add_argument("--quantized-dtype", dest="quantized_dtype", default="auto",
                        choices=("auto", "int8", "uint8"), help="INT8 type (default auto)")
    add_mean_args(parser)
    parser.add_argument("--nms", dest="nms_thresh", type=float, default=0.45,
                        help="NMS threshold (default 0.45)")
    parser.add_argument("--num-batch", dest="num_batch", type=int, default=-1,
                        help="evaluation batches, -1 = whole record (default -1)")
    parser.add_argument("--no-voc07", dest="use_voc07_metric", action="store_false",
                        help="VOC area AP instead of VOC07 11-point")
    parser.add_argument("--bench-batch", dest="bench_batch", type=int, default=8,
                        help="batch size of the speed comparison (default 8)")
    parser.add_argument("--bench-batches", dest="bench_batches", type=int, default=20,
                        help="timed batches of the speed comparison (default 20)")
    parser.add_argument("--no-eval", dest="evaluate", action="store_false",
                        help="only quantize and save")
    parser.add_argument("--output-dir", dest="output_dir", default="",
                        help="write comparison.json here (default none)")
    return parser


def data_only_iter(data_iter):
    """Calibration view of a detection iterator: an ``mx.io.DataIter`` of data only (the
    inference graph takes no label)."""
    from config.mxnet_compat import mx

    class DataOnlyIter(mx.io.DataIter):
        def __init__(self) -> None:
            super().__init__(data_iter.batch_size)
            self.provide_data = data_iter.provide_data
            self.provide_label = []

        def reset(self) -> None:
            data_iter.reset()

        def next(self) -> mx.io.DataBatch:
            batch = data_iter.next()
            return mx.io.DataBatch(batch.data, [], pad=batch.pad, provide_data=self.provide_data)

    return DataOnlyIter()


def first_conv_name(fused_symbol) -> str | None:
    """Name of the (fused) convolution that reads ``data`` directly."""
    graph = json.loads(fused_symbol.tojson())
    nodes = graph["nodes"]
    for node in nodes:
        if node["op"] in ("Convolution", "_sg_mkldnn_conv"):
            if any(nodes[entry[0]]["name"] == "data" for entry in node["inputs"]):
                return node["name"]
    return None


def quantize_ssd(symbol, arg_params: dict, aux_params: dict, calib_iter, num_calib_examples: int,
                 calib_mode: str = "naive", quantized_dtype: str = "auto",
                 exclude_first_conv: bool = False, logger: logging.Logger | None = None):
    """Fuse an SSD inference graph for MKL-DNN and quantize it.

    Parameters
    ----------
    symbol : mx.sym.Symbol
        fp32 inference graph (``get_symbol``).
    arg_params, aux_params : dict
        fp32 weights.
    calib_iter : iterator
        Data-only batches for calibration (ignored with ``calib_mode='none'``).
    num_calib_examples : int
        Images used for calibration.
    calib_mode : str
        ``none``, ``naive`` or ``entropy``.
    quantized_dtype : str
        ``auto``, ``int8`` or ``uint8``.
    exclude_first_conv : bool
        Keep the convolution reading the image in fp32.
    logger : logging.Logger, optional
        Progress messages of MXNet's calibration.

    Returns
    -------
    (mx.sym.Symbol, dict, dict, list of str)
        Quantized graph, its args and auxs, and the excluded node names.
    """
    from config.mxnet_compat import mx
    from mxnet.contrib.quantization import quantize_model
    fused = symbol.get_backend_symbol("MKLDNN_QUANTIZE")
    excluded = []
    if exclude_first_conv:
        name = first_conv_name(fused)
        if name is None:
            raise ValueError("--exclude-first-conv: no convolution reads 'data' in this graph")
        excluded.append(name)
    qsym, qargs, qauxs = quantize_model(
        sym=fused, arg_params=arg_params, aux_params=aux_params, data_names=("data",),
        label_names=(), ctx=mx.cpu(), excluded_sym_names=excluded, excluded_op_names=[],
        calib_mode=calib_mode, calib_data=None if calib_mode == "none" else calib_iter,
        num_calib_examples=None if calib_mode == "none" else num_calib_examples,
        quantized_dtype=quantized_dtype, logger=logger)
    return qsym.get_backend_symbol("MKLDNN_QUANTIZE"), qargs, qauxs, excluded


def quantized_prefix(model_prefix: str, calib_mode: str) -> str:
    """``dir/qssd_name`` (calib none) or ``dir/cqssd_name``, as the original names them."""
    folder, name = os.path.split(model_prefix)
    if name.startswith("ssd_"):
        name = name[len("ssd_"):]
    tag = "qssd_" if calib_mode == "none" else "cqssd_"
    return os.path.join(folder, tag + name)


def main(argv: list[str] | None = None) -> int:
    """Quantize, save, evaluate and time; returns the exit status."""
    args = get_parser().parse_args(argv)
    setup_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logger = logging.getLogger("quantization")
    from config.mxnet_compat import mx
    from benchmark_score import time_forward
    from config.config import cfg
    from dataset.iterator import DetRecordIter
    from evaluate import parse_class_names, parse_mean
    from evaluate.evaluate_net import (check_params, evaluate_net, load_inference_symbol,
                                       load_params, resolve_prefix)
    try:
        if args.batch_size <= 0 or args.num_calib_batches <= 0:
            raise ValueError(f"--batch-size and --num-calib-batches must be positive, got "
                             f"{args.batch_size} and {args.num_calib_batches}")
        if args.calib_mode == "entropy" and importlib.util.find_spec("scipy") is None:
            raise ValueError("--calib-mode entropy needs scipy (MXNet computes the KL "
                             "thresholds with scipy.stats), which is not installed: use "
                             "--calib-mode naive, or pip install scipy<1.12 (numpy 1.23)")
        class_names = parse_class_names(args.class_names, args.num_class)
        mean = parse_mean(args.mean_r, args.mean_g, args.mean_b)
        if not os.path.isfile(args.rec_path):
            raise FileNotFoundError(f"--rec-path {args.rec_path} not found")
        shape = (args.data_shape, args.data_shape)
        prefix = resolve_prefix(args.prefix, args.network, args.data_shape, args.epoch)
        symbol = load_inference_symbol(args.network, shape, args.num_class, prefix,
                                       args.nms_thresh, False, 400, args.deploy_net)
        arg_params, aux_params = load_params(prefix, args.epoch)
        check_params(symbol, arg_params, aux_params, (args.batch_size, 3) + shape,
                     f"network {args.network!r} with --num-class {args.num_class}")
        valid = dict(cfg.valid, shuffle=args.shuffle_dataset, seed=args.shuffle_seed)
        calib_iter = data_only_iter(DetRecordIter(args.rec_path, args.batch_size, (3,) + shape,
                                                mean_pixels=mean, **valid))
        qsym, qargs, qauxs, excluded = quantize_ssd(
            symbol, arg_params, aux_params, calib_iter, args.num_calib_batches * args.batch_size,
            args.calib_mode, args.quantized_dtype, args.exclude_first_conv, logger)
        out_prefix = quantized_prefix(prefix, args.calib_mode)
        mx.model.save_checkpoint(out_prefix, args.epoch, qsym, qargs, qauxs)
        print(f"saved {out_prefix}-symbol.json and {out_prefix}-{args.epoch:04d}.params "
              f"(calib {args.calib_mode}, excluded {excluded or 'nothing'})")
        if not args.evaluate:
            return 0
        val_path = args.val_path or args.rec_path
        rows = {}
        for name, model_prefix, deploy in (("fp32", prefix, args.deploy_net),
                                           ("int8", out_prefix, True)):
            results = evaluate_net(args.network, val_path, args.num_class, args.num_batch, mean,
                                   args.data_shape, model_prefix, args.epoch, mx.cpu(),
                                   batch_size=args.batch_size, nms_thresh=args.nms_thresh,
                                   class_names=class_names, voc07_metric=args.use_voc07_metric,
                                   deploy_net=deploy, progress=False)
            model_symbol = symbol if name == "fp32" else qsym
            params = (arg_params, aux_params) if name == "fp32" else (qargs, qauxs)
            ms, ips = time_forward(model_symbol, params[0], params[1], args.bench_batch, shape,
                                   args.bench_batches, 3)
            rows[name] = {"mAP": results["mAP"], "ms_per_batch": ms, "images_per_sec": ips,
                          "protocol": results["protocol"]}
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'model':5s} {'mAP':>8s} {'ms/batch':>10s} {'images/s':>10s}   (batch {args.bench_batch})")
    for name, row in rows.items():
        mean_ap = "n/a" if row["mAP"] is None else f"{row['mAP']:.4f}"
        print(f"{name:5s} {mean_ap:>8s} {row['ms_per_batch']:10.2f} {row['images_per_sec']:10.1f}")
    speedup = rows["int8"]["images_per_sec"] / rows["fp32"]["images_per_sec"]
    both = rows["fp32"]["mAP"] is not None and rows["int8"]["mAP"] is not None
    delta = rows["int8"]["mAP"] - rows["fp32"]["mAP"] if both else float("nan")
    print(f"int8/fp32 speed {speedup:.2f}x, mAP difference {delta:+.4f}")
    print(rows["fp32"]["protocol"])
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, "comparison.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"rows": rows, "speedup": speedup, "map_difference": delta,
                       "calib_mode": args.calib_mode, "excluded": excluded,
                       "quantized_prefix": out_prefix}, handle, indent=2)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
