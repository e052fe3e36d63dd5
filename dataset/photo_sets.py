"""Sets of labelled photos in the annotation formats that labelling tools write, read as an Imdb.

A layout (``dataset/photo_layouts.py``) turns a folder into sets of ``PhotoItem`` (a photo and
its annotation, either of which may be missing); :class:`PhotoSet` reads one set with the
reader of its annotation format (``ANNOTATION_FORMATS``):

* ``voc_xml``: one VOC / LabelImg XML file a photo (``dataset.pascal_voc.parse_voc_xml``:
  1-based pixels, the ``<size>`` checked against the photo);
* ``yolo_txt``: one text file a photo, lines ``cls cx cy w h`` normalised to [0, 1]; the ids
  index the layout's names file (``data.yaml``, ``obj.names``);
* ``coco_json``: a COCO JSON image entry and its annotations, ``[x, y, w, h]`` in pixels;
* ``tf_csv``: the rows of a TensorFlow object-detection CSV for one photo
  (``filename,width,height,class,xmin,ymin,xmax,ymax``), pixels read as ``xmin / width``, as
  TensorFlow's ``generate_tfrecord.py`` reads them.

Every reader counts what it skips or repairs in the set's ``report``
(:class:`dataset.imdb.CheckReport`): boxes clipped to the photo or dropped for no area, classes
not in the names, photos without an annotation and annotations without a photo (both left
out), photos whose declared size is off (as ``parse_voc_xml``: resized, EXIF-turned, no size).
A photo whose annotation holds no box gets an empty label: a background, kept by
``Imdb.save_imglist(backgrounds=True)``.

The 80/20 split of a set (``PhotoSetSpec.part``): the photos with an annotation in natural
order of their file names (``natural_key``: ``raccoon-2`` before ``raccoon-10``), every fifth
one a test photo.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from xml.etree import ElementTree as ET

import numpy as np

from dataset.image_info import ImageInfo, boxes_to_stored
from dataset.imdb import (ANNOTATION_WITHOUT_PHOTO, PHOTO_WITHOUT_ANNOTATION, Imdb, SkippedImage,
                          check_box, load_class_names)
from dataset.mscoco import check_coco_document
from dataset.pascal_voc import parse_voc_xml, photo_info, reconcile_size
from dataset.yolo_format import parse_yolo_txt

ANNOTATION_FORMATS = ("voc_xml", "yolo_txt", "coco_json", "tf_csv")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")   # compared in lower case: .JPG counts
TEST_EVERY = 5                                        # an 80/20 split: every 5th photo is a test one
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


def is_photo(name: str) -> bool:
    """True for a file name with a photo suffix (any case)."""
    return os.path.splitext(name)[1].lower() in PHOTO_SUFFIXES


def natural_key(name: str) -> list:
    """Sort key of a file name in human order: ``raccoon-2`` before ``raccoon-10``.

    Runs of digits compare as numbers, the rest case-insensitively; the name itself breaks
    ties (``a1`` and ``a01``).
    """
    parts = re.split(r"(\d+)", name)
    return [int(p) if k % 2 else p.lower() for k, p in enumerate(parts)] + [name]


def split_part(items: list, part: str) -> list:
    """The ``train`` (4 in 5) or ``test`` (every 5th) part of ``items``, kept in their order."""
    if part not in ("train", "test"):
        raise ValueError(f"split part {part!r}: valid: train, test")
    is_test = [(k % TEST_EVERY) == TEST_EVERY - 1 for k in range(len(items))]
    return [p for p, t in zip(items, is_test) if t == (part == "test")]


def split_line(num_train: int, num_test: int) -> str:
    """The one line that says how a set without a test set was split."""
    return (f"split 80/20 in natural order of the file names (every {TEST_EVERY}th photo is a "
            f"test photo): {num_train} train / {num_test} test")


@dataclass(frozen=True)
class PixelBoxes:
    """One photo's boxes as a per-set file (COCO JSON, TF CSV) holds them.

    ``boxes`` rows are ``(class name, x1, y1, x2, y2)`` in continuous pixels of the declared
    ``width`` x ``height`` (0 x 0: none declared); a class name None is an id the file's
    names do not hold.
    """

    where: str
    width: float
    height: float
    boxes: tuple[tuple[str | None, float, float, float, float], ...] = ()


@dataclass(frozen=True)
class PhotoItem:
    """A photo and its annotation (a file path, or ``PixelBoxes``); either may be None."""

    photo: str | None
    annotation: str | PixelBoxes | None

    @property
    def where(self) -> str:
        """The photo, else the annotation file (for messages)."""
        if self.photo:
            return self.photo
        return self.annotation.where if isinstance(self.annotation, PixelBoxes) else str(
            self.annotation)

    @property
    def matched(self) -> bool:
        return self.photo is not None and self.annotation is not None


def sort_items(items: list[PhotoItem]) -> list[PhotoItem]:
    """``items`` in natural order of their file names (the photo's, else the annotation's)."""
    return sorted(items, key=lambda i: natural_key(os.path.basename(i.where)) + [i.where])


@dataclass
class PhotoSetSpec:
    """One set of a layout: its items and how to read their annotations.

    Parameters
    ----------
    format : str
        One of ``ANNOTATION_FORMATS``.
    items : list of PhotoItem
        In natural order of their file names.
    where : str
        The folder or file the set comes from (messages).
    names : list of str, optional
        Class names written in a names file (YOLO ids index them; COCO categories).
    """

    format: str
    items: list[PhotoItem]
    where: str
    names: list[str] | None = None

    @property
    def num_matched(self) -> int:
        """Photos with an annotation."""
        return sum(1 for i in self.items if i.matched)

    def part(self, part: str) -> "PhotoSetSpec":
        """The ``train`` or ``test`` part of an 80/20 split (module docstring); the items
        without a partner stay with the training part, where they are counted."""
        matched = [i for i in self.items if i.matched]
        chosen = split_part(matched, part)
        if part == "train":
            chosen = sort_items(chosen + [i for i in self.items if not i.matched])
        return PhotoSetSpec(self.format, chosen, f"{self.where} ({part} part)", self.names)


def pair_by_stem(photo_dir: str, annotation_dir: str, suffix: str) -> list[PhotoItem]:
    """Photos of ``photo_dir`` with the ``suffix`` files of ``annotation_dir`` of the same stem.

    Matched by the annotation file's own name (LabelImg's ``<filename>`` / ``<path>`` may name
    the labeller's files); the unmatched ones of either side become items with a None
    partner. With two photos of one stem (``a.jpg``, ``a.png``) the first in natural order
    gets the annotation.
    """
    def listing(folder: str) -> list[str]:
        if not os.path.isdir(folder):
            return []
        return sorted((n for n in os.listdir(folder)
                       if os.path.isfile(os.path.join(folder, n))), key=natural_key)

    photos = [n for n in listing(photo_dir) if is_photo(n)]
    annotations = {os.path.splitext(n)[0]: n for n in listing(annotation_dir)
                   if n.lower().endswith(suffix)}
    items, used = [], set()
    for name in photos:
        stem = os.path.splitext(name)[0]
        found = annotations.get(stem) if stem not in used else None
        used.add(stem)
        items.append(PhotoItem(os.path.join(photo_dir, name),
                               os.path.join(annotation_dir, found) if found else None))
    items += [PhotoItem(None, os.path.join(annotation_dir, n))
              for stem, n in annotations.items() if stem not in used]
    return sort_items(items)


def is_tf_csv(path: str) -> bool:
    """True when ``path`` is a CSV whose header holds every column of ``CSV_COLUMNS``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return set(CSV_COLUMNS) <= {h.strip().lower() for h in header}


