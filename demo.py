"""Detect objects on images, a folder or a camera and save pictures with the boxes drawn.

Example::

    python demo.py --network tiny --data-shape 128 --prefix model/ssd_ --epoch 10 --cpu \
        --class-names cat,dog,car --images data/demo --output-dir output/detections

Each input image is written to ``--output-dir`` as ``<name>.png`` with boxes, class names and
scores (matplotlib, Agg backend: no display needed). ``--camera`` reads ``cv2.VideoCapture(0)``
and writes annotated frames to the same folder.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from config.runtime import setup_threads
from evaluate import add_anchors_arg, add_flip_test_arg, add_mean_args

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_IMAGES = os.path.join(".", "data", "demo", "dog.jpg")   # the original's demo picture


def get_parser() -> argparse.ArgumentParser:
    """Flags of the original ``demo.py`` plus ``--output-dir`` and ``--camera-frames``."""
    parser = argparse.ArgumentParser(description="Single-shot detection demo")
    cwd = os.getcwd()
    parser.add_argument("--network", default="resnet50", help="network preset (default resnet50)")
    parser.add_argument("--images", default=DEFAULT_IMAGES,
                        help="comma list of images or folders (default ./data/demo/dog.jpg)")
    parser.add_argument("--dir", dest="dir", default=None,
                        help="folder prepended to every --images entry (default none)")
    parser.add_argument("--ext", dest="extension", default=None,
                        help="extension appended to every --images entry, e.g. .jpg (default none)")
    parser.add_argument("--epoch", type=int, default=0, help="checkpoint epoch (default 0)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=1,
                        help="images per forward pass (default 1)")
    parser.add_argument("--prefix", default=os.path.join(cwd, "model", "ssd_"),
                        help="checkpoint prefix; one ending in '_' gets '<network>_<shape>' "
                             "appended (default ./model/ssd_)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU")
    parser.add_argument("--gpu", dest="gpu_id", type=int, default=0, help="GPU id (default 0)")
    parser.add_argument("--data-shape", dest="data_shape", default=None,
                        help="input side, 'h' or 'h,w' (default 512; with --onnx the file's)")
    add_mean_args(parser)
    parser.add_argument("--thresh", type=float, default=0.5,
                        help="minimum score drawn (default 0.5)")
    parser.add_argument("--nms", dest="nms_thresh", type=float, default=0.5,
                        help="NMS IoU threshold (default 0.5)")
    parser.add_argument("--no-force", dest="force_nms", action="store_false",
                        help="suppress per class instead of across classes (default across)")
    parser.add_argument("--no-timer", dest="show_timer", action="store_false",
                        help="do not print detection times")
    parser.add_argument("--deploy", dest="deploy_net", action="store_true",
                        help="use the inference symbol saved with the checkpoint (deploy.py)")
    parser.add_argument("--class-names", dest="class_names", default="",
                        help="comma list or file of names (default the 20 VOC names)")
    parser.add_argument("--camera", action="store_true", help="detect on camera 0 frames")
    parser.add_argument("--frame-resize", dest="frame_resize", default=None,
                        help="camera frame size 'width,height' or a scale factor (default none)")
    parser.add_argument("--camera-frames", dest="camera_frames", type=int, default=100,
                        help="frames to process in camera mode (default 100)")
    add_anchors_arg(parser)
    add_flip_test_arg(parser)
    parser.add_argument("--onnx", default="",
                        help="detect with this deploy.py --onnx file in onnxruntime instead of "
                             "the checkpoint (its own mean and NMS; default none)")
    parser.add_argument("--output-dir", dest="output_dir",
                        default=os.path.join(".", "output", "detections"),
                        help="where pictures are written (default ./output/detections)")
    return parser


def list_images(images: str, root: str | None, extension: str | None) -> list[str]:
    """Image paths from the comma list (folders expand to their image files, sorted).

    Raises
    ------
    FileNotFoundError
        Naming the first entry that is neither an image file nor a folder with images.
    """
    paths: list[str] = []
    for item in (entry.strip() for entry in images.split(",")):
        if not item:
            continue
        path = os.path.join(root, item) if root else item
        if extension and not os.path.isdir(path):
            path = path + extension
        if os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f"--images: folder {path} holds no image "
                                        f"({', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif os.path.isfile(path):
            paths.append(path)
        elif images == DEFAULT_IMAGES:
            raise FileNotFoundError(
                f"--images: {path} not found: the original example downloaded its demo "
                f"pictures with data/demo/download_demo_images.py, which is not shipped (no "
                f"downloads here); pass your own pictures or a folder: --images a.jpg,b.jpg")
        else:
            raise FileNotFoundError(f"--images: {path} is neither an image file nor a folder")
    if not paths:
        raise ValueError("--images is empty: give image files or folders, comma separated")
    return paths


def parse_frame_resize(value: str | None) -> tuple[int, int] | float | None:
    """``'640,480'`` -> (640, 480); ``'0.5'`` -> 0.5; None -> None."""
    if not value:
        return None
    try:
        if "," in value:
            width, height = (int(v) for v in value.split(","))
            if width > 0 and height > 0:
                return width, height
        else:
            scale = float(value)
            if scale > 0:
                return scale
    except ValueError:
        pass
    raise ValueError(f"--frame-resize must be 'width,height' or a positive scale, got {value!r}")


def output_path(output_dir: str, image_path: str, used: set[str]) -> str:
    """``output_dir/<stem>.png``, suffixed with a counter when the name is taken."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    name, count = f"{stem}.png", 1
    while name in used:
        name, count = f"{stem}_{count}.png", count + 1
    used.add(name)
    return os.path.join(output_dir, name)


