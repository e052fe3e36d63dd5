"""This project's ``train.py`` against the original ``example/ssd/train.py``, side by side.

Both training scripts run as they ship (each with its own defaults: the original pads labels to
width 350 and builds NMS into its training graph) on the same record, with the same network,
data shape, batch size, learning-rate settings and from scratch (``--pretrained ''``), at the
same ``OMP_NUM_THREADS``, one after the other, in alternating order for ``--rounds`` rounds.
Each leg's rate comes from batch-end stamps taken in its Speedometer callback (``--frequent 1``;
a launcher adds them, identically for both legs): images over the wall-clock time of the
batches after the ``--warmup`` first ones, and images per CPU-second of the process over the
same batches (the work an image costs: on a loaded machine the wall-clock rate also measures
how much CPU the scheduler gave each leg, the CPU-second rate does not). The ratio (this project / original) is taken
per round, and the median of the per-round ratios is the figure to quote: the machine may be
shared, and rounds interleave so that both legs see the same background load. The 1-minute load
average before and after every leg and each leg's CPU use are printed for the same reason.

The original is not part of this project: ``--original PATH`` points at a checkout of
apache/mxnet ``example/ssd`` (v1.x) that imports on this Python. Without it the original's leg
is skipped with a message and only this project's rate is printed.

Example::

    python -m benchmarks.vs_original --original /tmp/original_ssd --network resnet50 \\
        --batch-size 8 --warmup 1 --batches 3 --rounds 2 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Sequence

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
SPEED_RE = re.compile(r"Batch \[(\d+)-(\d+)\]\s+Speed: ([0-9.]+) samples/sec")
SYNTH_CLASSES = ("circle", "square", "triangle", "cross")
BATCH_END_RE = re.compile(r"^VS_ORIGINAL_BATCH_END (\d+) ([0-9.]+) ([0-9.]+)$", re.M)

# Both legs start through this launcher (written to the work folder, standard library and
# mxnet only; MXNet imported through the file config/mxnet_compat.py, since the original's
# folder has a config/ package of its own): it timestamps every batch end from the Speedometer callback that both
# train.py's install (its own lines print 2 decimals, too coarse below 1 img/s), then runs
# the script as __main__ from its own folder.
LAUNCHER = """import importlib.util, os, runpy, sys, time
_spec = importlib.util.spec_from_file_location("ssd_mxnet_compat", COMPAT_PATH)
_compat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_compat)    # the project's MXNet import, for either leg
mx = _compat.mx
_call = mx.callback.Speedometer.__call__
def _timed(self, param):
    sys.stderr.write("VS_ORIGINAL_BATCH_END %d %.6f %.6f\\n"
                     % (param.nbatch, time.perf_counter(), time.process_time()))
    sys.stderr.flush()
    return _call(self, param)
mx.callback.Speedometer.__call__ = _timed
script = os.path.abspath(sys.argv[1])
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(script)
runpy.run_path(script, run_name="__main__")
"""


def get_parser() -> argparse.ArgumentParser:
    """Parser of ``python -m benchmarks.vs_original``."""
    p = argparse.ArgumentParser(description="Training speed of this train.py against the "
                                            "original example/ssd train.py, side by side")
    p.add_argument("--original", type=str, default="",
                   help="folder of the original example/ssd (holding its train.py); '' skips "
                        "the original's leg (default: '')")
    p.add_argument("--network", type=str, default="resnet50",
                   help="network, a preset both projects have (default: resnet50)")
    p.add_argument("--data-shape", dest="data_shape", type=int, default=300,
                   help="input side in px (default: 300)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8,
                   help="images per batch (default: 8)")
    p.add_argument("--warmup", type=int, default=1,
                   help="first batches of each leg left out of its rate (default: 1)")
    p.add_argument("--batches", type=int, default=3,
                   help="timed batches of each leg (default: 3)")
    p.add_argument("--rounds", type=int, default=2,
                   help="rounds; each runs both legs, the order alternating (default: 2)")
    p.add_argument("--threads", type=int, default=2,
                   help="OMP_NUM_THREADS of both legs (default: 2)")
    p.add_argument("--rec", type=str, default="",
                   help="training record (its .idx beside it) with classes 0..3; '' generates "
                        "a synthetic one at --data-shape (default: '')")
    p.add_argument("--timeout", type=int, default=1800,
                   help="seconds before a leg is stopped (default: 1800)")
    p.add_argument("--json", type=str, default="", help="also write the results here")
    return p


def _validate(args: argparse.Namespace) -> None:
    for flag, value, low in (("--data-shape", args.data_shape, 32), ("--batch-size",
                             args.batch_size, 1), ("--warmup", args.warmup, 0),
                             ("--batches", args.batches, 1), ("--rounds", args.rounds, 1),
                             ("--threads", args.threads, 1), ("--timeout", args.timeout, 1)):
        if value < low:
            raise SystemExit(f"{flag} {value}: must be >= {low}")
    if args.rec and not os.path.isfile(args.rec):
        raise SystemExit(f"--rec {args.rec}: no such file")


def original_train_py(path: str) -> str | None:
    """The original's ``train.py`` under ``path``, or None when there is none."""
    candidate = os.path.join(path, "train.py") if path else ""
    return candidate if candidate and os.path.isfile(candidate) else None


