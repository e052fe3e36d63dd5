"""Evaluation and inference: metrics, the scoring loop, the detector and drawing.

Small helpers shared by the evaluation CLIs (``evaluate.py``, ``demo.py``,
``benchmark_score.py``, ``quantization.py``) live here; they import nothing heavy.
"""
from __future__ import annotations

import os

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def parse_class_names(value: str | None, num_classes: int | None = None,
                      flag: str = "--class-names") -> list[str]:
    """Class names from a comma list or a file with one name per line.

    Parameters
    ----------
    value : str or None
        ``"cat,dog"`` or a path to a names file; empty/None gives the 20 VOC names.
    num_classes : int, optional
        When given, the number of names must match it.
    flag : str
        Flag named in error messages.

    Raises
    ------
    ValueError
        When the count differs from ``num_classes`` or a name is empty.
    """
    if not value:
        names = list(VOC_CLASSES)
    elif os.path.isfile(value):
        with open(value, encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
    else:
        names = [name.strip() for name in value.split(",")]
        if len(names) == 1 and ("/" in value or value.endswith((".txt", ".names"))):
            raise FileNotFoundError(f"{flag}: file {value} not found")
    if any(not name for name in names):
        raise ValueError(f"{flag} has an empty name: {value!r}")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{flag} has {len(names)} names but --num-class is {num_classes}: "
                         f"give exactly {num_classes} names (comma list or a file)")
    return names


def add_mean_args(parser) -> None:
    """Add ``--mean-r/-g/-b`` (the RGB mean subtracted, reference defaults 123/117/104)."""
    for flag, colour, default in (("--mean-r", "red", 123), ("--mean-g", "green", 117),
                                  ("--mean-b", "blue", 104)):
        parser.add_argument(flag, dest=flag[2:].replace("-", "_"), type=float, default=default,
                            help=f"{colour} mean (default {default})")


def parse_mean(mean_r: float, mean_g: float, mean_b: float) -> tuple[float, float, float]:
    """The RGB mean as a tuple (checked to be finite pixel values)."""
    mean = (float(mean_r), float(mean_g), float(mean_b))
    for flag, value in zip(("--mean-r", "--mean-g", "--mean-b"), mean):
        if not (-255.0 <= value <= 255.0):
            raise ValueError(f"{flag} must be a pixel value in [-255, 255], got {value}")
    return mean
