"""Module.fit wiring for SSD training: flags, LR schedule, kvstore, callbacks, checkpoints.

Follows MXNet's image-classification ``common/fit.py`` (REFERENCE.md §2.8) with the SSD
specifics of the original ``train/train_net.py`` (§3.5, §3.6):

* :func:`get_lr_scheduler` is the original schedule (pre-decay on resume, steps counted in
  optimizer updates from ``begin_epoch``) plus an optional linear warm-up;
* :func:`fit` trains through ``mx.mod.Module.fit`` with :class:`DetectionModule`, which
  checks every batch for non-finite losses/gradients *before* the update, validates with the
  inference graph (``get_symbol``) through ``evaluate.evaluate_net.score_detections`` and
  restores the optimizer state when resuming;
* checkpoints are written atomically (temporary name in the same folder, then ``os.replace``):
  ``{prefix}-symbol.json``, ``{prefix}-%04d.params`` / ``.states`` / ``.json`` (card),
  ``{prefix}-best.params`` / ``-best.json`` and, after Ctrl-C / SIGTERM,
  ``{prefix}-interrupted.params`` / ``.states`` / ``.json``.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import json
import logging
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import mxnet as mx
import numpy as np

from config.config import AUGMENTATIONS

LOG_FORMAT = "%(asctime)s Node[%(rank)s] %(message)s"
OPTIMIZERS = ("sgd", "nag", "adam", "rmsprop")
MOMENTUM_OPTIMIZERS = ("sgd", "nag")
NAN_POLICIES = ("stop", "skip")
MAX_CONSECUTIVE_SKIPS = 20       # --nan-policy skip gives up after this many bad batches in a row
INTERRUPTED = "interrupted"      # tag of the checkpoint written on Ctrl-C / SIGTERM
BEST = "best"
# --kv-store names MXNet 1.9.1 creates: its C++ factory matches substrings ("dist", "nccl",
# "device") and silently makes a local store of any other name, so the name is checked here
KV_STORES = ("local", "device", "nccl", "dist_sync", "dist_device_sync", "dist_sync_device",
             "dist_async", "dist_device_async", "dist_async_device", "local_update_cpu",
             "local_allreduce_cpu", "local_allreduce_device", "horovod", "byteps")
NAN_REMEDIES = ("lower --lr (e.g. by 10x), add --warmup-epochs 1-5, or check the records for "
                "degenerate boxes (zero width/height, x2 < x1) with tools/prepare_dataset.py")

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------------------------
class _RankFilter(logging.Filter):
    """Adds ``record.rank`` (the kvstore rank, 0 until known) to every log record."""

    rank = 0

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = _RankFilter.rank
        return True


def setup_logging(log_file: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Configure the root logger once: console plus optional file, ``Node[rank]`` on each line.

    Calling it again only adds a file handler for a new ``log_file``; nothing is duplicated.

    Parameters
    ----------
    log_file : str, optional
        Also write every console line to this file (appended).
    level : int
        Logging level of the root logger.

    Returns
    -------
    logging.Logger
        The root logger.
    """
    root = logging.getLogger()
    root.setLevel(level)
    formatter = logging.Formatter(LOG_FORMAT)
    consoles = [h for h in root.handlers if getattr(h, "_ssd_console", False)]
    for handler in consoles:
        if handler.stream is not sys.stderr:   # stderr replaced (pytest capture, redirection)
            handler.stream = sys.stderr       # setStream would flush a closed stream
    if not consoles:
        console = logging.StreamHandler()
        console._ssd_console = True
        console.setFormatter(formatter)
        console.addFilter(_RankFilter())
        root.addHandler(console)
    if log_file:
        path = os.path.abspath(log_file)
        if not any(getattr(h, "baseFilename", None) == path for h in root.handlers):
            folder = os.path.dirname(path)
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"--log {log_file}: folder {folder} does not exist")
            handler = logging.FileHandler(path)
            handler.setFormatter(formatter)
            handler.addFilter(_RankFilter())
            root.addHandler(handler)
    return root


def set_log_rank(rank: int) -> None:
    """Tag log lines with ``Node[rank]``; workers other than rank 0 stop writing the log file."""
    _RankFilter.rank = rank
    if rank != 0:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
                handler.close()


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


