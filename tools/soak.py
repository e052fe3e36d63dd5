"""Soak test: train, interrupt with SIGINT and resume several times; compare with one run.

Runs ``train.py`` twice on the same data with the same seed (docs/RELIABILITY.md, "Soak"):

1. **baseline**: uninterrupted, ``--end-epoch E``;
2. **interrupted**: the same command, stopped with SIGINT ``--interrupts`` times at evenly
   spread moments and continued each time with ``--resume interrupted``.

Every segment but the last must exit 130 and leave ``-interrupted`` files; the last must exit
0. Both runs end with the validation mAP of epoch ``E`` (from the checkpoint card); resident
memory (VmRSS) of each training process is sampled over time. The summary is printed and
written to ``<workdir>/soak.json``. Without ``--train-path`` a small synthetic VOC set is made.

Example (about 5 minutes on 2 CPU cores)::

    python -m tools.soak --workdir /tmp/soak --epochs 6 --interrupts 3

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
import time

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
    """Peak, first-quarter and last-quarter mean RSS of a run's samples (MiB)."""
    values = [s["rss_mb"] for s in samples if s["segment"].startswith(run)]
    if not values:
        return {}
    quarter = max(1, len(values) // 4)
    return {"samples": len(values), "peak_mb": max(values),
            "first_quarter_mb": round(sum(values[:quarter]) / quarter, 1),
            "last_quarter_mb": round(sum(values[-quarter:]) / quarter, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the soak; returns 0 when it passed."""
    args = get_parser().parse_args(argv)
    if args.epochs < 1 or args.interrupts < 0:
        print(f"error: --epochs {args.epochs} must be >= 1 and --interrupts {args.interrupts} "
              f">= 0", file=sys.stderr)
        return 2
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
    baseline = run_segment(cmd, log, None, samples, "baseline", clock0, args.sample_s, 3600)
    train_s = baseline["train_s"] or baseline["wall_s"]
    segments = []
    # each interrupted epoch restarts from its first batch: interrupt early enough that the
    # last SIGINT still lands while training runs
    every = 0.7 * train_s / (args.interrupts + 1)
    for k in range(args.interrupts + 1):
        extra = ("--resume", "interrupted") if k else ()
        cmd, log, soak_prefix = command("interrupted", *extra)
        last = k == args.interrupts
        result = run_segment(cmd, log, None if last else every, samples,
                             f"interrupted-{k}", clock0, args.sample_s, 3 * train_s + 300)
        segments.append(result)
        print(f"segment {k}: exit {result['returncode']}, {result['wall_s']} s, SIGINT at "
              f"{result['sigint_at_s']} s", flush=True)
        if result["returncode"] != 130:   # finished (0) or failed: resuming again is wrong
            break
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
    print(json.dumps({k: v for k, v in summary.items()
                      if k not in ("rss_samples", "baseline", "segments")}, indent=1))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