def read_tf_csv(path: str) -> dict[str, PixelBoxes]:
    """The boxes of every photo of a TensorFlow object-detection CSV, by ``filename``.

    One row a box; a row whose class and corners are empty lists a photo without boxes.

    Raises
    ------
    ValueError
        The header lacks a column of ``CSV_COLUMNS``, or a value is not a number (the message
        names the file, the line and the value).
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: not a TensorFlow object-detection CSV: header "
                         f"{','.join(header) or '(empty)'} lacks {', '.join(missing)} "
                         f"(expected {','.join(CSV_COLUMNS)})")
    col = {c: header.index(c) for c in CSV_COLUMNS}
    found: dict[str, list] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in row):
            continue
        if len(row) < len(header):
            raise ValueError(f"{path} line {line_no}: {len(row)} values, the header has "
                             f"{len(header)}")
        value = {c: row[i].strip() for c, i in col.items()}
        try:
            size = (float(value["width"] or 0), float(value["height"] or 0))
            corners = [value[c] for c in ("xmin", "ymin", "xmax", "ymax")]
            box = None if not value["class"] and not any(corners) else (
                value["class"], *(float(v) for v in corners))
        except ValueError:
            bad = next(c for c in ("width", "height", "xmin", "ymin", "xmax", "ymax")
                       if not _is_number(value[c]))
            raise ValueError(f"{path} line {line_no}: {bad} {value[bad]!r} is not a number") from None
        entry = found.setdefault(value["filename"], [size, []])
        if box is not None:
            entry[1].append(box)
    return {name: PixelBoxes(f"{path}, {name}", size[0], size[1], tuple(boxes))
            for name, (size, boxes) in found.items()}


def _is_number(value: str) -> bool:
    try:
        float(value or 0)
    except ValueError:
        return False
    return True


def read_coco_boxes(path: str) -> tuple[list[dict], dict[str, PixelBoxes]]:
    """The categories (id order) and every image's boxes of a COCO JSON, by ``file_name``.

    Crowd annotations (``iscrowd``) are left out, as by :class:`dataset.mscoco.Coco`; a
    category id the JSON does not list gives the class name None (counted by the reader).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing, empty or malformed file (``dataset.mscoco.check_coco_document``).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotation file {path} does not exist")
    try:
        with open(path, "rb") as f:
            document = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"COCO annotation file {path} is not valid JSON: {err}") from None
    check_coco_document(document, path)
    categories = sorted(document["categories"], key=lambda c: c["id"])
    names = {c["id"]: c["name"] for c in categories}
    boxes: dict[int, list] = {image["id"]: [] for image in document["images"]}
    for ann in document.get("annotations", []):
        if ann.get("iscrowd", 0) or ann["image_id"] not in boxes:
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes[ann["image_id"]].append((names.get(ann["category_id"]), x, y, x + w, y + h))
    images = {image["file_name"]: PixelBoxes(f"{path}, image {image['file_name']}",
                                             float(image["width"]), float(image["height"]),
                                             tuple(boxes[image["id"]]))
              for image in document["images"]}
    return categories, images


