"""Evaluate a trained SSD checkpoint on a record file (VOC mAP, optionally COCO AP).

Example::

    python evaluate.py --rec-path data/val.rec --network tiny --data-shape 128 \
        --num-class 3 --class-names cat,dog,car --prefix model/ssd_ --epoch 10 --cpu \
        --output-dir output/eval

Scores the whole record by default (``--num-batch N`` limits it to N batches), prints the
per-class AP table, the mAP and one line stating the protocol; ``--output-dir`` also writes
``results.json`` and ``pr_curves.png``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from config.runtime import setup_threads
from dataset.record_check import add_bad_records_arg
from evaluate import add_anchors_arg, add_flip_test_arg, add_mean_args


def get_parser() -> argparse.ArgumentParser:
    """Flags of the original ``evaluate.py`` plus ``--metric`` and ``--output-dir``."""
    parser = argparse.ArgumentParser(description="Evaluate an SSD checkpoint on a .rec file")
    cwd = os.getcwd()
    parser.add_argument("--rec-path", dest="rec_path", default=os.path.join(cwd, "data", "val.rec"),
                        help="record file to score (default ./data/val.rec)")
    parser.add_argument("--list-path", dest="list_path", default="",
                        help=".lst whose labels override the record's (default none)")
    parser.add_argument("--network", default="vgg16_reduced",
                        help="network preset (default vgg16_reduced)")
    parser.add_argument("--num-batch", dest="num_batch", type=int, default=-1,
                        help="batches to score; -1 = the whole record (default -1; the "
                             "original scored only 5)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=32,
                        help="images per batch (default 32)")
    parser.add_argument("--num-class", dest="num_class", type=int, default=20,
                        help="object classes, background excluded (default 20)")
    parser.add_argument("--class-names", dest="class_names", default="",
                        help="comma list or file of names (default the 20 VOC names)")
    parser.add_argument("--epoch", type=int, default=0, help="checkpoint epoch (default 0)")
    parser.add_argument("--prefix", default=os.path.join(cwd, "model", "ssd_"),
                        help="checkpoint prefix; one ending in '_' gets '<network>_<shape>' "
                             "appended (default ./model/ssd_)")
    parser.add_argument("--gpus", dest="gpu_id", default="0",
                        help="GPU ids, comma list (default 0; ignored with --cpu)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU")
    parser.add_argument("--data-shape", dest="data_shape", type=int, default=300,
                        help="input side in pixels (default 300)")
    add_mean_args(parser)
    parser.add_argument("--nms", dest="nms_thresh", type=float, default=0.45,
                        help="NMS IoU threshold (default 0.45)")
    parser.add_argument("--nms-topk", dest="nms_topk", type=int, default=400,
                        help="detections kept before NMS (default 400)")
    parser.add_argument("--overlap", dest="overlap_thresh", type=float, default=0.5,
                        help="IoU a detection must exceed to match (default 0.5)")
    parser.add_argument("--force", dest="force_nms", action="store_true",
                        help="suppress across classes (default per class)")
    parser.add_argument("--use-difficult", dest="use_difficult", action="store_true",
                        help="count difficult objects (default ignored)")
    parser.add_argument("--no-voc07", dest="use_voc07_metric", action="store_false",
                        help="VOC area AP instead of the default VOC07 11-point AP")
    parser.add_argument("--deploy", dest="deploy_net", action="store_true",
                        help="use the inference symbol saved with the checkpoint (deploy.py)")
    parser.add_argument("--metric", choices=("voc", "coco"), default="voc",
                        help="voc: mAP only; coco: also AP@[.5:.95], AP50, AP75 (default voc)")
    add_anchors_arg(parser)
    add_flip_test_arg(parser)
    parser.add_argument("--onnx", default="",
                        help="score this deploy.py --onnx file with onnxruntime instead of the "
                             "checkpoint (its own mean and NMS settings; default none)")
    parser.add_argument("--output-dir", dest="output_dir", default="",
                        help="write results.json and pr_curves.png here (default none)")
    add_bad_records_arg(parser)
    return parser


def get_contexts(cpu: bool, gpu_ids: str):
    """``[mx.cpu()]`` or one ``mx.gpu(i)`` per id (checked to be integers)."""
    from config.mxnet_compat import mx
    if cpu or not gpu_ids.strip():
        return [mx.cpu()]
    try:
        ids = [int(i) for i in gpu_ids.split(",") if i.strip()]
    except ValueError:
        raise ValueError(f"--gpus must be a comma list of integers, got {gpu_ids!r}") from None
    if mx.context.num_gpus() == 0:
        raise ValueError(f"--gpus {gpu_ids} asked for GPUs but this MXNet sees none: use --cpu")
    return [mx.gpu(i) for i in ids]


def main(argv: list[str] | None = None) -> int:
    """Parse flags, evaluate, print the table; returns the exit status."""
    args = get_parser().parse_args(argv)
    setup_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from evaluate import parse_class_names, parse_mean
    from evaluate.evaluate_net import evaluate_net, format_results, resolve_prefix
    from symbol.anchors import load_anchor_file
    from training.checkpoint import FileWriteError
    from dataset.record_check import select_records
    try:
        if args.num_class <= 0:
            raise ValueError(f"--num-class must be positive, got {args.num_class}")
        class_names = parse_class_names(args.class_names, args.num_class)
        mean = parse_mean(args.mean_r, args.mean_g, args.mean_b)
        ctx = get_contexts(args.cpu, args.gpu_id)
        prefix = resolve_prefix(args.prefix, args.network, args.data_shape, args.epoch)
        logging.info("arguments: %s", vars(args))
        if not args.onnx:
            logging.info("checkpoint %s-%04d.params", prefix, args.epoch)
        selection = select_records(args.rec_path, args.bad_records, "--rec-path")
        results = evaluate_net(args.network, selection.path, args.num_class, args.num_batch, mean,
                               args.data_shape, prefix, args.epoch, ctx,
                               batch_size=args.batch_size, path_imglist=args.list_path,
                               nms_thresh=args.nms_thresh, force_nms=args.force_nms,
                               ovp_thresh=args.overlap_thresh, use_difficult=args.use_difficult,
                               class_names=class_names, voc07_metric=args.use_voc07_metric,
                               deploy_net=args.deploy_net, metric=args.metric,
                               output_dir=args.output_dir or None, nms_topk=args.nms_topk,
                               anchors=load_anchor_file(args.anchors) if args.anchors else None,
                               onnx_path=args.onnx or None, flip_test=args.flip_test)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileWriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_results(results))
    if selection.skipped:
        print(f"skipped {len(selection.skipped)} bad record(s) of {args.rec_path} "
              f"(--bad-records skip; listed in the log)")
    for path in results.get("files", []):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
