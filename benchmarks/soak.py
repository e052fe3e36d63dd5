"""Soak test: train, interrupt with SIGINT and resume several times; compare with one run.

Runs ``train.py`` twice on the same data with the same seed (docs/RELIABILITY.md, "Soak"):

1. **baseline**: uninterrupted, ``--end-epoch E``;
2. **interrupted**: the same command, stopped with SIGINT ``--interrupts`` times at evenly
   spread moments and continued each time with ``--resume interrupted``.

Every segment but the last must exit 130 and leave ``-interrupted`` files; the last must exit
0. Both runs end with the validation mAP of epoch ``E`` (from the checkpoint card); resident
memory (VmRSS) of each training process is sampled over time. The summary is printed and
written to ``<workdir>/soak.json``, the memory curve to ``<workdir>/soak_rss.png``.
Without ``--train-path`` a small synthetic VOC set is made.

Example (about 5 minutes on 2 CPU cores)::

    python -m benchmarks.soak --workdir /tmp/soak --epochs 6 --interrupts 3

Exit status: 0 when every segment behaved and ``|mAP difference| <= --tolerance``, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_parser() -> argparse.ArgumentParser:
    """Flags of the soak test."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="folder for data, checkpoints and logs")
    p.add_argument("--train-path", default="", help="training .rec ('' = make synthetic data)")
    p.add_argument("--val-path", default="", help="validation .rec (needed with --train-path)")
    p.add_argument("--num-class", type=int, default=4, help="classes of the given data (default 4)")
    p.add_argument("--class-names", default="circle,square,triangle,cross",
                   help="class names of the given data (default: the synthetic ones)")
    p.add_argument("--network", default="tiny", help="network preset (default tiny)")
    p.add_argument("--data-shape", type=int, default=128, help="input side (default 128)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of each run (default 10)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--interrupts", type=int, default=3, help="SIGINTs in the second run (default 3)")
    p.add_argument("--seed", type=int, default=1, help="seed of both runs (default 1)")
    p.add_argument("--num-train", type=int, default=96, help="synthetic training images (default 96)")
    p.add_argument("--num-val", type=int, default=32, help="synthetic validation images (default 32)")
    p.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling period in s (default 1)")
    p.add_argument("--parallel", action="store_true",
                   help="run the baseline and the interrupted run at the same time (one OpenMP "
                        "thread each); needs --interrupt-every")
    p.add_argument("--interrupt-every", type=float, default=0.0,
                   help="seconds of training between SIGINTs (default: 0.7 x the baseline's "
                        "training time / (interrupts + 1))")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="largest accepted |mAP difference| between the runs (default 0.05)")
    return p


def make_synthetic(workdir: str, num_train: int, num_val: int, classes: list[str]
                   ) -> tuple[str, str]:
    """A small synthetic VOC set packed into train.rec / val.rec under ``workdir``."""
    from tools.make_synthetic_voc import SynthConfig, generate
    from tools.prepare_dataset import prepare_dataset
    root = os.path.join(workdir, "data")
    if not os.path.isfile(os.path.join(root, "val.rec")):
        generate(SynthConfig(root=root, num_train=num_train, num_test=num_val,
                             min_image_size=128, max_image_size=160, classes=tuple(classes),
                             min_objects=1, max_objects=4, seed=3, progress=False))
        devkit = os.path.join(root, "VOCdevkit")
        for image_set, name, shuffle in (("trainval", "train", True), ("test", "val", False)):
            prepare_dataset("pascal", image_set, devkit, os.path.join(root, name + ".lst"),
                            year="2007", shuffle=shuffle, class_names=classes, seed=0,
                            progress=False)
    return os.path.join(root, "train.rec"), os.path.join(root, "val.rec")


