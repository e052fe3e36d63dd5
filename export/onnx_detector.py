"""Run an exported SSD ONNX file (``deploy.py --onnx``) with onnxruntime.

:func:`load_onnx_session` opens the file and checks its metadata against the flags (data shape,
class count), :class:`OnnxDetector` detects on images as :class:`evaluate.detector.Detector`
does, and :class:`OnnxModule` stands in for a bound ``mx.mod.Module`` in
``evaluate_net.score_detections``. No MXNet here: the graph holds the mean subtraction, the
anchors, the decoding and the NMS, so the input is the resized RGB image, 0-255.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import cv2
import numpy as np

INPUT_NAME = "data"
# two boxes of one class and equal score that NMS decided the other way overlap at least this
# much (one suppressed the other: IoU >= the NMS threshold, 0.45 or 0.5 in this project)
TIE_IOU = 0.3


def onnx_threads() -> int:
    """Threads for onnxruntime: ``OMP_NUM_THREADS`` (what MXNet uses, ``config.runtime``)."""
    from config.runtime import available_cores
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else available_cores()


def read_metadata(session, onnx_path: str) -> dict:
    """The file's metadata (``export.onnx_file.export_metadata``), parsed.

    Raises
    ------
    ValueError
        The file was not written by ``deploy.py --onnx`` (no data shape or class list).
    """
    props = session.get_modelmeta().custom_metadata_map
    try:
        _, height, width = (int(v) for v in props["data_shape"].split(","))
        meta = {"data_shape": (height, width), "num_classes": int(props["num_classes"]),
                "class_names": json.loads(props["class_names"]),
                "mean_pixels": json.loads(props.get("mean_pixels", "[]")),
                "network": props.get("network", "")}
    except (KeyError, ValueError) as err:
        raise ValueError(f"--onnx {onnx_path} is not an SSD file of deploy.py --onnx (its "
                         f"metadata lacks or garbles {err}); export it again") from None
    meta.update({k: v for k, v in props.items() if k not in meta})
    return meta


def check_metadata(meta: dict, onnx_path: str, data_shape: tuple[int, int] | None = None,
                   num_classes: int | None = None) -> None:
    """The flags must describe the file: one ``ValueError`` naming the file and what differs."""
    wrong = []
    if data_shape is not None and tuple(data_shape) != tuple(meta["data_shape"]):
        wrong.append(f"data shape {meta['data_shape'][0]}x{meta['data_shape'][1]} "
                     f"(--data-shape gives {data_shape[0]}x{data_shape[1]})")
    if num_classes is not None and int(num_classes) != meta["num_classes"]:
        wrong.append(f"{meta['num_classes']} classes (--num-class / --class-names give "
                     f"{num_classes})")
    if wrong:
        raise ValueError(f"--onnx {onnx_path} was exported with {' and '.join(wrong)}")


def load_onnx_session(onnx_path: str, data_shape: tuple[int, int] | None = None,
                      num_classes: int | None = None, threads: int | None = None):
    """An onnxruntime session of the file and its metadata, checked against the flags.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not an ONNX model, not an SSD export, or data shape / class count differ from the flags.
    """
    import onnxruntime as ort
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"--onnx {onnx_path} not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or onnx_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    except Exception as err:      # onnxruntime raises its own exception types, unexported
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--onnx {onnx_path} cannot be loaded by onnxruntime: {first}") from None
    inputs = [i.name for i in session.get_inputs()]
    if inputs != [INPUT_NAME] or session.get_outputs()[0].shape[-1] != 6:
        raise ValueError(f"--onnx {onnx_path} is not an SSD detector of deploy.py --onnx "
                         f"(inputs {inputs}, output shape {session.get_outputs()[0].shape})")
    meta = read_metadata(session, onnx_path)
    check_metadata(meta, onnx_path, data_shape, num_classes)
    return session, meta


def read_rgb(path: str) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3); ``evaluate.detector.load_image`` too.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        OpenCV cannot decode it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path} not found")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"image {path} cannot be decoded (not an image OpenCV reads)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_rgb(image: np.ndarray, data_shape: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, h, w) 0-255, resized as the record iterator does."""
    height, width = data_shape
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.astype(np.float32).transpose(2, 0, 1)


