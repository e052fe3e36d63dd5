"""Plot training loss, learning rate and validation mAP by epoch from a ``train.py`` log.

Reads the per-epoch lines that training writes::

    ... Epoch[3] Train-CrossEntropy=1.234
    ... Epoch[3] Train-SmoothL1=0.456
    ... Epoch[3] Learning-rate=0.002
    ... Epoch[3] Validation-mAP=0.512

(``Epoch[e]`` is 0-based in the log; the plot's x axis counts completed epochs, e + 1, the
number of the checkpoint file). Example::

    python tools/plot_log.py train.log --output train.png
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Sequence

if __package__ in (None, ""):  # run by path (python tools/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

_LINE = re.compile(r"Epoch\[(\d+)\] (Train-CrossEntropy|Train-SmoothL1|Learning-rate|"
                   r"Validation-mAP)=([-+0-9.eEnaif]+)")
SERIES = ("Train-CrossEntropy", "Train-SmoothL1", "Learning-rate", "Validation-mAP")


def parse_log(path: str) -> dict[str, dict[int, float]]:
    """Per-epoch values of each series found in a training log.

    A resumed run appends to the same log; a later value of an epoch replaces the earlier one.

    Parameters
    ----------
    path : str
        Log file written by ``train.py --log``.

    Returns
    -------
    dict
        ``{series: {epoch_number (1-based): value}}`` for the names in ``SERIES``.
    """
    series: dict[str, dict[int, float]] = {name: {} for name in SERIES}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                match = _LINE.search(line)
                if match:
                    epoch, name, value = match.groups()
                    try:
                        series[name][int(epoch) + 1] = float(value)
                    except ValueError:
                        continue
    except FileNotFoundError:
        raise FileNotFoundError(f"log file {path} not found (train.py --log writes it)") from None
    if not any(series.values()):
        raise ValueError(f"log file {path} has no 'Epoch[e] Train-...' lines: not a train.py log?")
    return series


def plot(series: dict[str, dict[int, float]], output: str, title: str = "") -> str:
    """Write a PNG with three panels: losses, learning rate, validation mAP.

    Parameters
    ----------
    series : dict
        From :func:`parse_log`.
    output : str
        PNG path.
    title : str
        Figure title.

    Returns
    -------
    str
        ``output``.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7, 9), sharex=True)
    for name, style in (("Train-CrossEntropy", "-o"), ("Train-SmoothL1", "-s")):
        points = sorted(series[name].items())
        if points:
            axes[0].plot(*zip(*points), style, label=name[len("Train-"):], markersize=3)
    axes[0].set_ylabel("training loss")
    axes[0].legend()
    lr = sorted(series["Learning-rate"].items())
    if lr:
        axes[1].plot(*zip(*lr), "-o", markersize=3)
        if min(v for _, v in lr) > 0:
            axes[1].set_yscale("log")
    axes[1].set_ylabel("learning rate")
    mean_ap = sorted(series["Validation-mAP"].items())
    if mean_ap:
        axes[2].plot(*zip(*mean_ap), "-o", markersize=3, color="tab:green")
        best_epoch, best = max(mean_ap, key=lambda p: p[1])
        axes[2].set_title(f"best mAP {best:.4f} at epoch {best_epoch}", fontsize=9)
    axes[2].set_ylabel("validation mAP")
    axes[2].set_xlabel("epoch (completed)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def write_tensorboard(series: dict[str, dict[int, float]], log_dir: str) -> None:
    """Write the series as TensorBoard scalars (needs tensorboardX or mxboard)."""
    writer_cls = None
    for module_name in ("tensorboardX", "mxboard"):
        try:
            writer_cls = getattr(__import__(module_name), "SummaryWriter")
            break
        except ImportError:
            continue
    if writer_cls is None:
        raise ValueError(f"--tensorboard {log_dir}: no TensorBoard writer is installed "
                         f"(pip install tensorboardX); the PNG needs none")
    writer = writer_cls(log_dir)
    for name, values in series.items():
        for epoch, value in sorted(values.items()):
            writer.add_scalar(name, value, epoch)
    writer.close()


def get_parser() -> argparse.ArgumentParser:
    """Parser of ``tools/plot_log.py``."""
    parser = argparse.ArgumentParser(description="Plot a train.py log: loss, LR and mAP by epoch")
    parser.add_argument("log", help="training log file (train.py --log)")
    parser.add_argument("--output", "-o", default=None,
                        help="PNG to write (default: the log path with .png)")
    parser.add_argument("--title", default="", help="figure title (default: none)")
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="also write TensorBoard scalars to DIR (needs tensorboardX) "
                             "(default: off)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        series = parse_log(args.log)
        output = args.output or re.sub(r"(\.log|\.txt)?$", ".png", args.log, count=1)
        plot(series, output, args.title)
        if args.tensorboard:
            write_tensorboard(series, args.tensorboard)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{name} {len(values)}" for name, values in series.items())
    print(f"wrote {output} ({counts} epochs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
