"""Module.fit wiring for SSD training: flags, LR schedule, optimizer, kvstore, ``fit()``.

Follows MXNet's image-classification ``common/fit.py`` (REFERENCE.md §2.8) with the SSD
specifics of the original ``train/train_net.py`` (§3.5, §3.6):

* :func:`get_lr_scheduler` is the original schedule (pre-decay on resume, steps counted in
  optimizer updates from ``begin_epoch``) plus an optional linear warm-up;
* :func:`fit` trains through ``mx.mod.Module.fit`` with
  :class:`training.detection_module.DetectionModule` (non-finite guard, validation with the inference
  graph, optimizer state restored on resume) and writes checkpoints through
  :class:`callbacks.Checkpointer` (atomic files, cards, best and interrupted checkpoints).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
from typing import Any, Callable, Iterable, Sequence

from config.mxnet_compat import mx

from training.callbacks import Checkpointer, open_tensorboard
from training.checkpoint import (INTERRUPTED, checkpoint_path, environment_info,
                        list_checkpoint_epochs, resume_command)
from config.config import AUGMENTATIONS
from training.detection_module import (NAN_POLICIES, DetectionModule, NonFiniteError, SignalGuard,
                              TrainingInterrupted)

OPTIMIZERS = ("sgd", "nag", "adam", "rmsprop")
MOMENTUM_OPTIMIZERS = ("sgd", "nag")
# --kv-store names MXNet 1.9.1 creates: its C++ factory matches substrings ("dist", "nccl",
# "device") and silently makes a local store of any other name, so the name is checked here
KV_STORES = ("local", "device", "nccl", "dist_sync", "dist_device_sync", "dist_sync_device",
             "dist_async", "dist_device_async", "dist_async_device", "local_update_cpu",
             "local_allreduce_cpu", "local_allreduce_device", "horovod", "byteps")

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# flags
# --------------------------------------------------------------------------------------------
def add_fit_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the optimisation / schedule / checkpoint flags of training to ``parser``.

    Spellings, dests and defaults of the original ``train.py`` (REFERENCE.md §2.1), plus
    zhreshold's ``--optimizer`` and the new ``--warmup-epochs``, ``--seed``, ``--save-period``,
    ``--nan-policy``, ``--augment``, ``--test-io`` and ``--tensorboard``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Parser to extend.

    Returns
    -------
    argparse._ArgumentGroup
        The "Training" group that holds the flags.
    """
    train = parser.add_argument_group("Training", "optimisation, schedule and checkpoints")
    train.add_argument("--kv-store", dest="kv_store", type=str, default="device",
                       help="kvstore type: local, device, nccl (GPU build), dist_sync, "
                            "dist_device_sync, dist_async (all: fit.KV_STORES) "
                            "(default: device)")
    train.add_argument("--optimizer", type=str, default="sgd", choices=OPTIMIZERS,
                       help="optimizer; momentum is used by sgd and nag only, rmsprop runs at "
                            "--lr / 10 as in the original (default: sgd)")
    train.add_argument("--lr", dest="learning_rate", type=float, default=0.002,
                       help="base learning rate per update (default: 0.002)")
    train.add_argument("--momentum", type=float, default=0.9,
                       help="momentum of sgd/nag (default: 0.9)")
    train.add_argument("--wd", dest="weight_decay", type=float, default=0.0005,
                       help="weight decay (L2 factor) (default: 0.0005)")
    train.add_argument("--lr-steps", dest="lr_refactor_step", type=str, default="80, 160",
                       help="comma list of epochs at which the LR is multiplied by --lr-factor, "
                            "strictly increasing (default: '80, 160')")
    train.add_argument("--lr-schedule", dest="lr_schedule", type=str, default="step",
                       choices=LR_SCHEDULES,
                       help="step: x --lr-factor at each --lr-steps epoch (the original's); "
                            "cosine: cosine decay from --lr (after the warm-up) to --lr / 1000 "
                            "at --end-epoch, --lr-steps ignored (default: step)")
    train.add_argument("--lr-factor", dest="lr_refactor_ratio", type=float, default=0.1,
                       help="LR multiplier at each --lr-steps epoch; >= 1 disables decay "
                            "(default: 0.1)")
    train.add_argument("--warmup-epochs", dest="warmup_epochs", type=int, default=0,
                       help="epochs of linear LR warm-up from 0 to --lr, counted in updates "
                            "(default: 0, off)")
    train.add_argument("--begin-epoch", dest="begin_epoch", type=int, default=0,
                       help="first epoch (0-based) when not resuming (default: 0)")
    train.add_argument("--end-epoch", dest="end_epoch", type=int, default=240,
                       help="train until this many epochs are complete (default: 240)")
    train.add_argument("--frequent", type=int, default=20,
                       help="log speed and losses every N batches (default: 20)")
    train.add_argument("--save-period", dest="save_period", type=int, default=1,
                       help="write a checkpoint every N epochs; the last epoch is always "
                            "written (default: 1)")
    train.add_argument("--seed", type=int, default=None,
                       help="random seed of initialisation and data order/augmentation; "
                            "recorded in the checkpoint card (default: none, iterator seed 233)")
    train.add_argument("--augment", type=str, default="ssd", choices=AUGMENTATIONS,
                       help="training augmentation: ssd (the original's crops and 4x zoom-out), "
                            "light (crops keeping >= 50%% of the side, zoom-out <= 2x: for short "
                            "schedules from scratch, docs/RECIPE.md), none (mirror only) "
                            "(default ssd)")
    train.add_argument("--nan-policy", dest="nan_policy", type=str, default="stop",
                       choices=NAN_POLICIES,
                       help="on a non-finite loss or gradient: stop (keep the last good "
                            "checkpoint) or skip that batch's update (default: stop)")
    train.add_argument("--monitor", dest="monitor", type=int, default=0,
                       help="log weight/output statistics every N batches with mx.mon.Monitor; "
                            "0 disables (default: 0)")
    train.add_argument("--pattern", dest="monitor_pattern", type=str, default=".*",
                       help="regex of the arrays --monitor logs (default: '.*')")
    train.add_argument("--test-io", dest="test_io", action="store_true",
                       help="only read the training record with full augmentation and report "
                            "images/s; no training (default: off)")
    train.add_argument("--tensorboard", type=str, default=None, metavar="DIR",
                       help="also write TensorBoard scalars to DIR; needs tensorboardX or mxboard "
                            "(default: off)")
    return train


