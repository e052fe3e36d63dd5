"""Cost of the Python record check (``dataset/record_check.py``) beside one MXNet read pass.

Times, side by side on the same ``.rec``: the check with image decoding (what train.py and
evaluate.py run once per file, then cached), the check without decoding (structure and labels
only), the cached check, and one pass of MXNet's C++ ``ImageDetRecordIter`` over the same
records (decode + resize, no augmentation), and prints the ratios.

Example::

    python benchmarks/record_check.py data/train.rec --data-shape 300 --repeat 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): the repository root first
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def get_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rec", help=".rec file (with its .idx)")
    parser.add_argument("--data-shape", type=int, default=300, help="MXNet read side (default 300)")
    parser.add_argument("--batch-size", type=int, default=32, help="MXNet batch (default 32)")
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs (default 2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the timings; returns the exit status."""
    args = get_parser().parse_args(argv)
    setup_threads()
    from dataset.iterator import DetRecordIter
    from dataset.record_check import check_records, scan_records

    if not os.path.isfile(args.rec):
        print(f"error: {args.rec}: file not found", file=sys.stderr)
        return 2
    report = scan_records(args.rec)
    num = report.num_records
    size_mb = os.path.getsize(args.rec) / 2**20
    full = _best(lambda: scan_records(args.rec, decode=True), args.repeat)
    light = _best(lambda: scan_records(args.rec, decode=False), args.repeat)
    check_records(args.rec)                          # fill the cache
    cached = _best(lambda: check_records(args.rec), args.repeat)

    def mxnet_pass() -> None:
        it = DetRecordIter(args.rec, args.batch_size, args.data_shape, shuffle=False)
        for batch in it:
            batch.data[0].wait_to_read()

    mxnet = _best(mxnet_pass, args.repeat)
    print(f"{args.rec}: {num} records, {size_mb:.1f} MiB, {len(report.bad)} bad")
    for name, seconds in (("check with image decode", full), ("check without decode", light),
                          ("cached check", cached),
                          (f"MXNet ImageDetRecordIter pass ({args.data_shape} px)", mxnet)):
        print(f"{name:<45} {seconds:8.3f} s  {1e3 * seconds / num:7.3f} ms/record  "
              f"{seconds / mxnet:6.2f} x MXNet pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
