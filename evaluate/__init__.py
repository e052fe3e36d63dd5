"""Evaluation and inference: metrics, the scoring loop, the detector and drawing.

Small helpers shared by the evaluation CLIs (``evaluate.py``, ``demo.py``,
``benchmark_score.py``, ``quantization.py``) live here; they import nothing heavy.
"""
from __future__ import annotations

from dataset.imdb import load_class_names

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def parse_class_names(value: str | None, num_classes: int | None = None,
                      flag: str = "--class-names") -> list[str]:
    """Class names from a comma list or a file with one name per line; empty gives VOC's 20.

    See :func:`dataset.imdb.load_class_names` (the one parser) for the errors.
    """
    return load_class_names(value or list(VOC_CLASSES), flag=flag, num_classes=num_classes)


def add_anchors_arg(parser) -> None:
    """Add ``--anchors``: the anchor file a model was trained with (inference CLIs)."""
    parser.add_argument("--anchors", default="",
                        help="JSON of anchor sizes/ratios the model was trained with "
                             "(train.py --anchors FILE; default: the preset's)")


def add_flip_test_arg(parser) -> None:
    """Add ``--flip-test``: average each image's predictions with its left-right mirror's."""
    parser.add_argument("--flip-test", dest="flip_test", action="store_true",
                        help="detect on each image and its left-right mirror and average the "
                             "two in the graph (twice the compute; needs anchors that mirror "
                             "onto each other: every preset but vgg16_reduced at 300; "
                             "default off)")


def refuse_flip_test_with_saved_graph(flip_test: bool, deploy_net: bool, onnx_path) -> None:
    """``--flip-test`` rebuilds the graph: a ``--deploy`` or ``--onnx`` graph keeps its own."""
    if flip_test and (deploy_net or onnx_path):
        raise ValueError(f"--flip-test rebuilds the graph from --network; the graph of "
                         f"{'--onnx' if onnx_path else '--deploy'} keeps what deploy.py gave it "
                         "(deploy.py --flip-test): leave --flip-test out")


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