def read_rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (Linux /proc), None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_segment(cmd: list[str], log_path: str, interrupt_after_s: float | None,
                samples: list, label: str, clock0: float, sample_s: float,
                timeout_s: float) -> dict:
    """Run one training process; SIGINT it after ``interrupt_after_s`` of batches running."""
    env = dict(os.environ, MPLBACKEND="Agg")
    env.setdefault("OMP_NUM_THREADS", "2")
    start = time.time()
    # stderr goes to a file, not a pipe: an undrained pipe fills (64 KiB of log lines) and
    # blocks the training process in write() for as long as this loop polls
    err_file = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=err_file, text=True)
    first_batch, sent, next_sample = None, None, 0.0
    log_start = os.path.getsize(log_path) if os.path.isfile(log_path) else 0  # log is appended
    try:
        while proc.poll() is None:
            now = time.time()
            if now >= next_sample:
                rss = read_rss_mb(proc.pid)
                if rss is not None:
                    samples.append({"t": round(now - clock0, 2), "rss_mb": round(rss, 1),
                                    "segment": label})
                next_sample = now + sample_s
            if first_batch is None and os.path.isfile(log_path):
                with open(log_path) as f:
                    f.seek(log_start)
                    if "Batch [" in f.read():   # training of this segment has started
                        first_batch = now
            if (interrupt_after_s is not None and sent is None and first_batch is not None
                    and now - first_batch >= interrupt_after_s):
                proc.send_signal(signal.SIGINT)
                sent = now - start
            if now - start > timeout_s:
                proc.kill()
                break
            time.sleep(0.2)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err_file.seek(0)
        err = err_file.read()
        err_file.close()
    end = time.time()
    return {"segment": label, "returncode": proc.returncode, "wall_s": round(end - start, 1),
            "train_s": None if first_batch is None else round(end - first_batch, 1),
            "sigint_at_s": None if sent is None else round(sent, 1),
            "traceback": "Traceback" in (err or ""), "stderr_tail": (err or "")[-400:]}


def card_map(prefix: str, epoch: int) -> float | None:
    """Validation mAP stored in the checkpoint card of ``epoch``."""
    path = f"{prefix}-{epoch:04d}.json"
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        card = json.load(f)
    value = card.get("metrics", {}).get("validation", {}).get("mAP")
    return None if value is None else float(value)


