"""PASCAL VOC reader: ``VOCdevkit/VOC<year>/{JPEGImages,Annotations,ImageSets/Main}``.

Boxes in the XML are 1-based inclusive pixel indices; a box covering pixels ``xmin..xmax``
spans ``[xmin - 1, xmax]`` in continuous coordinates, so the normalised label is
``((xmin - 1) / width, (ymin - 1) / height, xmax / width, ymax / height)``. (The original
example divided ``xmin`` by the width without the ``- 1``: a one-pixel shift to the right.)

Photos annotated with LabelImg (``dataset/image_info.py``): ``<path>`` / ``<filename>`` and
``verified=`` are ignored (the image is ``JPEGImages/<id>`` with the first existing extension of
``.jpg .jpeg .png .bmp``). With the image's header at hand the ``<size>`` is checked against the
file: missing or zero sizes take the file's; a size with the same aspect ratio but other pixels
(the photo was resized after labelling) normalises by the XML size; a size that is the EXIF-turned
shape of the photo (width and height swapped, orientation 5-8) means the boxes were drawn on the
turned photo and are mapped to the stored pixels; any other size, or a truncated JPEG, skips the
image with the reason in the ``prepare_dataset`` summary.
"""
from __future__ import annotations

import logging
import os
from xml.etree import ElementTree as ET

import numpy as np

from dataset.image_info import (SWAPPING_ORIENTATIONS, ImageInfo, boxes_to_stored, find_image,
                                read_image_info)
from dataset.imdb import CheckReport, Imdb, SkippedImage, check_box, load_class_names

logger = logging.getLogger(__name__)

VOC_NAMES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "names",
                              "pascal_voc.names")


# two aspect ratios closer than this are "the same" (rounding of a resized photo)
_ASPECT_TOLERANCE = 0.02


def reconcile_size(xml_path: str, xml_size: tuple[float, float] | None, image: ImageInfo,
                   report: CheckReport) -> tuple[float, float, int]:
    """(width, height) to normalise the annotation's pixels by, and the orientation to undo
    (1: none), from the size the annotation file declares (``xml_path``: the file, named in
    the messages; ``xml_size`` None: none declared) and the photo's header.

    Raises SkippedImage when the declared size cannot describe this image.
    """
    stored = (float(image.width), float(image.height))
    if xml_size is None:
        report.fixed("size_from_image", f"{xml_path}: no usable <size>, took the image's "
                     f"{image.width}x{image.height}")
        return stored[0], stored[1], 1
    if xml_size == stored:
        return stored[0], stored[1], 1
    shown = tuple(float(v) for v in image.shown_size)
    if image.orientation in SWAPPING_ORIENTATIONS and xml_size == shown:
        report.fixed("exif_turned", f"{xml_path}: boxes drawn on the EXIF-turned photo "
                     f"(orientation {image.orientation}), mapped to the stored pixels")
        return shown[0], shown[1], image.orientation
    stored_aspect = stored[0] / stored[1]
    if abs(xml_size[0] / xml_size[1] - stored_aspect) <= _ASPECT_TOLERANCE * stored_aspect:
        report.fixed("resized", f"{xml_path}: <size> {xml_size[0]:g}x{xml_size[1]:g} but the image "
                     f"is {image.width}x{image.height} (same aspect: resized after labelling), "
                     "boxes scaled")
        return xml_size[0], xml_size[1], 1
    raise SkippedImage(f"<size> {xml_size[0]:g}x{xml_size[1]:g} in {xml_path} matches neither "
                       f"the image's {image.width}x{image.height} nor its EXIF-turned size")


def photo_info(path: str, report: CheckReport) -> ImageInfo | None:
    """Header facts of a photo for the box checks, its quirks counted in ``report``.

    Returns None when the file is missing or no image (``Imdb.check_images`` names it later).

    Raises
    ------
    SkippedImage
        A truncated JPEG (its bottom rows would decode grey).
    """
    try:
        image = read_image_info(path)
    except (FileNotFoundError, ValueError):
        return None
    if image.mode != "RGB" or image.format != "JPEG":
        report.fixed(f"{image.format} {image.mode} image(s) decoded as 3-channel colour",
                     f"{path}: {image.format} {image.mode} image")
    if image.truncated:
        raise SkippedImage("truncated JPEG (no end-of-image marker): its bottom rows would "
                           "decode grey")
    return image