class PhotoSet(Imdb):
    """One set of photos of a layout, read by the reader of its annotation format.

    Parameters
    ----------
    spec : PhotoSetSpec
        The set (``dataset.photo_layouts``).
    class_names : list of str or str
        Class names (list, comma string or file); a box's class is matched by name (YOLO ids
        through ``spec.names``).
    name : str
        Dataset name in messages.
    shuffle, seed : bool, int
        Shuffle the photo order (seeded).
    ignore_unknown : bool
        Skip (and count) boxes of a class name not in ``class_names`` instead of raising.
        Ids a names file does not hold (YOLO, COCO) are always skipped and counted.

    Raises
    ------
    ValueError
        No photo of the set has an annotation, or an annotation is malformed.
    """

    def __init__(self, spec: PhotoSetSpec, class_names: list[str] | str, name: str,
                 shuffle: bool = False, ignore_unknown: bool = False,
                 seed: int | None = None) -> None:
        super().__init__(name, load_class_names(class_names))
        self.format = spec.format
        self._names = spec.names or self.classes
        self._ignore_unknown = ignore_unknown
        self.report.unmatched.update({PHOTO_WITHOUT_ANNOTATION: 0, ANNOTATION_WITHOUT_PHOTO: 0})
        items = []
        for item in spec.items:
            if item.photo is None:
                self.report.left_out(ANNOTATION_WITHOUT_PHOTO, item.where)
            elif item.annotation is None:
                self.report.left_out(PHOTO_WITHOUT_ANNOTATION, item.photo)
            else:
                items.append(item)
        if not items:
            raise ValueError(f"{spec.where}: no photo with its annotation ("
                             f"{self.report.unmatched[PHOTO_WITHOUT_ANNOTATION]} photo(s) "
                             f"without one, {self.report.unmatched[ANNOTATION_WITHOUT_PHOTO]} "
                             "annotation(s) without a photo)")
        if shuffle:
            items = [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
        for item in items:
            try:
                image = photo_info(item.photo, self.report)
                label = self._read(item, image)
            except SkippedImage as why:
                self.report.skip(item.photo, str(why))
                continue
            self.image_set_index.append(item.photo)
            self.labels.append(label)

    def image_path_from_index(self, index: int) -> str:
        """Path of the photo of ``index``."""
        return self.image_set_index[index]

    def _class_id(self, name: str | None, where: str) -> int | None:
        """Position of ``name`` in the classes; None (counted) for an unknown one."""
        if name is not None and name in self.classes:
            return self.classes.index(name)
        if name is not None and not self._ignore_unknown:
            raise ValueError(f"{where}: unknown class {name!r}; valid: {', '.join(self.classes)} "
                             "(set --class-names to this dataset's classes)")
        self.report.ignored_unknown += 1
        self.report.note(f"{where}: class {name if name is not None else '(id not in the names)'}"
                         " not in the class names, ignored")
        return None

    def _read(self, item: PhotoItem, image: ImageInfo | None) -> np.ndarray:
        """The ``(N, 6)`` label of one photo."""
        if self.format == "voc_xml":
            return parse_voc_xml(item.annotation, self.classes, self.report,
                                 self._ignore_unknown, image=image)
        if self.format == "yolo_txt":
            rows = parse_yolo_txt(item.annotation, len(self._names), self.report,
                                  ignore_unknown=True)
            label = []
            for k, row in enumerate(rows):
                cls = self._class_id(self._names[int(row[0])], f"{item.annotation}, object {k}")
                if cls is not None:
                    label.append([cls, *row[1:5], 0.0])
            return np.array(label, dtype=np.float32).reshape(-1, 6)
        return self._read_pixel_boxes(item.annotation, image)

    def _read_pixel_boxes(self, boxes: PixelBoxes, image: ImageInfo | None) -> np.ndarray:
        declared = (boxes.width, boxes.height) if boxes.width > 0 and boxes.height > 0 else None
        if image is not None:
            width, height, orientation = reconcile_size(boxes.where, declared, image, self.report)
        elif declared is not None:
            (width, height), orientation = declared, 1
        else:
            raise ValueError(f"{boxes.where}: no width and height, and the photo cannot be read")
        rows = []
        for k, (name, x1, y1, x2, y2) in enumerate(boxes.boxes):
            where = f"{boxes.where}, object {k}"
            cls = self._class_id(name, where)
            if cls is None:
                continue
            box = check_box(x1, y1, x2, y2, width, height, where, self.report)
            if box is not None:
                rows.append([cls, *box, 0.0])
        label = np.array(rows, dtype=np.float64).reshape(-1, 6)
        if orientation != 1 and len(label):
            label[:, 1:5] = boxes_to_stored(label[:, 1:5], orientation)
        return label.astype(np.float32)


def spec_class_names(spec: PhotoSetSpec) -> list[str]:
    """Class names written in a set: its names file, else the sorted names of its boxes."""
    if spec.names:
        return list(spec.names)
    if spec.format == "voc_xml":
        return xml_class_names([i.annotation for i in spec.items if i.annotation is not None])
    return sorted({b[0] for i in spec.items if isinstance(i.annotation, PixelBoxes)
                   for b in i.annotation.boxes if b[0]})


def xml_class_names(xml_paths: list[str]) -> list[str]:
    """Sorted ``<object><name>`` values of VOC / LabelImg XML files."""
    names = set()
    for path in xml_paths:
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as err:
            raise ValueError(f"annotation file {path} cannot be read as XML: {err}") from None
        names.update((obj.findtext("name") or "").strip() for obj in root.findall("object"))
    names.discard("")
    return sorted(names)
