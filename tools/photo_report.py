"""Where a trained detector fails on a test record: per-class AP, confusions, misses, a picture.

Runs the checkpoint over ``--rec-path`` as ``evaluate.py`` does (same iterator, same metric),
keeps every photo's detections, and writes to ``--output-dir``:

* ``report.txt`` (also printed): the per-class VOC07 AP table, the class pairs most confused
  (a box of one class detected as another at IoU >= 0.5), the boxes not found by size band;
* ``report.json``: the same numbers, and the boxes not found per photo;
* ``worst_best.jpg``: the test photos with the most boxes not found above the best ones.

The analysis is ``evaluate/photo_report.py``. Example (``tools/train_photos.py`` runs it)::

    python tools/photo_report.py --rec-path output/photos/test.rec --network tiny_photo \\
        --data-shape 256 --prefix output/photos/model/ssd_tiny_photo_256 --epoch 12 \\
        --class-names raccoon --output-dir output/photos/report
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads  # noqa: E402

setup_threads()

from config.mxnet_compat import mx  # noqa: E402
import numpy as np  # noqa: E402

from training.checkpoint import atomic_write  # noqa: E402
from dataset.imdb import load_class_names  # noqa: E402
from evaluate import add_anchors_arg, add_flip_test_arg  # noqa: E402
from evaluate.photo_report import (analyse, format_report, pick_worst_best,  # noqa: E402
                                   worst_best_picture)


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rec-path", required=True, help="test record (with its .idx)")
    p.add_argument("--network", default="tiny_photo", help="network preset of the checkpoint")
    p.add_argument("--data-shape", type=int, default=256, help="network input side in px")
    p.add_argument("--prefix", required=True, help="checkpoint prefix (as evaluate.py)")
    p.add_argument("--epoch", type=int, required=True, help="checkpoint epoch")
    p.add_argument("--class-names", required=True, help="comma list or file")
    add_anchors_arg(p)
    add_flip_test_arg(p)
    p.add_argument("--cpu", action="store_true", help="run on CPU (the only choice here)")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="a detection counts from this score (demo.py --thresh)")
    p.add_argument("--iou-thresh", type=float, default=0.5, help="IoU of a match")
    p.add_argument("--output-dir", required=True, help="folder for report.txt/.json and the picture")
    p.add_argument("--no-pictures", dest="pictures", action="store_false",
                   help="skip worst_best.jpg")
    return p


class _Collect(mx.metric.EvalMetric):
    """Keeps each photo's label and detections and feeds the mAP metric."""

    def __init__(self, voc_metric) -> None:
        self.voc_metric = voc_metric
        self.labels: list[np.ndarray] = []
        self.detections: list[np.ndarray] = []
        super().__init__("collect")             # calls reset()

    def reset(self) -> None:
        self.voc_metric.reset()
        self.labels, self.detections = [], []

    def update(self, labels, preds) -> None:
        self.voc_metric.update(labels, preds)
        self.labels += list(labels[0].asnumpy())          # (B, M, 6) -> B x (M, 6)
        self.detections += list(preds[0].asnumpy())       # (B, N, 6) -> B x (N, 6)


def collect(args: argparse.Namespace, names: list[str]) -> tuple[dict, _Collect]:
    """Run the checkpoint over the record; per-class AP and the collected photos."""
    from config.config import cfg
    from dataset.iterator import DetRecordIter
    from dataset.recordio_utils import count_records
    from evaluate.evaluate_net import (build_metric, check_params, load_inference_symbol,
                                       load_params, resolve_prefix, score_detections)
    from symbol.anchors import load_anchor_file

    side = args.data_shape
    prefix = resolve_prefix(args.prefix, args.network, side, args.epoch)
    symbol = load_inference_symbol(args.network, (side, side), len(names), prefix, 0.45, False,
                                   400, False,
                                   load_anchor_file(args.anchors) if args.anchors else None,
                                   flip_test=args.flip_test)
    arg_params, aux_params = load_params(prefix, args.epoch)
    batch_size = max(1, min(8, count_records(args.rec_path)))
    check_params(symbol, arg_params, aux_params, (batch_size, 3, side, side), args.network)
    data = DetRecordIter(args.rec_path, batch_size, (3, side, side), **cfg.valid)
    module = mx.mod.Module(symbol, data_names=("data",), label_names=None, context=mx.cpu())
    module.bind(data_shapes=data.provide_data, for_training=False)
    module.set_params(arg_params, aux_params, allow_missing=False, force_init=True)
    voc = build_metric(len(names), names, args.iou_thresh, False, True)
    collected = _Collect(voc)
    score_detections(module, data, collected)
    _, values = voc.get()
    class_ap = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, values[:-1])}
    return class_ap, collected


def record_images(rec_path: str, count: int) -> list[np.ndarray]:
    """The first ``count`` images of a record, BGR, in record order (as scored)."""
    from dataset.recordio_utils import read_idx
    import cv2
    reader = mx.recordio.MXIndexedRecordIO(os.path.splitext(rec_path)[0] + ".idx", rec_path, "r")
    try:
        images = []
        for key, _ in read_idx(os.path.splitext(rec_path)[0] + ".idx")[:count]:
            _, encoded = mx.recordio.unpack(reader.read_idx(key))
            images.append(cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR))
    finally:
        reader.close()
    return images


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        names = load_class_names(args.class_names)
        class_ap, collected = collect(args, names)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    labels, dets = collected.labels, collected.detections
    analysis = analyse(labels, dets, args.iou_thresh, args.score_thresh)
    text = format_report(class_ap, analysis, names, args.iou_thresh, args.score_thresh)
    os.makedirs(args.output_dir, exist_ok=True)
    boxes = [int((lb[:, 0] >= 0).sum()) for lb in labels]
    worst, best = pick_worst_best(analysis["missed_per_photo"], boxes)
    if args.pictures:
        path = os.path.join(args.output_dir, "worst_best.jpg")
        images = record_images(args.rec_path, len(labels))
        worst_best_picture(images, labels, dets, worst, best, names, path, args.score_thresh)
        text += f"\npicture of the worst test photos above the best: {path}"
    print(text)
    confusions = [{"true": names[a], "detected_as": names[b], "count": n}
                  for (a, b), n in sorted(analysis["confusions"].items())]
    report = {"class_ap": class_ap, "worst": worst, "best": best, "confusions": confusions}
    report.update({k: analysis[k] for k in ("bands", "missed_per_photo", "found", "boxes")})
    for name, content in (("report.txt", text + "\n"), ("report.json", json.dumps(report, indent=2))):
        atomic_write(os.path.join(args.output_dir, name),
                     lambda tmp, content=content: Path(tmp).write_text(content))
    return 0


if __name__ == "__main__":
    sys.exit(main())
