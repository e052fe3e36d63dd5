"""Generate a synthetic detection dataset in the PASCAL VOC layout.

Each object is a filled shape whose class is the shape (circle, square, triangle, ...) and whose
colour is random, so a detector must learn shape, not colour. Backgrounds vary (flat, gradient,
noise, stripes, blobs). A fraction of objects is marked ``difficult`` (drawn very small and with
low contrast). Output, under ``<root>/VOCdevkit/VOC<year>/``::

    JPEGImages/000001.jpg
    Annotations/000001.xml           VOC XML, 1-based inclusive pixel boxes
    ImageSets/Main/trainval.txt, test.txt

and ``<root>/class_names.txt`` (one name per line). The same seed gives the same dataset.

Example::

    python tools/make_synthetic_voc.py --root data/synth --num-train 800 --num-test 200
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from xml.etree import ElementTree as ET

if __package__ in (None, ""):  # run by path (python tools/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

import cv2
import numpy as np
from tqdm import tqdm

SHAPES = ("circle", "square", "triangle", "cross", "ring", "star", "diamond", "hexagon")
BACKGROUNDS = ("flat", "gradient", "noise", "stripes", "blobs")
MAX_OVERLAP_IOU = 0.3  # a new object may overlap an existing one up to this IoU

logger = logging.getLogger("make_synthetic_voc")


@dataclass
class SynthConfig:
    """Settings of the generator (see ``get_parser`` for the meaning of each)."""

    root: str
    num_train: int = 48
    num_test: int = 16
    min_image_size: int = 128
    max_image_size: int = 128
    classes: tuple[str, ...] = ("circle", "square", "triangle", "cross")
    min_objects: int = 1
    max_objects: int = 5
    min_size: float = 0.15
    max_size: float = 0.5
    backgrounds: tuple[str, ...] = BACKGROUNDS
    difficult_fraction: float = 0.05
    year: str = "2007"
    seed: int = 0
    progress: bool = True


# ----------------------------------------------------------------------------- drawing
def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray,
                        low_contrast: bool) -> tuple[int, int, int]:
    """Random colour far enough from the mean background colour (or close, for difficult)."""
    mean = background.reshape(-1, 3).mean(axis=0)
    for _ in range(20):
        colour = np.array(_random_colour(rng), dtype=np.float64)
        dist = np.abs(colour - mean).sum()
        if (low_contrast and 40 < dist < 90) or (not low_contrast and dist > 150):
            return tuple(int(c) for c in colour)
    if low_contrast:
        return tuple(int(c) for c in np.clip(mean + 30, 0, 255))
    return tuple(int(c) for c in (255 - mean))


def _make_background(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    if kind == "flat":
        return np.full((height, width, 3), _random_colour(rng), dtype=np.uint8)
    if kind == "gradient":
        c0 = np.array(_random_colour(rng), np.float32)
        c1 = np.array(_random_colour(rng), np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
        return img.astype(np.uint8)
    if kind == "noise":
        base = np.array(_random_colour(rng), np.float32)
        noise = rng.normal(0, 40, size=(height, width, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8)
    if kind == "stripes":
        img = np.full((height, width, 3), _random_colour(rng), dtype=np.uint8)
        colour = _random_colour(rng)
        period = int(rng.integers(6, 20))
        yy, xx = np.mgrid[0:height, 0:width]
        mask = ((xx + yy * int(rng.integers(-1, 2))) // period) % 2 == 0
        img[mask] = colour
        return img
    if kind == "blobs":
        img = np.full((height, width, 3), _random_colour(rng), dtype=np.uint8)
        for _ in range(int(rng.integers(5, 15))):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(4, max(5, width // 4))), int(rng.integers(4, max(5, height // 4))))
            cv2.ellipse(img, centre, axes, int(rng.integers(0, 180)), 0, 360,
                        _random_colour(rng), -1)
        # soft-edged clouds: texture for the background, never mistakable for a drawn shape
        return cv2.GaussianBlur(img, (0, 0), sigmaX=max(3.0, min(width, height) / 25.0))
    raise ValueError(f"unknown background {kind!r}; valid: {', '.join(BACKGROUNDS)}")


def _regular_polygon(cx: float, cy: float, radius: float, sides: int, phase: float) -> np.ndarray:
    angles = phase + np.arange(sides) * 2 * np.pi / sides
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def _draw_shape(mask: np.ndarray, shape: str, x0: int, y0: int, size: int,
                rng: np.random.Generator) -> None:
    """Draw ``shape`` filled with 255 into ``mask`` inside the square (x0, y0, size)."""
    cx, cy, r = x0 + size / 2.0, y0 + size / 2.0, size / 2.0
    if shape == "circle":
        cv2.circle(mask, (int(round(cx)), int(round(cy))), max(1, int(r)), 255, -1)
    elif shape == "ring":
        cv2.circle(mask, (int(round(cx)), int(round(cy))), max(1, int(r)), 255, -1)
        cv2.circle(mask, (int(round(cx)), int(round(cy))), max(0, int(r * 0.55)), 0, -1)
    elif shape == "square":
        cv2.rectangle(mask, (x0, y0), (x0 + size - 1, y0 + size - 1), 255, -1)
    elif shape == "cross":
        bar = max(1, size // 3)
        cv2.rectangle(mask, (x0, y0 + (size - bar) // 2), (x0 + size - 1, y0 + (size + bar) // 2), 255, -1)
        cv2.rectangle(mask, (x0 + (size - bar) // 2, y0), (x0 + (size + bar) // 2, y0 + size - 1), 255, -1)
    else:
        if shape == "triangle":
            pts = _regular_polygon(cx, cy + r * 0.2, r, 3, -np.pi / 2)
        elif shape == "diamond":
            pts = _regular_polygon(cx, cy, r, 4, 0.0)
        elif shape == "hexagon":
            pts = _regular_polygon(cx, cy, r, 6, 0.0)
        elif shape == "star":
            outer = _regular_polygon(cx, cy, r, 5, -np.pi / 2)
            inner = _regular_polygon(cx, cy, r * 0.45, 5, -np.pi / 2 + np.pi / 5)
            pts = np.empty((10, 2))
            pts[0::2], pts[1::2] = outer, inner
        else:
            raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def make_image(rng: np.random.Generator, config: SynthConfig) -> tuple[np.ndarray, list[dict]]:
    """Draw one image; return it (BGR uint8) and its objects (0-based inclusive boxes)."""
    height = int(rng.integers(config.min_image_size, config.max_image_size + 1))
    width = int(rng.integers(config.min_image_size, config.max_image_size + 1))
    image = _make_background(rng, str(rng.choice(config.backgrounds)), height, width)
    side = min(height, width)
    num = int(rng.integers(config.min_objects, config.max_objects + 1))
    objects: list[dict] = []
    for _ in range(num * 10):
        if len(objects) == num:
            break
        difficult = bool(rng.random() < config.difficult_fraction)
        frac = rng.uniform(0.04, 0.08) if difficult else rng.uniform(config.min_size, config.max_size)
        size = max(4, int(frac * side))
        x0 = int(rng.integers(0, width - size + 1))
        y0 = int(rng.integers(0, height - size + 1))
        mask = np.zeros((height, width), np.uint8)
        shape = str(rng.choice(config.classes))
        _draw_shape(mask, shape, x0, y0, size, rng)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        if any(_iou(box, o["box"]) > MAX_OVERLAP_IOU for o in objects):
            continue
        image[mask > 0] = _contrasting_colour(rng, image[mask > 0], low_contrast=difficult)
        objects.append({"name": shape, "box": box, "difficult": int(difficult)})
    return image, objects


# ----------------------------------------------------------------------------- writing
def _annotation_xml(filename: str, folder: str, height: int, width: int,
                    objects: list[dict]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "Synthetic shapes"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["name"]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = str(obj["difficult"])
        bndbox = ET.SubElement(node, "bndbox")
        x1, y1, x2, y2 = obj["box"]
        # VOC boxes are 1-based and inclusive
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2 + 1, y2 + 1)):
            ET.SubElement(bndbox, tag).text = str(value)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def generate(config: SynthConfig) -> str:
    """Write the dataset described by ``config``; return the ``VOC<year>`` folder path."""
    _validate(config)
    voc_dir = os.path.join(config.root, "VOCdevkit", f"VOC{config.year}")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(voc_dir, sub), exist_ok=True)
    rng = np.random.default_rng(config.seed)
    total = config.num_train + config.num_test
    names = [f"{i + 1:06d}" for i in range(total)]
    for name in tqdm(names, desc="images", disable=not config.progress, unit="img"):
        image, objects = make_image(rng, config)
        height, width = image.shape[:2]
        cv2.imwrite(os.path.join(voc_dir, "JPEGImages", name + ".jpg"), image,
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        _annotation_xml(name + ".jpg", f"VOC{config.year}", height, width, objects).write(
            os.path.join(voc_dir, "Annotations", name + ".xml"))
    main_dir = os.path.join(voc_dir, "ImageSets", "Main")
    with open(os.path.join(main_dir, "trainval.txt"), "w") as f:
        f.writelines(n + "\n" for n in names[:config.num_train])
    with open(os.path.join(main_dir, "test.txt"), "w") as f:
        f.writelines(n + "\n" for n in names[config.num_train:])
    with open(os.path.join(config.root, "class_names.txt"), "w") as f:
        f.writelines(c + "\n" for c in config.classes)
    logger.info("wrote %d train + %d test images to %s", config.num_train, config.num_test, voc_dir)
    return voc_dir


def _validate(config: SynthConfig) -> None:
    unknown = [c for c in config.classes if c not in SHAPES]
    if unknown or not config.classes or len(set(config.classes)) != len(config.classes):
        raise ValueError(f"--classes {','.join(config.classes)!r}: need distinct names from "
                         f"{', '.join(SHAPES)} (or a count 1-{len(SHAPES)})")
    bad_bg = [b for b in config.backgrounds if b not in BACKGROUNDS]
    if bad_bg or not config.backgrounds:
        raise ValueError(f"--backgrounds {','.join(config.backgrounds)!r}: valid kinds are "
                         f"{', '.join(BACKGROUNDS)}")
    if config.num_train < 0 or config.num_test < 0 or config.num_train + config.num_test == 0:
        raise ValueError(f"--num-train {config.num_train} / --num-test {config.num_test}: "
                         "need non-negative counts, not both zero")
    if not 16 <= config.min_image_size <= config.max_image_size:
        raise ValueError(f"--min-image-size {config.min_image_size} / --max-image-size "
                         f"{config.max_image_size}: need 16 <= min <= max")
    if not 1 <= config.min_objects <= config.max_objects:
        raise ValueError(f"--min-objects {config.min_objects} / --max-objects "
                         f"{config.max_objects}: need 1 <= min <= max")
    if not 0.0 < config.min_size <= config.max_size <= 1.0:
        raise ValueError(f"--min-size {config.min_size} / --max-size {config.max_size}: "
                         "need 0 < min <= max <= 1 (fractions of the shorter image side)")
    if not 0.0 <= config.difficult_fraction <= 1.0:
        raise ValueError(f"--difficult-fraction {config.difficult_fraction}: need 0 to 1")


# ----------------------------------------------------------------------------- other formats
def _read_voc_objects(xml_path: str) -> tuple[str, int, int, list[dict]]:
    root = ET.parse(xml_path).getroot()
    width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
    objects = []
    for node in root.findall("object"):
        box = tuple(int(node.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append({"name": node.findtext("name"), "box": box,
                        "difficult": int(node.findtext("difficult") or 0)})
    return root.findtext("filename"), width, height, objects


def _set_ids(voc_dir: str, image_set: str) -> list[str]:
    with open(os.path.join(voc_dir, "ImageSets", "Main", image_set + ".txt")) as f:
        return [ln.strip() for ln in f if ln.strip()]


def export_coco(voc_dir: str, image_set: str, out_root: str, classes: tuple[str, ...]) -> str:
    """Write ``image_set`` of a generated VOC folder as COCO (same images, same boxes).

    Layout: ``<out_root>/annotations/instances_<set>.json``, ``<out_root>/images/<set>/``.
    Category ids start at 1 and follow ``classes``; returns the JSON path.
    """
    import json
    import shutil

    image_dir = os.path.join(out_root, "images", image_set)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(out_root, "annotations"), exist_ok=True)
    doc = {"images": [], "annotations": [],
           "categories": [{"id": i + 1, "name": c, "supercategory": "shape"}
                          for i, c in enumerate(classes)]}
    for image_id, stem in enumerate(_set_ids(voc_dir, image_set), 1):
        filename, width, height, objects = _read_voc_objects(
            os.path.join(voc_dir, "Annotations", stem + ".xml"))
        shutil.copy(os.path.join(voc_dir, "JPEGImages", filename), image_dir)
        doc["images"].append({"id": image_id, "file_name": filename, "width": width, "height": height})
        for obj in objects:
            x1, y1, x2, y2 = obj["box"]  # 1-based inclusive -> [x, y, w, h] continuous
            bbox = [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1]
            doc["annotations"].append({
                "id": len(doc["annotations"]) + 1, "image_id": image_id,
                "category_id": classes.index(obj["name"]) + 1, "bbox": bbox,
                "area": bbox[2] * bbox[3], "iscrowd": 0})
    path = os.path.join(out_root, "annotations", f"instances_{image_set}.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def export_yolo(voc_dir: str, image_set: str, out_root: str, classes: tuple[str, ...]) -> str:
    """Write ``image_set`` of a generated VOC folder as YOLO text labels (``cls cx cy w h``).

    Layout: ``<out_root>/{images,labels}/``, ``<out_root>/<set>.txt`` (stems) and
    ``<out_root>/classes.txt``; returns the list path.
    """
    import shutil

    for sub in ("images", "labels"):
        os.makedirs(os.path.join(out_root, sub), exist_ok=True)
    stems = _set_ids(voc_dir, image_set)
    for stem in stems:
        filename, width, height, objects = _read_voc_objects(
            os.path.join(voc_dir, "Annotations", stem + ".xml"))
        shutil.copy(os.path.join(voc_dir, "JPEGImages", filename), os.path.join(out_root, "images"))
        with open(os.path.join(out_root, "labels", stem + ".txt"), "w") as f:
            for obj in objects:
                x1, y1, x2, y2 = obj["box"]
                cx, cy = (x1 - 1 + x2) / 2.0 / width, (y1 - 1 + y2) / 2.0 / height
                w, h = (x2 - x1 + 1) / width, (y2 - y1 + 1) / height
                f.write(f"{classes.index(obj['name'])} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    list_path = os.path.join(out_root, image_set + ".txt")
    with open(list_path, "w") as f:
        f.writelines(s + "\n" for s in stems)
    with open(os.path.join(out_root, "classes.txt"), "w") as f:
        f.writelines(c + "\n" for c in classes)
    return list_path


# ----------------------------------------------------------------------------- CLI
def parse_classes(value: str) -> tuple[str, ...]:
    """``--classes``: a count (first N shapes) or a comma list of shape names."""
    value = value.strip()
    if value.isdigit():
        count = int(value)
        if not 1 <= count <= len(SHAPES):
            raise ValueError(f"--classes {count}: need 1-{len(SHAPES)} or names from {', '.join(SHAPES)}")
        return SHAPES[:count]
    return tuple(c.strip() for c in value.split(",") if c.strip())


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser of the generator."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", required=True, help="output folder (VOCdevkit/ is created in it)")
    p.add_argument("--num-train", type=int, default=800, help="images in trainval.txt")
    p.add_argument("--num-test", type=int, default=200, help="images in test.txt")
    p.add_argument("--image-size", type=int, default=None,
                   help="square image side in px (sets both --min/--max-image-size)")
    p.add_argument("--min-image-size", type=int, default=128, help="smallest image side, px")
    p.add_argument("--max-image-size", type=int, default=160, help="largest image side, px")
    p.add_argument("--classes", default="4",
                   help=f"a count or comma list of shapes from: {', '.join(SHAPES)}")
    p.add_argument("--min-objects", type=int, default=1, help="objects per image, minimum")
    p.add_argument("--max-objects", type=int, default=5, help="objects per image, maximum")
    p.add_argument("--min-size", type=float, default=0.15, help="object side, fraction of image side")
    p.add_argument("--max-size", type=float, default=0.5, help="object side, fraction of image side")
    p.add_argument("--backgrounds", default=",".join(BACKGROUNDS), help="comma list of kinds")
    p.add_argument("--difficult-fraction", type=float, default=0.05,
                   help="fraction of objects drawn tiny and low-contrast, marked difficult")
    p.add_argument("--year", default="2007", help="VOC<year> folder name")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    p.add_argument("--export", default="",
                   help="also write copies as 'coco' and/or 'yolo' (comma list) under "
                        "<root>/coco and <root>/yolo")
    return p


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """Build a :class:`SynthConfig` from parsed arguments."""
    min_side, max_side = args.min_image_size, args.max_image_size
    if args.image_size is not None:
        min_side = max_side = args.image_size
    return SynthConfig(
        root=args.root, num_train=args.num_train, num_test=args.num_test,
        min_image_size=min_side, max_image_size=max_side, classes=parse_classes(args.classes),
        min_objects=args.min_objects, max_objects=args.max_objects, min_size=args.min_size,
        max_size=args.max_size,
        backgrounds=tuple(b.strip() for b in args.backgrounds.split(",") if b.strip()),
        difficult_fraction=args.difficult_fraction, year=args.year, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        voc_dir = generate(config)
        for fmt in (f.strip() for f in args.export.split(",") if f.strip()):
            if fmt not in ("coco", "yolo"):
                raise ValueError(f"--export {fmt!r}: valid: coco, yolo")
            export = export_coco if fmt == "coco" else export_yolo
            for image_set in ("trainval", "test"):
                export(voc_dir, image_set, os.path.join(config.root, fmt), config.classes)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
