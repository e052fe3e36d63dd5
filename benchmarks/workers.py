"""Measurement workers of ``benchmarks/benchmark.py``, each run in its own process.

Threads can only be fixed before ``import mxnet``, so ``benchmark.py`` starts
``python -m benchmarks.benchmark --worker KIND`` for each measurement; the worker reads its
configuration (a JSON file), runs one of :data:`WORKERS` and writes its results as JSON.

* ``compute``: forward/backward/update of the training graph on one in-memory batch;
* ``train``: the real ``train_net`` path for a bounded number of batches, timed by a thin
  wrapper around its ``DetRecordIter``;
* ``io``: the training iterator alone, for each decoding thread count.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any, Sequence

from config.runtime import available_cores, decode_threads, setup_threads

REFERENCE_MEAN = (123.0, 117.0, 104.0)
SYNTH_CLASSES = ("circle", "square", "triangle", "cross")
THREAD_VARS = ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS", "SSD_DECODE_THREADS")


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------
def thread_settings(env: dict | None = None) -> dict:
    """Thread-related settings of ``env`` (default ``os.environ``) and of this machine.

    Returns
    -------
    dict
        ``cores``, ``decode_threads`` and every ``OMP_*`` / ``MXNET_*`` / ``SSD_DECODE_THREADS``
        variable that is set (None for the three main ones when unset).
    """
    env = os.environ if env is None else env
    out: dict[str, Any] = {"cores": available_cores(), "decode_threads": decode_threads()}
    for name in THREAD_VARS:
        out[name] = env.get(name)
    for name in sorted(env):
        if (name.startswith("MXNET_") or name.startswith("OMP_")
                or name.startswith("KMP_")) and name not in out:
            out[name] = env[name]
    return out


def rss_mb() -> float:
    """Current resident set size of this process in MiB (from /proc/self/statm)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2.0 ** 20
    except (OSError, ValueError, IndexError):  # not Linux: fall back on the peak
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss``, KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2.0 ** 20


