"""Base class of the image databases (``Imdb``) and the detection ``.lst`` writer.

A reader subclass fills ``image_set_index`` (one id per image), ``labels`` (one float32 array
per image, rows ``[cls, x1, y1, x2, y2(, difficult)]`` normalised to [0, 1]) and implements
``image_path_from_index``. Problems found while reading (boxes clipped or dropped, images with
no objects, photos and annotation files that have no partner) are counted in ``report`` so that
tools can print one summary.

An image with no objects is left out of the ``.lst`` (the original behaviour) or, with
``save_imglist(backgrounds=True)``, kept as a background: its label holds one placeholder row
``BACKGROUND_ROW`` (class -1, an empty box). MXNet's ``ImageDetRecordIter`` refuses a label
without any object row and drops rows of no area, so the photo trains as pure background; the
project's own record readers drop rows of class < 0 as padding.
"""
from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

# Magic numbers of the image formats OpenCV decodes that we accept in a dataset.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8", b"II*\x00", b"MM\x00*", b"RIFF")

# the one row of a background photo's label: class -1 (padding to every reader), no area
BACKGROUND_ROW = (-1.0, 0.0, 0.0, 0.0, 0.0, 0.0)

# kinds of files left out because their partner is missing (``CheckReport.unmatched``)
PHOTO_WITHOUT_ANNOTATION = "photo(s) without an annotation"
ANNOTATION_WITHOUT_PHOTO = "annotation(s) without a photo"

# class-name files in dataset/names (paths from the repository root)
SHIPPED_NAMES = ("dataset/names/pascal_voc.names (VOC, 20)", "dataset/names/mscoco.names (COCO, 80)")


@dataclass
class CheckReport:
    """Counts of the problems met while reading annotations (see ``Imdb.summary``)."""

    clipped_boxes: int = 0
    dropped_boxes: int = 0
    ignored_unknown: int = 0
    empty_images: list[str] = field(default_factory=list)
    skipped_images: list[tuple[str, str]] = field(default_factory=list)   # (path, why)
    notes_by_kind: Counter = field(default_factory=Counter)   # photo fixes applied, by kind
    messages: list[str] = field(default_factory=list)
    backgrounds: list[str] = field(default_factory=list)     # images without objects, kept
    unmatched: Counter = field(default_factory=Counter)      # files left out: no partner
    unmatched_examples: dict[str, str] = field(default_factory=dict)   # the first of each kind

    def note(self, message: str) -> None:
        """Record one problem (also logged at debug level)."""
        self.messages.append(message)
        logger.debug(message)

    def skip(self, path: str, reason: str) -> None:
        """Record an image left out of the list, and why (also logged as a warning)."""
        self.skipped_images.append((path, reason))
        logger.warning("%s skipped: %s", path, reason)

    def fixed(self, kind: str, message: str) -> None:
        """Record a quirk of a photo or annotation that was read correctly anyway."""
        self.notes_by_kind[kind] += 1
        self.note(message)

    def left_out(self, kind: str, path: str) -> None:
        """Record a photo or annotation file left out because its partner is missing.

        ``kind`` is ``PHOTO_WITHOUT_ANNOTATION`` or ``ANNOTATION_WITHOUT_PHOTO``.
        """
        self.unmatched[kind] += 1
        self.unmatched_examples.setdefault(kind, path)
        self.note(f"{path}: left out, one of the {kind}")

    def merge(self, other: "CheckReport") -> None:
        """Add the counts of ``other`` to this report."""
        self.clipped_boxes += other.clipped_boxes
        self.dropped_boxes += other.dropped_boxes
        self.ignored_unknown += other.ignored_unknown
        self.empty_images.extend(other.empty_images)
        self.skipped_images.extend(other.skipped_images)
        self.notes_by_kind.update(other.notes_by_kind)
        self.messages.extend(other.messages)
        self.backgrounds.extend(other.backgrounds)
        for kind, count in other.unmatched.items():
            self.unmatched[kind] += count
            if kind in other.unmatched_examples:
                self.unmatched_examples.setdefault(kind, other.unmatched_examples[kind])


class SkippedImage(ValueError):
    """An image that cannot be used as annotated; the message says why (a reader skips it)."""


# Upper edges of the box-size histogram bins: sqrt(box area) as a fraction of the image side
BOX_SIZE_BINS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def box_size_histogram(labels: list[np.ndarray]) -> dict[str, int]:
    """Boxes per size bin, size = sqrt(normalised box area) (fraction of the image side)."""
    rows = [lb[:, 1:5] for lb in labels if lb.size]
    boxes = np.concatenate(rows) if rows else np.zeros((0, 4))
    sizes = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
                    * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    edges = (0.0,) + BOX_SIZE_BINS
    counts = np.histogram(sizes, bins=edges)[0]
    return {f"{lo:g}-{hi:g}": int(c) for lo, hi, c in zip(edges, edges[1:], counts)}


