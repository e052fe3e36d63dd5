"""Checkpoint files: names, atomic writes, reading, cards, best and interrupted checkpoints.

Training (:mod:`fit`, :mod:`train_net`) and every reader (``evaluate.py``, ``demo.py``,
``deploy.py``, ``quantization.py``) go through this module, so a checkpoint is named, written
and read in one place. Files of a run with prefix ``model/ssd``:

* ``{prefix}-symbol.json``: the training graph with ``det_out``;
* ``{prefix}-%04d.params`` / ``.states`` / ``.json``: weights, optimizer state and the
  reproducibility card of a completed epoch;
* ``{prefix}-best.params`` / ``-best.json``: the best validation mAP so far;
* ``{prefix}-interrupted.params`` / ``.states`` / ``.json``: written on Ctrl-C / SIGTERM.

Every file is written under a temporary name in the same folder, then renamed
(``os.replace``), so a crash never leaves a half-written checkpoint under its real name.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
from typing import Any, Callable, Sequence

from config.mxnet_compat import mx
import numpy as np

from symbol.legacy import convert_legacy_params, convert_legacy_symbol, describe_renames

INTERRUPTED = "interrupted"      # tag of the checkpoint written on Ctrl-C / SIGTERM
BEST = "best"                    # tag of the best-validation checkpoint
LAST = "last"                    # --resume last: the newest complete epoch checkpoint
# test hook (tests/test_faults.py): SIGKILL this process at the named point of a file write,
# e.g. SSD_FAULT_KILL_AT=before-rename:ssd_tiny_64-0002.params
FAULT_KILL_ENV = "SSD_FAULT_KILL_AT"
_TMP_TAG = ".tmp"                # temporary files: .{name}.tmp{pid} beside the real file

logger = logging.getLogger(__name__)


class FileWriteError(RuntimeError):
    """A file could not be written (disk full, file size limit, I/O error); names the file."""


def fault_point(name: str) -> None:
    """SIGKILL this process when ``$SSD_FAULT_KILL_AT`` equals ``name`` (kill -9 tests)."""
    if os.environ.get(FAULT_KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def explain_write_failure(path: str, err: BaseException, written: int | None = None) -> str:
    """One line: which file could not be written and why (disk full, ``ulimit -f``, ...).

    Parameters
    ----------
    path : str
        The file being written.
    err : BaseException
        The ``OSError`` or ``MXNetError`` (MXNet says only ``FileStream.Write incomplete``).
    written : int, optional
        Bytes that reached the file before the failure.

    Returns
    -------
    str
        ``cannot write <path>: <reason>``.
    """
    code = getattr(err, "errno", None)
    soft_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if code == errno.ENOSPC or (code is None and free is not None and free < (1 << 20)):
        reason = f"no space left on the device ({free} bytes free in {folder})"
    elif code == errno.EFBIG or (code is None and soft_limit != resource.RLIM_INFINITY
                                 and written is not None and written >= soft_limit):
        reason = f"file size limit reached (ulimit -f / RLIMIT_FSIZE {soft_limit} bytes)"
    else:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        reason = getattr(err, "strerror", None) or (lines[-1] if lines else type(err).__name__)
    return f"cannot write {path}: {reason}"


def atomic_write(path: str, writer: Callable[[str], None]) -> None:
    """Run ``writer(tmp_path)`` on a temporary name in the same folder, then rename.

    Raises
    ------
    FileWriteError
        The write failed (disk full, file size limit, ...); the temporary file is removed and
        ``path`` keeps its previous content.
    """
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp = os.path.join(folder, f".{name}{_TMP_TAG}{os.getpid()}")
    fault_point(f"before-write:{name}")
    try:
        writer(tmp)
        fault_point(f"before-rename:{name}")
        os.replace(tmp, path)
    except (OSError, mx.base.MXNetError) as err:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else None
        raise FileWriteError(explain_write_failure(path, err, written)) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fault_point(f"after-rename:{name}")


def remove_stale_temporaries(prefix: str) -> list[str]:
    """Delete ``.{prefix name}-*.tmp<pid>`` files that a killed run left beside its checkpoints.

    Call only while holding the :class:`PrefixLock` of ``prefix`` (no other writer is alive).

    Returns
    -------
    list of str
        The files removed.
    """
    folder, name = os.path.split(os.path.abspath(prefix))
    pattern = os.path.join(glob.escape(folder), f".{glob.escape(name)}-*{_TMP_TAG}*")
    removed = [path for path in glob.glob(pattern)
               if re.search(rf"{re.escape(_TMP_TAG)}\d+$", path)]
    for path in removed:
        os.remove(path)
        logger.info("Removed %s, left by a run that was killed while writing it", path)
    return removed


class PrefixLockedError(ValueError):
    """Another live process holds the lock of this checkpoint prefix."""


class PrefixLock:
    """Exclusive lock of a checkpoint prefix: ``{prefix}.lock`` held with ``fcntl.flock``.

    The kernel releases the lock when the process ends, however it ends (``kill -9``
    included), so a lock is never left behind; the file only records the holder's pid.
    Within one process the lock is re-entrant (a second ``train_net`` call on the prefix,
    as tests make, shares it); it is released when every holder has released it.

    Parameters
    ----------
    prefix : str
        Checkpoint prefix (``model/ssd_tiny_64``).
    """

    _held: dict[str, list[int]] = {}       # lock path -> [fd, holders] in this process

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.path = f"{prefix}.lock"
        self._key = os.path.abspath(self.path)
        self._holding = False

    def acquire(self) -> "PrefixLock":
        """Take the lock or raise :class:`PrefixLockedError` naming the holder's pid."""
        if self._holding:
            return self
        held = PrefixLock._held.get(self._key)
        if held is not None:
            held[1] += 1
            self._holding = True
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise PrefixLockedError(
                f"--prefix {self.prefix}: another training run (pid {holder}) is writing these "
                f"checkpoints (lock {self.path}); wait for it to finish or pick another "
                f"--prefix") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        PrefixLock._held[self._key] = [fd, 1]
        self._holding = True
        return self

    def release(self) -> None:
        """Release this holder (the kernel releases the lock when the process ends)."""
        if not self._holding:
            return
        self._holding = False
        held = PrefixLock._held[self._key]
        held[1] -= 1
        if held[1] == 0:
            del PrefixLock._held[self._key]
            os.ftruncate(held[0], 0)
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])

    def __enter__(self) -> "PrefixLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


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