def get_lr_scheduler(learning_rate: float, lr_refactor_step: str, lr_refactor_ratio: float,
                     num_example: int, batch_size: int, begin_epoch: int,
                     warmup_epochs: int = 0, num_workers: int = 1
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

    Returns
    -------
    tuple of (float, mx.lr_scheduler.LRScheduler or None)
        The learning rate to start with and the scheduler (None when constant).
    """
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
# checkpoints
# --------------------------------------------------------------------------------------------
def _atomic_write(path: str, writer: Callable[[str], None]) -> None:
    """Run ``writer(tmp_path)`` on a temporary name in the same folder, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def checkpoint_path(prefix: str, tag: int | str, ext: str) -> str:
    """``{prefix}-0003.params`` for an epoch number, ``{prefix}-best.json`` for a tag."""
    name = f"{tag:04d}" if isinstance(tag, int) else str(tag)
    return f"{prefix}-{name}.{ext}"


def list_checkpoint_epochs(prefix: str) -> list[int]:
    """Epoch numbers that have a ``{prefix}-%04d.params`` file, sorted."""
    epochs = []
    for path in glob.glob(glob.escape(prefix) + "-*.params"):
        match = re.fullmatch(r"-(\d{4,})\.params", path[len(prefix):])
        if match:
            epochs.append(int(match.group(1)))
    return sorted(epochs)


def load_param_file(path: str, flag: str) -> dict[str, mx.nd.NDArray]:
    """``mx.nd.load`` of a ``.params`` file, with clear errors for a missing or corrupt one.

    Parameters
    ----------
    path : str
        The ``.params`` file (``arg:``/``aux:`` keys, as ``mx.model.save_checkpoint`` writes).
    flag : str
        The flag that named it (``--resume 3``, ``--pretrained model/vgg16_reduced``), used
        in the messages.

    Returns
    -------
    dict of str to mx.nd.NDArray
        The saved arrays by name.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not a readable NDArray dictionary (truncated, corrupt, another format).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: checkpoint {path} not found")
    try:
        saved = mx.nd.load(path)
    except mx.base.MXNetError:
        size = os.path.getsize(path)
        raise ValueError(f"{flag}: {path} ({size} bytes) is not a readable .params file "
                         f"(truncated, corrupt or not saved by mx.nd.save); save it again, or "
                         f"pick another epoch/prefix") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{flag}: {path} holds a list of {len(saved)} arrays, not the named "
                         f"'arg:'/'aux:' parameters of a checkpoint")
    return saved


def interrupted_epoch(prefix: str) -> int | None:
    """Completed epochs recorded by the ``-interrupted`` card; refuses a stale checkpoint.

    An ``-interrupted`` checkpoint older than the newest epoch checkpoint (a later segment
    completed epochs after it) would restart training from older weights and overwrite the
    completed epochs.

    Parameters
    ----------
    prefix : str
        Checkpoint prefix.

    Returns
    -------
    int or None
        The card's ``epoch`` (None when there is no card).

    Raises
    ------
    ValueError
        The newest ``{prefix}-%04d.params`` is later than the interrupted checkpoint.
    """
    try:
        card = load_card(prefix, INTERRUPTED)
    except ValueError as err:      # json.JSONDecodeError is a ValueError
        raise ValueError(f"--resume {INTERRUPTED}: {checkpoint_path(prefix, INTERRUPTED, 'json')}"
                         f" is not valid JSON ({err})") from None
    if card is None:
        return None
    epoch = int(card.get("epoch", 0))
    epochs = list_checkpoint_epochs(prefix)
    if epochs and epochs[-1] > epoch:
        raise ValueError(f"--resume {INTERRUPTED}: {checkpoint_path(prefix, INTERRUPTED, 'params')}"
                         f" was saved after {epoch} completed epochs, but "
                         f"{checkpoint_path(prefix, epochs[-1], 'params')} is newer (epoch "
                         f"{epochs[-1]}); resuming the interrupted weights would redo and "
                         f"overwrite completed epochs: use --resume {epochs[-1]}")
    return epoch


def remove_stale_interrupted(prefix: str, completed_epochs: int) -> None:
    """Delete ``{prefix}-interrupted.*`` once epoch ``completed_epochs`` is saved after it."""
    try:
        card = load_card(prefix, INTERRUPTED)
    except ValueError:
        card = {}
    if card is None:
        return
    if int(card.get("epoch", 0)) >= completed_epochs:
        return
    for ext in ("params", "states", "json"):
        path = checkpoint_path(prefix, INTERRUPTED, ext)
        if os.path.isfile(path):
            os.remove(path)
    logger.info("Removed the interrupted checkpoint %s (epoch %d is saved after it)",
                checkpoint_path(prefix, INTERRUPTED, "params"), completed_epochs)


def save_params(path: str, arg_params: dict, aux_params: dict) -> None:
    """Write ``arg:``/``aux:`` parameters (``mx.model.load_checkpoint`` format) atomically."""
    save_dict = {f"arg:{k}": v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    save_dict.update({f"aux:{k}": v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    _atomic_write(path, lambda tmp: mx.nd.save(tmp, save_dict))


def save_json(path: str, content: dict) -> None:
    """Write a JSON document atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(content, f, indent=2, sort_keys=True, default=str)
    _atomic_write(path, write)


def load_card(prefix: str, tag: int | str) -> dict | None:
    """The reproducibility card of a checkpoint, or None when there is none."""
    path = checkpoint_path(prefix, tag, "json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def environment_info() -> dict:
    """Versions and revision recorded in every checkpoint card."""
    return {"mxnet": mx.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "git_revision": _git_revision(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def resume_command(argv: Sequence[str] | None, resume_value: int | str) -> str:
    """The command line that resumes this run: ``argv`` with ``--resume`` replaced."""
    if not argv:
        return f"python train.py ... --resume {resume_value}"
    args = list(argv)
    out: list[str] = []
    skip_next = False
    for arg in args[1:]:
        if skip_next:
            skip_next = False
            continue
        if arg == "--resume":
            skip_next = True
            continue
        if arg.startswith("--resume="):
            continue
        out.append(arg)
    script = os.path.relpath(args[0]) if os.path.exists(args[0]) else args[0]
    return shlex.join(["python", script] + out + ["--resume", str(resume_value)])


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
class NonFiniteError(RuntimeError):
    """A loss output or gradient became NaN/Inf; the update was not applied."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM arrived; raised after the current batch."""

    def __init__(self, signum: int, epoch: int, nbatch: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at epoch {epoch} batch {nbatch}")
        self.signum = signum
        self.epoch = epoch
        self.nbatch = nbatch
        self.resume_message = ""


class DetectionModule(mx.mod.Module):
    """``mx.mod.Module`` with the SSD training extras.

    * ``update`` refuses a batch whose outputs or gradients are not finite (``nan_policy``
      ``stop`` raises :class:`NonFiniteError`, ``skip`` drops that update and its metric);
    * ``init_optimizer`` restores the optimizer state (momentum) from ``states_path``;
    * ``score`` validates with ``infer_symbol`` (``get_symbol``: softmax + NMS) bound once on
      the same contexts and fed the current parameters, through
      ``evaluate.evaluate_net.score_detections``; then calls ``after_validation``.
    """

    def __init__(self, symbol: mx.sym.Symbol, *, infer_symbol: mx.sym.Symbol | None = None,
                 nan_policy: str = "stop", begin_epoch: int = 0, states_path: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(symbol, **kwargs)
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"--nan-policy {nan_policy!r}: choose one of {NAN_POLICIES}")
        self.infer_symbol = infer_symbol
        self.nan_policy = nan_policy
        self.states_path = states_path
        self.epoch = begin_epoch          # epoch in progress (0-based, as in the log lines)
        self.nbatch = 0                   # batches seen in this epoch
        self.num_skipped = 0
        self._consecutive_skips = 0
        self._skip_metric = False
        self._infer_module: mx.mod.Module | None = None
        self.after_validation: Callable[[int, list], None] | None = None
        self.describe_validation: Callable[[int], str] | None = None
        self.last_validation: dict[str, float] = {}

    # -- optimizer state ----------------------------------------------------------------
    def init_optimizer(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        super().init_optimizer(*args, **kwargs)
        if self.states_path:
            # Module.load_optimizer_states leaves its file open (ResourceWarning): read it here
            with open(self.states_path, "rb") as f:
                states = f.read()
            updater = self._kvstore._updater if self._update_on_kvstore else self._updater
            if updater is None:
                self.logger.warning("Optimizer state %s not restored: the distributed kvstore "
                                    "keeps it on the servers", self.states_path)
                return
            try:
                updater.set_states(states)
            except Exception as err:  # noqa: BLE001 - pickle raises many types on bad bytes
                raise ValueError(f"--resume: optimizer state {self.states_path} is not readable "
                                 f"(truncated or corrupt: {type(err).__name__}); delete it to "
                                 f"resume with fresh momentum") from None
            self.logger.info("Restored optimizer state from %s", self.states_path)

    # -- non-finite guard ---------------------------------------------------------------
    def _first_non_finite(self) -> str | None:
        checks, names = [], []
        outputs = self.get_outputs(merge_multi_context=False)
        for name, per_device in zip(self.output_names, outputs):
            for array in per_device:
                checks.append(mx.nd.sum(array).as_in_context(mx.cpu()))
                names.append(f"output {name}")
        group = self._exec_group
        for name, per_device in zip(group.param_names, group.grad_arrays):
            for array in per_device:
                if array is not None:
                    checks.append(mx.nd.sum(array).as_in_context(mx.cpu()))
                    names.append(f"gradient of {name}")
        if not checks:
            return None
        # (K,) one sum per array; a NaN/Inf anywhere makes its sum non-finite
        values = mx.nd.concat(*[c.reshape((1,)) for c in checks], dim=0).asnumpy()
        bad = np.flatnonzero(~np.isfinite(values))
        return names[bad[0]] if bad.size else None

    def update(self) -> None:  # noqa: D102
        self.nbatch += 1
        self._skip_metric = False
        what = self._first_non_finite()
        if what is None:
            self._consecutive_skips = 0
            super().update()
            return
        where = f"epoch {self.epoch} (0-based, as logged) batch {self.nbatch}"
        if self.nan_policy == "skip" and self._consecutive_skips < MAX_CONSECUTIVE_SKIPS:
            self._consecutive_skips += 1
            self.num_skipped += 1
            self._skip_metric = True
            self.logger.warning("Non-finite %s at %s: update skipped (%d skipped so far)",
                                what, where, self.num_skipped)
            return
        extra = (f" after {self._consecutive_skips} consecutive skipped batches"
                 if self._consecutive_skips else "")
        raise NonFiniteError(f"non-finite {what} at {where}{extra}; training stopped before "
                             f"this update, the last good checkpoint is untouched. Try: "
                             f"{NAN_REMEDIES}")

    def update_metric(self, eval_metric: mx.metric.EvalMetric, labels: Any,
                      pre_sliced: bool = False) -> None:  # noqa: D102
        if not self._skip_metric:
            super().update_metric(eval_metric, labels, pre_sliced)

    # -- validation -----------------------------------------------------------------------
    def _get_infer_module(self, eval_data: mx.io.DataIter) -> mx.mod.Module:
        if self._infer_module is None:
            module = mx.mod.Module(self.infer_symbol, data_names=("data",), label_names=None,
                                   context=self._context, logger=self.logger)
            module.bind(data_shapes=eval_data.provide_data, for_training=False)
            self._infer_module = module
        return self._infer_module

    def score(self, eval_data: mx.io.DataIter, eval_metric: mx.metric.EvalMetric,
              num_batch: int | None = None, batch_end_callback: Any = None,
              score_end_callback: Any = None, reset: bool = True, epoch: int = 0,
              sparse_row_id_fn: Any = None) -> list:  # noqa: D102
        if self.infer_symbol is None:
            return super().score(eval_data, eval_metric, num_batch, batch_end_callback,
                                 score_end_callback, reset, epoch, sparse_row_id_fn)
        from evaluate.evaluate_net import score_detections
        module = self._get_infer_module(eval_data)
        arg_params, aux_params = self.get_params()
        module.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True,
                          force_init=True)
        if reset:
            eval_data.reset()
        eval_metric.reset()
        num_images = score_detections(module, eval_data, eval_metric, num_batch=num_batch)
        result = eval_metric.get_name_value()
        self.last_validation = {name: float(value) for name, value in result}
        describe = self.describe_validation or (
            lambda count: validation_protocol(eval_metric, count))
        self.logger.info("Epoch[%d] Validation %s", epoch, describe(num_images))
        if self.after_validation is not None:
            self.after_validation(epoch, result)
        return result


def validation_protocol(metric: mx.metric.EvalMetric, num_images: int) -> str:
    """Fallback one-line description of how validation mAP is computed."""
    kind = "VOC07 11-point AP" if "VOC07" in type(metric).__name__ else "VOC area AP"
    ovp = getattr(metric, "ovp_thresh", 0.5)
    difficult = "difficult counted" if getattr(metric, "use_difficult", False) \
        else "difficult ignored"
    return f"protocol: {kind} @ IoU>{ovp:g}, {difficult}, {num_images} images"


class _Checkpointer:
    """Epoch-end checkpoints, cards, best checkpoint and the interrupted checkpoint."""

    def __init__(self, module: DetectionModule, prefix: str, save_symbol: mx.sym.Symbol,
                 end_epoch: int, save_period: int, card_base: dict,
                 eval_metric: mx.metric.EvalMetric, enabled: bool, has_validation: bool,
                 tensorboard: Any = None) -> None:
        self.module = module
        self.prefix = prefix
        self.save_symbol = save_symbol
        self.end_epoch = end_epoch
        self.save_period = max(1, save_period)
        self.card_base = card_base
        self.eval_metric = eval_metric
        self.enabled = enabled
        self.has_validation = has_validation
        self.tensorboard = tensorboard
        best = load_card(prefix, BEST) if enabled else None
        self.best_map = float(best["metrics"]["validation"].get("mAP", -1.0)) if best else -1.0
        self._pending: dict | None = None

    def _train_metrics(self) -> dict:
        try:
            pairs = self.eval_metric.get_global_name_value()
        except (AttributeError, NotImplementedError):
            pairs = self.eval_metric.get_name_value()
        return {name: float(value) for name, value in pairs}

    def _card(self, epoch_number: int, validation: dict | None, **extra: Any) -> dict:
        optimizer = self.module._optimizer
        card = dict(self.card_base)
        card.update({
            "epoch": epoch_number,
            "time": datetime.datetime.now().isoformat(timespec="seconds"),
            "learning_rate": float(optimizer.learning_rate) if optimizer else None,
            "num_update": int(optimizer.num_update) if optimizer else None,
            "skipped_batches": self.module.num_skipped,
            "metrics": {"train": self._train_metrics(), "validation": validation or {}},
        })
        card.update(extra)
        return card

    def _write(self, tag: int | str, arg_params: dict, aux_params: dict, card: dict,
               with_states: bool = True) -> None:
        _atomic_write(f"{self.prefix}-symbol.json", self.save_symbol.save)
        save_params(checkpoint_path(self.prefix, tag, "params"), arg_params, aux_params)
        if with_states:
            try:
                _atomic_write(checkpoint_path(self.prefix, tag, "states"),
                              self.module.save_optimizer_states)
            except (AssertionError, mx.base.MXNetError) as err:
                logger.warning("Optimizer state not saved (%s): a resume restarts momentum", err)
        save_json(checkpoint_path(self.prefix, tag, "json"), card)

    def on_epoch_end(self, epoch: int, symbol: mx.sym.Symbol, arg_params: dict,
                     aux_params: dict) -> None:
        """``Module.fit`` epoch-end callback (``epoch`` is 0-based)."""
        optimizer = self.module._optimizer
        lr = float(optimizer.learning_rate) if optimizer else float("nan")
        logger.info("Epoch[%d] Learning-rate=%g", epoch, lr)
        if self.tensorboard is not None:
            for name, value in self._train_metrics().items():
                self.tensorboard.add_scalar(f"train/{name}", value, epoch + 1)
            self.tensorboard.add_scalar("train/learning_rate", lr, epoch + 1)
        number = epoch + 1
        self.module.epoch = number
        self.module.nbatch = 0
        if not self.enabled:
            return
        due = number % self.save_period == 0 or number == self.end_epoch
        if due:
            card = self._card(number, None)
            self._write(number, arg_params, aux_params, card)
            logger.info("Saved checkpoint to %s", checkpoint_path(self.prefix, number, "params"))
            remove_stale_interrupted(self.prefix, number)
        self._pending = {"number": number, "due": due, "arg": arg_params, "aux": aux_params}

    def on_validation(self, epoch: int, result: list) -> None:
        """Called by :meth:`DetectionModule.score` after each validation."""
        if self.tensorboard is not None:
            for name, value in result:
                self.tensorboard.add_scalar(f"validation/{name}", float(value), epoch + 1)
        pending, self._pending = self._pending, None
        if not self.enabled or pending is None:
            return
        validation = {name: float(value) for name, value in result}
        card = self._card(pending["number"], validation)
        if pending["due"]:
            save_json(checkpoint_path(self.prefix, pending["number"], "json"), card)
        current = validation.get("mAP", float("nan"))
        if np.isfinite(current) and current > self.best_map:
            self.best_map = current
            self._write(BEST, pending["arg"], pending["aux"], card, with_states=False)
            logger.info("Epoch[%d] New best Validation-mAP=%f: saved %s", epoch, current,
                        checkpoint_path(self.prefix, BEST, "params"))

    def save_interrupted(self, completed_epochs: int, nbatch: int) -> None:
        """Save the current weights and optimizer state as the ``-interrupted`` checkpoint."""
        if not self.enabled:
            return
        arg_params, aux_params = self.module.get_params()
        card = self._card(completed_epochs, None, interrupted_in_batch=nbatch,
                          note="mid-epoch weights; --resume interrupted restarts epoch "
                               f"{completed_epochs} (0-based) from its first batch")
        self._write(INTERRUPTED, arg_params, aux_params, card)


class _SignalGuard:
    """Turns the first SIGINT/SIGTERM into a flag checked after each batch."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.signum = signum
        logger.warning("%s received: finishing the current batch, then saving a checkpoint "
                       "(press Ctrl-C again to abort without saving)", signal.Signals(signum).name)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def __enter__(self) -> "_SignalGuard":
        if threading_is_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def threading_is_main() -> bool:
    """Signal handlers can only be installed from the main thread."""
    import threading
    return threading.current_thread() is threading.main_thread()


def open_tensorboard(log_dir: str | None) -> Any:
    """A SummaryWriter for ``--tensorboard DIR`` or None; clear error when no package exists."""
    if not log_dir:
        return None
    for module_name, attr in (("tensorboardX", "SummaryWriter"), ("mxboard", "SummaryWriter"),
                              ("torch.utils.tensorboard", "SummaryWriter")):
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            module = importlib.import_module(module_name)
            return getattr(module, attr)(log_dir)
    raise ValueError(f"--tensorboard {log_dir}: no TensorBoard writer is installed "
                     f"(pip install tensorboardX); tools/plot_log.py plots the training log "
                     f"without it")


def measure_io(train_iter: mx.io.DataIter, frequent: int = 20,
               num_batches: int | None = None) -> float:
    """``--test-io``: read (and augment) the training data only; returns images/s.

    Parameters
    ----------
    train_iter : mx.io.DataIter
        The training iterator, full augmentation.
    frequent : int
        Log the speed every ``frequent`` batches.
    num_batches : int, optional
        Stop after this many batches (default: one epoch).

    Returns
    -------
    float
        Images per second over the whole read.
    """
    train_iter.reset()
    start = tic = time.time()
    images = window = 0
    for nbatch, batch in enumerate(train_iter):
        for array in batch.data:
            array.wait_to_read()
        size = batch.data[0].shape[0] - (batch.pad or 0)
        images += size
        window += size
        if (nbatch + 1) % max(1, frequent) == 0:
            logger.info("Batch [%d]\tSpeed: %.2f samples/sec", nbatch + 1,
                        window / max(time.time() - tic, 1e-9))
            tic, window = time.time(), 0
        if num_batches is not None and nbatch + 1 >= num_batches:
            break
    speed = images / max(time.time() - start, 1e-9)
    logger.info("test-io: %d images in %.2f s: %.2f images/s", images, time.time() - start, speed)
    return speed


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
                             label_names=("label",), context=contexts,
                             fixed_param_names=fixed_param_names, logger=logging.getLogger())
    writer = open_tensorboard(tensorboard) if rank == 0 else None
    base = dict(card_base or {})
    base.setdefault("environment", environment_info())
    checkpointer = _Checkpointer(module, prefix, save_symbol, end_epoch, save_period, base,
                                 eval_metric, enabled=(rank == 0),
                                 has_validation=val_iter is not None, tensorboard=writer)
    module.after_validation = checkpointer.on_validation
    module.describe_validation = describe_validation
    guard = _SignalGuard()

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