def steady_rate(speeds: Sequence[tuple[int, int, float]], batch_size: int,
                warmup: int) -> float | None:
    """Images per second over the Speedometer windows that start after ``warmup`` batches.

    Parameters
    ----------
    speeds : sequence of (first batch, last batch, samples/s)
        Parsed ``Batch [a-b] Speed: s samples/sec`` lines (``a`` exclusive, ``b`` inclusive).
    batch_size : int
        Images per batch.
    warmup : int
        Batches left out.

    Returns
    -------
    float or None
        Total images / total time of the kept windows; None when none is kept.
    """
    images = seconds = 0.0
    for first, last, speed in speeds:
        if first < warmup or speed <= 0:
            continue
        count = (last - first) * batch_size
        images += count
        seconds += count / speed
    return images / seconds if seconds > 0 else None


def batch_end_rate(text: str, batch_size: int, warmup: int,
                   clock: str = "wall") -> float | None:
    """Images per second from the launcher's batch-end stamps.

    The batches after the first ``warmup + 1`` (batch 0 has no start time) over the time
    between the end of batch ``warmup`` and the end of the last one: wall-clock time
    (``clock='wall'``), or the CPU time of the whole process, every thread included
    (``clock='cpu'``: images per CPU-second, the work each image costs, which a shared
    machine's load does not change).
    """
    column = 1 if clock == "wall" else 2
    ends = sorted((int(m[0]), float(m[column])) for m in BATCH_END_RE.findall(text))
    kept = [(n, t) for n, t in ends if n >= warmup]
    if len(kept) < 2 or kept[-1][1] <= kept[0][1]:
        return None
    return (kept[-1][0] - kept[0][0]) * batch_size / (kept[-1][1] - kept[0][1])


def parse_speeds(text: str) -> list[tuple[int, int, float]]:
    """``(a, b, samples/s)`` of every Speedometer line in a training log."""
    return [(int(a), int(b), float(s)) for a, b, s in SPEED_RE.findall(text)]


def leg_command(which: str, script: str, args: argparse.Namespace, rec: str, workdir: str,
                num_images: int) -> list[str]:
    """Command line of one leg; the flags both train.py's share, with equal values."""
    classes = ",".join(SYNTH_CLASSES)
    cmd = [sys.executable, os.path.join(workdir, "launch.py"), script, "--train-path", rec, "--val-path", "", "--network",
           args.network, "--batch-size", str(args.batch_size), "--data-shape",
           str(args.data_shape), "--pretrained", "", "--prefix",
           os.path.join(workdir, which, "ssd"), "--end-epoch", "1", "--frequent", "1",
           "--num-class", str(len(SYNTH_CLASSES)), "--class-names", classes,
           "--num-example", str(num_images), "--lr", "0.002", "--momentum", "0.9", "--wd",
           "0.0005", "--gpus", "", "--log", ""]
    return cmd