class OnnxDetector:
    """Detect with an ONNX file; the interface of :class:`evaluate.detector.Detector`.

    Parameters
    ----------
    onnx_path : str
        File of ``deploy.py --onnx``.
    data_shape : (int, int), optional
        Checked against the file's (None: take the file's).
    num_classes : int, optional
        Checked against the file's.
    batch_size : int
        Images per run.
    threads : int, optional
        onnxruntime intra-op threads (default: :func:`onnx_threads`).
    """

    def __init__(self, onnx_path: str, data_shape: tuple[int, int] | None = None,
                 num_classes: int | None = None, batch_size: int = 1,
                 threads: int | None = None) -> None:
        if batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {batch_size}")
        self.session, self.meta = load_onnx_session(onnx_path, data_shape, num_classes, threads)
        self.data_shape = tuple(self.meta["data_shape"])
        self.batch_size = int(batch_size)
        self.last_forward_s = 0.0

    def run(self, data: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 pixels 0-255 -> (B, K, 6) detections, class -1 = none."""
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(data, np.float32)})[0]

    def detect_arrays(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per RGB uint8 image the kept rows (K, 6), by descending score (as ``Detector``)."""
        results: list[np.ndarray] = []
        self.last_forward_s = 0.0
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            data = np.stack([resize_rgb(image, self.data_shape) for image in chunk])
            begin = time.perf_counter()
            dets = self.run(data)
            self.last_forward_s += time.perf_counter() - begin
            for det in dets:
                kept = det[det[:, 0] >= 0]
                results.append(kept[np.argsort(-kept[:, 1], kind="stable")])
        return results

    def im_detect(self, image_paths: Sequence[str]) -> list[np.ndarray]:
        """Detections for image files (see :meth:`detect_arrays`)."""
        return self.detect_arrays([read_rgb(path) for path in image_paths])


class OnnxModule:
    """``forward`` / ``get_outputs`` of a bound Module, run by onnxruntime.

    The batches must hold the pixels without the mean (a record iterator made with mean 0):
    the file subtracts its own.
    """

    def __init__(self, detector: OnnxDetector) -> None:
        self.detector = detector
        self._outputs: list[np.ndarray] = []

    def forward(self, batch, is_train: bool = False) -> None:
        """Detections of ``batch.data[0]`` (an NDArray or numpy array)."""
        data = batch.data[0]
        self._outputs = [self.detector.run(data.asnumpy() if hasattr(data, "asnumpy")
                                           else np.asarray(data))]

    def get_outputs(self) -> list[np.ndarray]:
        """``[(B, K, 6)]`` of the last :meth:`forward`."""
        return self._outputs


def match_detections(reference: Sequence[np.ndarray], other: Sequence[np.ndarray],
                     score_tol: float = 1e-5, corner_tol: float = 1e-4) -> dict:
    """Compare two detectors' kept rows image by image (each list as ``detect_arrays`` gives).

    A row matches when the other detector has a row at the same place with the same class,
    a score within ``score_tol`` and corners within ``corner_tol``; a row that does not match
    in place is looked for among the other image's unmatched rows (two rows of near-equal
    scores can swap places: float32 sums in a different order move a score by ~1e-9).

    Rows found by one side only are explained when they can be: a pair of them (one per side)
    of the same class and scores within ``score_tol`` is a ``tie_choice`` (two overlapping
    boxes of equal score, IoU >= ``TIE_IOU``: which one suppresses the other follows the last
    bits of the scores);
    one whose score is within ``score_tol`` of the lowest score the two sides kept for that
    image is ``at_cut`` (a group of equal scores straddled the top-k cut and the last bits
    chose different members of the group).

    Returns
    -------
    dict
        ``rows`` (reference rows), ``in_place``, ``swapped`` (matched elsewhere),
        ``tie_choice`` (pairs: (image, reference row, other row)), ``at_cut`` (one side only,
        at the lowest kept score: (image, side, row)),
        ``unmatched_reference`` / ``unmatched_other`` (any other row found by one side only:
        lists of (image, row)), ``max_score_diff`` / ``max_corner_diff`` over matched rows.
    """
    report = {"rows": 0, "in_place": 0, "swapped": 0, "tie_choice": [], "at_cut": [],
              "unmatched_reference": [],
              "unmatched_other": [], "max_score_diff": 0.0, "max_corner_diff": 0.0}

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return (a[0] == b[0] and abs(a[1] - b[1]) <= score_tol
                and np.abs(a[2:] - b[2:]).max() <= corner_tol)

    def record(a: np.ndarray, b: np.ndarray) -> None:
        report["max_score_diff"] = max(report["max_score_diff"], float(abs(a[1] - b[1])))
        report["max_corner_diff"] = max(report["max_corner_diff"],
                                        float(np.abs(a[2:] - b[2:]).max()))

    for image, (ref, oth) in enumerate(zip(reference, other)):
        report["rows"] += len(ref)
        free = set(range(len(oth)))
        missed = []
        for i, row in enumerate(ref):
            if i < len(oth) and close(row, oth[i]):
                report["in_place"] += 1
                free.discard(i)
                record(row, oth[i])
            else:
                missed.append(i)
        lost = []
        for i in missed:
            found = next((j for j in sorted(free) if close(ref[i], oth[j])), None)
            if found is None:
                lost.append(("reference", ref[i]))
            else:
                report["swapped"] += 1
                free.discard(found)
                record(ref[i], oth[found])
        lost += [("other", oth[j]) for j in sorted(free)]
        lost = _pair_tie_choices(lost, score_tol, image, report)
        lowest = min([r[:, 1].min() for r in (ref, oth) if len(r)], default=0.0)
        for side, row in lost:
            if abs(row[1] - lowest) <= score_tol:
                report["at_cut"].append((image, side, row.tolist()))
            else:
                report[f"unmatched_{side}"].append((image, row.tolist()))
    return report


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two corner boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _pair_tie_choices(lost: list, score_tol: float, image: int, report: dict) -> list:
    """Move (reference, other) pairs of equal class and near-equal score to ``tie_choice``;
    returns the rows left."""
    others = [row for side, row in lost if side == "other"]
    left = []
    for side, row in lost:
        if side != "reference":
            continue
        match = next((k for k, o in enumerate(others)
                      if o[0] == row[0] and abs(o[1] - row[1]) <= score_tol
                      and _iou(o[2:], row[2:]) >= TIE_IOU), None)
        if match is None:
            left.append((side, row))
        else:
            report["tie_choice"].append((image, row.tolist(), others.pop(match).tolist()))
    return left + [("other", row) for row in others]
