"""Run ``train.py`` for one batch on every network preset and print a table.

Acceptance check of the network zoo through the real CLI: for each (preset, input side) it
generates a tiny synthetic record whose images already have that side, runs ::

    python train.py --network NAME --data-shape S --train-path ... --val-path '' \\
        --batch-size B --end-epoch 1 --gpus '' --pretrained '' --freeze '' ...

as a subprocess with ``OMP_NUM_THREADS`` set (2 by default), and reports the anchor count,
the wall time of the whole command (interpreter start, graph build, one batch, checkpoint),
the exit status and whether ``-0001.params`` and ``-symbol.json`` were written.

Example::

    python -m benchmarks.check_presets                       # every preset, 1 image per run
    python -m benchmarks.check_presets --only tiny,resnet50 --batch-size 2
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(REPO, "train.py")

# (network, side) pairs checked by default: every shape of every preset of docs/NETWORKS.md,
# and two sides of the tiny preset (it accepts every multiple of 32 from 64 to 512).
DEFAULT_CASES: tuple[tuple[str, int], ...] = (
    ("tiny", 128), ("tiny", 512),
    ("mobilenet", 300), ("mobilenet", 512),
    ("inceptionv3", 299), ("inceptionv3", 512),
    ("resnet50", 300), ("resnet50", 512),
    ("resnet101", 300), ("resnet101", 512),
    ("vgg16_reduced", 300), ("vgg16_reduced", 512),
)
CLASSES = ("circle", "square")  # 2 object classes keep the heads small


@dataclass
class PresetRun:
    """Outcome of one ``train.py`` run."""

    network: str
    side: int
    anchors: int
    wall_s: float
    returncode: int
    params_written: bool
    symbol_written: bool
    stderr_tail: str = ""

    @property
    def checkpoint_written(self) -> bool:
        return self.params_written and self.symbol_written


def make_record(folder: str, side: int, num_images: int, seed: int = 0) -> str:
    """Generate ``num_images`` synthetic VOC images of ``side`` px and pack them; return the .rec.

    Parameters
    ----------
    folder : str
        Empty or new folder; the VOC tree, ``train.lst``, ``.rec`` and ``.idx`` go there.
    side : int
        Width and height of every image in pixels.
    num_images : int
        Images in the record.
    seed : int
        Seed of the generator.
    """
    from tools.make_synthetic_voc import SynthConfig, generate
    from tools.prepare_dataset import prepare_dataset

    generate(SynthConfig(root=folder, num_train=num_images, num_test=0, min_image_size=side,
                         max_image_size=side, classes=CLASSES, min_objects=1, max_objects=3,
                         difficult_fraction=0.0, seed=seed, progress=False))
    summary = prepare_dataset("pascal", "trainval", os.path.join(folder, "VOCdevkit"),
                              os.path.join(folder, "train.lst"), year="2007", shuffle=False,
                              class_names=list(CLASSES), progress=False)
    return summary["rec"]


def train_command(network: str, side: int, rec_path: str, prefix: str, batch_size: int,
                  python: str = sys.executable) -> list[str]:
    """The ``train.py`` command line of one check (one epoch of one batch, CPU, no validation)."""
    return [python, TRAIN_PY, "--network", network, "--data-shape", str(side),
            "--train-path", rec_path, "--val-path", "", "--num-class", str(len(CLASSES)),
            "--class-names", ",".join(CLASSES), "--pretrained", "", "--freeze", "",
            "--batch-size", str(batch_size), "--end-epoch", "1", "--gpus", "",
            "--lr", "0.001", "--seed", "1", "--frequent", "1", "--prefix", prefix, "--log", ""]


def checkpoint_prefix(prefix: str, network: str, side: int) -> str:
    """Training's rule: ``--prefix + '_' + network + '_' + data_shape``."""
    return f"{prefix}_{network}_{side}"


