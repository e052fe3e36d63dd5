"""What distribution costs: one process against two ssh hosts (127.0.0.2/3), same total batch.

Runs ``train.py`` (tiny preset, synthetic images) three ways, interleaved over ``--rounds``:

- ``1 process``: ``--kv-store local --batch-size 2B`` with ``OMP_NUM_THREADS=--threads``,
  and the same with one thread;
- ``2 hosts dist_sync`` and ``2 hosts dist_async``: ``tools/launch.py --launcher ssh -n 2
  -s 2`` (one server and one worker a host, scheduler here), ``--batch-size B`` per worker,
  ``OMP_NUM_THREADS=1`` per process;

and prints, per setting, the wall time of the whole command, the epoch time after the first
epoch (``Epoch[k] Time cost`` of train.py's log; for two workers the slower one's, as an
epoch ends when both have) and the images/s that makes. Both "hosts" are this machine
(sshd from tests/ssh_hosts.py): the figures show the overhead of ps-lite and ssh, not a
speed-up. Needs ``sshd`` and ``rsync`` (Debian: openssh-server, rsync)::

    python -m benchmarks.ssh_cost --images 96 --epochs 4 --batch-size 8 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from tests.ssh_hosts import SshHosts
from tools.make_synthetic_voc import SynthConfig, generate
from tools.prepare_dataset import prepare_dataset

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
CLASSES = ("circle", "square", "triangle", "cross")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96, help="synthetic training images")
    parser.add_argument("--data-shape", type=int, default=128, help="image side, pixels")
    parser.add_argument("--epochs", type=int, default=4, help="epochs a run (>= 2)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="per worker; the single process runs twice this")
    parser.add_argument("--threads", type=int, default=2,
                        help="OMP_NUM_THREADS of the single process (default 2: both cores)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--workdir", default=None, help="folder for data and checkpoints")
    parser.add_argument("--json", default="", help="write the figures here too")
    return parser


def make_data(workdir: str, images: int, size: int) -> str:
    """Synthetic VOC → train.rec; returns its path."""
    generate(SynthConfig(root=workdir, num_train=images, num_test=4, min_image_size=size,
                         max_image_size=size, classes=CLASSES, min_objects=1, max_objects=5,
                         difficult_fraction=0.0, seed=11, progress=False))
    summary = prepare_dataset("pascal", "trainval", os.path.join(workdir, "VOCdevkit"),
                              os.path.join(workdir, "train.lst"), year="2007", shuffle=True,
                              class_names=list(CLASSES), seed=0, progress=False)
    return summary["rec"]


def train_args(args: argparse.Namespace, rec: str, prefix: str, kv_store: str,
               batch_size: int) -> list[str]:
    return ["python", "train.py", "--train-path", rec, "--val-path", "", "--network", "tiny",
            "--data-shape", str(args.data_shape), "--num-class", str(len(CLASSES)),
            "--class-names", ",".join(CLASSES), "--pretrained", "", "--end-epoch",
            str(args.epochs), "--frequent", "1000", "--log", "", "--batch-size",
            str(batch_size), "--kv-store", kv_store, "--prefix", prefix]


def epoch_seconds(output: str) -> float:
    """Median epoch time after the first; per epoch the slowest worker's."""
    by_epoch: dict[int, float] = {}
    for line in output.splitlines():
        match = re.search(r"Epoch\[(\d+)\] Time cost=([\d.]+)", line)
        if match:
            epoch, seconds = int(match.group(1)), float(match.group(2))
            by_epoch[epoch] = max(by_epoch.get(epoch, 0.0), seconds)
    later = [seconds for epoch, seconds in sorted(by_epoch.items()) if epoch > 0]
    if not later:
        raise RuntimeError("no 'Epoch[k] Time cost' line after the first epoch:\n"
                           + output[-2000:])
    return statistics.median(later)


def run_one(name: str, args: argparse.Namespace, hosts: SshHosts, rec: str,
            workdir: str) -> dict:
    prefix = os.path.join(workdir, name.replace(" ", "_"), "ssd")
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    env = hosts.env(dict(os.environ, OMP_NUM_THREADS="1"))
    if name.startswith("1 process"):
        env["OMP_NUM_THREADS"] = "1" if name.endswith("1 thread") else str(args.threads)
        argv = [sys.executable] + train_args(args, rec, prefix, "local", 2 * args.batch_size)[1:]
    else:
        kv_store = name.split()[-1]
        argv = [sys.executable, "-m", "tools.launch", "--launcher", "ssh", "-H",
                str(hosts.hostfile), "-n", "2", "-s", "2", "--host-ip", "127.0.0.1",
                "--env", "OMP_NUM_THREADS=1", "--timeout", "900"] \
            + train_args(args, rec, prefix, kv_store, args.batch_size)
    start = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1000)
    wall = time.monotonic() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed with status {done.returncode}:\n{output[-3000:]}")
    epoch = epoch_seconds(output)
    return {"name": name, "wall_s": wall, "epoch_s": epoch, "images_per_s": args.images / epoch}


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.epochs < 2:
        print("error: --epochs must be >= 2 (the first epoch is warm-up)", file=sys.stderr)
        return 2
    workdir = args.workdir or tempfile.mkdtemp(prefix="ssh-cost-")
    rec = make_data(workdir, args.images, args.data_shape)
    names = ["1 process", "1 process, 1 thread", "2 hosts dist_sync", "2 hosts dist_async"]
    results: dict[str, list[dict]] = {name: [] for name in names}
    with SshHosts() as hosts:
        for round_no in range(args.rounds):
            for name in names:
                result = run_one(name, args, hosts, rec, workdir)
                results[name].append(result)
                print(f"round {round_no + 1} {name}: wall {result['wall_s']:.1f} s, epoch "
                      f"{result['epoch_s']:.2f} s, {result['images_per_s']:.0f} img/s",
                      flush=True)
    load = os.getloadavg()
    print(f"\n{args.images} images {args.data_shape} px, tiny, {args.epochs} epochs, total batch "
          f"{2 * args.batch_size}; median of {args.rounds} round(s); load average "
          f"{load[0]:.2f} {load[1]:.2f}\n")
    print("| setting | wall, whole run (s) | epoch (s) | images/s | vs 1 process |")
    print("|---|---|---|---|---|")
    base = statistics.median(r["epoch_s"] for r in results["1 process"])
    for name in names:
        wall = statistics.median(r["wall_s"] for r in results[name])
        epoch = statistics.median(r["epoch_s"] for r in results[name])
        print(f"| {name} | {wall:.1f} | {epoch:.2f} | {args.images / epoch:.0f} | "
              f"{epoch / base:.2f}x the epoch time |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "load": load, "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
