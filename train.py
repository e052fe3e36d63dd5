"""Train an SSD detector from ``.rec`` files (command-line interface only).

Example::

    python train.py --train-path data/train.rec --val-path data/val.rec --network tiny \\
        --data-shape 128 --num-class 3 --class-names a,b,c --pretrained '' --batch-size 8

Flags keep the spellings, dests and defaults of the original v1.x ``train.py``
(REFERENCE.md §2.1) except where docs/TRAINING.md says why they differ.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from config.runtime import setup_logging, setup_threads

setup_threads()          # before importing mxnet; OMP_NUM_THREADS exported by the user wins

from config.mxnet_compat import mx  # noqa: E402

import fit  # noqa: E402
from training.checkpoint import INTERRUPTED, LAST, FileWriteError  # noqa: E402
from dataset.record_check import add_bad_records_arg  # noqa: E402
from training.detection_module import NonFiniteError, TrainingInterrupted  # noqa: E402
from dataset.imdb import load_class_names  # noqa: E402

VOC_CLASSES = ("aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, diningtable, "
               "dog, horse, motorbike, person, pottedplant, sheep, sofa, train, tvmonitor")
GPU_INSTALL_HINT = ("this MXNet build has no CUDA; install the GPU build with "
                    "'pip install mxnet-cu112==1.9.1' (instead of mxnet) on a CUDA 11.2 machine, "
                    "or pass --gpus '' to train on CPU")


def cuda_available() -> bool:
    """True when this MXNet build has CUDA and at least one GPU is visible."""
    try:
        return mx.runtime.Features().is_enabled("CUDA") and mx.context.num_gpus() > 0
    except Exception:  # noqa: BLE001 - a CPU build may raise instead of returning 0
        return False


def _resume_value(value: str) -> int | str:
    if value in (INTERRUPTED, LAST):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--resume {value!r}: an epoch number, '{LAST}' or '{INTERRUPTED}'") from None


def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Parser of ``train.py`` (reusable as a parent with ``add_help=False``).

    Parameters
    ----------
    add_help : bool
        Add ``-h/--help`` (False when used in ``parents=``).

    Returns
    -------
    argparse.ArgumentParser
    """
    cwd = os.getcwd()
    default_gpus = "0" if cuda_available() else ""
    parser = argparse.ArgumentParser(description="Train a Single-shot detection network",
                                     add_help=add_help)
    data = parser.add_argument_group("Data")
    data.add_argument("--train-path", dest="train_path", type=str,
                      default=os.path.join(cwd, "data", "train.rec"),
                      help="training record (.rec with .idx) (default: $CWD/data/train.rec)")
    data.add_argument("--train-list", dest="train_list", type=str, default="",
                      help=".lst whose labels replace those in the training record "
                           "(default: '', use the record's)")
    data.add_argument("--val-path", dest="val_path", type=str,
                      default=os.path.join(cwd, "data", "val.rec"),
                      help="validation record; '' disables validation "
                           "(default: $CWD/data/val.rec)")
    data.add_argument("--val-list", dest="val_list", type=str, default="",
                      help=".lst whose labels replace those in the validation record "
                           "(default: '')")
    data.add_argument("--data-shape", dest="data_shape", type=int, default=300,
                      help="square input side in pixels (default: 300)")
    data.add_argument("--label-width", dest="label_width", type=int, default=None,
                      help="label padding width shared by train and val, in floats; "
                           "(default: the smallest that fits both records)")
    data.add_argument("--num-example", dest="num_example", type=int, default=None,
                      help="images per epoch for the LR schedule "
                           "(default: the count in the training .idx)")
    data.add_argument("--mean-r", dest="mean_r", type=float, default=123,
                      help="red mean subtracted, 0-255 (default: 123)")
    data.add_argument("--mean-g", dest="mean_g", type=float, default=117,
                      help="green mean subtracted, 0-255 (default: 117)")
    data.add_argument("--mean-b", dest="mean_b", type=float, default=104,
                      help="blue mean subtracted, 0-255 (default: 104)")
    data.add_argument("--num-class", dest="num_class", type=int, default=20,
                      help="object classes, background excluded (default: 20)")
    data.add_argument("--class-names", dest="class_names", type=str, default=VOC_CLASSES,
                      help="comma list of class names, or a file with one name per line; must "
                           "hold --num-class names (default: the 20 VOC classes)")
    add_bad_records_arg(data)

    model = parser.add_argument_group("Model")
    model.add_argument("--network", type=str, default="vgg16_reduced",
                       help="network preset, see symbol/symbol_factory.py "
                            "(default: vgg16_reduced; 'tiny' for CPU tests)")
    model.add_argument("--resume", type=_resume_value, default=-1,
                       help="resume from epoch N of --prefix (weights, optimizer state, LR "
                            "position), 'last' for the newest complete epoch checkpoint, or "
                            "'interrupted' for the Ctrl-C checkpoint; -1 off (default: -1)")
    model.add_argument("--finetune", type=int, default=-1,
                       help="finetune from epoch N of --prefix: parameters loaded with a "
                            "matching shape stay fixed except *pred* layers; -1 off (default: -1)")
    model.add_argument("--pretrained", type=str,
                       default=os.path.join(cwd, "model", "vgg16_reduced"),
                       help="prefix of a pretrained model ('' trains from scratch); parameters "
                            "whose shape differs are skipped "
                            "(default: $CWD/model/vgg16_reduced)")
    model.add_argument("--epoch", type=int, default=1,
                       help="epoch of the --pretrained model (default: 1)")
    model.add_argument("--prefix", type=str, default=os.path.join(cwd, "model", "ssd"),
                       help="checkpoint prefix; '_<network>_<data-shape>' is appended "
                            "(default: $CWD/model/ssd)")
    model.add_argument("--freeze", dest="freeze_pattern", type=str,
                       default="^(conv1_|conv2_).*",
                       help="regex of parameters kept fixed (with --pretrained / --resume) "
                            "(default: '^(conv1_|conv2_).*')")
    model.add_argument("--nms", dest="nms_thresh", type=float, default=0.45,
                       help="NMS IoU threshold of validation detections (default: 0.45)")
    model.add_argument("--nms-topk", dest="nms_topk", type=int, default=400,
                       help="detections kept per image before NMS (default: 400)")
    model.add_argument("--force", dest="force_nms", action="store_true",
                       help="NMS across classes (default: off, per class)")
    model.add_argument("--anchors", type=str, default="",
                       help="anchor sizes/ratios: '' the preset's, 'fit' fitted to the training "
                            "boxes (tools/anchors.py), or a JSON file of tools/anchors.py "
                            "--output; evaluate.py/demo.py need the same file (default: '')")
    model.add_argument("--min-neg-samples", dest="min_neg_samples", type=int, default=0,
                       help="minimum mined negative anchors per image, also for images "
                            "without objects (default: 0)")
    model.add_argument("--neg-ratio", dest="neg_ratio", type=float, default=3.0,
                       help="hard negative mining: background anchors trained per matched "
                            "anchor (default: 3, the original's)")

    devices = parser.add_argument_group("Devices")
    devices.add_argument("--gpus", type=str, default=default_gpus,
                         help="comma list of GPU ids, '' for CPU (default: '0' when this MXNet "
                              "build has CUDA and a GPU is visible, else '' = CPU; "
                              f"here: {default_gpus!r})")
    devices.add_argument("--cpus", dest="num_cpu_contexts", type=int, default=1,
                         help="number of CPU contexts when --gpus is '' (tests the multi-device "
                              "path; batch is split across them) (default: 1)")
    devices.add_argument("--batch-size", dest="batch_size", type=int, default=32,
                         help="images per batch, split across devices (default: 32)")

    evaluation = parser.add_argument_group("Validation")
    evaluation.add_argument("--overlap", dest="overlap_thresh", type=float, default=0.5,
                            help="IoU for a true positive in validation mAP (default: 0.5)")
    evaluation.add_argument("--use-difficult", dest="use_difficult", action="store_true",
                            help="count difficult objects in mAP (default: off)")
    evaluation.add_argument("--no-voc07", dest="use_voc07_metric", action="store_false",
                            help="use VOC area AP instead of the 11-point VOC07 AP "
                                 "(default: VOC07)")

    fit.add_fit_args(parser)
    parser.add_argument("--log", dest="log_file", type=str, default="train.log",
                        help="also write the log to this file; '' for console only "
                             "(default: train.log)")
    return parser