def parse_voc_xml(xml_path: str, classes: list[str], report: CheckReport,
                  ignore_unknown: bool = False, image: ImageInfo | None = None) -> np.ndarray:
    """Read one VOC annotation file into a float32 (N, 6) normalised label.

    Parameters
    ----------
    xml_path : str
        The annotation file.
    classes : list of str
        Class names; a row's class id is the name's position.
    report : CheckReport
        Counts clipped/dropped boxes and the quirks fixed.
    ignore_unknown : bool
        Skip objects of unknown classes instead of raising.
    image : ImageInfo, optional
        Header facts of the image (``dataset.image_info.read_image_info``): the XML ``<size>``
        is then checked against the file (module docstring) and boxes refer to its stored
        pixels. Without it the XML ``<size>`` is trusted.

    Raises
    ------
    FileNotFoundError
        The file is missing.
    ValueError
        The file is empty or not VOC XML, lacks ``size`` (and no ``image`` is given), or names
        a class not in ``classes`` (unless ``ignore_unknown``).
    SkippedImage
        The XML size cannot describe ``image`` (a ValueError the reader turns into a skip).
    """
    if not os.path.isfile(xml_path):
        raise FileNotFoundError(f"annotation file {xml_path} does not exist")
    if os.path.getsize(xml_path) == 0:
        raise ValueError(f"annotation file {xml_path} is empty")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"annotation file {xml_path} is not valid XML: {err}") from None
    size = root.find("size")
    try:
        width = float(size.find("width").text)
        height = float(size.find("height").text)
    except (AttributeError, TypeError, ValueError):
        if image is None:
            raise ValueError(f"annotation file {xml_path}: missing or invalid "
                             "<size><width>/<height>") from None
        width = height = 0.0
    if (width <= 0 or height <= 0) and image is None:
        raise ValueError(f"annotation file {xml_path}: image size {width:g}x{height:g} is not positive")
    orientation = 1
    if image is not None:
        xml_size = (width, height) if width > 0 and height > 0 else None
        width, height, orientation = reconcile_size(xml_path, xml_size, image, report)
    rows = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{xml_path}, object {k}"
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            if ignore_unknown:
                report.ignored_unknown += 1
                report.note(f"{where}: class {name!r} not in the class names, ignored")
                continue
            raise ValueError(f"{where}: unknown class {name!r}; valid: {', '.join(classes)} "
                             "(set --class-names to this dataset's classes)")
        bndbox = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(bndbox.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{where}: missing or invalid <bndbox> xmin/ymin/xmax/ymax") from None
        difficult = obj.findtext("difficult")
        try:
            difficult = int(float(difficult)) if difficult and difficult.strip() else 0
        except ValueError:
            raise ValueError(f"{where}: invalid <difficult> {difficult!r} (0 or 1)") from None
        box = check_box(xmin - 1.0, ymin - 1.0, xmax, ymax, width, height, where, report)
        if box is None:
            continue
        rows.append([classes.index(name), *box, difficult])
    label = np.array(rows, dtype=np.float64).reshape(-1, 6)
    if orientation != 1 and len(label):
        label[:, 1:5] = boxes_to_stored(label[:, 1:5], orientation)
    return label.astype(np.float32)


class PascalVoc(Imdb):
    """One ``VOC<year>`` image set.

    Parameters
    ----------
    image_set : str
        Set name in ``ImageSets/Main`` (``trainval``, ``test``, ...).
    year : str
        ``2007``, ``2012``, ...: reads ``<devkit_path>/VOC<year>``.
    devkit_path : str
        The ``VOCdevkit`` folder.
    shuffle : bool
        Shuffle the image order (numpy global RNG seeded by ``seed``).
    is_train : bool
        Load labels (always true for the tools; kept for the original signature).
    class_names : list of str or str, optional
        Names, comma string or names file; default the 20 VOC classes.
    ignore_unknown : bool
        Skip objects whose class is not in ``class_names`` instead of raising.
    seed : int, optional
        Seed of the shuffle.
    """

    def __init__(self, image_set: str, year: str, devkit_path: str, shuffle: bool = False,
                 is_train: bool = True, class_names: list[str] | str | None = None,
                 ignore_unknown: bool = False, seed: int | None = None) -> None:
        classes = load_class_names(class_names, default_file=VOC_NAMES_FILE)
        super().__init__(f"voc_{year}_{image_set}", classes)
        self.image_set, self.year, self.devkit_path = image_set, str(year), devkit_path
        self.data_path = os.path.join(devkit_path, f"VOC{year}")
        self.is_train = is_train
        if not os.path.isdir(self.data_path):
            raise FileNotFoundError(f"VOC folder {self.data_path} does not exist (--root should be "
                                    f"the VOCdevkit folder, --year one of its VOC<year> suffixes)")
        self.image_set_index = self._load_image_set_index()
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(self.image_set_index))
            self.image_set_index = [self.image_set_index[i] for i in order]
        self._image_paths = {i: find_image(os.path.join(self.data_path, "JPEGImages"), i)
                             for i in self.image_set_index}
        if is_train:
            self._load_labels(ignore_unknown)

    def _load_labels(self, ignore_unknown: bool) -> None:
        """Parse every annotation against its image; skipped images leave the index."""
        kept, labels = [], []
        for image_id in self.image_set_index:
            path = self._image_paths[image_id]
            try:
                image = photo_info(path, self.report)
                label = parse_voc_xml(self._annotation_path(image_id), self.classes,
                                      self.report, ignore_unknown, image=image)
            except SkippedImage as why:
                self.report.skip(path, str(why))
                continue
            kept.append(image_id)
            labels.append(label)
        self.image_set_index, self.labels = kept, labels

    def _load_image_set_index(self) -> list[str]:
        path = os.path.join(self.data_path, "ImageSets", "Main", self.image_set + ".txt")
        if not os.path.isfile(path):
            main = os.path.join(self.data_path, "ImageSets", "Main")
            sets = sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt")) if os.path.isdir(main) else []
            raise FileNotFoundError(f"image set file {path} does not exist (--set {self.image_set!r}; "
                                    f"sets found: {', '.join(sets) or 'none'})")
        with open(path) as f:
            ids = [ln.split()[0] for ln in f if ln.strip()]
        if not ids:
            raise ValueError(f"image set file {path} lists no images")
        return ids

    def _annotation_path(self, image_id: str) -> str:
        return os.path.join(self.data_path, "Annotations", image_id + ".xml")

    def image_path_from_index(self, index: int) -> str:
        """Path of the image of ``index`` (``JPEGImages/<id>.jpg``, or .jpeg/.png/.bmp)."""
        return self._image_paths[self.image_set_index[index]]
