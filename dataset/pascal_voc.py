"""PASCAL VOC reader: ``VOCdevkit/VOC<year>/{JPEGImages,Annotations,ImageSets/Main}``.

Boxes in the XML are 1-based inclusive pixel indices; a box covering pixels ``xmin..xmax``
spans ``[xmin - 1, xmax]`` in continuous coordinates, so the normalised label is
``((xmin - 1) / width, (ymin - 1) / height, xmax / width, ymax / height)``. (The original
example divided ``xmin`` by the width without the ``- 1``: a one-pixel shift to the right.)
"""
from __future__ import annotations

import logging
import os
from xml.etree import ElementTree as ET

import numpy as np

from dataset.imdb import CheckReport, Imdb, check_box, load_class_names

logger = logging.getLogger(__name__)

VOC_NAMES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "names",
                              "pascal_voc.names")


def parse_voc_xml(xml_path: str, classes: list[str], report: CheckReport,
                  ignore_unknown: bool = False) -> np.ndarray:
    """Read one VOC annotation file into a float32 (N, 6) normalised label.

    Raises
    ------
    FileNotFoundError
        The file is missing.
    ValueError
        The file is empty or not VOC XML, lacks ``size``, or names a class not in
        ``classes`` (unless ``ignore_unknown``).
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
        raise ValueError(f"annotation file {xml_path}: missing or invalid <size><width>/<height>") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"annotation file {xml_path}: image size {width:g}x{height:g} is not positive")
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
    return np.array(rows, dtype=np.float32).reshape(-1, 6)


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
        if is_train:
            self.labels = [parse_voc_xml(self._annotation_path(i), self.classes, self.report,
                                         ignore_unknown) for i in self.image_set_index]

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
        """Path of the JPEG of image ``index``."""
        return os.path.join(self.data_path, "JPEGImages", self.image_set_index[index] + ".jpg")
