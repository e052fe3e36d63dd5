"""Draw the detections of an exported SSD ONNX file on photos: onnxruntime, numpy, OpenCV only.

No MXNet and nothing else of this project is imported: copy this one file beside a
``deploy.py --onnx`` export and run it anywhere onnxruntime installs
(``pip install onnxruntime numpy opencv-python-headless``)::

    python tools/detect_onnx.py model/deploy_ssd_tiny_photo_256-0012.onnx photos/ \\
        --output-dir output/onnx_detections --thresh 0.5

Each photo is read with OpenCV, converted to RGB, resized to the file's data shape (bilinear,
as training's record iterator) and fed as float32 pixels 0-255: the file subtracts the mean,
decodes the boxes and runs the NMS itself. One line per detection is printed
(``photo: class score xmin ymin xmax ymax``, corners in 0-1 of the photo) and a copy of
each photo with its boxes is written to ``--output-dir``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def get_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description="SSD detection with an ONNX file, no MXNet")
    parser.add_argument("onnx", help="file written by deploy.py --onnx")
    parser.add_argument("images", help="comma list of photos or folders of photos")
    parser.add_argument("--output-dir", default=os.path.join("output", "onnx_detections"),
                        help="where the drawn photos go (default output/onnx_detections)")
    parser.add_argument("--thresh", type=float, default=0.5,
                        help="lowest score printed and drawn (default 0.5)")
    parser.add_argument("--threads", type=int, default=0,
                        help="onnxruntime threads (default 0: onnxruntime's choice)")
    parser.add_argument("--no-pictures", dest="pictures", action="store_false",
                        help="print the detections only")
    return parser


def list_photos(spec: str) -> list[str]:
    """Photo paths of a comma list of files and folders (folders sorted)."""
    paths = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if os.path.isdir(item):
            paths += sorted(os.path.join(item, n) for n in os.listdir(item)
                            if n.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"images: {item} is neither a photo nor a folder")
    if not paths:
        raise ValueError(f"images: no photo in {spec!r}")
    return paths


def open_model(path: str, threads: int):
    """The onnxruntime session, its (height, width) and class names (from the metadata)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"onnx: {path} not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, threads)
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as err:      # onnxruntime's own exception types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"onnx: {path} cannot be loaded by onnxruntime: {first}") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "data_shape" not in meta:
        raise ValueError(f"onnx: {path} has no data_shape metadata: not a deploy.py --onnx file")
    _, height, width = (int(v) for v in meta["data_shape"].split(","))
    return session, (height, width), json.loads(meta.get("class_names", "[]"))


def detect(session, photo_bgr: np.ndarray, data_shape: tuple[int, int]) -> np.ndarray:
    """Kept rows (K, 6) ``[class, score, xmin, ymin, xmax, ymax]`` (0-1), best score first."""
    height, width = data_shape
    rgb = cv2.cvtColor(photo_bgr, cv2.COLOR_BGR2RGB)
    resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    data = resized.astype(np.float32).transpose(2, 0, 1)[np.newaxis]      # (1, 3, h, w)
    rows = session.run(None, {"data": data})[0][0]                       # (K, 6)
    rows = rows[rows[:, 0] >= 0]
    return rows[np.argsort(-rows[:, 1], kind="stable")]


def draw(photo_bgr: np.ndarray, rows: np.ndarray, names: list[str]) -> np.ndarray:
    """A copy of the photo with one box and label per row."""
    canvas = photo_bgr.copy()
    height, width = canvas.shape[:2]
    for cls, score, x0, y0, x1, y1 in rows:
        p0, p1 = (int(x0 * width), int(y0 * height)), (int(x1 * width), int(y1 * height))
        cv2.rectangle(canvas, p0, p1, (0, 0, 255), 2)
        name = names[int(cls)] if int(cls) < len(names) else str(int(cls))
        cv2.putText(canvas, f"{name} {score:.2f}", (p0[0], max(p0[1] - 4, 12)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1)
    return canvas


def main(argv: list[str] | None = None) -> int:
    """Detect, print, draw; returns the exit status (2 on bad input)."""
    args = get_parser().parse_args(argv)
    try:
        session, data_shape, names = open_model(args.onnx, args.threads)
        photos = list_photos(args.images)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.pictures:
        os.makedirs(args.output_dir, exist_ok=True)
    for path in photos:
        photo = cv2.imread(path, cv2.IMREAD_COLOR)
        if photo is None:
            print(f"error: {path} cannot be decoded as an image", file=sys.stderr)
            return 2
        rows = detect(session, photo, data_shape)
        rows = rows[rows[:, 1] >= args.thresh]
        for cls, score, x0, y0, x1, y1 in rows:
            name = names[int(cls)] if int(cls) < len(names) else str(int(cls))
            print(f"{path}: {name} {score:.6f} {x0:.6f} {y0:.6f} {x1:.6f} {y1:.6f}")
        if args.pictures:
            out = os.path.join(args.output_dir,
                               os.path.splitext(os.path.basename(path))[0] + ".png")
            cv2.imwrite(out, draw(photo, rows, names))
            print(f"{path}: {len(rows)} detection(s) >= {args.thresh} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