def run_leg(which: str, script: str, args: argparse.Namespace, rec: str, workdir: str,
            num_images: int) -> dict:
    """Run one training leg in its own process; its rate, CPU use and load average."""
    os.makedirs(os.path.join(workdir, which), exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.pop("PYTHONPATH", None)
    cmd = leg_command(which, script, args, rec, workdir, num_images)
    load_before = os.getloadavg()[0]
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=os.path.dirname(script), env=env, capture_output=True,
                          text=True, timeout=args.timeout)
    wall = time.perf_counter() - tic
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{which} leg failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         f"{log[-3000:]}")
    speeds = parse_speeds(log)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return {"which": which, "images_per_s": batch_end_rate(log, args.batch_size, args.warmup),
            "images_per_cpu_s": batch_end_rate(log, args.batch_size, args.warmup, "cpu"),
            "speedometer_rate": steady_rate(speeds, args.batch_size, args.warmup),
            "speedometer": [s for _, _, s in speeds], "batches": len(BATCH_END_RE.findall(log)),
            "wall_s": wall, "cpu_util": cpu / wall,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def first_records(src_rec: str, dst_rec: str, count: int) -> str:
    """Copy the first ``count`` records of ``src_rec`` (and an index) to ``dst_rec``.

    Both legs train one epoch: on a copy of exactly the benchmarked images each leg stops
    after ``--warmup + --batches + 1`` batches, whatever the size of ``--rec``.
    """
    from config.mxnet_compat import mx
    from dataset.recordio_utils import read_idx, record_writer

    keys = [key for key, _ in read_idx(os.path.splitext(src_rec)[0] + ".idx")]
    if len(keys) < count:
        raise SystemExit(f"--rec {src_rec}: {len(keys)} images, but --warmup + --batches + 1 "
                         f"batches of --batch-size need {count}")
    os.makedirs(os.path.dirname(dst_rec), exist_ok=True)
    reader = mx.recordio.MXIndexedRecordIO(os.path.splitext(src_rec)[0] + ".idx", src_rec, "r")
    try:
        with record_writer(dst_rec) as writer:
            for new_key, key in enumerate(keys[:count]):
                writer.write_idx(new_key, reader.read_idx(key))
    finally:
        reader.close()
    return dst_rec


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = get_parser().parse_args(argv)
    _validate(args)
    original = original_train_py(args.original)
    if original is None:
        print(f"--original {args.original!r}: no train.py there; the original's leg is "
              f"skipped (point --original at a checkout of apache/mxnet example/ssd to "
              f"compare)", flush=True)
    ours = os.path.join(REPO, "train.py")
    num_images = (args.warmup + args.batches + 1) * args.batch_size
    results: dict = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
                     "cores": os.cpu_count(), "rounds": []}
    with tempfile.TemporaryDirectory(prefix="vs_original_") as workdir:
        with open(os.path.join(workdir, "launch.py"), "w") as f:
            f.write(LAUNCHER.replace("COMPAT_PATH", repr(os.path.join(REPO, "config",
                                                                       "mxnet_compat.py"))))
        if args.rec:
            rec = first_records(args.rec, os.path.join(workdir, "data", "first.rec"), num_images)
        else:
            from benchmarks.workers import make_synthetic_rec
            rec = make_synthetic_rec(os.path.join(workdir, "data"), num_images,
                                     args.data_shape)
        print(f"{args.network} {args.data_shape} px, batch {args.batch_size}, "
              f"OMP_NUM_THREADS={args.threads} for both, {args.warmup} warm-up + "
              f"{args.batches} timed batches per leg, record {rec}", flush=True)
        for r in range(args.rounds):
            legs = [("project", ours)] + ([("original", original)] if original else [])
            if r % 2:
                legs.reverse()
            row = {}
            for which, script in legs:
                leg = run_leg(which, script, args, rec, workdir, num_images)
                row[which] = leg
                print(f"round {r + 1} {which:8s} {_fmt(leg['images_per_s'])} img/s, "
                      f"{_fmt(leg['images_per_cpu_s'])} img per CPU-s  "
                      f"(Speedometer {_fmt(leg['speedometer_rate'])}: "
                      f"{[round(s, 3) for s in leg['speedometer']]})  CPU "
                      f"{100 * leg['cpu_util']:.0f}%  load {leg['load_before']:.1f}->"
                      f"{leg['load_after']:.1f}  {leg['wall_s']:.0f} s", flush=True)
            if original and row["project"]["images_per_s"] and row["original"]["images_per_s"]:
                row["ratio"] = row["project"]["images_per_s"] / row["original"]["images_per_s"]
                cpu = (row["project"]["images_per_cpu_s"], row["original"]["images_per_cpu_s"])
                row["cpu_ratio"] = cpu[0] / cpu[1] if all(cpu) else None
                print(f"round {r + 1} ratio project / original: {row['ratio']:.3f} img/s, "
                      f"{_fmt(row['cpu_ratio'])} img per CPU-s", flush=True)
            results["rounds"].append(row)
    rates = {w: [row[w]["images_per_s"] for row in results["rounds"]
                 if w in row and row[w]["images_per_s"]] for w in ("project", "original")}
    ratios = [row["ratio"] for row in results["rounds"] if "ratio" in row]
    cpu_ratios = [row["cpu_ratio"] for row in results["rounds"] if row.get("cpu_ratio")]
    loads = [row[w][k] for row in results["rounds"] for w in ("project", "original")
             if w in row for k in ("load_before", "load_after")]
    results["median_images_per_s"] = {w: statistics.median(v) if v else None
                                      for w, v in rates.items()}
    results["median_ratio"] = statistics.median(ratios) if ratios else None
    results["median_cpu_ratio"] = statistics.median(cpu_ratios) if cpu_ratios else None
    print(f"median img/s: project {_fmt(results['median_images_per_s']['project'])}, "
          f"original {_fmt(results['median_images_per_s']['original'])}; median of per-round "
          f"ratios (project / original): {_fmt(results['median_ratio'])} "
          f"{[round(x, 3) for x in ratios]}; per CPU-second: {_fmt(results['median_cpu_ratio'])} "
          f"{[round(x, 3) for x in cpu_ratios]}; load average {min(loads):.1f}-{max(loads):.1f} "
          f"on {os.cpu_count()} cores", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