def rss_summary(samples: list, run: str) -> dict:
    """Peak, first- and last-quarter mean RSS of a run's samples (MiB), and its trend.

    The trend is the least-squares slope of RSS over the run's training time after its first
    quarter (warm-up), in MiB per 10 minutes; for the interrupted run the time is the sum of its
    segments' times, so each restart's warm-up counts as it happens.
    """
    rows = run_rows(samples, run)
    values = [s["rss_mb"] for s in rows]
    if not values:
        return {}
    quarter = max(1, len(values) // 4)
    summary = {"samples": len(values), "peak_mb": max(values),
               "first_quarter_mb": round(sum(values[:quarter]) / quarter, 1),
               "last_quarter_mb": round(sum(values[-quarter:]) / quarter, 1)}
    times = run_clock(rows)
    tail_t, tail_v = times[quarter:], values[quarter:]
    if len(tail_t) >= 2 and max(tail_t) > min(tail_t):
        import numpy as np
        slope = float(np.polyfit(tail_t, tail_v, 1)[0])      # MiB per second
        summary["trend_mb_per_10min"] = round(slope * 600.0, 2)
    return summary


def run_rows(samples: list, run: str) -> list:
    """The samples of one run ("baseline" or all "interrupted-k" segments), in time order."""
    return [s for s in samples if s["segment"].startswith(run)]


def run_clock(rows: list) -> list[float]:
    """Seconds of a run's own processes at each sample: gaps between segments removed."""
    times, offset, previous = [], 0.0, None
    for row in rows:
        if previous is not None and row["segment"] != previous["segment"]:
            offset += previous["t"] - row["t"]     # continue where the last segment ended
        times.append(row["t"] + offset)
        previous = row
    return times


def plot_rss(samples: list, path: str) -> None:
    """Resident memory of both runs over their own running time, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for run, colour in (("baseline", "tab:blue"), ("interrupted", "tab:orange")):
        rows = run_rows(samples, run)
        if rows:
            ax.plot([t / 60.0 for t in run_clock(rows)], [s["rss_mb"] for s in rows],
                    lw=0.6, color=colour, label=run)
    ax.set_xlabel("training process time (min)")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    ax.set_title("Soak: resident memory of the training process")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; returns 0 when it passed."""
    args = get_parser().parse_args(argv)
    if args.epochs < 1 or args.interrupts < 0:
        print(f"error: --epochs {args.epochs} must be >= 1 and --interrupts {args.interrupts} "
              f">= 0", file=sys.stderr)
        return 2
    if args.parallel and args.interrupt_every <= 0:
        print("error: --parallel needs --interrupt-every SECONDS (the baseline's time is not "
              "known in advance)", file=sys.stderr)
        return 2
    if args.parallel:
        os.environ["OMP_NUM_THREADS"] = "1"
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    classes = [c.strip() for c in args.class_names.split(",")]
    if args.train_path:
        train_path, val_path = args.train_path, args.val_path
    else:
        train_path, val_path = make_synthetic(workdir, args.num_train, args.num_val, classes)

    def command(name: str, *extra: str) -> tuple[list[str], str, str]:
        prefix = os.path.join(workdir, name)
        log = os.path.join(workdir, name + ".log")
        cmd = [sys.executable, "train.py", "--train-path", train_path, "--val-path", val_path,
               "--network", args.network, "--data-shape", str(args.data_shape),
               "--num-class", str(args.num_class), "--class-names", ",".join(classes),
               "--pretrained", "", "--batch-size", str(args.batch_size),
               "--end-epoch", str(args.epochs), "--lr", str(args.lr),
               "--lr-steps", str(max(1, args.epochs * 2 // 3)), "--seed", str(args.seed),
               "--frequent", "1", "--prefix", prefix, "--log", log, *extra]
        return cmd, log, f"{prefix}_{args.network}_{args.data_shape}"

    samples: list = []
    clock0 = time.time()
    cmd, log, base_prefix = command("baseline")
    print("baseline:", shlex.join(cmd), flush=True)
    timeout_s = 4 * 3600
    if args.parallel:
        # both runs at once, one core each: the baseline in a thread (run_segment only polls)
        box: dict = {}
        thread = threading.Thread(target=lambda: box.update(run_segment(
            cmd, log, None, samples, "baseline", clock0, args.sample_s, timeout_s)))
        thread.start()
        every = args.interrupt_every
    else:
        box = run_segment(cmd, log, None, samples, "baseline", clock0, args.sample_s,
                          timeout_s)
        train_s = box["train_s"] or box["wall_s"]
        # each interrupted epoch restarts from its first batch: interrupt early enough that
        # the last SIGINT still lands while training runs
        every = args.interrupt_every or 0.7 * train_s / (args.interrupts + 1)
    segments = []
    for k in range(args.interrupts + 1):
        extra = ("--resume", "interrupted") if k else ()
        cmd, log, soak_prefix = command("interrupted", *extra)
        last = k == args.interrupts
        result = run_segment(cmd, log, None if last else every, samples,
                             f"interrupted-{k}", clock0, args.sample_s, timeout_s)
        segments.append(result)
        print(f"segment {k}: exit {result['returncode']}, {result['wall_s']} s, SIGINT at "
              f"{result['sigint_at_s']} s", flush=True)
        if result["returncode"] != 130:   # finished (0) or failed: resuming again is wrong
            break
    if args.parallel:
        thread.join()
    baseline = box
    map_a = card_map(base_prefix, args.epochs)
    map_b = card_map(soak_prefix, args.epochs)
    ok_segments = (baseline["returncode"] == 0 and segments[-1]["returncode"] == 0
                   and all(s["returncode"] == 130 for s in segments[:-1])
                   and not any(s["traceback"] for s in [baseline] + segments))
    diff = None if map_a is None or map_b is None else abs(map_a - map_b)
    summary = {"epochs": args.epochs, "interrupts_done": len(segments) - 1,
               "baseline": baseline, "segments": segments,
               "baseline_map": map_a, "interrupted_map": map_b, "map_abs_diff": diff,
               "rss_baseline": rss_summary(samples, "baseline"),
               "rss_interrupted": rss_summary(samples, "interrupted"),
               "passed": bool(ok_segments and diff is not None and diff <= args.tolerance),
               "rss_samples": samples}
    with open(os.path.join(workdir, "soak.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plot_rss(samples, os.path.join(workdir, "soak_rss.png"))
    print(json.dumps({k: v for k, v in summary.items()
                      if k not in ("rss_samples", "baseline", "segments")}, indent=1))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
