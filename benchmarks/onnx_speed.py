"""Inference speed of the exported ONNX file in onnxruntime against MXNet fp32 and MXNet INT8.

For each network the same weights run three ways on the same pixels, at equal threads:
MXNet fp32 (a bound Module of ``get_symbol``), MXNet INT8 (``quantization.quantize_ssd``,
naive calibration on a few batches) and onnxruntime (``deploy.py --onnx``'s graph, built in
memory). Each engine includes its whole detection graph (softmax, decoding, NMS); the ONNX
graph also subtracts the mean. Rounds are interleaved and the median of the per-round images/s
is printed, with the ratio to MXNet fp32 measured in the same round::

    python -m benchmarks.onnx_speed --networks tiny_photo:256,vgg16_reduced:300,resnet50:300 \\
        --batches 1,8 --threads 2 --rounds 3

Weights are random (scaled by fan-in) unless ``--prefix``/``--epoch`` name a deploy checkpoint
of the first network: speed does not depend on them, except through the number of boxes the
NMS sees (random weights: every anchor scores about 1/(C+1) > 0.01, so top-k is always full).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", default="tiny_photo:256,vgg16_reduced:300,resnet50:300",
                   help="comma list of network:side")
    p.add_argument("--batches", default="1,8", help="comma list of batch sizes")
    p.add_argument("--threads", type=int, default=2, help="threads of every engine")
    p.add_argument("--num-class", type=int, default=20, help="object classes")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    p.add_argument("--images", type=int, default=16, help="images timed per engine per round")
    p.add_argument("--engines", default="mxnet_fp32,mxnet_int8,onnxruntime",
                   help="engines to time")
    p.add_argument("--output", default="", help="write the rows as JSON here")
    return p


def random_weights(symbol, side: int, seed: int = 0):
    """Fan-in scaled normal weights and BatchNorm statistics near 1 (as tests/test_onnx.py)."""
    from config.mxnet_compat import mx
    import numpy as np
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, side, side))
    rng = np.random.default_rng(seed)
    args = {n: mx.nd.array(rng.normal(0, 1 / np.sqrt(np.prod(s[1:]) if len(s) > 1 else 20), s))
            for n, s in zip(symbol.list_arguments(), arg_shapes) if n != "data"}
    auxs = {n: mx.nd.array(rng.uniform(0.5, 1.5, s))
            for n, s in zip(symbol.list_auxiliary_states(), aux_shapes)}
    return args, auxs


def mxnet_runner(symbol, args, auxs, batch: int, side: int):
    """A function running one batch of mean-subtracted pixels through a bound Module."""
    from config.mxnet_compat import mx
    module = mx.mod.Module(symbol, data_names=("data",), label_names=None, context=mx.cpu())
    module.bind(data_shapes=[("data", (batch, 3, side, side))], for_training=False)
    module.set_params(args, auxs, allow_missing=False)

    def run(centred):
        module.forward(mx.io.DataBatch([mx.nd.array(centred)], []), is_train=False)
        return module.get_outputs()[0].asnumpy()
    return run


def int8_runner(symbol, args, auxs, batch: int, side: int, calib):
    """MXNet INT8 (naive calibration on ``calib``, mean-subtracted pixels)."""
    from config.mxnet_compat import mx
    from quantization import quantize_ssd
    calib_iter = mx.io.NDArrayIter(data=calib, batch_size=batch)
    qsym, qargs, qauxs, _ = quantize_ssd(symbol, args, auxs, calib_iter, len(calib), "naive")
    return mxnet_runner(qsym, qargs, qauxs, batch, side)


def onnx_runner(symbol, args, auxs, side: int, threads: int, mean):
    """onnxruntime session of the exported graph (raw pixels in)."""
    import onnxruntime as ort
    from export.onnx_file import build_onnx_model
    model = build_onnx_model(symbol, args, auxs, (side, side), mean, {})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return lambda pixels: session.run(None, {"data": pixels})[0]


def time_engine(run, data, images: int) -> float:
    """Images per second of ``run`` over ``images`` images (whole batches)."""
    batches = max(1, images // data.shape[0])
    start = time.perf_counter()
    for _ in range(batches):
        run(data)
    return batches * data.shape[0] / (time.perf_counter() - start)


def measure(network: str, side: int, batch: int, args, engines: list[str]) -> list[dict]:
    """Rows (network, batch, engine, images/s median, ratio to fp32 median) of one setting."""
    import numpy as np
    from symbol.symbol_factory import get_symbol
    mean = (123.0, 117.0, 104.0)
    symbol = get_symbol(network, side, args.num_class, nms_thresh=0.45, nms_topk=400)
    weights = random_weights(symbol, side)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (batch, 3, side, side)).astype(np.float32)
    centred = pixels - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    runners = {}
    if "mxnet_fp32" in engines:
        runners["mxnet_fp32"] = (mxnet_runner(symbol, *weights, batch, side), centred)
    if "mxnet_int8" in engines:
        runners["mxnet_int8"] = (int8_runner(symbol, *weights, batch, side, centred), centred)
    if "onnxruntime" in engines:
        runners["onnxruntime"] = (onnx_runner(symbol, *weights, side, args.threads, mean), pixels)
    for run, data in runners.values():                      # warm-up: 2 batches each
        run(data)
        run(data)
    speeds = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, (run, data) in runners.items():
            speeds[name].append(time_engine(run, data, args.images))
    rows = []
    for name, values in speeds.items():
        ratios = ([v / f for v, f in zip(values, speeds["mxnet_fp32"])]
                  if "mxnet_fp32" in speeds else [float("nan")])
        rows.append({"network": f"{network} {side}", "batch": batch, "engine": name,
                     "images_per_sec": statistics.median(values),
                     "ratio_to_mxnet_fp32": statistics.median(ratios)})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure every network x batch, print the table; returns 0."""
    args = get_parser().parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    setup_threads(args.threads)
    engines = [e for e in args.engines.split(",") if e]
    rows = []
    for item in args.networks.split(","):
        network, side = item.split(":")
        for batch in (int(b) for b in args.batches.split(",")):
            rows += measure(network, int(side), batch, args, engines)
            row = rows[-1]
            print(f"done {network} {side} batch {batch} ({row['engine']} "
                  f"{row['images_per_sec']:.1f} images/s)", flush=True)
    print(f"\nthreads {args.threads}, {args.rounds} interleaved rounds, median; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"{'network':<20} {'batch':>5} {'engine':<12} {'images/s':>9} {'vs MXNet fp32':>14}")
    for row in rows:
        print(f"{row['network']:<20} {row['batch']:>5} {row['engine']:<12} "
              f"{row['images_per_sec']:>9.2f} {row['ratio_to_mxnet_fp32']:>13.2f}x")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
