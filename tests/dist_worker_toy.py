"""Toy worker for the distributed-launcher tests: a small Module on fixed random data.

Run by ``tools/launch.py`` under every role. With ``DMLC_ROLE=scheduler`` or ``server``,
``import mxnet`` itself serves that role and exits, so only workers reach :func:`main`.

Data split (what makes ``dist_sync`` with ``W`` workers at batch ``b`` equal one process at
batch ``W*b``): global batch ``t`` of the single process holds samples ``[W*b*t, W*b*(t+1))``;
worker ``r`` takes the slice ``[W*b*t + r*b, W*b*t + (r+1)*b)`` of it. The server sums the
``W`` gradients and ``Module`` rescales by ``1 / (b*W)``: the same update.

Fault injection (``--fail-rank``) makes one worker die after some batches, to test the
launcher's watchdog: ``exit`` (``os._exit`` with a status), ``kill`` (SIGKILL itself),
``raise`` (an uncaught exception) or ``hang`` (sleep forever, printing nothing). Timing hooks
for killing a scheduler or server from outside at a known moment (tests/test_faults_dist.py):
``--create-delay`` holds one launch index back before ``kv.create`` (the others wait inside it),
``--save-sleep`` holds rank 0 between the end of training and its final save; each moment is
announced by a line on stdout.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from config.runtime import setup_threads

setup_threads(1)
from config.mxnet_compat import mx  # noqa: E402  (after setup_threads; servers and the scheduler stop here)
import numpy as np  # noqa: E402

NUM_SAMPLES = 64   # rows of the fixed data set
NUM_FEATURES = 10  # columns
NUM_CLASSES = 3    # softmax outputs
NUM_HIDDEN = 16    # hidden units


def get_parser() -> argparse.ArgumentParser:
    """Command-line flags of the toy worker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kv-store", default="local", help="kvstore type (default local)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="per-worker batch size in samples (default 8)")
    parser.add_argument("--num-epoch", type=int, default=2, help="epochs (default 2)")
    parser.add_argument("--out", default="",
                        help="rank 0 saves its parameters here as .npz (default: not saved)")
    parser.add_argument("--fail-rank", type=int, default=-1,
                        help="rank of the worker that fails (default -1: none)")
    parser.add_argument("--fail-after", type=int, default=1,
                        help="batches the failing worker completes first (default 1)")
    parser.add_argument("--fail-mode", default="exit", choices=["exit", "kill", "raise", "hang"],
                        help="how the failing worker fails (default exit)")
    parser.add_argument("--fail-code", type=int, default=3,
                        help="exit status for --fail-mode exit (default 3)")
    parser.add_argument("--step-sleep", type=float, default=0.0,
                        help="seconds each worker sleeps after a batch (default 0)")
    parser.add_argument("--create-delay", type=float, default=0.0,
                        help="seconds the worker of launch index --delay-task sleeps before "
                             "kv.create (default 0)")
    parser.add_argument("--delay-task", type=int, default=1,
                        help="DMLC_TASK_ID of the worker that --create-delay holds (default 1)")
    parser.add_argument("--save-sleep", type=float, default=0.0,
                        help="seconds rank 0 sleeps after training, before saving (default 0)")
    return parser


def make_data() -> tuple[np.ndarray, np.ndarray]:
    """The fixed data set: ``x (NUM_SAMPLES, NUM_FEATURES)`` float32, ``y (NUM_SAMPLES,)`` labels."""
    rng = np.random.RandomState(0)
    x = rng.randn(NUM_SAMPLES, NUM_FEATURES).astype(np.float32)
    y = rng.randint(0, NUM_CLASSES, NUM_SAMPLES).astype(np.float32)
    return x, y


def shard_rows(num_workers: int, rank: int, batch_size: int) -> np.ndarray:
    """Row indices of worker ``rank``: its ``batch_size`` slice of every global batch."""
    global_batch = num_workers * batch_size
    if NUM_SAMPLES % global_batch:
        raise ValueError(f"--batch-size {batch_size} x {num_workers} workers must divide "
                         f"{NUM_SAMPLES} samples")
    rows = np.arange(NUM_SAMPLES).reshape(-1, num_workers, batch_size)  # (steps, W, b)
    return rows[:, rank, :].reshape(-1)                                  # (steps * b,)


def build_symbol() -> mx.sym.Symbol:
    """A two-layer perceptron with a softmax loss."""
    data = mx.sym.Variable("data")
    hidden = mx.sym.Activation(mx.sym.FullyConnected(data, num_hidden=NUM_HIDDEN, name="fc1"),
                               act_type="relu")
    logits = mx.sym.FullyConnected(hidden, num_hidden=NUM_CLASSES, name="fc2")
    return mx.sym.SoftmaxOutput(logits, name="softmax")


def initial_params() -> dict[str, mx.nd.NDArray]:
    """Deterministic initial weights, identical in every process."""
    rng = np.random.RandomState(1)
    shapes = {"fc1_weight": (NUM_HIDDEN, NUM_FEATURES), "fc1_bias": (NUM_HIDDEN,),
              "fc2_weight": (NUM_CLASSES, NUM_HIDDEN), "fc2_bias": (NUM_CLASSES,)}
    return {name: mx.nd.array(rng.uniform(-0.5, 0.5, shape)) for name, shape in shapes.items()}


def fail(mode: str, code: int) -> None:
    """Make this worker fail the way ``mode`` says."""
    print(f"toy worker: failing ({mode})", flush=True)
    if mode == "exit":
        os._exit(code)  # skips interpreter exit, which would block in ps-lite
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "raise":
        raise RuntimeError("toy worker: injected failure")
    while True:  # hang
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    """Train the toy model; rank 0 writes the final parameters to ``--out``."""
    args = get_parser().parse_args(argv)
    task = int(os.environ.get("DMLC_TASK_ID", "0"))
    if args.create_delay and task == args.delay_task:
        time.sleep(args.create_delay)
    print(f"toy worker: task {task} creating kvstore {args.kv_store}", flush=True)
    kv = mx.kv.create(args.kv_store)
    rank, num_workers = kv.rank, kv.num_workers
    print(f"toy worker: rank {rank} of {num_workers}, kvstore {kv.type}", flush=True)
    x, y = make_data()
    rows = shard_rows(num_workers, rank, args.batch_size)
    train_iter = mx.io.NDArrayIter(x[rows], y[rows], batch_size=args.batch_size, shuffle=False,
                                   label_name="softmax_label")
    batches_done = [0]

    def after_batch(_param: object) -> None:
        batches_done[0] += 1
        if rank == args.fail_rank and batches_done[0] >= args.fail_after:
            fail(args.fail_mode, args.fail_code)
        if args.step_sleep:
            time.sleep(args.step_sleep)

    mod = mx.mod.Module(build_symbol(), context=mx.cpu())
    mod.fit(train_iter, num_epoch=args.num_epoch, kvstore=kv, optimizer="sgd",
            optimizer_params={"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-3},
            arg_params=initial_params(), batch_end_callback=after_batch)
    if rank == 0 and args.save_sleep:
        print("toy worker: rank 0 saving", flush=True)
        time.sleep(args.save_sleep)
    if rank == 0 and args.out:
        arg_params, _ = mod.get_params()
        tmp_path = args.out + ".tmp.npz"
        np.savez(tmp_path, **{name: value.asnumpy() for name, value in arg_params.items()})
        os.replace(tmp_path, args.out)
    print(f"toy worker: rank {rank} done after {batches_done[0]} batches", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