def parse_contexts(gpus: str, num_cpu_contexts: int = 1) -> list:
    """Contexts from ``--gpus`` ('' = CPU, then ``--cpus`` CPU contexts).

    Parameters
    ----------
    gpus : str
        Comma list of GPU ids or ''.
    num_cpu_contexts : int
        CPU contexts when no GPU is given.

    Returns
    -------
    list of mx.Context
    """
    text = (gpus or "").strip()
    if not text:
        if num_cpu_contexts < 1:
            raise ValueError(f"--cpus {num_cpu_contexts}: must be >= 1")
        return [mx.cpu(i) for i in range(num_cpu_contexts)]
    try:
        ids = [int(i) for i in text.split(",") if i.strip()]
    except ValueError:
        raise ValueError(f"--gpus {gpus!r}: expected a comma list of GPU ids such as '0' or "
                         f"'0,1', or '' for CPU") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"--gpus {gpus!r}: expected distinct non-negative GPU ids such as "
                         f"'0,1', or '' for CPU")
    if not mx.runtime.Features().is_enabled("CUDA"):
        raise ValueError(f"--gpus {gpus}: {GPU_INSTALL_HINT}")
    try:
        count = mx.context.num_gpus()
    except mx.base.MXNetError:
        count = 0
    if max(ids) >= count:
        raise ValueError(f"--gpus {gpus}: only {count} GPU(s) visible (ids 0..{count - 1})")
    return [mx.gpu(i) for i in ids]