def check_box(x1: float, y1: float, x2: float, y2: float, width: float, height: float,
              where: str, report: CheckReport) -> tuple[float, float, float, float] | None:
    """Clip a pixel box to the image; return it normalised, or None if it has no area.

    Parameters
    ----------
    x1, y1, x2, y2 : float
        Box edges in continuous pixel coordinates (0 = left edge of the image).
    width, height : float
        Image size in pixels.
    where : str
        "file, object k" text used in the messages.
    report : CheckReport
        Counts clipped and dropped boxes.
    """
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has a non-finite "
                         "coordinate (nan or inf); every coordinate must be a finite number")
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        report.clipped_boxes += 1
        report.note(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) outside the "
                    f"{width:g}x{height:g} image, clipped")
    if cx2 <= cx1 or cy2 <= cy1:
        report.dropped_boxes += 1
        report.note(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has zero or negative size "
                    "after clipping, dropped")
        return None
    return cx1 / width, cy1 / height, cx2 / width, cy2 / height


def check_image_file(path: str) -> None:
    """Raise FileNotFoundError / ValueError if ``path`` is missing, empty or not an image."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ValueError(f"image file {path} is empty")
    if not head.startswith(_IMAGE_MAGIC):
        raise ValueError(f"image file {path} is not a JPEG/PNG/BMP/GIF/TIFF/WebP image "
                         f"(starts with {head!r})")


def format_lst_line(index: int, label: np.ndarray, relpath: str) -> str:
    """One ``.lst`` line: ``idx \\t 2 \\t W \\t values... \\t relpath`` (``{:.4f}`` numbers)."""
    label = np.asarray(label, dtype=np.float64)
    if label.ndim != 2 or label.shape[1] not in (5, 6):
        raise ValueError(f"label of {relpath} has shape {label.shape}, need (N, 5) or (N, 6)")
    values = [2.0, float(label.shape[1])] + label.reshape(-1).tolist()  # (N, W) -> (N*W,)
    return "\t".join([str(index)] + ["{:.4f}".format(v) for v in values] + [relpath]) + "\n"


class Imdb:
    """Base class of the image databases.

    Parameters
    ----------
    name : str
        Dataset name used in messages (``voc_2007_trainval``).
    classes : list of str
        Class names; the class id of a label row is its position in this list.
    """

    def __init__(self, name: str, classes: list[str] | tuple[str, ...]) -> None:
        self.name = name
        self.classes = list(classes)
        self.image_set_index: list = []
        self.labels: list[np.ndarray] = []
        self.report = CheckReport()

    @property
    def num_classes(self) -> int:
        """Number of object classes (no background)."""
        return len(self.classes)

    @property
    def num_images(self) -> int:
        """Number of images (including those without objects)."""
        return len(self.image_set_index)

    def image_path_from_index(self, index: int) -> str:
        """Full path of image ``index`` (position in ``image_set_index``)."""
        raise NotImplementedError

    def label_from_index(self, index: int) -> np.ndarray:
        """Label of image ``index``: float32 (num_objects, 5 or 6), normalised."""
        return self.labels[index]

    def check_images(self) -> None:
        """Check that every image file exists and looks like an image (headers only)."""
        for i in range(self.num_images):
            check_image_file(self.image_path_from_index(i))

    def save_imglist(self, fname: str, root: str | None = None, shuffle: bool = False,
                     skip_empty: bool = True, seed: int | None = None,
                     backgrounds: bool = False) -> int:
        """Write the detection ``.lst`` file (REFERENCE §3.1).

        Parameters
        ----------
        fname : str
            Output path.
        root : str, optional
            Paths are written relative to this folder (the packer's image root).
        shuffle : bool
            Write the images in a random order.
        skip_empty : bool
            Leave out images with no objects (the original behaviour); they are listed in
            ``report.empty_images``. If False, an image with no objects raises ValueError.
        seed : int, optional
            Seed of the shuffle.
        backgrounds : bool
            Keep images with no objects as backgrounds (``BACKGROUND_ROW``, module docstring),
            listed in ``report.backgrounds``; overrides ``skip_empty``.

        Returns
        -------
        int
            Number of lines written.
        """
        order = np.arange(self.num_images)
        if shuffle:
            np.random.default_rng(seed).shuffle(order)
        lines, with_objects = [], 0
        for i in order:
            label = self.label_from_index(int(i))
            path = self.image_path_from_index(int(i))
            if label.size == 0:
                if backgrounds:
                    self.report.backgrounds.append(path)
                    width = label.shape[1] if label.ndim == 2 and label.shape[1] in (5, 6) else 6
                    label = np.array([BACKGROUND_ROW[:width]], dtype=np.float32)
                elif not skip_empty:
                    raise ValueError(f"image {path} has no objects")
                else:
                    self.report.empty_images.append(path)
                    continue
            else:
                with_objects += 1
            relpath = os.path.relpath(path, root) if root else path
            lines.append(format_lst_line(len(lines), label, relpath))
        if not with_objects:
            raise ValueError(f"no image with objects in {self.name}: nothing to write to {fname}")
        os.makedirs(os.path.dirname(os.path.abspath(fname)), exist_ok=True)
        with open(fname, "w") as f:
            f.writelines(lines)
        if self.report.empty_images:
            logger.warning("%s: %d image(s) without objects skipped, e.g. %s", self.name,
                           len(self.report.empty_images), self.report.empty_images[0])
        return len(lines)

    def summary(self) -> dict:
        """Images, objects per class, max objects per image and the label width needed."""
        per_class: Counter = Counter()
        max_objects, num_objects, width, num_difficult = 0, 0, 6, 0
        for label in self.labels:
            if label.size == 0:
                continue
            width = label.shape[1]
            per_class.update(int(c) for c in label[:, 0])
            if width == 6:
                num_difficult += int((label[:, 5] > 0).sum())
            max_objects = max(max_objects, label.shape[0])
            num_objects += label.shape[0]
        return {
            "name": self.name,
            "images": self.num_images,
            "images_with_objects": sum(1 for lb in self.labels if lb.size),
            "objects": num_objects,
            "difficult": num_difficult,
            "objects_per_class": {self.classes[c]: per_class.get(c, 0)
                                  for c in range(self.num_classes)},
            "max_objects_per_image": max_objects,
            "object_width": width,
            "label_width": 2 + width * max_objects,
            "clipped_boxes": self.report.clipped_boxes,
            "dropped_boxes": self.report.dropped_boxes,
            "ignored_unknown": self.report.ignored_unknown,
            "empty_images": len(self.report.empty_images),
            "backgrounds": len(self.report.backgrounds),
            "left_out": {kind: {"count": count,
                                "example": self.report.unmatched_examples.get(kind, "")}
                         for kind, count in self.report.unmatched.items()},
            "box_size_histogram": box_size_histogram(self.labels),
            "skipped_images": [list(item) for item in self.report.skipped_images],
            "fixes": dict(self.report.notes_by_kind),
        }


def load_class_names(value: str | list[str] | tuple[str, ...] | None,
                     default_file: str | None = None, flag: str = "--class-names",
                     num_classes: int | None = None) -> list[str]:
    """Class names from a list, a comma string, a file (one per line) or ``default_file``.

    The one parser of class names: the dataset readers, ``train.py`` and the evaluation CLIs
    all use it.

    Parameters
    ----------
    value : str, list of str or None
        ``"cat,dog"``, a path to a names file, or the names themselves.
    default_file : str, optional
        Read when ``value`` is empty.
    flag : str
        Flag named in error messages.
    num_classes : int, optional
        When given, the number of names must match it (``--num-class``).

    Raises
    ------
    FileNotFoundError
        ``value`` looks like a path (a single entry with ``/`` or a names-file ending) that
        does not exist.
    ValueError
        Empty or duplicate names, or a count other than ``num_classes``.
    """
    if value is None or value == "" or value == []:
        if default_file is None and num_classes is None:
            raise ValueError(f"{flag}: no class names given")
        value = default_file or ""
    if not value:
        names, where = [], repr(value)
    elif isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value]
        where = repr(",".join(names))
    elif os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            names = [ln.strip() for ln in f if ln.strip()]
        where = f"file {value}"
    else:
        names = [v.strip() for v in value.split(",")]
        where = repr(value)
        if len(names) == 1 and ("/" in value or value.endswith((".txt", ".names"))):
            raise FileNotFoundError(f"{flag} {value}: file not found (names files shipped "
                                    f"here: {', '.join(SHIPPED_NAMES)})")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{flag} {where} has {len(names)} names but --num-class is "
                         f"{num_classes}; give exactly {num_classes} comma-separated names or a "
                         f"file with one per line")
    if not names or any(not n for n in names):
        raise ValueError(f"{flag} {value!r}: need a comma list of non-empty names or a file "
                         "with one name per line")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{flag} {value!r}: duplicate class names {dup}; every class needs "
                         f"its own name")
    return names
