"""Process-level runtime settings: threads (before ``import mxnet``) and logging.

MXNet reads ``OMP_NUM_THREADS`` once, when the library loads, and on x86 it otherwise uses
half of ``omp_get_num_procs()``: one thread on a 2-core machine, which halves training speed
(see MXNET_NOTES.md, "Threads"). Every CLI calls :func:`setup_threads` before it imports
mxnet. A value the user already exported always wins.
"""
from __future__ import annotations

import logging
import os
import sys

LOG_FORMAT = "%(asctime)s Node[%(rank)s] %(message)s"


def available_cores() -> int:
    """Number of CPU cores this process may run on (honours taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def setup_threads(num_threads: int | None = None) -> int:
    """Set the OpenMP thread count for MXNet unless the user chose one.

    Parameters
    ----------
    num_threads : int, optional
        Threads to use; default: every available core. Ignored when ``OMP_NUM_THREADS``
        is already set in the environment.

    Returns
    -------
    int
        The thread count in force.
    """
    if "OMP_NUM_THREADS" in os.environ:
        value = os.environ["OMP_NUM_THREADS"]
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"OMP_NUM_THREADS must be a positive integer, got {value!r}") from None
    threads = num_threads or available_cores()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def decode_threads() -> int:
    """Default number of image-decoding threads for the record iterator."""
    value = os.environ.get("SSD_DECODE_THREADS")
    if value:
        return max(1, int(value))
    return available_cores()


class _RankFilter(logging.Filter):
    """Adds ``record.rank`` (the kvstore rank, 0 until known) to every log record."""

    rank = 0

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = _RankFilter.rank
        return True


class _Console(logging.StreamHandler):
    """Console handler that follows ``sys.stderr`` once the stream it held is closed.

    A notebook cell, ``contextlib.redirect_stderr`` or a test's capture may swap ``sys.stderr``
    for a stream it later closes; writing there would print "--- Logging error ---".
    """

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self.stream, "closed", False):
            self.stream = sys.stderr          # setStream would flush the closed stream
        super().emit(record)


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
        console = _Console()
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
