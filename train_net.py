"""The SSD training recipe: iterators -> symbol -> parameters to load and freeze -> fit.

``train_net`` keeps the signature of the original (seed-era ``train/train_net.py``); new
options are appended as keyword arguments. The Module.fit wiring (LR schedule, kvstore,
non-finite guard, validation, atomic checkpoints, interrupts) lives in ``fit.py``.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any, Sequence

from config.mxnet_compat import mx
import numpy as np

from training import checkpoint
import fit
from config.runtime import set_log_rank, setup_logging
from training.detection_module import NAN_POLICIES, DetectionModule
from config.config import cfg, train_augmentation
from dataset.iterator import DetRecordIter, measure_io
from dataset.record_check import BAD_RECORD_POLICIES, select_records
from dataset.recordio_utils import count_records, label_pad_width as required_label_width
from dataset.recordio_utils import read_lst, scan_labels
from evaluate.eval_metric import MApMetric, MultiBoxMetric, VOC07MApMetric, describe_protocol
from dataset.anchor_fit import coverage_lines, resolve_anchors
from symbol.symbol_factory import get_symbol, get_symbol_train
from training.weights import load_start_params

logger = logging.getLogger(__name__)


def get_prefix(prefix: str, network: str, data_shape: int | Sequence[int]) -> str:
    """Checkpoint prefix of the v1.x example: ``prefix + '_' + network + '_' + str(side)``."""
    side = data_shape if isinstance(data_shape, int) else data_shape[-1]
    return f"{prefix}_{network}_{side}"


def check_class_ids(stats: Sequence[Any], paths: Sequence[str], num_classes: int) -> None:
    """Every class id in the records must be below ``num_classes``."""
    for stat, path in zip(stats, paths):
        ids = [int(c) for c in stat.class_counts]
        if ids and (max(ids) >= num_classes or min(ids) < 0):
            raise ValueError(f"--num-class {num_classes}: {path} holds class ids "
                             f"{min(ids)}..{max(ids)}, so --num-class must be at least "
                             f"{max(ids) + 1} (repack the data to train on fewer classes)")


def resolve_label_width(train_path: str, val_path: str, label_pad_width: int,
                        num_classes: int | None = None) -> int:
    """``label_pad_width`` shared by train and val: from the data when -1, else checked.

    Also checks that the class ids of the records fit ``num_classes`` when given.

    Parameters
    ----------
    train_path, val_path : str
        Record files (``val_path`` may be empty).
    label_pad_width : int
        ``--label-width``; -1 (or None) computes the smallest width that fits both files.

    Returns
    -------
    int
        The width to give both iterators.
    """
    stats = [scan_labels(train_path)] + ([scan_labels(val_path)] if val_path else [])
    if num_classes is not None:
        check_class_ids(stats, [train_path, val_path], num_classes)
    needed = required_label_width(stats)
    if label_pad_width is None or label_pad_width < 0:
        logger.info("Label width %d from the data (header %d + %d x up to %d objects)", needed,
                    stats[0].header_width, stats[0].object_width,
                    max(s.max_objects for s in stats))
        return needed
    if label_pad_width < needed:
        files = " and ".join(p for p in (train_path, val_path) if p)
        raise ValueError(f"--label-width {label_pad_width} is too small for {files}: they need "
                         f"at least {needed} (header {stats[0].header_width} + "
                         f"{stats[0].object_width} x {max(s.max_objects for s in stats)} "
                         f"objects); omit the flag to use the data's width")
    logger.info("Label width %d (data needs %d)", label_pad_width, needed)
    return label_pad_width


def _ensure_writable_folder(prefix: str) -> None:
    """Create the folder of the checkpoint prefix; ValueError naming --prefix if impossible."""
    folder = os.path.dirname(os.path.abspath(prefix))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--prefix {prefix}: cannot create the checkpoint folder {folder} "
                         f"({err.strerror or err}); pick a --prefix in a writable folder"
                         ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--prefix {prefix}: the checkpoint folder {folder} is not writable; "
                         f"pick a --prefix in a writable folder")


def check_batch_size(batch_size: int, num_images: int, path: str, num_workers: int = 1) -> None:
    """A batch must fit in the images one worker reads (its shard under a dist kvstore)."""
    per_worker = num_images // max(1, num_workers)
    if batch_size > per_worker:
        shard = (f" (its shard for each of {num_workers} workers is {per_worker})"
                 if num_workers > 1 else "")
        raise ValueError(f"--batch-size {batch_size}: larger than the {num_images} images of "
                         f"{path}{shard}; use --batch-size {max(1, per_worker)} or less")


def _num_images(rec_path: str, list_path: str = "") -> int:
    """Images an iterator reads: the list's lines when a ``.lst`` decides, else the records."""
    return len(read_lst(list_path)) if list_path else count_records(rec_path)