def build_onnx_detector(args, num_classes: int | None):
    """The onnxruntime detector of ``--onnx`` (checked against --data-shape / --class-names)."""
    from evaluate.evaluate_net import parse_data_shape
    from export.onnx_detector import OnnxDetector
    data_shape = parse_data_shape(args.data_shape) if args.data_shape else None
    return OnnxDetector(args.onnx, data_shape, num_classes, args.batch_size)


def build_detector(args, num_classes: int):
    """The Detector for the flags (inference graph rebuilt unless --deploy)."""
    from config.mxnet_compat import mx
    from evaluate import parse_mean
    from evaluate.detector import Detector
    from evaluate.evaluate_net import load_inference_symbol, parse_data_shape, resolve_prefix
    data_shape = parse_data_shape(args.data_shape or "512")
    if args.cpu:
        ctx = mx.cpu()
    else:
        if mx.context.num_gpus() == 0:
            raise ValueError(f"--gpu {args.gpu_id} asked for a GPU but this MXNet sees none: "
                             "use --cpu")
        ctx = mx.gpu(args.gpu_id)
    prefix = resolve_prefix(args.prefix, args.network, data_shape, args.epoch)
    from symbol.anchors import load_anchor_file
    anchors = load_anchor_file(args.anchors) if args.anchors else None
    symbol = None if args.deploy_net else load_inference_symbol(
        args.network, data_shape, num_classes, prefix, args.nms_thresh, args.force_nms, 400,
        deploy_net=False, anchors=anchors, flip_test=args.flip_test)
    logging.info("checkpoint %s-%04d.params, force_suppress=%s", prefix, args.epoch, args.force_nms)
    return Detector(symbol, prefix, args.epoch, data_shape,
                    parse_mean(args.mean_r, args.mean_g, args.mean_b), args.batch_size, ctx)


