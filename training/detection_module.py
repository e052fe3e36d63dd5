"""``DetectionModule``: ``mx.mod.Module`` with the SSD training guards and validation.

* ``update`` refuses a batch whose outputs or gradients are not finite (``--nan-policy``);
* ``init_optimizer`` restores the optimizer state (momentum) when resuming;
* ``score`` validates with the inference graph (softmax + NMS) through
  :func:`evaluate.evaluate_net.score_detections`, the scoring path ``evaluate.py`` uses;
* :class:`SignalGuard` turns Ctrl-C / SIGTERM into :class:`TrainingInterrupted` after the
  current batch, so :func:`fit.fit` can save the interrupted checkpoint.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable, Sequence

from config.mxnet_compat import mx
import numpy as np

from evaluate.evaluate_net import score_detections

NAN_POLICIES = ("stop", "skip")
MAX_CONSECUTIVE_SKIPS = 20       # --nan-policy skip gives up after this many bad batches in a row
NAN_REMEDIES = ("lower --lr (e.g. by 10x), add --warmup-epochs 1-5, or check the records for "
                "degenerate boxes (zero width/height, x2 < x1) with tools/prepare_dataset.py")

LABEL_ROW_STEP = 4              # trimmed label rows are rounded up to a multiple of this
_SUM_SQ_CHUNK = 256             # arrays per fused multi_sum_sq call of the non-finite guard
_OWN_CHECK_SIZE = 1 << 18       # arrays this large get their own all_finite (see the guard)

logger = logging.getLogger(__name__)


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
    * ``forward`` in training trims the padded label rows to the batch's real maximum
      (``trim_label_rows``, rounded up to a multiple of ``LABEL_ROW_STEP``): MultiBoxTarget
      computes an IoU for every anchor and label row, padding included, although its result
      depends only on the rows before each image's first ``-1`` row; each row count gets an
      executor that shares parameters, gradients, auxiliary states and memory with the bound
      one (as ``BucketingModule`` does), so the outputs are identical;
    * ``forward`` in training then calls the batch's ``read_ahead()`` when it has one
      (``DetRecordIter``): the next batch is read while this one computes;
    * ``score`` validates with ``infer_symbol`` (``get_symbol``: softmax + NMS) bound once on
      the same contexts and fed the current parameters, through
      ``evaluate.evaluate_net.score_detections``; then calls ``after_validation``;
    * ``param_order`` (the saved graph's ``list_arguments()``): the optimizer state is keyed
      by parameter position; ``save_optimizer_states`` / ``--resume`` write and read it in
      this order, whatever order the bound graph lists its parameters in
      (``get_symbol_train(fast_ops=True)`` lists them in another), so ``.states`` files
      stay interchangeable.
    """

    def __init__(self, symbol: mx.sym.Symbol, *, infer_symbol: mx.sym.Symbol | None = None,
                 nan_policy: str = "stop", begin_epoch: int = 0, states_path: str | None = None,
                 trim_label_rows: bool = True, param_order: Sequence[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(symbol, **kwargs)
        self._state_order = [name for name in (param_order or ()) if name in self._param_names]
        self.trim_label_rows = trim_label_rows
        self._row_groups: dict[int, Any] = {}     # label rows -> executor group
        self._base_rows: int | None = None        # label rows of the bound executors
        self._bind_args: dict[str, Any] = {}
        self._monitored = False
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

    # -- label rows trimmed to the batch ------------------------------------------------------
    def bind(self, data_shapes: Any, label_shapes: Any = None, for_training: bool = True,
             inputs_need_grad: bool = False, force_rebind: bool = False,
             shared_module: Any = None, grad_req: Any = "write") -> None:  # noqa: D102
        rebinds = force_rebind or not self.binded
        super().bind(data_shapes, label_shapes, for_training, inputs_need_grad, force_rebind,
                     shared_module, grad_req)
        if not rebinds:
            return                      # Module ignored the call (already bound)
        self._row_groups = {}
        self._base_rows = None
        labels = self._label_shapes or []
        if (self.trim_label_rows and for_training and len(labels) == 1
                and len(labels[0].shape) == 3):
            self._base_rows = int(labels[0].shape[1])          # (B, rows, object width)
            self._row_groups[self._base_rows] = self._exec_group
            self._bind_args = dict(for_training=for_training,
                                   inputs_need_grad=inputs_need_grad, grad_req=grad_req)

    def reshape(self, data_shapes: Any, label_shapes: Any = None) -> None:  # noqa: D102
        if self._base_rows is not None:
            self._exec_group = self._row_groups[self._base_rows]
            self._base_rows = None      # other shapes: no trimming from here on
            self._row_groups = {}
        super().reshape(data_shapes, label_shapes)

    def install_monitor(self, mon: Any) -> None:  # noqa: D102
        super().install_monitor(mon)
        self._monitored = True          # the monitor sits on the bound executors only

    def _group_for(self, rows: int) -> Any:
        group = self._row_groups.get(rows)
        if group is None:
            from mxnet.module.executor_group import DataParallelExecutorGroup
            base = self._row_groups[self._base_rows]
            label = self._label_shapes[0]
            shape = (label.shape[0], rows) + tuple(label.shape[2:])
            group = DataParallelExecutorGroup(
                self._symbol, self._context, self._work_load_list, self._data_shapes,
                [mx.io.DataDesc(label.name, shape, label.dtype, label.layout)],
                self._param_names, self._bind_args["for_training"],
                self._bind_args["inputs_need_grad"], base, logger=self.logger,
                fixed_param_names=self._fixed_param_names,
                grad_req=self._bind_args["grad_req"], group2ctxs=self._group2ctxs,
                state_names=self._state_names)
            self._row_groups[rows] = group
        return group

    def label_rows_needed(self, label: np.ndarray) -> int:
        """Label rows MultiBoxTarget reads: the most rows before an image's first ``-1`` row.

        Parameters
        ----------
        label : np.ndarray
            (B, rows, object width) padded labels.

        Returns
        -------
        int
            At least 1, rounded up to a multiple of ``LABEL_ROW_STEP``, at most ``rows``.
        """
        padded = label[:, :, 0] == -1                           # (B, rows)
        first_pad = np.where(padded.any(axis=1), padded.argmax(axis=1), label.shape[1])
        needed = max(1, int(first_pad.max()))
        return min(label.shape[1], -(-needed // LABEL_ROW_STEP) * LABEL_ROW_STEP)

    def forward(self, data_batch: Any, is_train: bool | None = None) -> None:  # noqa: D102
        batch = data_batch
        training = self.for_training if is_train is None else is_train
        if self._base_rows is not None and not isinstance(data_batch, list):
            rows = self._base_rows
            same_data = (tuple(d.shape for d in data_batch.data) ==
                         tuple(d.shape for d in self._data_shapes))
            if training and same_data and not self._monitored and data_batch.label:
                label = data_batch.label[0]
                if label.shape[1] == self._base_rows:
                    rows = self.label_rows_needed(label.asnumpy())
            self._exec_group = self._group_for(rows)
            if rows != self._base_rows:
                desc = self._exec_group.label_shapes[0]
                # (B, base rows, width) -> (B, rows, width): only padding is cut
                data_batch = mx.io.DataBatch(
                    data=data_batch.data, label=[data_batch.label[0][:, :rows]],
                    pad=data_batch.pad, index=data_batch.index,
                    provide_data=self._data_shapes, provide_label=[desc])
        super().forward(data_batch, is_train)
        read_ahead = getattr(batch, "read_ahead", None)
        if training and read_ahead is not None:
            read_ahead()      # the batch's data is in the engine's queue: read the next one

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
            mapping = self._state_key_map()
            if mapping:
                inverse = {saved: here for here, saved in mapping.items()}
                updater.states = {inverse.get(k, k): v for k, v in updater.states.items()}
                updater.states_synced = dict.fromkeys(updater.states, False)
            self.logger.info("Restored optimizer state from %s", self.states_path)

    def _state_key_map(self) -> dict[int, int] | None:
        """Local updater key here -> key in ``param_order``; None when they are the same.

        ``Module`` keys the local updater's states ``i * num_devices + k`` (parameter ``i`` of
        the bound graph, device ``k``). A kvstore updater keys them by name: no mapping.
        """
        if not self._state_order or self._update_on_kvstore:
            return None
        here = {name: i for i, name in enumerate(self._param_names)}
        devices = len(self._context)
        mapping = {here[name] * devices + k: j * devices + k
                   for j, name in enumerate(self._state_order) for k in range(devices)}
        return None if all(a == b for a, b in mapping.items()) else mapping

    def save_optimizer_states(self, fname: str) -> None:  # noqa: D102
        mapping = self._state_key_map()
        if not mapping or self._updater is None:
            super().save_optimizer_states(fname)
            return
        states = self._updater.states
        self._updater.states = {mapping.get(k, k): v for k, v in states.items()}
        try:
            super().save_optimizer_states(fname)
        finally:
            self._updater.states = states

    # -- non-finite guard ---------------------------------------------------------------
    def _guarded_arrays(self) -> list[tuple[str, mx.nd.NDArray]]:
        """(description, array) of every loss output and every gradient that is updated."""
        pairs = []
        outputs = self.get_outputs(merge_multi_context=False)
        for name, per_device in zip(self.output_names, outputs):
            pairs += [(f"output {name}", array) for array in per_device]
        group = self._exec_group
        for name, per_device in zip(group.param_names, group.grad_arrays):
            pairs += [(f"gradient of {name}", array) for array in per_device
                      if array is not None]
        return pairs

    def _first_non_finite(self) -> str | None:
        """Description of the first output/gradient holding a NaN or Inf, None if all finite.

        One fused ``multi_sum_sq`` per device over the arrays below ``_OWN_CHECK_SIZE``
        elements (a NaN or Inf anywhere makes an array's sum of squares non-finite), one
        ``all_finite`` for each larger array (``multi_sum_sq`` splits its work by array, so a
        few large arrays leave one thread busy; bound VGG16-SSD300 b8: 11.2 -> 7.1 ms,
        ResNet-50-300 b8 unchanged at 12.4-12.6 ms, docs/notes/SPEED.md), one copy to the host, one
        wait. Before, one ``sum`` per array (about 170 operators for ResNet-50) cost 4x more.
        A sum of squares also overflows for finite values above ~1.8e19, so a flagged array
        is confirmed element-wise before it is reported: the answer is exact.
        """
        pairs = self._guarded_arrays()
        if not pairs:
            return None
        by_device: dict[Any, list[int]] = {}
        for index, (_, array) in enumerate(pairs):
            by_device.setdefault(array.context, []).append(index)
        order, sums = [], []
        for indices in by_device.values():
            large = [i for i in indices if pairs[i][1].size >= _OWN_CHECK_SIZE]
            small = [i for i in indices if pairs[i][1].size < _OWN_CHECK_SIZE]
            for start in range(0, len(small), _SUM_SQ_CHUNK):
                chunk = small[start:start + _SUM_SQ_CHUNK]
                # (len(chunk),) sum of squares of each array
                sums.append(mx.nd.multi_sum_sq(*[pairs[i][1] for i in chunk],
                                               num_arrays=len(chunk)).as_in_context(mx.cpu()))
                order += chunk
            if large:
                # (len(large),) 1 where finite, 0 where not; 1 / flag - 1 maps them to 0 / inf
                flags = mx.nd.concat(*[mx.nd.all_finite(pairs[i][1]) for i in large], dim=0)
                sums.append((1 / flags - 1).as_in_context(mx.cpu()))
                order += large
        values = (mx.nd.concat(*sums, dim=0) if len(sums) > 1 else sums[0]).asnumpy()
        for index in sorted(order[k] for k in np.flatnonzero(~np.isfinite(values))):
            if not np.isfinite(pairs[index][1].asnumpy()).all():
                return pairs[index][0]
        return None

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


class SignalGuard:
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

    def __enter__(self) -> "SignalGuard":
        if threading_is_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def threading_is_main() -> bool:
    """Signal handlers can only be installed from the main thread."""
    return threading.current_thread() is threading.main_thread()
