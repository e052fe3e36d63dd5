"""Training callbacks: epoch-end checkpoints, cards, best and interrupted checkpoints, TensorBoard.

:class:`Checkpointer` is what ``Module.fit`` calls at each epoch end (and
``DetectionModule.score`` after each validation); the files it writes, and how they are
written, are :mod:`checkpoint`'s.
"""
from __future__ import annotations

import datetime
import importlib
import importlib.util
import logging
import os
from typing import Any

from config.mxnet_compat import mx
import numpy as np

from training.checkpoint import (BEST, INTERRUPTED, FileWriteError, atomic_write, checkpoint_path,
                        last_complete_epoch, load_card, remove_stale_interrupted, save_json,
                        save_params)

logger = logging.getLogger(__name__)


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


class Checkpointer:
    """Epoch-end checkpoints, cards, best checkpoint and the interrupted checkpoint."""

    def __init__(self, module: mx.mod.Module, prefix: str, save_symbol: mx.sym.Symbol,
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
        """Write symbol, params, states, then the card (the card marks the tag complete).

        On a write failure (disk full, size limit) the ``.params``/``.states`` of ``tag`` are
        removed (except for ``best``), so the folder holds complete checkpoints only, and the
        error names the file and the newest complete checkpoint.
        """
        card_path = checkpoint_path(self.prefix, tag, "json")
        try:
            if tag != BEST and os.path.isfile(card_path):
                os.remove(card_path)       # the tag is incomplete until its new card is written
            atomic_write(f"{self.prefix}-symbol.json", self.save_symbol.save)
            params_path = checkpoint_path(self.prefix, tag, "params")
            save_params(params_path, arg_params, aux_params)
            if with_states:
                states_path = checkpoint_path(self.prefix, tag, "states")
                try:
                    atomic_write(states_path, self.module.save_optimizer_states)
                except AssertionError as err:
                    logger.warning("Optimizer state not saved (%s): a resume restarts "
                                   "momentum", err)
            save_json(card_path, card)
        except FileWriteError as err:
            what = f"epoch {tag}" if isinstance(tag, int) else f"'{tag}'"
            if tag == BEST:       # the new best .params already replaced the old one: keep it
                done = f"the {what} card may be older than its .params"
            else:                 # no card: remove the rest, old or new, of the unfinished tag
                for ext in ("params", "states"):
                    path = checkpoint_path(self.prefix, tag, ext)
                    if os.path.isfile(path):
                        os.remove(path)
                done = f"removed the partial {what} files"
            last = last_complete_epoch(self.prefix)
            kept = (f"newest complete checkpoint {checkpoint_path(self.prefix, last, 'params')}"
                    f" (--resume {last})" if last is not None else "no complete checkpoint yet")
            raise FileWriteError(f"{err}; {done}, {kept}") from None

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
        """Called by ``DetectionModule.score`` after each validation."""
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
