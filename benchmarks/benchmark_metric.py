"""Time MApMetric / VOC07MApMetric update + get on synthetic detections.

Usage: python benchmarks/benchmark_metric.py [--images 5000] [--dets 100] [--gts 10]
       [--classes 20] [--batch-size 32]
Prints the seconds spent in ``update`` (all batches) and in ``get`` for both metrics, and the
CPU seconds of both (steadier than wall time on a loaded machine).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads


def get_parser() -> argparse.ArgumentParser:
    """Command-line flags of the metric benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images scored (default 5000)")
    parser.add_argument("--dets", type=int, default=100, help="detections per image (default 100)")
    parser.add_argument("--gts", type=int, default=10, help="label rows per image, -1 padded (default 10)")
    parser.add_argument("--classes", type=int, default=20, help="number of classes (default 20)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per update (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def make_data(num_images: int, num_dets: int, num_gts: int, num_classes: int, seed: int):
    """Random labels (num_images, num_gts, 6) and detections (num_images, num_dets, 6)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    labels = np.full((num_images, num_gts, 6), -1.0, dtype=np.float32)
    counts = rng.integers(1, num_gts + 1, num_images)
    xy = rng.uniform(0, 0.6, (num_images, num_gts, 2))
    wh = rng.uniform(0.05, 0.4, (num_images, num_gts, 2))
    rows = np.arange(num_gts)[None, :] < counts[:, None]              # (I, G)
    filled = np.concatenate([rng.integers(0, num_classes, (num_images, num_gts, 1)), xy, xy + wh,
                             (rng.random((num_images, num_gts, 1)) < 0.1)], axis=2)
    labels[rows] = filled[rows]
    src = rng.integers(0, num_gts, (num_images, num_dets)) % counts[:, None]
    boxes = np.take_along_axis(labels[:, :, 1:5], src[:, :, None], axis=1)
    boxes = boxes + rng.normal(0, 0.05, boxes.shape)
    cls = np.take_along_axis(labels[:, :, 0], src, axis=1)
    cls = np.where(rng.random(cls.shape) < 0.3, rng.integers(0, num_classes, cls.shape), cls)
    dets = np.concatenate([cls[:, :, None], rng.random((num_images, num_dets, 1)), boxes], axis=2)
    return labels, dets.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the figures."""
    args = get_parser().parse_args(argv)
    setup_threads()
    from evaluate.eval_metric import MApMetric, VOC07MApMetric
    labels, dets = make_data(args.images, args.dets, args.gts, args.classes, args.seed)
    print(f"{args.images} images x {args.dets} detections, {args.gts} label rows, "
          f"{args.classes} classes, batch {args.batch_size}")
    for metric_cls in (MApMetric, VOC07MApMetric):
        metric = metric_cls(class_names=[f"c{i}" for i in range(args.classes)])
        cpu_start = time.process_time()
        start = time.perf_counter()
        for first in range(0, args.images, args.batch_size):
            last = first + args.batch_size
            metric.update([labels[first:last]], [dets[first:last]])
        update_s = time.perf_counter() - start
        start = time.perf_counter()
        _, values = metric.get()
        get_s = time.perf_counter() - start
        cpu_s = time.process_time() - cpu_start
        print(f"{metric_cls.__name__:15s} update {update_s:.3f} s  get {get_s:.3f} s  "
              f"total {update_s + get_s:.3f} s  CPU {cpu_s:.3f} s  mAP {values[-1]:.4f}")


if __name__ == "__main__":
    main()