def last_complete_epoch(prefix: str) -> int | None:
    """Newest epoch whose checkpoint is complete: ``.params`` and a readable ``.json`` card.

    The card is written last (after ``.params`` and ``.states``) and removed first when an
    epoch is written again, so a run killed while writing leaves an epoch without a card,
    which is not complete.

    Returns
    -------
    int or None
        The epoch number, or None when no epoch is complete.
    """
    for epoch in reversed(list_checkpoint_epochs(prefix)):
        try:
            card = load_card(prefix, epoch)
        except (OSError, ValueError):
            continue
        if isinstance(card, dict) and int(card.get("epoch", -1)) == epoch:
            return epoch
    return None


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
        The saved arrays by name. Parameter names of the original example that differ from
        this project's (its resnet heads ``_plus12_*``, see ``symbol/legacy.py``) are renamed,
        with one log line naming the file; every reader of checkpoints comes through here.

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
    try:
        saved, renamed = convert_legacy_params(saved)
    except ValueError as err:
        raise ValueError(f"{flag}: {path}: {err}") from None
    if renamed:
        logger.info("%s: converted %d parameter names of the original example in %s (%s)",
                    flag, len(renamed), path, describe_renames(renamed))
    return saved


def load_arg_aux(path: str, flag: str, prefix: str, hint: str = "",
                 none_hint: str = "") -> tuple[dict, dict]:
    """``arg_params, aux_params`` of the checkpoint ``path`` (through :func:`load_param_file`).

    Raises
    ------
    FileNotFoundError
        ``path`` is missing: the message lists the epochs saved under ``prefix`` and ends
        with ``hint`` (with ``none_hint`` instead when no epoch is saved at all).
    """
    if not os.path.isfile(path):
        epochs = list_checkpoint_epochs(prefix)
        have = ", ".join(str(e) for e in epochs) if epochs else "none"
        hint = hint if epochs else (none_hint or hint)
        raise FileNotFoundError(f"{flag}: checkpoint {path} not found; epochs saved under "
                                f"{prefix}: {have}" + (f". {hint}" if hint else ""))
    arg_params, aux_params = {}, {}
    for key, value in load_param_file(path, flag).items():
        kind, _, name = key.partition(":")
        if kind == "arg":
            arg_params[name] = value
        elif kind == "aux":
            aux_params[name] = value
    return arg_params, aux_params


def load_symbol_file(path: str, flag: str, inference: bool = True) -> mx.sym.Symbol:
    """``mx.sym.load`` of a ``-symbol.json``, with clear errors, in this project's names.

    The variables of a graph saved by the original example (its resnet heads
    ``_plus12_loc_pred_conv_weight`` ...) are renamed as :func:`load_param_file` renames the
    parameters, with one log line naming the file, so the two still bind to each other.

    Parameters
    ----------
    path : str
        The ``-symbol.json`` file.
    flag : str
        The flag that named it (``--deploy``), used in the messages.
    inference : bool
        Refuse a training graph (one that takes ``label``): readers need deploy.py's graph.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not an MXNet symbol file, or a training graph where ``inference``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: symbol file {path} not found (run deploy.py)")
    try:
        symbol = mx.sym.load(path)
    except (mx.base.MXNetError, ValueError, UnicodeDecodeError):
        raise ValueError(f"{flag}: {path} is not a readable MXNet symbol file "
                         f"(truncated, corrupt or another format)") from None
    if inference and "label" in symbol.list_arguments():
        raise ValueError(f"{flag}: {path} is a training graph (it takes 'label'); run "
                         f"deploy.py to write the inference graph, or drop {flag}")
    symbol, renamed = convert_legacy_symbol(symbol)
    if renamed:
        logger.info("%s: converted %d parameter names of the original example in %s (%s)",
                    flag, len(renamed), path, describe_renames(renamed))
    return symbol


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
    atomic_write(path, lambda tmp: mx.nd.save(tmp, save_dict))


def save_json(path: str, content: dict) -> None:
    """Write a JSON document atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(content, f, indent=2, sort_keys=True, default=str)
    atomic_write(path, write)


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
