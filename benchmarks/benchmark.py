"""Training speed benchmark (issue 10): is the training loop at the compute limit?

For one preset, data shape, batch size and record file it measures, each in its own worker
process (threads can only be fixed before ``import mxnet``):

* **compute**: forward/backward/update of the training graph on one in-memory batch;
* **train**: the real training path, ``train_net.train_net`` (iterators -> symbol ->
  ``fit.fit`` -> ``Module.fit``) for a bounded number of batches, timed by a thin wrapper around
  its ``DetRecordIter`` that records when each batch is asked for and handed over (so the
  time the loop waited for data is known) and the resident memory at each batch; train_net's
  own Speedometer lines are parsed as a cross-check;
* **io**: the training iterator alone (full augmentation), for each decoding thread count;
* **baseline** (``--baseline``): this project's training path with three of its settings set back
  to the original's (an emulation, not the original's code; ``benchmarks.vs_original`` runs the
  original itself):
  MXNet's default OpenMP threads (``OMP_NUM_THREADS`` unset, ``setup_threads`` not called),
  the reference's label width 350 and the ``with_det=True`` graph (NMS on every batch).

Without ``--rec`` a small synthetic VOC record is generated (tools.make_synthetic_voc +
tools.prepare_dataset) in a temporary folder, its images stored at the training size.

Example (see docs/SPEED.md for the measured figures)::

    python -m benchmarks.benchmark --network tiny --data-shape 64 --batch-size 8 --train-batches 4
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from benchmarks.workers import (THREAD_VARS, make_synthetic_rec, run_worker_process,
                                thread_settings)
from config.runtime import available_cores, setup_threads

logger = logging.getLogger("benchmark")

BASELINE_LABEL_WIDTH = 350     # the reference train.py's --label-width
_SPEED_RE = re.compile(r"Speed: ([0-9.]+) samples/sec")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def _positive_int_list(value: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        items = []
    if not items or min(items) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: need a comma list of positive integers "
                                         f"such as '1,2'")
    return items


def get_parser() -> argparse.ArgumentParser:
    """Parser of ``python -m benchmarks.benchmark``."""
    p = argparse.ArgumentParser(description="Measure SSD training speed: compute-only rate, "
                                            "training-loop rate, data-iterator rate, memory")
    p.add_argument("--network", type=str, default="vgg16_reduced",
                   help="network preset (default: vgg16_reduced)")
    p.add_argument("--data-shape", dest="data_shape", type=int, default=300,
                   help="square input side in px (default: 300)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8,
                   help="images per batch (default: 8)")
    p.add_argument("--rec", type=str, default="",
                   help="training record (.rec with .idx); '' generates a synthetic one "
                        "(default: '')")
    p.add_argument("--num-class", dest="num_class", type=int, default=None,
                   help="object classes (default: largest class id in the record + 1)")
    p.add_argument("--compute-batches", dest="compute_batches", type=int, default=3,
                   help="timed iterations of the compute-only measurement (default: 3)")
    p.add_argument("--train-batches", dest="train_batches", type=int, default=5,
                   help="timed batches of the training loop, after --warmup (default: 5)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed first batches of each measurement (default: 1)")
    p.add_argument("--io-threads", dest="io_threads", type=_positive_int_list,
                   default=None,
                   help="decoding thread counts to measure the iterator with "
                        "(default: 1..number of cores)")
    p.add_argument("--io-images", dest="io_images", type=int, default=512,
                   help="images read per iterator measurement (default: 512)")
    p.add_argument("--baseline", action="store_true",
                   help="also run this project's training loop with three settings set back to "
                        "the original's (MXNet default threads, label width 350, NMS in the "
                        "training graph) and report the speedup over that emulation; the "
                        "original's own code is measured by benchmarks.vs_original (default: "
                        "off)")
    p.add_argument("--baseline-batches", dest="baseline_batches", type=int, default=None,
                   help="timed batches of the baseline loop (default: --train-batches)")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of every measurement, interleaved; the fastest round of each "
                        "is reported (use 2-3 on a loaded machine) (default: 1)")
    p.add_argument("--skip", type=str, default="",
                   help="comma list of measurements to skip: compute, train, io (default: '')")
    p.add_argument("--synthetic-images", dest="synthetic_images", type=int, default=None,
                   help="images in the generated record (default: enough for the training "
                        "loop: (warmup + max(train, baseline batches)) x batch size)")
    p.add_argument("--image-size", dest="image_size", type=int, default=None,
                   help="side of the generated images in px (default: --data-shape, i.e. "
                        "stored at training size)")
    p.add_argument("--workdir", type=str, default="",
                   help="folder for generated data and checkpoints; kept if given "
                        "(default: a temporary folder, removed afterwards)")
    p.add_argument("--json", dest="json_path", type=str, default="",
                   help="also write the results as JSON to this path (default: '')")
    p.add_argument("--timeout", type=int, default=900,
                   help="seconds allowed per worker process (default: 900)")
    # internal: one measurement in a fresh process
    p.add_argument("--worker", type=str, default="", help=argparse.SUPPRESS)
    p.add_argument("--worker-config", dest="worker_config", type=str, default="",
                   help=argparse.SUPPRESS)
    return p


def _validate(args: argparse.Namespace) -> None:
    checks = [("--data-shape", args.data_shape, args.data_shape > 0),
              ("--batch-size", args.batch_size, args.batch_size > 0),
              ("--compute-batches", args.compute_batches, args.compute_batches > 0),
              ("--train-batches", args.train_batches, args.train_batches > 0),
              ("--warmup", args.warmup, args.warmup >= 0),
              ("--io-images", args.io_images, args.io_images > 0),
              ("--timeout", args.timeout, args.timeout > 0),
              ("--repeat", args.repeat, args.repeat > 0)]
    if args.baseline_batches is not None:
        checks.append(("--baseline-batches", args.baseline_batches, args.baseline_batches > 0))
    if args.num_class is not None:
        checks.append(("--num-class", args.num_class, args.num_class > 0))
    if args.synthetic_images is not None:
        checks.append(("--synthetic-images", args.synthetic_images, args.synthetic_images > 0))
    if args.image_size is not None:
        checks.append(("--image-size", args.image_size, args.image_size >= 16))
    for flag, value, ok in checks:
        if not ok:
            raise ValueError(f"{flag} {value}: must be a positive integer"
                             + (" (0 allowed)" if flag == "--warmup" else "")
                             + (" >= 16" if flag == "--image-size" else ""))
    unknown = set(_skip_set(args.skip)) - {"compute", "train", "io"}
    if unknown:
        raise ValueError(f"--skip {args.skip!r}: unknown {sorted(unknown)}; valid: compute, "
                         f"train, io")
    if args.rec and not os.path.isfile(args.rec):
        raise FileNotFoundError(f"--rec {args.rec}: file not found (omit --rec to generate a "
                                f"synthetic record)")
    from symbol.symbol_factory import get_config
    try:
        get_config(args.network, args.data_shape)
    except ValueError as err:   # names the valid presets / shapes
        raise ValueError(f"--network {args.network} --data-shape {args.data_shape}: {err}"
                         ) from None


def _skip_set(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def _child_env(base_env: dict, baseline: bool) -> dict:
    env = dict(base_env)
    if baseline:
        for name in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS"):
            env.pop(name, None)
    return env


def spawn_worker(kind: str, cfg: dict, base_env: dict, timeout: int) -> dict:
    """Run one measurement in a fresh ``python -m benchmarks.benchmark --worker`` process.

    Returns
    -------
    dict
        The worker's results plus ``wall_s`` and ``speedometer`` (samples/sec parsed from
        the worker's log).
    """
    cfg = dict(cfg, kind=kind)
    cfg["out"] = os.path.join(cfg["workdir"], f"{cfg['tag']}.json")
    cfg_path = os.path.join(cfg["workdir"], f"{cfg['tag']}-config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    cmd = [sys.executable, "-m", "benchmarks.benchmark", "--worker", kind,
           "--worker-config", cfg_path]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    logger.info("%s: running %s worker%s ...", cfg["tag"], kind,
                " (baseline settings)" if cfg["baseline"] else "")
    tic = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=_child_env(base_env, cfg["baseline"]),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cfg['tag']} worker exceeded --timeout {timeout} s; lower the "
                           f"batch counts or raise --timeout") from None
    wall = time.perf_counter() - tic
    if proc.returncode != 0 or not os.path.isfile(cfg["out"]):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"{cfg['tag']} worker failed (exit {proc.returncode}):\n{tail}")
    with open(cfg["out"]) as f:
        result = json.load(f)
    result["wall_s"] = wall
    result["speedometer"] = [float(v) for v in _SPEED_RE.findall(proc.stderr + proc.stdout)]
    return result


def _num_classes(rec: str) -> int:
    from dataset.recordio_utils import scan_labels
    counts = scan_labels(rec).class_counts
    return max(counts) + 1 if counts else 1


def run_benchmark(args: argparse.Namespace, base_env: dict) -> dict:
    """Run every measurement asked for; return the results as a JSON-ready dict."""
    from dataset.recordio_utils import count_records, scan_labels

    skip = set(_skip_set(args.skip))
    baseline_batches = args.baseline_batches or args.train_batches
    own_workdir = not args.workdir
    workdir = args.workdir or tempfile.mkdtemp(prefix="ssd_benchmark_")
    os.makedirs(workdir, exist_ok=True)
    started = time.time()
    try:
        rec = args.rec
        if not rec:
            loop = args.warmup + max(args.train_batches,
                                     baseline_batches if args.baseline else 0)
            num_images = args.synthetic_images or loop * args.batch_size
            size = args.image_size or args.data_shape
            logger.info("Generating %d synthetic images of %d px in %s", num_images, size,
                        workdir)
            rec = make_synthetic_rec(workdir, num_images, size)
        stats = scan_labels(rec)
        num_class = args.num_class or _num_classes(rec)
        cfg = {"network": args.network, "data_shape": args.data_shape,
               "batch_size": args.batch_size, "rec": os.path.abspath(rec),
               "num_class": num_class, "warmup": args.warmup, "workdir": workdir,
               "label_width": -1, "with_det": False, "baseline": False,
               "io_threads": args.io_threads or list(range(1, available_cores() + 1)),
               "io_images": args.io_images,
               "frequent": max(1, (args.warmup + args.train_batches) // 2)}
        results: dict[str, Any] = {
            "settings": {"network": args.network, "data_shape": args.data_shape,
                         "batch_size": args.batch_size, "rec": cfg["rec"],
                         "synthetic": not args.rec, "num_images": count_records(rec),
                         "num_class": num_class, "label_width_data": stats.label_width,
                         "max_objects": stats.max_objects, "warmup": args.warmup},
            "threads": thread_settings(_child_env(base_env, False)),
            "threads_user": {k: base_env.get(k) for k in THREAD_VARS},
            "load_average_start": list(os.getloadavg()),
        }
        results["threads"]["OMP_NUM_THREADS_effective"] = (
            base_env.get("OMP_NUM_THREADS") or str(available_cores()))
        jobs = []
        if "compute" not in skip:
            jobs.append(("compute", "compute", dict(cfg, batches=args.compute_batches)))
        if "train" not in skip:
            jobs.append(("train", "train", dict(cfg, batches=args.train_batches)))
        if "io" not in skip:
            jobs.append(("io", "io", dict(cfg)))
        if args.baseline:
            width = max(BASELINE_LABEL_WIDTH, stats.label_width)
            jobs.append(("baseline", "train", dict(
                cfg, batches=baseline_batches, label_width=width, with_det=True, baseline=True,
                frequent=max(1, (args.warmup + baseline_batches) // 2))))
        # rounds interleave the configurations, so each sees the same background load;
        # the best round of each is kept (the one least slowed by other processes)
        for round_index in range(args.repeat):
            for name, kind, job_cfg in jobs:
                run = spawn_worker(kind, dict(job_cfg, tag=f"{name}{round_index}"), base_env,
                                   args.timeout)
                best = results.get(name)
                rates = (best or {}).get("rounds", []) + [_rate(run)]
                if best is None or _rate(run) > _rate(best):
                    best = run
                best["rounds"] = rates
                results[name] = best
        results["load_average_end"] = list(os.getloadavg())
        results["total_s"] = time.time() - started
        results["summary"] = summarize(results)
        return results
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _rate(result: dict) -> float:
    if "images_per_s" in result:
        return result["images_per_s"]
    return max(result["images_per_s_by_threads"].values())


def summarize(results: dict) -> dict:
    """Ratios that answer the targets of issue 10 (None where a part was skipped)."""
    compute = results.get("compute", {}).get("images_per_s")
    train = results.get("train", {}).get("images_per_s")
    io = results.get("io", {}).get("images_per_s_by_threads", {})
    io_best = max(io.values()) if io else None
    base = results.get("baseline", {}).get("images_per_s")
    # rounds interleave compute and train: the ratio within a round sees one background load
    round_ratios = [t / c for c, t in zip(results.get("compute", {}).get("rounds", []),
                                          results.get("train", {}).get("rounds", []))]
    loads = [results.get(k, {}).get(f"load_{w}") for k in ("compute", "train", "io", "baseline")
             for w in ("before", "after")]
    loads = [v for v in loads if v is not None]
    return {
        "compute_images_per_s": compute,
        "train_images_per_s": train,
        "train_vs_compute": train / compute if compute and train else None,
        "train_vs_compute_rounds": round_ratios,
        "train_vs_compute_round_median": (statistics.median(round_ratios) if round_ratios
                                          else None),
        "data_wait_share": results.get("train", {}).get("data_wait_share"),
        "io_best_images_per_s": io_best,
        "io_vs_train": io_best / train if io_best and train else None,
        "baseline_images_per_s": base,
        "speedup_vs_baseline": train / base if base and train else None,
        "peak_rss_mb": results.get("train", {}).get("peak_rss_mb"),
        "rss_slope_mb_per_batch": results.get("train", {}).get("rss_slope_mb_per_batch"),
        "rss_slope_second_half_mb_per_batch": results.get("train", {}).get(
            "rss_slope_second_half_mb_per_batch"),
        "max_load_average": max(loads) if loads else None,
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def _rounds(result: dict) -> str:
    rounds = result.get("rounds", [])
    if len(rounds) < 2:
        return ""
    return f", best of {len(rounds)} rounds {[round(r, 2) for r in rounds]}"


def format_table(results: dict) -> str:
    """Console table of the results."""
    s, summary = results["settings"], results["summary"]
    rows = [("setting", f"{s['network']} @ {s['data_shape']} px, batch {s['batch_size']}, "
                        f"{s['num_images']} images ({'synthetic' if s['synthetic'] else s['rec']})"
                        f", {s['num_class']} classes, label width {s['label_width_data']}")]
    threads = results["threads"]
    rows.append(("threads", f"cores {threads['cores']}, OMP_NUM_THREADS "
                            f"{threads['OMP_NUM_THREADS_effective']} (user: "
                            f"{results['threads_user']['OMP_NUM_THREADS'] or 'unset'}), "
                            f"decode threads {threads['decode_threads']}"
                            + "".join(f", {k}={v}" for k, v in threads.items()
                                      if k.startswith(("MXNET_", "KMP_")) and v is not None)))
    if "compute" in results:
        c = results["compute"]
        rows.append(("compute-only", f"{_fmt(c['images_per_s'])} img/s "
                                     f"(s/batch {c['s_per_batch']}, CPU "
                                     f"{100 * c['cpu_util']:.0f}%, load {_fmt(c['load_before'])}"
                                     f"->{_fmt(c['load_after'])}){_rounds(c)}"))
    if "train" in results:
        t = results["train"]
        rows.append(("train loop", f"{_fmt(t['images_per_s'])} img/s over {t['batches']} "
                                   f"batches ({t['warmup']} warm-up), Speedometer "
                                   f"{[round(v, 2) for v in t['speedometer']]}, CPU "
                                   f"{100 * t['cpu_util']:.0f}%, load {_fmt(t['load_before'])}"
                                   f"->{_fmt(t['load_after'])}{_rounds(t)}"))
        line = _fmt(summary["train_vs_compute"], 3) + " (best rounds)"
        if len(summary["train_vs_compute_rounds"]) > 1:
            line += (f"; median of the per-round ratios "
                     f"{_fmt(summary['train_vs_compute_round_median'], 3)} "
                     f"{[round(v, 3) for v in summary['train_vs_compute_rounds']]}")
        rows.append(("train / compute", line))
        rows.append(("waited for data", f"{100 * t['data_wait_share']:.1f}% of the loop "
                                        f"(first batch {t['first_batch_wait_s']:.2f} s)"))
        rows.append(("memory", f"peak RSS {t['peak_rss_mb']:.0f} MiB; RSS growth "
                               f"{t['rss_growth_mb']:+.1f} MiB over {t['batches'] - t['warmup']}"
                               f" batches (slope {t['rss_slope_mb_per_batch']:+.2f} MiB/batch;"
                               f" second half {t['rss_slope_second_half_mb_per_batch']:+.3f})"))
    if "io" in results:
        io = results["io"]["images_per_s_by_threads"]
        rows.append(("iterator alone", ", ".join(f"{_fmt(v, 1)} img/s with {k} thread(s)"
                                                 for k, v in io.items())))
        rows.append(("iterator / train", _fmt(summary["io_vs_train"])))
    if "baseline" in results:
        b = results["baseline"]
        rows.append(("baseline loop", f"{_fmt(b['images_per_s'])} img/s (this project's loop "
                                      f"emulating 3 original settings, not the original: OMP "
                                      f"{b['threads']['OMP_NUM_THREADS'] or 'unset'}, label width"
                                      f" {b['label_width']}, NMS in graph), Speedometer "
                                      f"{[round(v, 2) for v in b['speedometer']]}, CPU "
                                      f"{100 * b['cpu_util']:.0f}%, load "
                                      f"{_fmt(b['load_before'])}->{_fmt(b['load_after'])}"
                                      f"{_rounds(b)}"))
        rows.append(("speedup vs baseline", _fmt(summary["speedup_vs_baseline"], 3) +
                     " (vs the emulation; benchmarks.vs_original measures the original)"))
    rows.append(("load average", f"start {_fmt(results['load_average_start'][0])}, end "
                                 f"{_fmt(results['load_average_end'][0])}, max seen "
                                 f"{_fmt(summary['max_load_average'])} on "
                                 f"{threads['cores']} cores"))
    rows.append(("total time", f"{results['total_s']:.0f} s"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark CLI; returns the exit status (0 ok, 1 failure, 2 bad input).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    args = get_parser().parse_args(argv)
    if args.worker:
        with open(args.worker_config) as f:
            cfg = json.load(f)
        run_worker_process(cfg)   # train_net configures the worker's logging itself
        return 0
    base_env = dict(os.environ)       # before setup_threads: children choose their own
    setup_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        _validate(args)
        results = run_benchmark(args, base_env)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    results["command"] = "python -m benchmarks.benchmark " + " ".join(
        argv if argv is not None else sys.argv[1:])
    print(format_table(results))
    if args.json_path:
        folder = os.path.dirname(os.path.abspath(args.json_path))
        os.makedirs(folder, exist_ok=True)
        with open(args.json_path, "w") as f:
            json.dump(results, f, indent=2)
        print(f"JSON written to {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