def check_val_batch_size(batch_size: int, num_images: int, path: str) -> None:
    """The validation reader pads a short batch by wrapping around once, and no more.

    The wrapped images are not scored (``pad``). A batch that needs a second wrap stops MXNet's
    reader with "number of input must be bigger than batch size", which reads as a bad record.
    """
    if batch_size > 2 * num_images:
        raise ValueError(f"--batch-size {batch_size}: more than twice the {num_images} images of "
                         f"--val-path {path} (a batch may wrap around the validation set once); "
                         f"use --batch-size {2 * num_images} or less, or more validation images")


def _seed_everything(seed: int | None) -> None:
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)
    logger.info("Random seed %d (python, numpy, mxnet, iterators)", seed)


def _make_iterators(train_path: str, val_path: str, train_list: str, val_list: str,
                    batch_size: int, data_shape: tuple, mean_pixels: Sequence[float],
                    label_width: int, num_parts: int, part_index: int, seed: int | None,
                    begin_epoch: int, augment: str = "ssd"
                    ) -> tuple[mx.io.DataIter, mx.io.DataIter | None]:
    train_kwargs = train_augmentation(augment)
    if seed is not None:
        train_kwargs["seed"] = seed
    # epoch=begin_epoch: the data order of an uninterrupted run (seed + epoch per epoch)
    train_iter = DetRecordIter(train_path, batch_size, data_shape, mean_pixels=mean_pixels,
                               label_pad_width=label_width, path_imglist=train_list,
                               num_parts=num_parts, part_index=part_index, epoch=begin_epoch,
                               **train_kwargs)
    val_iter = None
    if val_path:
        # every worker scores the whole validation set: its mAP is the dataset's, not a shard's
        val_iter = DetRecordIter(val_path, batch_size, data_shape, mean_pixels=mean_pixels,
                                 label_pad_width=label_width, path_imglist=val_list,
                                 **dict(cfg.valid))
    return train_iter, val_iter


