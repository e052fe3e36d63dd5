"""Process-level runtime settings that must be fixed before ``import mxnet``.

MXNet reads ``OMP_NUM_THREADS`` once, when the library loads, and on x86 it otherwise uses
half of ``omp_get_num_procs()``: one thread on a 2-core machine, which halves training speed
(see MXNET_NOTES.md, "Threads"). Every CLI calls :func:`setup_threads` before it imports
mxnet. A value the user already exported always wins.
"""
from __future__ import annotations

import os


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