# --------------------------------------------------------------------------------------------
# learning rate
# --------------------------------------------------------------------------------------------
def parse_lr_steps(value: str) -> list[int]:
    """Parse ``--lr-steps`` ("80, 160") into strictly increasing positive epochs."""
    try:
        steps = [int(s) for s in str(value).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--lr-steps {value!r}: expected a comma list of integer epochs, "
                         f"e.g. '80, 160'") from None
    if any(s <= 0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"--lr-steps {value!r}: epochs must be positive and strictly "
                         f"increasing, e.g. '80, 160'")
    return steps


LR_SCHEDULES = ("step", "cosine")
# the cosine schedule ends at this fraction of --lr
COSINE_FINAL_FRACTION = 1e-3


class WarmupCosineScheduler(mx.lr_scheduler.LRScheduler):
    """Linear warm-up from 0, then cosine decay to ``final_lr`` at update ``total_updates``.

    Updates are counted from the start of training; ``offset`` is the number done before this
    run (``--resume``), so a resumed run continues the curve where an uninterrupted one is.
    """

    def __init__(self, base_lr: float, total_updates: int, warmup_updates: int = 0,
                 final_lr: float = 0.0, offset: int = 0) -> None:
        super().__init__(base_lr=base_lr)
        self.max_lr = base_lr
        self.total_updates = max(1, total_updates)
        self.warmup_updates = max(0, warmup_updates)
        self.final_lr = final_lr
        self.offset = offset

    def __call__(self, num_update: int) -> float:
        t = num_update + self.offset
        if t < self.warmup_updates:
            return self.max_lr * t / self.warmup_updates
        span = max(1, self.total_updates - self.warmup_updates)
        progress = min(1.0, (t - self.warmup_updates) / span)
        return self.final_lr + (self.max_lr - self.final_lr) * (1 + math.cos(math.pi * progress)) / 2


