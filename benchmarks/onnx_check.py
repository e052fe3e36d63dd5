"""ONNX export checks: every preset through the exporter, or a trained model against MXNet.

Two questions, one flag each:

``--zoo``: every preset and shape of the zoo exports, passes the checker, runs in onnxruntime
at batch 1 and 2, and its class probabilities and box offsets match MXNet's (random fan-in
weights, 20 classes)::

    python -m benchmarks.onnx_check --zoo                  # all presets
    python -m benchmarks.onnx_check --zoo --only tiny:160,mobilenet:300

It prints one line per preset: anchors, nodes, export seconds, file MB, the largest absolute
difference of ``cls_prob`` and of ``multibox_loc_pred`` against MXNet on the same pixels, and
the detection rows per image. A model with fitted anchors (``train.py --anchors``) is included:
``tiny_photo 256`` with the sizes and ratios of ``FITTED``.

``--deploy``: the equality check of a trained model's ONNX export against MXNet's deploy graph,
with its figures::

    python -m benchmarks.onnx_check --deploy model/deploy_ssd_tiny_photo_256 --epoch 12 \\
        --images ../shared/data/raccoon/VOCdevkit/VOC2007/JPEGImages \\
        --list output/photos/test.lst --rec output/photos/test.rec --network tiny_photo \\
        --class-names raccoon

Runs MXNet's deploy checkpoint (``evaluate.detector.Detector``) and the ``.onnx`` beside it
(``export.onnx_detector.OnnxDetector``) on the same photos and prints: the rows kept by MXNet,
how many the ONNX file gives at the same place, how many elsewhere (near-equal scores that
swapped places), the rows found by one side only, and the largest score and corner differences;
with ``--rec``, the VOC07 mAP of both on that record (``evaluate.py --deploy`` and ``--onnx``).

(Until issue 37 the zoo check was ``benchmarks/onnx_zoo.py``, with ``--only`` and ``--threads``.)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads  # noqa: E402


# ---- --zoo: every preset through the exporter ----------------------------------------------
ZOO = ["vgg16_reduced:300", "vgg16_reduced:512", "resnet50:300", "resnet50:512",
       "resnet101:300", "resnet101:512", "inceptionv3:299", "inceptionv3:512",
       "mobilenet:300", "mobilenet:512", "tiny:160", "tiny_photo:256", "tiny_photo:256:fitted"]
# anchors as tools/anchors.py --output writes them (5 layers of tiny_photo)
FITTED = {"sizes": [[.1, .15], [.2, .3], [.4, .5], [.6, .7], [.8, .9]],
          "ratios": [[1, 1.6, 0.62, 2.4]] * 5}          # 5 anchors per place, not 4


def check_preset(network: str, side: int, overrides: dict, num_classes: int = 20) -> dict:
    """Export one preset with random weights and compare it with MXNet."""
    from config.mxnet_compat import mx
    import numpy as np
    import onnxruntime as ort
    from benchmarks.onnx_speed import random_weights
    from export.onnx_file import build_onnx_model
    from export.onnx_graph import value_info
    from symbol.symbol_factory import get_symbol
    symbol = get_symbol(network, side, num_classes, **overrides)
    args, auxs = random_weights(symbol, side)
    start = time.perf_counter()
    model = build_onnx_model(symbol, args, auxs, (side, side), (123, 117, 104), {})
    export_s = time.perf_counter() - start
    probe = ("cls_prob", "multibox_loc_pred")
    for name in probe:
        model.graph.output.append(value_info(name, None))
    blob = model.SerializeToString()
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(1).integers(0, 256, (2, 3, side, side)).astype(np.float32)
    dets, *heads = session.run(None, {"data": pixels})
    single = session.run(None, {"data": pixels[:1]})[0]
    internals = symbol.get_internals()
    group = mx.sym.Group([internals[f"{n}_output"] for n in probe])
    mean = np.array([123, 117, 104], np.float32).reshape(1, 3, 1, 1)
    ref = group.bind(mx.cpu(), {"data": mx.nd.array(pixels - mean), **args},
                     aux_states=auxs).forward(is_train=False)
    diffs = [float(np.abs(a - b.asnumpy()).max()) for a, b in zip(heads, ref)]
    return {"anchors": heads[0].shape[2], "nodes": len(model.graph.node),
            "export_s": export_s, "mb": len(blob) / 2 ** 20, "cls_diff": diffs[0],
            "loc_diff": diffs[1], "rows": dets.shape[1],
            "batch1_equal": bool(np.abs(single[0] - dets[0]).max() <= 1e-4)}


def check_zoo(only: str) -> int:
    """Check the presets and print their table; 1 when one fails to export or differs by more
    than 1e-4."""
    failed = 0
    print(f"{'preset':<24} {'anchors':>7} {'nodes':>5} {'export s':>8} {'MB':>6} "
          f"{'cls_prob diff':>13} {'loc diff':>9} {'rows':>4} batch1")
    for item in (only.split(",") if only else ZOO):
        network, side, *extra = item.split(":")
        try:
            r = check_preset(network, int(side), FITTED if extra == ["fitted"] else {})
        except Exception as err:              # report and go on with the next preset
            print(f"{item:<24} FAILED: {type(err).__name__}: {err}")
            failed += 1
            continue
        bad = max(r["cls_diff"], r["loc_diff"]) > 1e-4 or not r["batch1_equal"]
        failed += bad
        print(f"{item:<24} {r['anchors']:>7} {r['nodes']:>5} {r['export_s']:>8.1f} "
              f"{r['mb']:>6.1f} {r['cls_diff']:>13.2e} {r['loc_diff']:>9.2e} {r['rows']:>4} "
              f"{'same' if r['batch1_equal'] else 'DIFFERENT'}", flush=True)
    return 1 if failed else 0


# ---- --deploy: a trained model against MXNet ------------------------------------------------
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


def get_parser() -> argparse.ArgumentParser:
    """Flags of both checks."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", action="store_true",
                   help="every preset and shape through the exporter (random weights) instead "
                        "of a trained model")
    p.add_argument("--only", default="",
                   help="with --zoo: comma list of network:side[:fitted] (default: all)")
    p.add_argument("--deploy", default="", help="deploy checkpoint prefix (deploy.py)")
    p.add_argument("--epoch", type=int, default=None, help="its epoch")
    p.add_argument("--onnx", default="", help="the ONNX file (default <deploy>-<epoch>.onnx)")
    p.add_argument("--images", default="", help="folder of photos")
    p.add_argument("--list", default="", help=".lst naming the photos to use (default all)")
    p.add_argument("--rec", default="", help="record for the mAP both ways (default none)")
    p.add_argument("--network", default="", help="preset (for evaluate.py)")
    p.add_argument("--class-names", default="", help="comma list (for evaluate.py)")
    p.add_argument("--threads", type=int, default=2, help="threads (MXNet and onnxruntime)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the check asked for; returns 1 when a preset fails (--zoo) or a row is found by
    one side only (--deploy), 2 for bad flags."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.zoo and args.deploy:
        parser.error("--zoo and --deploy: one check at a time")
    if args.only and not args.zoo:
        parser.error("--only needs --zoo")
    if not args.zoo:
        missing = [flag for flag, value in (("--deploy", args.deploy), ("--epoch", args.epoch),
                                            ("--images", args.images)) if value in ("", None)]
        if missing:
            parser.error(f"{', '.join(missing)} required (or --zoo)")
    setup_threads(args.threads)
    if args.zoo:
        return check_zoo(args.only)
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
