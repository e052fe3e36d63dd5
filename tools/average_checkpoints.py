"""Average the weights of the last epochs' checkpoints into one (weight averaging, as SWA).

With a schedule that ends at a small learning rate (cosine), the last epochs' weights lie
around one minimum; their mean usually scores a little better and, above all, more steadily
than any one of them. Every ``arg:`` and ``aux:`` array is averaged (BatchNorm running means
and variances included).

Example (checkpoints ``output/photos/model/ssd_tiny_256-0056.params`` ... ``-0060.params``)::

    python tools/average_checkpoints.py --prefix output/photos/model/ssd_tiny_256 \\
        --epochs 56-60 --output output/photos/model/ssd_avg_tiny_256

writes ``output/photos/model/ssd_avg_tiny_256-0060.params`` (and its ``-symbol.json``), which
``evaluate.py --prefix output/photos/model/ssd_avg --epoch 60`` loads as any checkpoint.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads  # noqa: E402

setup_threads()

from config.mxnet_compat import mx  # noqa: E402

from training.checkpoint import atomic_write, load_param_file  # noqa: E402


def parse_epochs(value: str) -> list[int]:
    """``'56-60'`` or ``'56,58,60'`` -> sorted distinct positive epochs."""
    try:
        if "-" in value:
            first, last = (int(v) for v in value.split("-", 1))
            epochs = list(range(first, last + 1))
        else:
            epochs = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--epochs {value!r}: expected FIRST-LAST or a comma list of epochs") from None
    if not epochs or min(epochs) < 1:
        raise ValueError(f"--epochs {value!r}: need at least one epoch >= 1")
    return sorted(set(epochs))


def average_checkpoints(prefix: str, epochs: list[int], output_prefix: str) -> str:
    """Mean of the ``prefix-%04d.params`` of ``epochs``, saved as ``output_prefix-<last>.params``.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    FileNotFoundError
        A checkpoint of ``epochs`` is missing (the message names it).
    ValueError
        The checkpoints hold different parameter names or shapes.
    """
    paths = [f"{prefix}-{e:04d}.params" for e in epochs]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"--prefix {prefix} --epochs: checkpoint(s) {', '.join(missing)} "
                                "not found (train with --save-period 1 to keep every epoch)")
    total: dict[str, mx.nd.NDArray] = {}
    for path in paths:
        params = load_param_file(path, f"--prefix {prefix} --epochs")
        if total and set(params) != set(total):
            raise ValueError(f"{path} holds other parameters than {paths[0]}: not one network")
        for name, value in params.items():
            if name in total and total[name].shape != value.shape:
                raise ValueError(f"{path}: {name} has shape {value.shape}, {paths[0]} "
                                 f"{total[name].shape}")
            total[name] = total[name] + value if name in total else value.copy()
    mean = {name: value / len(paths) for name, value in total.items()}
    out_path = f"{output_prefix}-{epochs[-1]:04d}.params"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    atomic_write(out_path, lambda tmp: mx.nd.save(tmp, mean))   # may replace an input
    symbol = f"{prefix}-symbol.json"
    if os.path.isfile(symbol) and os.path.abspath(output_prefix) != os.path.abspath(prefix):
        shutil.copyfile(symbol, f"{output_prefix}-symbol.json")
    return out_path


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prefix", required=True,
                   help="checkpoint prefix as written by train.py (with _<network>_<side>)")
    p.add_argument("--epochs", required=True, help="epochs to average: FIRST-LAST or a comma list")
    p.add_argument("--output", required=True,
                   help="prefix of the averaged checkpoint (saved under the last epoch)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        path = average_checkpoints(args.prefix, parse_epochs(args.epochs), args.output)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