def run_preset(network: str, side: int, rec_path: str, work_dir: str, batch_size: int,
               omp_threads: int, timeout_s: float) -> PresetRun:
    """Run ``train.py`` for one preset in a subprocess and inspect the files it wrote."""
    from symbol.symbol_factory import count_anchors

    prefix = os.path.join(work_dir, "ssd")
    env = dict(os.environ, OMP_NUM_THREADS=str(omp_threads), MPLBACKEND="Agg")
    start = time.perf_counter()
    try:
        proc = subprocess.run(train_command(network, side, rec_path, prefix, batch_size),
                              cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
        returncode, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as err:
        returncode, stderr = -9, f"timed out after {timeout_s:.0f} s\n{err.stderr or ''}"
    wall_s = time.perf_counter() - start
    saved = checkpoint_prefix(prefix, network, side)
    return PresetRun(network, side, count_anchors(network, side), wall_s, returncode,
                     os.path.isfile(f"{saved}-0001.params"),
                     os.path.isfile(f"{saved}-symbol.json"),
                     stderr_tail="\n".join(str(stderr).strip().splitlines()[-5:]))


def format_table(runs: list[PresetRun]) -> str:
    """Markdown table of the runs."""
    lines = ["| preset | shape | anchors | wall s | exit | checkpoint written |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        written = "yes" if run.checkpoint_written else (
            f"no (params {'yes' if run.params_written else 'no'}, "
            f"symbol {'yes' if run.symbol_written else 'no'})")
        lines.append(f"| {run.network} | {run.side} | {run.anchors:,} | {run.wall_s:.1f} | "
                     f"{run.returncode} | {written} |")
    return "\n".join(lines)


def parse_cases(only: str) -> list[tuple[str, int]]:
    """``--only`` value -> cases: comma list of ``network`` or ``network:side``."""
    if not only:
        return list(DEFAULT_CASES)
    cases: list[tuple[str, int]] = []
    for item in (s.strip() for s in only.split(",") if s.strip()):
        name, _, side = item.partition(":")
        if side:
            if not side.isdigit():
                raise ValueError(f"--only {only!r}: side {side!r} of {item!r} is not an integer")
            cases.append((name, int(side)))
            continue
        matched = [case for case in DEFAULT_CASES if case[0] == name]
        if not matched:
            valid = sorted({case[0] for case in DEFAULT_CASES})
            raise ValueError(f"--only {only!r}: unknown preset {name!r}; valid: "
                             f"{', '.join(valid)} (or name:side)")
        cases.extend(matched)
    return cases


def get_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="",
                        help="comma list of presets or preset:side (default: every preset "
                             "and shape)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per batch = images in each record (default: 1)")
    parser.add_argument("--omp-threads", type=int, default=2,
                        help="OMP_NUM_THREADS of each train.py run (default: 2)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed per train.py run (default: 300)")
    parser.add_argument("--keep", default="",
                        help="folder to keep the records and checkpoints in (default: a "
                             "temporary folder, removed at the end)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run every case and print the table; exit status 1 if any run failed."""
    args = get_parser().parse_args(argv)
    from config.runtime import setup_threads
    setup_threads()  # before symbol_factory imports mxnet (anchor counts)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        cases = parse_cases(args.only)
        if args.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = args.keep or tempfile.mkdtemp(prefix="check_presets_")
    os.makedirs(root, exist_ok=True)
    runs: list[PresetRun] = []
    try:
        records: dict[int, str] = {}
        for network, side in cases:
            if side not in records:
                records[side] = make_record(os.path.join(root, f"data_{side}"), side,
                                            args.batch_size)
            run = run_preset(network, side, records[side],
                             os.path.join(root, f"{network}_{side}"), args.batch_size,
                             args.omp_threads, args.timeout)
            runs.append(run)
            status = "ok" if run.returncode == 0 and run.checkpoint_written else "FAILED"
            print(f"{network} {side}: {run.wall_s:.1f} s, exit {run.returncode}, {status}",
                  flush=True)
            if status != "ok":
                print(run.stderr_tail, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"train.py, one batch of {args.batch_size} image(s), OMP_NUM_THREADS="
          f"{args.omp_threads}, 2 classes, CPU")
    print(format_table(runs))
    failed = [r for r in runs if r.returncode != 0 or not r.checkpoint_written]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