def run_images(detector, paths: list[str], class_names: list[str], thresh: float,
               output_dir: str, show_timer: bool) -> list[str]:
    """Detect on image files and write one annotated picture each; returns the pictures."""
    from evaluate.detector import load_image
    from evaluate.visualize import draw_detections
    os.makedirs(output_dir, exist_ok=True)
    written, used = [], set()
    for start in range(0, len(paths), detector.batch_size):
        chunk = paths[start:start + detector.batch_size]
        images = [load_image(path) for path in chunk]
        dets = detector.detect_arrays(images)
        if show_timer:
            print(f"detection time: {detector.last_forward_s * 1000:.1f} ms for {len(chunk)} "
                  f"image(s)")
        for path, image, det in zip(chunk, images, dets):
            out = output_path(output_dir, path, used)
            drawn = draw_detections(image, det, class_names, out, thresh=thresh,
                                    title=os.path.basename(path))
            for row in det[det[:, 1] >= thresh]:
                cls = int(row[0])
                name = class_names[cls] if cls < len(class_names) else str(cls)
                print(f"{path}: {name} {row[1]:.3f} [{row[2]:.3f} {row[3]:.3f} {row[4]:.3f} "
                      f"{row[5]:.3f}]")
            print(f"{path}: {drawn} detection(s) >= {thresh} -> {out}")
            written.append(out)
    return written


def run_camera(detector, class_names: list[str], thresh: float, output_dir: str,
               frame_resize, num_frames: int, show_timer: bool) -> int:
    """Detect on camera frames (RGB, as the record iterator) and write annotated JPEGs."""
    import cv2
    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        raise ValueError("--camera: no camera could be opened (cv2.VideoCapture(0) failed); "
                         "use --images instead")
    os.makedirs(output_dir, exist_ok=True)
    count = 0
    try:
        while count < num_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if isinstance(frame_resize, tuple):
                frame = cv2.resize(frame, frame_resize)
            elif isinstance(frame_resize, float):
                frame = cv2.resize(frame, None, fx=frame_resize, fy=frame_resize)
            start = time.perf_counter()
            det = detector.detect_arrays([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)])[0]
            if show_timer:
                print(f"frame {count}: {(time.perf_counter() - start) * 1000:.1f} ms")
            height, width = frame.shape[:2]
            for row in det[det[:, 1] >= thresh]:
                cls = int(row[0])
                p1 = (int(row[2] * width), int(row[3] * height))
                p2 = (int(row[4] * width), int(row[5] * height))
                cv2.rectangle(frame, p1, p2, (0, 0, 255), 2)
                name = class_names[cls] if cls < len(class_names) else str(cls)
                cv2.putText(frame, f"{name} {row[1]:.2f}", (p1[0], max(p1[1] - 4, 10)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1)
            cv2.imwrite(os.path.join(output_dir, f"frame_{count:05d}.jpg"), frame)
            count += 1
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()
    return count


def main(argv: list[str] | None = None) -> int:
    """Parse flags, detect, write pictures; returns the exit status."""
    args = get_parser().parse_args(argv)
    setup_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from evaluate import parse_class_names, refuse_flip_test_with_saved_graph
    try:
        refuse_flip_test_with_saved_graph(args.flip_test, args.deploy_net, args.onnx)
        if args.onnx:
            detector = build_onnx_detector(args, len(parse_class_names(args.class_names))
                                           if args.class_names else None)
            class_names = (parse_class_names(args.class_names) if args.class_names
                           else detector.meta["class_names"])
        else:
            class_names = parse_class_names(args.class_names)
        if not 0.0 <= args.thresh <= 1.0:
            raise ValueError(f"--thresh must be in [0, 1], got {args.thresh}")
        frame_resize = parse_frame_resize(args.frame_resize)
        paths = [] if args.camera else list_images(args.images, args.dir, args.extension)
        if not args.onnx:
            detector = build_detector(args, len(class_names))
        if args.camera:
            frames = run_camera(detector, class_names, args.thresh, args.output_dir,
                                frame_resize, args.camera_frames, args.show_timer)
            print(f"{frames} frame(s) written to {args.output_dir}")
        else:
            written = run_images(detector, paths, class_names, args.thresh, args.output_dir,
                                 args.show_timer)
            print(f"{len(written)} picture(s) written to {args.output_dir}")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