def _equalize_shards(train_iter: mx.io.DataIter, kv_type: str, num_example: int,
                     num_workers: int, batch_size: int) -> mx.io.DataIter:
    """Give every synchronous worker the same number of batches per epoch.

    ``num_parts`` shards can differ by an image or more (23 and 25 of 48), hence by a batch;
    under ``dist_sync`` the worker with the extra batch would push a gradient that no partner
    matches and the whole job would wait forever. As MXNet's image-classification fit.py
    does, the epoch is fixed at ``(num_example // num_workers) // batch_size`` batches.
    """
    if num_workers <= 1 or "async" in kv_type:
        return train_iter
    epoch_size = max(1, (num_example // num_workers) // batch_size)
    logger.info("Each worker runs %d batches per epoch (dist_sync needs equal counts)", epoch_size)
    return mx.io.ResizeIter(train_iter, epoch_size)


def _anchor_overrides(anchors: str, net: str, side: int, train_path: str, rank: int) -> dict:
    """``--anchors`` as config overrides; logs the anchor coverage of the training boxes."""
    overrides = resolve_anchors(anchors, net, side, train_path)
    if overrides:
        logger.info("Anchors (--anchors %s): sizes %s, ratios %s", anchors,
                    overrides["sizes"], overrides["ratios"])
    if rank == 0:
        try:
            lines = coverage_lines(train_path, net, side, overrides)
        except ValueError as err:       # a report only: never the reason a run stops
            lines = [f"Anchor coverage not computed: {err}"]
        for line in lines:
            logger.info("%s", line)
    return overrides


def _last_epoch(prefix: str) -> int:
    """``--resume last``: the newest complete epoch checkpoint of ``prefix``."""
    last = checkpoint.last_complete_epoch(prefix)
    if last is None:
        raise FileNotFoundError(f"--resume {checkpoint.LAST}: no complete checkpoint under "
                                f"{prefix} ({prefix}-NNNN.params with its .json card); start "
                                f"without --resume")
    logger.info("--resume %s: epoch %d is the newest complete checkpoint", checkpoint.LAST, last)
    return last


def _bad_record_counts(policy: str, *selections: Any) -> dict:
    """Card entry: the records ``--bad-records skip`` leaves out of every epoch, per file."""
    counts: dict[str, Any] = {"policy": policy}
    for role, selection in zip(("train", "validation"), selections):
        if selection is not None:
            counts[role] = {"file": selection.report.rec_path,
                            "skipped_per_epoch": len(selection.skipped),
                            "records": [{"position": b.position, "key": b.key,
                                         "reason": b.reason} for b in selection.skipped]}
    return counts


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def train_net(net, train_path, num_classes, batch_size,
              data_shape, mean_pixels, resume, finetune, pretrained, epoch,
              prefix, ctx, begin_epoch, end_epoch, frequent, learning_rate,
              momentum, weight_decay, lr_refactor_step, lr_refactor_ratio,
              freeze_layer_pattern='',
              num_example=10000, label_pad_width=350,
              nms_thresh=0.45, force_nms=False, ovp_thresh=0.5,
              use_difficult=False, class_names=None,
              voc07_metric=False, nms_topk=400, force_suppress=False,
              train_list="", val_path="", val_list="", iter_monitor=0,
              monitor_pattern=".*", log_file=None, *,
              kv_store: str | None = None, optimizer: str = "sgd",
              min_neg_samples: int = 0, neg_ratio: float = 3.0, warmup_epochs: int = 0,
              seed: int | None = None,
              tensorboard: str | None = None, test_io: bool = False,
              nan_policy: str = "stop", save_period: int = 1, augment: str = "ssd",
              lr_schedule: str = "step", anchors: str = "",
              argv: Sequence[str] | None = None,
              bad_records: str = "stop") -> DetectionModule | None:
    """Train an SSD detector (the original ``train_net`` plus the options after ``*``).

    Parameters
    ----------
    net : str
        Network preset (``symbol_factory.list_networks()``).
    train_path, val_path : str
        Training / validation ``.rec`` (``val_path`` "" disables validation).
    num_classes : int
        Object classes, background excluded.
    batch_size : int
        Batch per worker, split across ``ctx``.
    data_shape : int or tuple
        Input side or (3, H, W).
    mean_pixels : sequence of 3 floats
        RGB mean subtracted.
    resume : int or str
        Continue from ``{prefix}-%04d`` (weights, optimizer state, LR position),
        ``'interrupted'``, or ``'last'`` (the newest complete epoch checkpoint); -1 off.
    finetune : int
        Start from epoch N of the same prefix, training only the new / ``pred`` parameters;
        -1 off.
    pretrained : str
        Prefix of a model to start from ("" none); ``epoch`` selects its file.
    epoch : int
        Epoch of ``pretrained``.
    prefix : str
        Save prefix; ``_<net>_<side>`` is appended.
    ctx : list of mx.Context
        Devices.
    begin_epoch, end_epoch : int
        First epoch (fresh runs) and number of epochs to complete.
    frequent : int
        Speedometer period (batches).
    learning_rate, momentum, weight_decay : float
        Optimizer settings.
    lr_refactor_step : str
        Comma list of decay epochs.
    lr_refactor_ratio : float
        Decay factor.
    freeze_layer_pattern : str
        Regex of fixed parameters (resume and pretrained runs).
    num_example : int or None
        Images per epoch for the LR schedule; None counts the ``.idx``.
    label_pad_width : int
        Label width for both iterators; -1 from the data.
    nms_thresh, force_nms, nms_topk, force_suppress
        Detection settings of the validation / saved graph (``force_nms`` or
        ``force_suppress`` enables cross-class NMS; the original ignored ``force_nms``).
    ovp_thresh, use_difficult, class_names, voc07_metric
        Validation mAP settings.
    train_list, val_list : str
        ``.lst`` files overriding the record labels.
    iter_monitor, monitor_pattern
        ``mx.mon.Monitor`` interval and regex.
    log_file : str, optional
        Also log to this file.
    kv_store : str, optional
        kvstore type (``dist_*`` shards the data by worker).
    optimizer : str
        sgd, nag, adam or rmsprop.
    min_neg_samples : int
        ``minimum_negative_samples`` of MultiBoxTarget.
    neg_ratio : float
        ``negative_mining_ratio`` of MultiBoxTarget (3 as the original).
    warmup_epochs : int
        Linear LR warm-up epochs.
    seed : int, optional
        Seed of initialisation and iterators.
    tensorboard : str, optional
        TensorBoard folder.
    test_io : bool
        Only measure the training data pipeline.
    nan_policy : str
        ``stop`` or ``skip``.
    save_period : int
        Checkpoint every N epochs.
    augment : str
        Training augmentation: ``ssd`` (the original's), ``light`` or ``none``
        (``config.config.train_augmentation``).
    lr_schedule : str
        ``step`` (``lr_refactor_step`` / ``lr_refactor_ratio``) or ``cosine`` to ``end_epoch``
        (``fit.get_lr_scheduler``).
    anchors : str
        ``''`` (the preset's), ``fit`` (fitted to the training boxes) or a JSON file of
        ``tools/anchors.py --output`` (``dataset.anchor_fit.resolve_anchors``); the anchor
        coverage of the training boxes is logged either way.
    argv : sequence of str, optional
        Command line (for the resume hint after an interrupt).
    bad_records : str
        ``stop`` (error naming the file and record) or ``skip`` (train without them, logged
        once, counted in the checkpoint card): see ``dataset/record_check.py``.

    Returns
    -------
    DetectionModule or None
        The trained module (None for ``test_io``).
    """
    call_args = {k: _jsonable(v) for k, v in locals().items()}
    setup_logging(log_file)
    logger.info("train_net arguments: %s", call_args)

    if isinstance(data_shape, int):
        data_shape = (3, data_shape, data_shape)
    if len(data_shape) != 3 or data_shape[0] != 3:
        raise ValueError(f"--data-shape {data_shape}: expected a side length or (3, H, W)")
    if isinstance(mean_pixels, (int, float)):
        mean_pixels = [mean_pixels] * 3
    if len(mean_pixels) != 3:
        raise ValueError(f"--mean-r/-g/-b: need 3 values, got {mean_pixels}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"--nan-policy {nan_policy!r}: choose one of {NAN_POLICIES}")
    if bad_records not in BAD_RECORD_POLICIES:
        raise ValueError(f"--bad-records {bad_records!r}: choose one of {BAD_RECORD_POLICIES}")
    prefix = get_prefix(prefix, net, data_shape)
    _ensure_writable_folder(prefix)

    # distributed workers: shard the data, rank 0 writes
    kv = fit.create_kvstore(kv_store, len(ctx))
    rank, num_workers = (kv.rank, kv.num_workers) if kv is not None else (0, 1)
    set_log_rank(rank)
    if num_workers > 1:
        logger.info("Worker %d of %d (kvstore %s): data sharded, rank 0 writes checkpoints",
                    rank, num_workers, kv.type)
    logger.info("Threads: OMP_NUM_THREADS=%s; contexts %s", os.environ.get("OMP_NUM_THREADS"),
                ", ".join(str(c) for c in ctx))
    # one writer per prefix: a second run refuses now; the kernel frees the lock of a dead run,
    # and an error anywhere below (a bad record, a missing file) releases it here
    lock = checkpoint.PrefixLock(prefix).acquire() if rank == 0 and not test_io else None
    try:
        if lock is not None:
            checkpoint.remove_stale_temporaries(prefix)
        if resume == checkpoint.LAST:
            resume = _last_epoch(prefix)
        _seed_everything(seed)

        # 1. iterators: bad records are found (and left out with skip) before MXNet reads them
        train_records = select_records(train_path, bad_records, "--train-path")
        val_records = select_records(val_path, bad_records, "--val-path") if val_path else None
        train_path = train_records.path
        val_path = val_records.path if val_records else val_path
        label_width = resolve_label_width(train_path, val_path, label_pad_width, num_classes)
        check_batch_size(batch_size, _num_images(train_path, train_list),
                         train_list or train_path, num_workers)
        if val_path:          # every worker scores the whole validation set
            check_val_batch_size(batch_size, _num_images(val_path, val_list), val_list or val_path)
        if num_example is None:
            num_example = count_records(train_path)
            logger.info("Epoch size: %d images (from %s.idx)", num_example,
                        os.path.splitext(train_path)[0])
        start_epoch = begin_epoch
        if resume == checkpoint.INTERRUPTED:
            saved_epoch = checkpoint.interrupted_epoch(prefix)      # refuses a stale checkpoint
            start_epoch = begin_epoch if saved_epoch is None else saved_epoch
        elif isinstance(resume, int) and resume >= 0:
            start_epoch = resume
        train_iter, val_iter = _make_iterators(
            train_path, val_path, train_list, val_list, batch_size, data_shape, mean_pixels,
            label_width, num_workers, rank, seed, start_epoch, augment)
        if test_io:
            measure_io(train_iter, frequent)
            return None
        if kv is not None:
            train_iter = _equalize_shards(train_iter, kv.type, num_example, num_workers,
                                          batch_size)

        # 2. symbols: train without NMS, save with det_out, validate with the inference graph
        force = bool(force_suppress or force_nms)
        side = data_shape[1]
        anchor_overrides = _anchor_overrides(anchors, net, side, train_path, rank)
        train_sym = get_symbol_train(net, side, num_classes, nms_thresh=nms_thresh,
                                     force_suppress=force, nms_topk=nms_topk, with_det=False,
                                     minimum_negative_samples=min_neg_samples,
                                     negative_mining_ratio=neg_ratio, fast_ops=True,
                                     **anchor_overrides)
        save_sym = get_symbol_train(net, side, num_classes, nms_thresh=nms_thresh,
                                    force_suppress=force, nms_topk=nms_topk, with_det=True,
                                    minimum_negative_samples=min_neg_samples,
                                    negative_mining_ratio=neg_ratio, **anchor_overrides)
        infer_sym = get_symbol(net, side, num_classes, nms_thresh=nms_thresh, force_suppress=force,
                               nms_topk=nms_topk, **anchor_overrides)
        shapes = dict(train_iter.provide_data + train_iter.provide_label)
        arg_shapes, _, aux_shapes = train_sym.infer_shape(**shapes)
        arg_shapes = {n: tuple(s) for n, s in zip(train_sym.list_arguments(), arg_shapes)
                      if n not in shapes}
        aux_shapes = {n: tuple(s) for n, s in zip(train_sym.list_auxiliary_states(), aux_shapes)}

        # 3. parameters to load and freeze
        loaded = load_start_params(net, prefix, resume, finetune, pretrained, epoch, begin_epoch,
                              arg_shapes, aux_shapes, freeze_layer_pattern)
        begin_epoch = loaded["begin_epoch"]
        fixed = loaded["fixed_param_names"]
        if fixed:
            logger.info("Frozen parameters (%d): %s", len(fixed), ", ".join(fixed))

        # 4. fit
        lr, lr_scheduler = fit.get_lr_scheduler(learning_rate, lr_refactor_step, lr_refactor_ratio,
                                                num_example, batch_size, begin_epoch,
                                                warmup_epochs=warmup_epochs,
                                                num_workers=num_workers, schedule=lr_schedule,
                                                end_epoch=end_epoch)
        optimizer_params = fit.get_optimizer_params(optimizer, lr, momentum, weight_decay,
                                                    lr_scheduler, len(ctx), num_workers)
        logger.info("Optimizer %s: lr %g, schedule %s, rescale_grad %g", optimizer,
                    optimizer_params["learning_rate"],
                    (lr_refactor_step if lr_schedule == "step" else lr_schedule)
                    if lr_scheduler else "none",
                    optimizer_params["rescale_grad"])
        monitor = (mx.mon.Monitor(iter_monitor, pattern=monitor_pattern) if iter_monitor > 0
                   else None)
        metric_cls = VOC07MApMetric if voc07_metric else MApMetric
        valid_metric = metric_cls(ovp_thresh, use_difficult, class_names, pred_idx=0)

        def describe(num_images: int) -> str:
            return describe_protocol(voc07_metric, ovp_thresh, use_difficult, nms_thresh, nms_topk,
                                     side, num_images, force_suppress=force)

        card_base = {"network": net, "data_shape": side, "num_classes": num_classes,
                     "class_names": _jsonable(class_names), "seed": seed, "prefix": prefix,
                     "label_width": label_width, "num_workers": num_workers,
                     "anchors": anchor_overrides or None,
                     "arguments": call_args,
                     "bad_records": _bad_record_counts(bad_records, train_records, val_records)}
        return fit.fit(train_sym, train_iter, val_iter, contexts=list(ctx), prefix=prefix,
                       begin_epoch=begin_epoch, end_epoch=end_epoch,
                       arg_params=loaded["arg_params"], aux_params=loaded["aux_params"],
                       fixed_param_names=fixed, eval_metric=MultiBoxMetric(),
                       valid_metric=valid_metric, optimizer=optimizer,
                       optimizer_params=optimizer_params, save_symbol=save_sym,
                       infer_symbol=infer_sym, kvstore=kv, frequent=frequent, monitor=monitor,
                       save_period=save_period, nan_policy=nan_policy,
                       states_path=loaded["states_path"], card_base=card_base, argv=argv,
                       tensorboard=tensorboard, describe_validation=describe)
    finally:
        if lock is not None:
            lock.release()