def linear_slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against their index (0 for fewer than 2 values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2.0
    mean_y = sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------------------------
def make_synthetic_rec(workdir: str, num_images: int, image_size: int, resize: int = 0,
                       seed: int = 0) -> str:
    """Generate a synthetic VOC set and pack it into ``workdir/train.rec``.

    Parameters
    ----------
    workdir : str
        Output folder.
    num_images : int
        Training images.
    image_size : int
        Side of the generated images in px.
    resize : int
        ``--resize`` of the packer (0: keep the generated size).
    seed : int
        Generator seed.

    Returns
    -------
    str
        Path of the ``.rec`` (its ``.idx`` beside it).
    """
    from tools.make_synthetic_voc import SynthConfig, generate
    from tools.prepare_dataset import prepare_dataset

    generate(SynthConfig(root=workdir, num_train=num_images, num_test=0,
                         min_image_size=image_size, max_image_size=image_size,
                         classes=SYNTH_CLASSES, min_objects=1, max_objects=5, seed=seed,
                         progress=False))
    summary = prepare_dataset("pascal", "trainval", os.path.join(workdir, "VOCdevkit"),
                              os.path.join(workdir, "train.lst"), year="2007", shuffle=True,
                              num_thread=available_cores(), class_names=list(SYNTH_CLASSES),
                              resize=resize, seed=seed, progress=False)
    return summary["rec"]


# --------------------------------------------------------------------------------------------
# workers (each runs in its own process)
# --------------------------------------------------------------------------------------------
def _train_kwargs(cfg: dict) -> dict:
    """Keyword arguments of ``train_net``, built by ``train.py`` itself from its flags."""
    import train
    argv = ["--train-path", cfg["rec"], "--val-path", "", "--network", cfg["network"],
            "--data-shape", str(cfg["data_shape"]), "--num-class", str(cfg["num_class"]),
            "--class-names", ",".join(f"class{i}" for i in range(cfg["num_class"])),
            "--batch-size", str(cfg["batch_size"]), "--pretrained", "",
            "--prefix", os.path.join(cfg["workdir"], cfg["tag"], "ssd"), "--end-epoch", "1",
            "--frequent", str(cfg["frequent"]), "--seed", "0", "--log", ""]
    if cfg["label_width"] not in (None, -1):
        argv += ["--label-width", str(cfg["label_width"])]
    return train.train_net_kwargs(train.get_parser().parse_args(argv))


def worker_compute(cfg: dict) -> dict:
    """Forward/backward/update of the training graph on one in-memory batch."""
    from config.mxnet_compat import mx

    import fit
    from config.config import cfg as aug
    from dataset.iterator import DetRecordIter
    from symbol.symbol_factory import get_symbol_train

    batch_size = cfg["batch_size"]
    it = DetRecordIter(cfg["rec"], batch_size, cfg["data_shape"], mean_pixels=REFERENCE_MEAN,
                       label_pad_width=cfg["label_width"], **dict(aug.train))
    batch = it.next()
    # the graph train.py binds (fast head) unless emulating the original's settings
    sym = get_symbol_train(cfg["network"], cfg["data_shape"], cfg["num_class"], nms_thresh=0.45,
                           with_det=cfg["with_det"], fast_ops=not cfg.get("baseline", False))
    module = mx.mod.Module(sym, label_names=("label",), context=mx.cpu())
    module.bind(it.provide_data, it.provide_label)
    module.init_params(mx.init.Xavier())
    module.init_optimizer(optimizer="sgd", optimizer_params=fit.get_optimizer_params(
        "sgd", 0.002, 0.9, 0.0005, None, 1))
    times = []
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    for _ in range(cfg["warmup"] + cfg["batches"]):
        tic = time.perf_counter()
        module.forward_backward(batch)
        module.update()
        mx.nd.waitall()
        times.append(time.perf_counter() - tic)
    cpu_util = (_cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    timed = times[cfg["warmup"]:]
    return {"images_per_s": batch_size * len(timed) / sum(timed), "cpu_util": cpu_util,
            "s_per_batch": [round(t, 4) for t in times], "warmup": cfg["warmup"],
            "label_shape": list(it.provide_label[0].shape), "with_det": cfg["with_det"]}


def worker_train(cfg: dict) -> dict:
    """The real training path (``train_net``) for a bounded number of batches."""
    import train_net as recipe
    from dataset.iterator import DetRecordIter

    limit = cfg["warmup"] + cfg["batches"]
    record: dict[str, list] = {"start": [], "end": [], "rss": []}

    class TimedDetRecordIter(DetRecordIter):
        """``DetRecordIter`` that stops after ``limit`` batches and times each request."""

        def next(self):  # noqa: D102
            record["start"].append(time.perf_counter())
            record["rss"].append(rss_mb())
            if len(record["end"]) >= limit:
                raise StopIteration
            batch = super().next()
            record["end"].append(time.perf_counter())
            return batch

    recipe.DetRecordIter = TimedDetRecordIter
    if cfg["with_det"]:
        build = recipe.get_symbol_train

        def with_nms(*args: Any, **kwargs: Any):
            kwargs["with_det"] = True
            return build(*args, **kwargs)
        recipe.get_symbol_train = with_nms

    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    recipe.train_net(**_train_kwargs(cfg))
    cpu1, wall1 = _cpu_seconds(), time.perf_counter()
    start, end, rss = record["start"], record["end"], record["rss"]
    num = len(end)
    warm = min(cfg["warmup"], num - 1)
    if num < 2 or len(start) <= num:
        raise RuntimeError(f"training loop ran only {num} batches; the record needs at least "
                           f"{limit} x batch size images")
    # batch i is processed from end[i] (handed over) to start[i+1] (next one asked for);
    # the loop waits for data from start[i] to end[i]
    window = start[num] - end[warm]
    waited = sum(end[i] - start[i] for i in range(warm + 1, num))
    cycles = [end[i + 1] - end[i] for i in range(num - 1)] + [start[num] - end[num - 1]]
    rss_timed = rss[warm + 1:num + 1]
    return {"images_per_s": cfg["batch_size"] * (num - warm) / window,
            "batches": num, "warmup": warm, "s_per_batch": [round(c, 4) for c in cycles],
            "data_wait_s": waited, "data_wait_share": waited / window,
            "first_batch_wait_s": end[0] - start[0],
            "rss_mb": [round(v, 1) for v in rss], "rss_growth_mb": rss_timed[-1] - rss_timed[0],
            "rss_slope_mb_per_batch": linear_slope(rss_timed),
            # the pools fill up over the first batches: the second half shows a real leak
            "rss_slope_second_half_mb_per_batch": linear_slope(
                rss_timed[len(rss_timed) // 2:]),
            "cpu_util": (cpu1 - cpu0) / (wall1 - wall0), "with_det": cfg["with_det"],
            "label_width": cfg["label_width"]}


def worker_io(cfg: dict) -> dict:
    """The training iterator alone (full augmentation), for each decoding thread count."""
    from config.config import cfg as aug
    from dataset.iterator import DetRecordIter

    rates = {}
    for threads in cfg["io_threads"]:
        kwargs = dict(aug.train, preprocess_threads=threads)
        it = DetRecordIter(cfg["rec"], cfg["batch_size"], cfg["data_shape"],
                           mean_pixels=REFERENCE_MEAN, label_pad_width=cfg["label_width"],
                           **kwargs)
        it.next().data[0].wait_to_read()   # threads started, first batch decoded
        images, tic = 0, time.perf_counter()
        while images < cfg["io_images"]:
            try:
                batch = it.next()
            except StopIteration:
                it.reset()             # a new epoch (the C++ iterator is rebuilt)
                continue
            batch.data[0].wait_to_read()
            batch.label[0].wait_to_read()
            images += batch.data[0].shape[0] - (batch.pad or 0)
        rates[str(threads)] = images / (time.perf_counter() - tic)
        del it
    return {"images_per_s_by_threads": rates}


WORKERS = {"compute": worker_compute, "train": worker_train, "io": worker_io}


def run_worker_process(cfg: dict) -> None:
    """Entry of ``--worker``: run one measurement and write its JSON to ``cfg['out']``."""
    if not cfg["baseline"]:
        setup_threads()   # as every CLI does; MXNet is not imported yet in this process
    load_before = os.getloadavg()[0]
    threads = thread_settings()      # as MXNet saw them at import (train.py sets its own later)
    result = WORKERS[cfg["kind"]](cfg)
    result.update(threads=threads, peak_rss_mb=peak_rss_mb(),
                  load_before=load_before, load_after=os.getloadavg()[0])
    with open(cfg["out"], "w") as f:
        json.dump(result, f)