def _validate_network(network: str, data_shape: int) -> None:
    """--network and --data-shape name a preset of symbol/symbol_factory.py."""
    from symbol.symbol_factory import get_config, list_networks
    if network not in list_networks():
        raise ValueError(f"--network {network}: unknown network {network!r}; valid networks: "
                         f"{', '.join(list_networks())}")
    try:
        get_config(network, data_shape)
    except ValueError as err:
        raise ValueError(f"--data-shape {data_shape}: {err}") from None


def _validate(args: argparse.Namespace) -> None:
    checks = [("--batch-size", args.batch_size, args.batch_size > 0, "a positive integer"),
              ("--data-shape", args.data_shape, args.data_shape > 0, "a positive side length"),
              ("--num-class", args.num_class, args.num_class > 0, "a positive integer"),
              ("--end-epoch", args.end_epoch, args.end_epoch > 0, "a positive integer"),
              ("--frequent", args.frequent, args.frequent > 0, "a positive integer"),
              ("--save-period", args.save_period, args.save_period > 0, "a positive integer"),
              ("--lr", args.learning_rate, args.learning_rate > 0, "a positive number"),
              ("--nms", args.nms_thresh, 0 < args.nms_thresh <= 1, "in (0, 1]"),
              ("--overlap", args.overlap_thresh, 0 < args.overlap_thresh < 1, "in (0, 1)")]
    for flag, value, ok, valid in checks:
        if not ok:
            raise ValueError(f"{flag} {value}: must be {valid}")
    ranges = [("--momentum", args.momentum, 0 <= args.momentum < 1, "in [0, 1)"),
              ("--wd", args.weight_decay, args.weight_decay >= 0, ">= 0"),
              ("--begin-epoch", args.begin_epoch, args.begin_epoch >= 0,
               ">= 0 (completed epochs)"),
              ("--nms-topk", args.nms_topk, args.nms_topk > 0 or args.nms_topk == -1,
               "> 0, or -1 for all"),
              ("--min-neg-samples", args.min_neg_samples, args.min_neg_samples >= 0, ">= 0"),
              ("--neg-ratio", args.neg_ratio, args.neg_ratio > 0, "> 0")]
    ranges += [(flag, value, -255 <= value <= 255, "in [-255, 255] (a pixel mean)")
               for flag, value in (("--mean-r", args.mean_r), ("--mean-g", args.mean_g),
                                   ("--mean-b", args.mean_b))]
    for flag, value, ok, valid in ranges:
        if not ok:         # also refuses nan: every comparison with nan is False
            raise ValueError(f"{flag} {value:g}: must be {valid}")
    _validate_network(args.network, args.data_shape)
    if not os.path.isfile(args.train_path):
        raise FileNotFoundError(f"--train-path {args.train_path}: file not found (build one "
                                f"with tools/prepare_dataset.py)")
    if args.val_path and not os.path.isfile(args.val_path):
        raise FileNotFoundError(f"--val-path {args.val_path}: file not found ('' disables "
                                f"validation)")
    for flag, path in (("--train-list", args.train_list), ("--val-list", args.val_list)):
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} {path}: list file {path} does not exist ('' uses "
                                    f"the labels of the record)")
    if args.val_list and not args.val_path:
        raise ValueError(f"--val-list {args.val_list}: given without --val-path (validation "
                         f"is disabled)")
    if args.num_example is not None and args.num_example <= 0:
        raise ValueError(f"--num-example {args.num_example}: must be positive")
    fit.parse_lr_steps(args.lr_refactor_step)


