"""Every preset and shape of the zoo through the ONNX exporter: exports, passes the checker,
runs in onnxruntime at batch 1 and 2, and its class probabilities and box offsets match MXNet's.

    python -m benchmarks.onnx_zoo                       # all presets, random fan-in weights
    python -m benchmarks.onnx_zoo --only tiny:160,mobilenet:300

Prints one line per preset: anchors, nodes, export seconds, file MB, the largest absolute
difference of ``cls_prob`` and of ``multibox_loc_pred`` against MXNet on the same pixels, and
the detection rows per image. A model with fitted anchors (``train.py --anchors``) is included:
``tiny_photo 256`` with the sizes and ratios of ``FITTED``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    """Check the presets; returns 1 when one fails to export or differs by more than 1e-4."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma list of network:side[:fitted]")
    parser.add_argument("--threads", type=int, default=2, help="threads (MXNet and onnxruntime)")
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    failed = 0
    print(f"{'preset':<24} {'anchors':>7} {'nodes':>5} {'export s':>8} {'MB':>6} "
          f"{'cls_prob diff':>13} {'loc diff':>9} {'rows':>4} batch1")
    for item in (args.only.split(",") if args.only else ZOO):
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


if __name__ == "__main__":
    sys.exit(main())
