"""The equality check of an ONNX export against MXNet's deploy graph, with its figures.

    python -m benchmarks.onnx_check --deploy model/deploy_ssd_tiny_photo_256 --epoch 12 \\
        --images ../shared/data/raccoon/VOCdevkit/VOC2007/JPEGImages \\
        --list output/photos/test.lst --rec output/photos/test.rec --network tiny_photo \\
        --class-names raccoon

Runs MXNet's deploy checkpoint (``evaluate.detector.Detector``) and the ``.onnx`` beside it
(``export.onnx_detector.OnnxDetector``) on the same photos and prints: the rows kept by MXNet,
how many the ONNX file gives at the same place, how many elsewhere (near-equal scores that
swapped places), the rows found by one side only, and the largest score and corner differences;
with ``--rec``, the VOC07 mAP of both on that record (``evaluate.py --deploy`` and ``--onnx``).
"""
from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads  # noqa: E402


def photo_paths(images: str, list_path: str) -> list[str]:
    """The photos of a folder, or those named by a ``.lst`` (its last column, under ``images``'s
    devkit root) when given."""
    if list_path:
        with open(list_path) as f:
            names = [os.path.basename(line.rstrip("\n").split("\t")[-1]) for line in f
                     if line.strip()]
        return [os.path.join(images, n) for n in names]
    return sorted(os.path.join(images, n) for n in os.listdir(images)
                  if n.lower().endswith((".jpg", ".jpeg", ".png")))


def voc07_map(rec: str, network: str, side: int, class_names: str, extra: list[str]) -> float:
    """mAP printed by ``evaluate.py`` (VOC07, whole record) with ``extra`` flags."""
    import contextlib
    import importlib.util
    import io
    import json
    import tempfile
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
                        "evaluate.py")
    spec = importlib.util.spec_from_file_location("evaluate_cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    names = class_names.split(",")
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(["--rec-path", rec, "--network", network, "--data-shape", str(side),
                           "--num-class", str(len(names)), "--class-names", class_names,
                           "--cpu", "--batch-size", "8", "--output-dir", folder] + extra)
        if status != 0:
            raise SystemExit(f"evaluate.py {' '.join(extra)} failed with status {status}")
        with open(os.path.join(folder, "results.json")) as f:
            return float(json.load(f)["mAP"])


def main(argv: list[str] | None = None) -> int:
    """Compare and print; returns 1 when a row is found by one side only."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deploy", required=True, help="deploy checkpoint prefix (deploy.py)")
    p.add_argument("--epoch", type=int, required=True, help="its epoch")
    p.add_argument("--onnx", default="", help="the ONNX file (default <deploy>-<epoch>.onnx)")
    p.add_argument("--images", required=True, help="folder of photos")
    p.add_argument("--list", default="", help=".lst naming the photos to use (default all)")
    p.add_argument("--rec", default="", help="record for the mAP both ways (default none)")
    p.add_argument("--network", default="", help="preset (for evaluate.py)")
    p.add_argument("--class-names", default="", help="comma list (for evaluate.py)")
    p.add_argument("--threads", type=int, default=2, help="threads")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    from evaluate.detector import Detector, load_image
    from export.onnx_detector import OnnxDetector, match_detections
    onnx_path = args.onnx or f"{args.deploy}-{args.epoch:04d}.onnx"
    onnx_detector = OnnxDetector(onnx_path, batch_size=8, threads=args.threads)
    side = onnx_detector.data_shape
    photos = photo_paths(args.images, args.list)
    arrays = [load_image(path) for path in photos]
    mxnet = Detector(None, args.deploy, args.epoch, side, batch_size=8,
                     mean_pixels=onnx_detector.meta["mean_pixels"]).detect_arrays(arrays)
    report = match_detections(mxnet, onnx_detector.detect_arrays(arrays))
    print(f"{len(photos)} photos, {report['rows']} rows kept by MXNet: {report['in_place']} "
          f"at the same place in ONNX, {report['swapped']} swapped with a near-equal score, "
          f"{len(report['tie_choice'])} pairs of equal-score boxes where NMS kept the other "
          f"one, {len(report['at_cut'])} on one side only at the lowest kept score (the top-k "
          f"cut), "
          f"{len(report['unmatched_reference'])} other MXNet-only, "
          f"{len(report['unmatched_other'])} other ONNX-only")
    print(f"largest score difference {report['max_score_diff']:.2e}, largest corner difference "
          f"{report['max_corner_diff']:.2e}")
    for image, row, other in report["tie_choice"][:10]:
        print(f"  equal-score pair: {photos[image]} MXNet {[round(v, 6) for v in row]} ONNX "
              f"{[round(v, 6) for v in other]}")
    for image, side_name, row in report["at_cut"][:10]:
        print(f"  at the cut, {'MXNet' if side_name == 'reference' else 'ONNX'} only: "
              f"{photos[image]} {[round(v, 6) for v in row]}")
    for side_name in ("unmatched_reference", "unmatched_other"):
        for image, row in report[side_name][:10]:
            print(f"  {side_name}: {photos[image]} {[round(v, 6) for v in row]}")
    if args.rec:
        maps = [voc07_map(args.rec, args.network, side[0], args.class_names, extra) for extra in
                (["--prefix", args.deploy, "--epoch", str(args.epoch), "--deploy"],
                 ["--onnx", onnx_path])]
        print(f"VOC07 mAP on {args.rec}: MXNet {maps[0]:.6f}, ONNX {maps[1]:.6f}, difference "
              f"{maps[1] - maps[0]:+.2e}")
    return 1 if report["unmatched_reference"] or report["unmatched_other"] else 0


if __name__ == "__main__":
    sys.exit(main())