def train_net_kwargs(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict:
    """Turn parsed (and validated) ``train.py`` flags into :func:`train_net.train_net` keywords.

    The one place where flags become the recipe's arguments: ``train.py`` and
    ``benchmarks/benchmark.py`` both call it.

    Parameters
    ----------
    args : argparse.Namespace
        From :func:`get_parser`; checked here first.
    argv : sequence of str, optional
        The command line, kept in checkpoint cards and the resume hint.

    Returns
    -------
    dict
        Keyword arguments of ``train_net``.

    Raises
    ------
    ValueError, FileNotFoundError
        A flag's value is out of range or names a missing file (see :func:`_validate`).
    """
    _validate(args)
    ctx = parse_contexts(args.gpus, args.num_cpu_contexts)
    if args.batch_size % len(ctx):
        raise ValueError(f"--batch-size {args.batch_size}: must be divisible by the "
                         f"{len(ctx)} devices")
    num_example = args.num_example     # None: train_net counts the records it reads
    return dict(
        net=args.network, train_path=args.train_path, num_classes=args.num_class,
        batch_size=args.batch_size, data_shape=args.data_shape,
        mean_pixels=[args.mean_r, args.mean_g, args.mean_b], resume=args.resume,
        finetune=args.finetune, pretrained=args.pretrained, epoch=args.epoch,
        prefix=args.prefix, ctx=ctx, begin_epoch=args.begin_epoch, end_epoch=args.end_epoch,
        frequent=args.frequent, learning_rate=args.learning_rate, momentum=args.momentum,
        weight_decay=args.weight_decay, lr_refactor_step=args.lr_refactor_step,
        lr_refactor_ratio=args.lr_refactor_ratio, freeze_layer_pattern=args.freeze_pattern,
        num_example=num_example,
        label_pad_width=-1 if args.label_width is None else args.label_width,
        nms_thresh=args.nms_thresh, force_nms=args.force_nms, ovp_thresh=args.overlap_thresh,
        use_difficult=args.use_difficult,
        class_names=load_class_names(args.class_names, num_classes=args.num_class),
        voc07_metric=args.use_voc07_metric, nms_topk=args.nms_topk,
        train_list=args.train_list, val_path=args.val_path, val_list=args.val_list,
        iter_monitor=args.monitor, monitor_pattern=args.monitor_pattern,
        log_file=args.log_file or None, kv_store=args.kv_store, optimizer=args.optimizer,
        min_neg_samples=args.min_neg_samples, neg_ratio=args.neg_ratio,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed, tensorboard=args.tensorboard, test_io=args.test_io,
        nan_policy=args.nan_policy, save_period=args.save_period, augment=args.augment,
        lr_schedule=args.lr_schedule, anchors=args.anchors,
        argv=list(argv) if argv else None, bad_records=args.bad_records)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 training failure, 2 bad input, 130 stop).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_parser().parse_args(argv)
    try:
        setup_logging(args.log_file or None)
        logging.getLogger().info("Command: %s", " ".join(["train.py"] + argv))
        logging.getLogger().info("Arguments: %s", vars(args))
        from train_net import train_net
        train_net(**train_net_kwargs(args, ["train.py"] + argv))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (NonFiniteError, FileWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        print(stop.resume_message, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
