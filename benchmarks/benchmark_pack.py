"""Packing speed of tools/pack_rec.py by number of worker processes.

Generates VOC-sized synthetic images (sides 375-500 px: on average the 187,500 pixels of a
500x375 VOC image), writes their .lst once, then packs the same list with 1, 2, ... worker
processes, the counts interleaved over ``--repeat`` rounds so that background load hits each
alike; the best round of each is reported, with the load average. Run from the repository root::

    python -m benchmarks.benchmark_pack --num-images 2000 --threads 1,2 --repeat 2 --json pack.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Sequence

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import available_cores, setup_threads


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--num-images", type=int, default=2000, help="synthetic images to pack")
    p.add_argument("--min-side", type=int, default=375, help="smallest image side, px")
    p.add_argument("--max-side", type=int, default=500, help="largest image side, px")
    p.add_argument("--threads", default="1,2", help="comma list of worker-process counts")
    p.add_argument("--repeat", type=int, default=2, help="rounds of every count (best kept)")
    p.add_argument("--resize", type=int, default=0, help="pack_rec --resize (0: keep size)")
    p.add_argument("--workdir", default="", help="keep the data here (default: a temp folder)")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    return p


def parse_counts(value: str) -> list[int]:
    """``'1,2'`` -> ``[1, 2]``; every count must be a positive integer."""
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--threads {value!r}: need a comma list of integers, e.g. 1,2") from None
    if not counts or min(counts) < 1:
        raise ValueError(f"--threads {value!r}: every count must be >= 1")
    return counts


def make_list(workdir: str, num_images: int, min_side: int, max_side: int) -> tuple[str, str]:
    """Generate the images and their .lst; return (lst path, root of its relative paths)."""
    from tools.make_synthetic_voc import SynthConfig, generate
    from tools.prepare_dataset import prepare_dataset

    generate(SynthConfig(root=workdir, num_train=num_images, num_test=0,
                         min_image_size=min_side, max_image_size=max_side, seed=0,
                         progress=False))
    devkit = os.path.join(workdir, "VOCdevkit")
    lst = os.path.join(workdir, "bench.lst")
    names = os.path.join(workdir, "class_names.txt")
    prepare_dataset("pascal", "trainval", devkit, lst, year="2007", shuffle=False,
                    class_names=names, progress=False)
    return lst, devkit


def time_pack(lst: str, root: str, num_thread: int, resize: int) -> float:
    """Seconds to pack ``lst`` into a scratch record with ``num_thread`` processes."""
    from tools.pack_rec import pack_rec

    rec = os.path.join(os.path.dirname(lst), f"pack_{num_thread}.rec")
    start = time.perf_counter()
    pack_rec(lst, root, rec, num_thread=num_thread, resize=resize, progress=False)
    elapsed = time.perf_counter() - start
    for path in (rec, rec[:-4] + ".idx"):
        os.remove(path)
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (0 ok, 2 bad input)."""
    args = get_parser().parse_args(argv)
    try:
        counts = parse_counts(args.threads)
        if args.num_images < 1 or args.repeat < 1:
            raise ValueError(f"--num-images {args.num_images} / --repeat {args.repeat}: "
                             f"need at least 1")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    setup_threads()
    workdir = args.workdir or tempfile.mkdtemp(prefix="ssd_pack_bench_")
    try:
        gen_start = time.perf_counter()
        lst, root = make_list(workdir, args.num_images, args.min_side, args.max_side)
        print(f"generated {args.num_images} images ({args.min_side}-{args.max_side} px sides) "
              f"in {time.perf_counter() - gen_start:.1f} s")
        rounds: dict[int, list[float]] = {n: [] for n in counts}
        loads = [os.getloadavg()[0]]
        for _ in range(args.repeat):
            for n in counts:
                rounds[n].append(time_pack(lst, root, n, args.resize))
                loads.append(os.getloadavg()[0])
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    best = {n: min(times) for n, times in rounds.items()}
    base = best[counts[0]]
    print(f"cores {available_cores()}, load average {min(loads):.2f}-{max(loads):.2f}")
    print(f"{'processes':>9}  {'best s':>8}  {'images/s':>9}  {f'speed-up vs {counts[0]}':>14}  rounds")
    for n in counts:
        print(f"{n:>9}  {best[n]:>8.2f}  {args.num_images / best[n]:>9.1f}  "
              f"{base / best[n]:>14.2f}x  {', '.join(f'{t:.2f}' for t in rounds[n])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"num_images": args.num_images, "sides": [args.min_side, args.max_side],
                       "resize": args.resize, "rounds_s": {str(n): t for n, t in rounds.items()},
                       "best_s": {str(n): t for n, t in best.items()},
                       "speedup": {str(n): base / best[n] for n in counts},
                       "load_average": [min(loads), max(loads)]}, f, indent=2)
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