def get_lr_scheduler(learning_rate: float, lr_refactor_step: str, lr_refactor_ratio: float,
                     num_example: int, batch_size: int, begin_epoch: int,
                     warmup_epochs: int = 0, num_workers: int = 1, schedule: str = "step",
                     end_epoch: int | None = None
                     ) -> tuple[float, mx.lr_scheduler.LRScheduler | None]:
    """Learning rate and scheduler of the original SSD (REFERENCE.md §3.5), plus warm-up.

    ``epoch_size = (num_example // num_workers) // batch_size`` updates; every step
    ``s <= begin_epoch`` is applied to the returned rate ("pre-decay" on resume) and the
    remaining ones become ``MultiFactorScheduler`` steps ``epoch_size * (s - begin_epoch)``.
    With ``warmup_epochs > begin_epoch`` the rate ramps linearly over the remaining warm-up
    updates, continuing exactly where an uninterrupted run would be.

    Parameters
    ----------
    learning_rate : float
        Base learning rate.
    lr_refactor_step : str
        Comma list of epochs, e.g. ``'80, 160'``.
    lr_refactor_ratio : float
        Multiplier at each step (> 0; >= 1 disables decay).
    num_example : int
        Training images per epoch (all workers together).
    batch_size : int
        Batch size per worker.
    begin_epoch : int
        Completed epochs (0 for a fresh run, N for ``--resume N``).
    warmup_epochs : int
        Epochs of linear warm-up from 0 (0: off).
    num_workers : int
        Distributed workers sharing the epoch.
    schedule : {'step', 'cosine'}
        ``cosine``: :class:`WarmupCosineScheduler` from ``learning_rate`` to
        ``learning_rate * COSINE_FINAL_FRACTION`` at ``end_epoch`` (``lr_refactor_step`` and
        ``lr_refactor_ratio`` unused); the rate returned is the one at ``begin_epoch``.
    end_epoch : int, optional
        Last epoch of the run (needed by ``cosine``).

    Returns
    -------
    tuple of (float, mx.lr_scheduler.LRScheduler or None)
        The learning rate to start with and the scheduler (None when constant).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"--lr-schedule {schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
    if schedule == "cosine":
        return _cosine_scheduler(learning_rate, num_example, batch_size, begin_epoch,
                                 warmup_epochs, num_workers, end_epoch)
    if not lr_refactor_ratio > 0:
        raise ValueError(f"--lr-factor {lr_refactor_ratio}: must be > 0 (>= 1 disables decay)")
    if warmup_epochs < 0:
        raise ValueError(f"--warmup-epochs {warmup_epochs}: must be >= 0")
    if batch_size <= 0 or num_example <= 0:
        raise ValueError(f"--batch-size {batch_size} / --num-example {num_example}: "
                         f"both must be positive")
    steps_epochs = parse_lr_steps(lr_refactor_step)
    epoch_size = max(1, (num_example // max(1, num_workers)) // batch_size)
    lr = learning_rate
    decay_steps: list[int] = []
    if lr_refactor_ratio < 1:
        for s in steps_epochs:
            if begin_epoch >= s:
                lr *= lr_refactor_ratio
        if lr != learning_rate:
            logger.info("Adjusted learning rate to %s for epoch %d", lr, begin_epoch)
        decay_steps = [epoch_size * (s - begin_epoch) for s in steps_epochs if s > begin_epoch]
    warmup_steps = 0
    warmup_begin_lr = 0.0
    if warmup_epochs > begin_epoch:
        warmup_steps = int(epoch_size * (warmup_epochs - begin_epoch))
        warmup_begin_lr = lr * begin_epoch / warmup_epochs
        logger.info("Linear warm-up over %d updates from %g to %g", warmup_steps,
                    warmup_begin_lr, lr)
    if decay_steps:
        scheduler = mx.lr_scheduler.MultiFactorScheduler(
            step=decay_steps, factor=lr_refactor_ratio, base_lr=lr,
            warmup_steps=warmup_steps, warmup_begin_lr=warmup_begin_lr)
        return lr, scheduler
    if warmup_steps:
        # a constant schedule after warm-up: a FactorScheduler that never reaches its step
        scheduler = mx.lr_scheduler.FactorScheduler(
            step=2 ** 62, factor=1.0, base_lr=lr, warmup_steps=warmup_steps,
            warmup_begin_lr=warmup_begin_lr)
        return lr, scheduler
    return lr, None


def _cosine_scheduler(learning_rate: float, num_example: int, batch_size: int,
                      begin_epoch: int, warmup_epochs: int, num_workers: int,
                      end_epoch: int | None) -> tuple[float, WarmupCosineScheduler]:
    if warmup_epochs < 0:
        raise ValueError(f"--warmup-epochs {warmup_epochs}: must be >= 0")
    if batch_size <= 0 or num_example <= 0:
        raise ValueError(f"--batch-size {batch_size} / --num-example {num_example}: "
                         f"both must be positive")
    if end_epoch is None or end_epoch <= begin_epoch:
        raise ValueError(f"--lr-schedule cosine needs --end-epoch ({end_epoch}) after the "
                         f"first epoch ({begin_epoch})")
    epoch_size = max(1, (num_example // max(1, num_workers)) // batch_size)
    scheduler = WarmupCosineScheduler(learning_rate, epoch_size * end_epoch,
                                      epoch_size * warmup_epochs,
                                      learning_rate * COSINE_FINAL_FRACTION,
                                      offset=epoch_size * begin_epoch)
    lr = scheduler(0)
    logger.info("Cosine LR over %d updates (warm-up %d) from %g to %g; %g at epoch %d",
                scheduler.total_updates, scheduler.warmup_updates, learning_rate,
                scheduler.final_lr, lr, begin_epoch)
    return lr, scheduler


def get_optimizer_params(optimizer: str, learning_rate: float, momentum: float,
                         weight_decay: float, lr_scheduler: Any, num_devices: int,
                         num_workers: int = 1) -> dict:
    """Optimizer keyword arguments as the original builds them (REFERENCE.md §3.6 step 10).

    ``rescale_grad = 1 / (num_devices * num_workers)``: each device normalises its loss by its
    own valid-anchor count and the kvstore sums the device gradients, so the sum is averaged.

    Parameters
    ----------
    optimizer : str
        One of ``sgd``, ``nag``, ``adam``, ``rmsprop``.
    learning_rate, momentum, weight_decay : float
        Values of ``--lr``, ``--momentum``, ``--wd``.
    lr_scheduler : mx.lr_scheduler.LRScheduler or None
        From :func:`get_lr_scheduler`.
    num_devices : int
        Contexts of this worker.
    num_workers : int
        Distributed workers.

    Returns
    -------
    dict
        Keyword arguments for ``mx.optimizer.create``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    params: dict[str, Any] = {
        "learning_rate": learning_rate,
        "wd": weight_decay,
        "lr_scheduler": lr_scheduler,
        "clip_gradient": None,
        "rescale_grad": 1.0 / (max(1, num_devices) * max(1, num_workers)),
    }
    if optimizer in MOMENTUM_OPTIMIZERS:
        params["momentum"] = momentum
    if optimizer == "rmsprop":
        params["learning_rate"] = learning_rate / 10.0
        if lr_scheduler is not None:
            lr_scheduler.base_lr = params["learning_rate"]
            lr_scheduler.warmup_final_lr = params["learning_rate"]
        logger.info("rmsprop: learning rate %g / 10 = %g as in the original", learning_rate,
                    params["learning_rate"])
    return params


