"""Forward-pass throughput of an SSD inference graph by batch size (fp32, and INT8 if given).

Example::

    python benchmark_score.py --network tiny --shape 128 --batch_size 0
    python benchmark_score.py --network tiny --shape 128 --int8-prefix model/ssd_tiny_128-quantized

Random input, random weights (Xavier magnitude 2, as the original) unless ``--deploy`` loads a
checkpoint; prints ms/batch and images/s for each batch size. Unlike the original, the input
really has ``--shape`` pixels (it hard-coded 300).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from config.runtime import setup_threads

DEFAULT_SHAPES = {"tiny": 128, "inceptionv3": 299}


def get_parser() -> argparse.ArgumentParser:
    """Flags of the original ``benchmark_score.py`` plus timing and INT8 options."""
    parser = argparse.ArgumentParser(description="SSD forward-pass benchmark")
    parser.add_argument("--network", "-n", default="vgg16_reduced",
                        help="network preset (default vgg16_reduced, as the original; tiny "
                             "answers in seconds on a CPU)")
    parser.add_argument("--batch_size", "-b", type=int, default=0,
                        help="batch size; 0 sweeps 1, 2, 4, 8, 16, 32 (default 0)")
    parser.add_argument("--shape", "-w", type=int, default=None,
                        help="input side in pixels (default 128 for tiny, 299 for inceptionv3, "
                             "else 300)")
    parser.add_argument("--class_num", "-class", dest="class_num", type=int, default=20,
                        help="object classes (default 20)")
    parser.add_argument("--prefix", default=os.path.join(os.getcwd(), "model", "ssd_"),
                        help="checkpoint prefix for --deploy (default ./model/ssd_)")
    parser.add_argument("--epoch", type=int, default=0, help="checkpoint epoch for --deploy (default 0)")
    parser.add_argument("--deploy", action="store_true",
                        help="time the checkpoint's own symbol and weights instead of random ones")
    parser.add_argument("--int8-prefix", dest="int8_prefix", default="",
                        help="prefix of a quantized model (quantization.py) to time as well")
    parser.add_argument("--int8-epoch", dest="int8_epoch", type=int, default=0,
                        help="epoch of the quantized model (default 0)")
    parser.add_argument("--num-batches", dest="num_batches", type=int, default=20,
                        help="timed batches per size (default 20; the original: 100)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed rounds per size, the fastest is shown (default 3)")
    parser.add_argument("--max-batch", dest="max_batch", type=int, default=32,
                        help="largest batch of the sweep (default 32)")
    return parser


def time_forward(symbol, arg_params: dict | None, aux_params: dict | None, batch_size: int,
                 data_shape: tuple[int, int], num_batches: int = 20, warmup: int = 3,
                 ctx=None, repeat: int = 1) -> tuple[float, float]:
    """Time ``num_batches`` forward passes on random data, best of ``repeat`` rounds.

    Parameters
    ----------
    symbol : mx.sym.Symbol
        Inference graph with input ``data``.
    arg_params, aux_params : dict or None
        Weights; None initialises random ones (Xavier, magnitude 2).
    batch_size : int
        Images per batch.
    data_shape : tuple of int
        (height, width).
    num_batches, warmup : int
        Timed and untimed passes.
    ctx : mx.Context, optional
        Device (default CPU).
    repeat : int
        Timed rounds; the fastest counts (robust to other jobs on a shared machine).

    Returns
    -------
    (float, float)
        Milliseconds per batch and images per second of the fastest round.
    """
    from config.mxnet_compat import mx
    ctx = ctx or mx.cpu()
    module = mx.mod.Module(symbol, data_names=("data",), label_names=None, context=ctx)
    module.bind(data_shapes=[("data", (batch_size, 3) + tuple(data_shape))], for_training=False)
    if arg_params is None:
        module.init_params(initializer=mx.init.Xavier(magnitude=2.0))
    else:
        module.set_params(arg_params, aux_params or {}, allow_missing=False)
    data = mx.nd.random.uniform(-1.0, 1.0, shape=(batch_size, 3) + tuple(data_shape), ctx=ctx)
    batch = mx.io.DataBatch([data], [])
    for _ in range(warmup):
        module.forward(batch, is_train=False)
        module.get_outputs()[0].wait_to_read()
    elapsed = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        for _ in range(num_batches):
            module.forward(batch, is_train=False)
            module.get_outputs()[0].wait_to_read()
        elapsed = min(elapsed, time.perf_counter() - start)
    ms_per_batch = elapsed / num_batches * 1000.0
    return ms_per_batch, batch_size * num_batches / elapsed


def batch_sizes(batch_size: int, max_batch: int) -> list[int]:
    """The sweep 1, 2, 4, ... up to ``max_batch`` for 0, else just ``batch_size``."""
    if batch_size < 0:
        raise ValueError(f"--batch_size must be 0 (sweep) or positive, got {batch_size}")
    if batch_size:
        return [batch_size]
    sizes, size = [], 1
    while size <= max_batch:
        sizes.append(size)
        size *= 2
    return sizes


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = get_parser().parse_args(argv)
    setup_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from training.checkpoint import load_symbol_file
    from evaluate.evaluate_net import load_params, resolve_prefix
    from symbol.symbol_factory import get_symbol
    try:
        shape = args.shape or DEFAULT_SHAPES.get(args.network, 300)
        sizes = batch_sizes(args.batch_size, args.max_batch)
        if args.num_batches <= 0 or args.warmup < 0:
            raise ValueError(f"--num-batches must be positive and --warmup >= 0, got "
                             f"{args.num_batches} and {args.warmup}")
        if args.deploy:
            prefix = resolve_prefix(args.prefix, args.network, shape, args.epoch)
            fp32 = load_symbol_file(f"{prefix}-symbol.json", "--deploy")
            fp32_args, fp32_auxs = load_params(prefix, args.epoch)
        else:
            fp32 = get_symbol(args.network, shape, args.class_num, nms_thresh=0.4,
                              force_suppress=True)
            fp32_args = fp32_auxs = None
        models = [("fp32", fp32, fp32_args, fp32_auxs)]
        if args.int8_prefix:
            symbol_path = f"{args.int8_prefix}-symbol.json"
            if not os.path.isfile(symbol_path):
                raise FileNotFoundError(f"--int8-prefix: {symbol_path} not found "
                                        "(write it with quantization.py)")
            int8_args, int8_auxs = load_params(args.int8_prefix, args.int8_epoch)
            models.append(("int8", load_symbol_file(symbol_path, "--int8-prefix"), int8_args,
                           int8_auxs))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"network {args.network}, input {shape}x{shape}, {args.class_num} classes, CPU, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {args.warmup} warm-up + "
          f"{args.num_batches} timed batches, best of {args.repeat} rounds")
    print(f"{'model':5s} {'batch':>5s} {'ms/batch':>10s} {'images/s':>10s}")
    for size in sizes:
        for name, symbol, arg_params, aux_params in models:
            ms, ips = time_forward(symbol, arg_params, aux_params, size, (shape, shape),
                                   args.num_batches, args.warmup, repeat=args.repeat)
            print(f"{name:5s} {size:5d} {ms:10.2f} {ips:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