# --------------------------------------------------------------------------------------------
# kvstore
# --------------------------------------------------------------------------------------------
def create_kvstore(kv_store: str | None, num_devices: int) -> mx.kv.KVStore | None:
    """Create the kvstore, with clear errors for types this build or environment lacks.

    A single device outside distributed training needs no kvstore (``Module`` would not
    create one either): None is returned.

    Parameters
    ----------
    kv_store : str or None
        ``--kv-store`` value.
    num_devices : int
        Contexts of this worker.

    Returns
    -------
    mx.kv.KVStore or None
    """
    if not kv_store:
        return None
    if kv_store.lower() not in KV_STORES:
        raise ValueError(f"--kv-store {kv_store}: unknown kvstore type; valid: "
                         f"{', '.join(KV_STORES)}")
    features = mx.runtime.Features()
    if "nccl" in kv_store and not features.is_enabled("NCCL"):
        raise ValueError(f"--kv-store {kv_store}: this MXNet build has no NCCL; use device or "
                         f"local (or install mxnet-cu112==1.9.1 on a GPU machine)")
    if kv_store.startswith("dist"):
        if not features.is_enabled("DIST_KVSTORE"):
            raise ValueError(f"--kv-store {kv_store}: this MXNet build has no distributed "
                             f"kvstore; use device or local")
        if "DMLC_NUM_WORKER" not in os.environ or "DMLC_ROLE" not in os.environ:
            raise ValueError(f"--kv-store {kv_store}: DMLC_* environment not set; start the "
                             f"workers with tools/launch.py -n N python train.py ...")
        return mx.kv.create(kv_store)
    if num_devices <= 1:
        return None
    try:
        return mx.kv.create(kv_store)
    except mx.base.MXNetError as err:
        raise ValueError(f"--kv-store {kv_store}: cannot create it ({str(err).splitlines()[0]}); "
                         f"valid: local, device, nccl, dist_sync, dist_device_sync, "
                         f"dist_async") from None

# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def fit(symbol: mx.sym.Symbol, train_iter: mx.io.DataIter, val_iter: mx.io.DataIter | None, *,
        contexts: list, prefix: str, begin_epoch: int, end_epoch: int,
        arg_params: dict | None, aux_params: dict | None,
        fixed_param_names: list[str] | None, eval_metric: mx.metric.EvalMetric,
        valid_metric: mx.metric.EvalMetric | None, optimizer: str, optimizer_params: dict,
        save_symbol: mx.sym.Symbol, infer_symbol: mx.sym.Symbol | None = None,
        kvstore: mx.kv.KVStore | None = None, frequent: int = 20,
        monitor: mx.mon.Monitor | None = None, save_period: int = 1,
        nan_policy: str = "stop", states_path: str | None = None,
        card_base: dict | None = None, argv: Sequence[str] | None = None,
        initializer: mx.init.Initializer | None = None, tensorboard: str | None = None,
        describe_validation: Callable[[int], str] | None = None,
        extra_batch_callbacks: Iterable[Callable] = ()) -> DetectionModule:
    """Train with ``mx.mod.Module.fit`` and write checkpoints (see module docstring).

    Parameters
    ----------
    symbol : mx.sym.Symbol
        Training graph (``get_symbol_train(..., with_det=False)``), label name ``label``.
    train_iter, val_iter : mx.io.DataIter
        Training and validation data (``val_iter`` None: no validation).
    contexts : list of mx.Context
        Devices of this worker.
    prefix : str
        Checkpoint prefix (``model/ssd_tiny_128``).
    begin_epoch, end_epoch : int
        Completed epochs at start; train until ``end_epoch`` are complete.
    arg_params, aux_params : dict or None
        Parameters to start from; missing ones are initialised.
    fixed_param_names : list of str or None
        Parameters not updated.
    eval_metric : mx.metric.EvalMetric
        Training metric (``MultiBoxMetric``).
    valid_metric : mx.metric.EvalMetric or None
        Validation metric on ``infer_symbol`` outputs (``pred_idx=0``).
    optimizer : str
        Optimizer name.
    optimizer_params : dict
        From :func:`get_optimizer_params`.
    save_symbol : mx.sym.Symbol
        Graph stored as ``{prefix}-symbol.json`` (training graph with ``det_out``).
    infer_symbol : mx.sym.Symbol, optional
        ``get_symbol`` graph used for validation.
    kvstore : mx.kv.KVStore, optional
        From :func:`create_kvstore`; checkpoints are written by rank 0 only.
    frequent : int
        Speedometer period in batches.
    monitor : mx.mon.Monitor, optional
        Installed on the module.
    save_period : int
        Checkpoint every N epochs (the last one always).
    nan_policy : str
        ``stop`` or ``skip`` (see :class:`DetectionModule`).
    states_path : str, optional
        Optimizer state to restore (``--resume``).
    card_base : dict, optional
        Fields of every checkpoint card (arguments, seed, network...).
    argv : sequence of str, optional
        Command line, to print the exact resume command after an interrupt.
    initializer : mx.init.Initializer, optional
        Default ``mx.init.Xavier()`` (uniform, avg, magnitude 3) as the original.
    tensorboard : str, optional
        Folder for TensorBoard scalars.
    describe_validation : callable, optional
        ``f(num_images) -> str``: the protocol line logged after each validation.
    extra_batch_callbacks : iterable of callables
        More batch-end callbacks (tests).

    Returns
    -------
    DetectionModule
        The trained module.

    Raises
    ------
    NonFiniteError
        ``nan_policy='stop'`` and a loss/gradient became NaN/Inf.
    TrainingInterrupted
        After SIGINT/SIGTERM, once the interrupted checkpoint is saved.
    """
    rank = kvstore.rank if kvstore is not None else 0
    if nan_policy == "skip" and kvstore is not None and kvstore.type.startswith("dist"):
        raise ValueError("--nan-policy skip cannot be used with a dist kvstore (a skipped "
                         "update would desynchronise the workers); use --nan-policy stop")
    module = DetectionModule(symbol, infer_symbol=infer_symbol, nan_policy=nan_policy,
                             begin_epoch=begin_epoch, states_path=states_path,
                             param_order=save_symbol.list_arguments(),
                             label_names=("label",), context=contexts,
                             fixed_param_names=fixed_param_names, logger=logging.getLogger())
    writer = open_tensorboard(tensorboard) if rank == 0 else None
    base = dict(card_base or {})
    base.setdefault("environment", environment_info())
    checkpointer = Checkpointer(module, prefix, save_symbol, end_epoch, save_period, base,
                                 eval_metric, enabled=(rank == 0),
                                 has_validation=val_iter is not None, tensorboard=writer)
    module.after_validation = checkpointer.on_validation
    module.describe_validation = describe_validation
    guard = SignalGuard()

    def check_interrupt(param: mx.model.BatchEndParam) -> None:
        if guard.signum is not None:
            raise TrainingInterrupted(guard.signum, param.epoch, param.nbatch + 1)

    batch_callbacks = [mx.callback.Speedometer(train_iter.batch_size, frequent, auto_reset=True),
                       *extra_batch_callbacks, check_interrupt]
    if begin_epoch >= end_epoch:
        raise ValueError(f"--end-epoch {end_epoch}: nothing to train, {begin_epoch} epochs are "
                         f"already complete (raise --end-epoch)")
    if states_path and not os.path.isfile(states_path):
        logger.warning("No optimizer state %s: momentum restarts from zero", states_path)
        module.states_path = None
    with guard:
        try:
            module.fit(train_iter, eval_data=val_iter, eval_metric=eval_metric,
                       validation_metric=valid_metric, batch_end_callback=batch_callbacks,
                       epoch_end_callback=checkpointer.on_epoch_end, kvstore=kvstore,
                       optimizer=optimizer, optimizer_params=optimizer_params,
                       initializer=initializer or mx.init.Xavier(),
                       arg_params=arg_params, aux_params=aux_params, allow_missing=True,
                       begin_epoch=begin_epoch, num_epoch=end_epoch, monitor=monitor)
        except TrainingInterrupted as stop:
            completed = module.epoch
            checkpointer.save_interrupted(completed, stop.nbatch)
            exact = list_checkpoint_epochs(prefix)
            lines = [f"Training interrupted by {signal.Signals(stop.signum).name} in epoch "
                     f"{stop.epoch} after batch {stop.nbatch}; saved "
                     f"{checkpoint_path(prefix, INTERRUPTED, 'params')} (+ .states, .json).",
                     f"Continue from these weights (epoch {completed} restarts from its first "
                     f"batch): {resume_command(argv, INTERRUPTED)}"]
            if completed in exact:
                lines.append(f"Or resume exactly from the last completed epoch: "
                             f"{resume_command(argv, completed)}")
            stop.resume_message = "\n".join(lines)
            logger.warning(stop.resume_message)
            raise
        except NonFiniteError as err:
            good = list_checkpoint_epochs(prefix)
            last = f"last good checkpoint: epoch {good[-1]}" if good else "no checkpoint yet"
            logger.error("%s (%s)", err, last)
            raise
        finally:
            if writer is not None:
                writer.close()
    return module
