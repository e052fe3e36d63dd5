"""Folders of labelled photos as users bring them: what format, which sets, which classes.

Four layouts of the project's own readers are recognised first (``detect_layout``), each read
through ``tools/prepare_dataset.py``:

* ``voc``: a VOC devkit (``<root>/VOCdevkit/VOC<year>`` or ``<root>/VOC<year>``, with
  ``ImageSets/Main/{trainval|train}.txt`` and ``{test|val}.txt``);
* ``labelimg``: photos with their LabelImg XML side by side (``IMG_1.JPG`` + ``IMG_1.xml``),
  either in a ``train/`` and a ``test/`` (or ``val/``) subfolder, directly or under
  ``images/``, or all in one folder, which is split deterministically 80/20
  (``split_pairs``: in natural order of the file names, every fifth photo is a test photo);
* ``coco``: ``<root>/annotations/instances_<set>.json`` with the images in
  ``<root>/images/<set>/`` (a training set and a ``test`` or ``val`` set);
* ``yolo``: ``<root>/classes.txt``, ``images/``, ``labels/`` and the lists ``train.txt`` and
  ``test.txt`` (or ``val.txt``) of image names.

Then the export layouts of ``dataset/photo_layouts.py`` (``LAYOUTS``): ``cvat_voc``,
``voc_folders`` (``images/`` + ``annotations/``), ``roboflow``, ``tf_csv``, ``cvat_yolo``.

Class names come from the data when the user gives none: the sorted ``<name>`` values of the
XML files (voc, labelimg), the categories of the training JSON (coco), ``classes.txt`` (yolo),
and for the export layouts their names file or the sorted names of their boxes.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import numpy as np

from dataset.imdb import (ANNOTATION_WITHOUT_PHOTO, PHOTO_WITHOUT_ANNOTATION, Imdb,
                          load_class_names)
from dataset.pascal_voc import PascalVoc
from dataset.photo_layouts import EXPECTED_BY_LAYOUT, LAYOUTS, FolderLayout
from dataset.photo_layouts import detect as detect_export_layout
from dataset.photo_sets import (PHOTO_SUFFIXES, natural_key, split_line, split_part,
                                xml_class_names)

FORMATS = ("voc", "labelimg", "coco", "yolo") + LAYOUTS
# the order ``detect_layout`` tries them in (module docstring)
AUTO_ORDER = ("voc", "labelimg", "coco", "yolo", "cvat_voc", "voc_folders", "roboflow", "tf_csv",
              "cvat_yolo")
TRAIN_NAMES = ("train", "trainval")
TEST_NAMES = ("test", "val", "valid")


@dataclass
class PhotoLayout:
    """Where the training and test photos of a folder are and how to read them.

    ``prepare_dataset_args`` gives the ``tools/prepare_dataset.py`` flags of each set.
    """

    format: str
    root: str                 # --root of prepare_dataset
    train_set: str
    test_set: str
    year: str = "2007"        # voc only
    description: str = ""     # one line for the user: what was found
    folder: FolderLayout | None = None   # the export layouts (dataset/photo_layouts.py)

    def prepare_dataset_args(self, image_set: str) -> list[str]:
        """``--dataset/--root/--set`` (and ``--year``) flags for one set; photos without
        boxes are kept as backgrounds (``--keep-backgrounds``), whatever the layout."""
        dataset = {"voc": "pascal"}.get(self.format, self.format)
        flags = ["--dataset", dataset, "--root", self.root, "--set", image_set]
        return flags + (["--year", self.year] if self.format == "voc" else []) + [
            "--keep-backgrounds"]


def _is_photo(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in PHOTO_SUFFIXES


def _folder_files(folder: str) -> list[str]:
    """File names of ``folder`` in natural order (``IMG_2`` before ``IMG_10``)."""
    return sorted(os.listdir(folder), key=natural_key) if os.path.isdir(folder) else []


def labelimg_pairs(folder: str) -> list[tuple[str, str]]:
    """(photo path, XML path) of every photo of ``folder`` with an XML of the same stem.

    In natural order of the file names; photos without an XML (unlabelled) are left out
    (``labelimg_unmatched`` lists them).
    """
    names = _folder_files(folder)
    xml_stems = {os.path.splitext(n)[0]: n for n in names if n.lower().endswith(".xml")}
    pairs = []
    for name in names:
        stem = os.path.splitext(name)[0]
        if _is_photo(name) and stem in xml_stems:
            pairs.append((os.path.join(folder, name), os.path.join(folder, xml_stems[stem])))
    return pairs


def labelimg_unmatched(folder: str) -> tuple[list[str], list[str]]:
    """(photos without an XML, XML files without a photo) of a LabelImg folder."""
    names = _folder_files(folder)
    photo_stems = {os.path.splitext(n)[0] for n in names if _is_photo(n)}
    xml_stems = {os.path.splitext(n)[0] for n in names if n.lower().endswith(".xml")}
    return ([os.path.join(folder, n) for n in names
             if _is_photo(n) and os.path.splitext(n)[0] not in xml_stems],
            [os.path.join(folder, n) for n in names
             if n.lower().endswith(".xml") and os.path.splitext(n)[0] not in photo_stems])


def split_pairs(pairs: list, part: str) -> list:
    """The ``train`` (4 in 5) or ``test`` (every 5th, in the order given: ``labelimg_pairs``'
    natural order of the file names) part of one folder."""
    return split_part(pairs, part)


def _labelimg_subfolders(root: str) -> tuple[str, str, str] | None:
    """(base, train subfolder, test subfolder) holding LabelImg pairs, or None."""
    for base in (root, os.path.join(root, "images")):
        train = next((n for n in TRAIN_NAMES if labelimg_pairs(os.path.join(base, n))), None)
        test = next((n for n in TEST_NAMES if labelimg_pairs(os.path.join(base, n))), None)
        if train and test:
            return base, train, test
    return None


def labelimg_set_pairs(root: str, image_set: str) -> list[tuple[str, str]]:
    """The (photo, XML) pairs of a LabelImg set: the subfolder ``image_set`` of ``root``, or,
    when ``root`` itself holds the photos, its ``train`` / ``test`` part (``split_pairs``).

    Raises
    ------
    FileNotFoundError
        Neither exists.
    """
    folder = os.path.join(root, image_set)
    if os.path.isdir(folder):
        return labelimg_pairs(folder)
    if image_set in ("train", "test") and labelimg_pairs(root):
        return split_pairs(labelimg_pairs(root), image_set)
    raise FileNotFoundError(f"--set {image_set!r}: no folder {folder} of photos with "
                            f"their LabelImg XML (nor photos + XML in {root} to split)")


class LabelImgFolder(PascalVoc):
    """Photos and their LabelImg XML side by side in one folder.

    Parameters
    ----------
    root : str
        The folder of the data set (see ``detect_layout``).
    image_set : str
        A subfolder of ``root`` (``train``, ``test``, ``images/train`` ...), or ``train`` /
        ``test`` when ``root`` itself holds the photos: its 80/20 parts (``split_pairs``).
    class_names : list of str or str
        Class names (list, comma string or file).
    shuffle, seed, ignore_unknown
        As :class:`dataset.pascal_voc.PascalVoc`.
    """

    def __init__(self, root: str, image_set: str, class_names: list[str] | str | None,
                 shuffle: bool = False, ignore_unknown: bool = False,
                 seed: int | None = None) -> None:
        Imdb.__init__(self, f"labelimg_{image_set.replace('/', '_')}",
                      load_class_names(class_names))
        pairs = labelimg_set_pairs(root, image_set)
        if not pairs:
            raise ValueError(f"{os.path.join(root, image_set)}: no photo with an XML of the "
                             "same name (LabelImg writes IMG_1.xml beside IMG_1.jpg)")
        if shuffle:
            pairs = [pairs[i] for i in np.random.default_rng(seed).permutation(len(pairs))]
        self.image_set_index = [os.path.splitext(os.path.basename(p))[0] for p, _ in pairs]
        self._image_paths = {i: p for i, (p, _) in zip(self.image_set_index, pairs)}
        self._xml_paths = {i: x for i, (_, x) in zip(self.image_set_index, pairs)}
        self._count_unmatched(root, image_set)
        self._load_labels(ignore_unknown)

    def _count_unmatched(self, root: str, image_set: str) -> None:
        """Count the photos without an XML and the XML without a photo of the set's folder
        (for the 80/20 parts of one folder: all of them with the ``train`` part)."""
        self.report.unmatched.update({PHOTO_WITHOUT_ANNOTATION: 0, ANNOTATION_WITHOUT_PHOTO: 0})
        folder = os.path.join(root, image_set)
        if not os.path.isdir(folder):
            if image_set != "train":
                return
            folder = root
        photos, xmls = labelimg_unmatched(folder)
        for path in photos:
            self.report.left_out(PHOTO_WITHOUT_ANNOTATION, path)
        for path in xmls:
            self.report.left_out(ANNOTATION_WITHOUT_PHOTO, path)

    def _annotation_path(self, image_id: str) -> str:
        return self._xml_paths[image_id]


def _voc_devkit(root: str) -> tuple[str, str] | None:
    """(devkit folder, year) of a VOC layout at or under ``root``, or None."""
    for devkit in (os.path.join(root, "VOCdevkit"), root):
        years = sorted(d[3:] for d in (os.listdir(devkit) if os.path.isdir(devkit) else [])
                       if d.startswith("VOC") and os.path.isdir(os.path.join(devkit, d, "Annotations")))
        if years:
            return devkit, years[-1]
    if os.path.isdir(os.path.join(root, "Annotations")) and os.path.basename(
            os.path.normpath(root)).startswith("VOC"):
        return os.path.dirname(os.path.abspath(root)), os.path.basename(os.path.normpath(root))[3:]
    return None


def _first_set(names: tuple[str, ...], available: list[str]) -> str | None:
    return next((n for n in names if n in available), None)


def _voc_layout(root: str) -> PhotoLayout | None:
    found = _voc_devkit(root)
    if found is None:
        return None
    devkit, year = found
    main = os.path.join(devkit, f"VOC{year}", "ImageSets", "Main")
    sets = sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt")) if os.path.isdir(main) else []
    train, test = _first_set(TRAIN_NAMES, sets), _first_set(TEST_NAMES, sets)
    if not (train and test):
        raise ValueError(f"{main}: expected a training set (trainval.txt or train.txt) and a "
                         f"test set (test.txt or val.txt); found: {', '.join(sets) or 'none'}")
    return PhotoLayout("voc", devkit, train, test, year,
                       f"VOC devkit {devkit} (VOC{year}): sets {train} and {test}")


def _labelimg_layout(root: str) -> PhotoLayout | None:
    sub = _labelimg_subfolders(root)
    if sub is not None:
        base, train, test = sub
        prefix = os.path.relpath(base, root)
        train, test = (os.path.normpath(os.path.join(prefix, s)) for s in (train, test))
        return PhotoLayout("labelimg", root, train, test, description=(
            f"LabelImg folder {root}: photos + XML in {train}/ ({len(labelimg_pairs(os.path.join(root, train)))})"
            f" and {test}/ ({len(labelimg_pairs(os.path.join(root, test)))})"))
    for base in (root, os.path.join(root, "images")):
        pairs = labelimg_pairs(base)
        if pairs:
            num_test = len(split_pairs(pairs, "test"))
            return PhotoLayout("labelimg", base, "train", "test", description=(
                f"LabelImg folder {base}: {len(pairs)} photos + XML in one folder, no train/ "
                f"and test/ subfolders: {split_line(len(pairs) - num_test, num_test)}"))
    return None


def _coco_layout(root: str) -> PhotoLayout | None:
    files = sorted(glob.glob(os.path.join(root, "annotations", "instances_*.json")))
    if not files:
        return None
    sets = [os.path.basename(f)[len("instances_"):-len(".json")] for f in files]
    train = _first_set(TRAIN_NAMES + ("train2017", "train2014"), sets)
    test = _first_set(TEST_NAMES + ("val2017", "val2014"), sets)
    if not (train and test):
        raise ValueError(f"{root}/annotations: expected instances_train.json and "
                         f"instances_test.json (or _val); found: {', '.join(sets)}")
    return PhotoLayout("coco", root, train, test,
                       description=f"COCO JSON in {root}/annotations: sets {train} and {test}")


def _yolo_layout(root: str) -> PhotoLayout | None:
    if not os.path.isfile(os.path.join(root, "classes.txt")) or not os.path.isdir(
            os.path.join(root, "labels")):
        return None
    lists = [f[:-4] for f in sorted(os.listdir(root)) if f.endswith(".txt") and f != "classes.txt"]
    train, test = _first_set(TRAIN_NAMES, lists), _first_set(TEST_NAMES, lists)
    if not (train and test):
        raise ValueError(f"{root}: YOLO labels (classes.txt, labels/) but expected the image "
                         f"lists train.txt and test.txt (or val.txt); found: "
                         f"{', '.join(lists) or 'none'}")
    return PhotoLayout("yolo", root, train, test,
                       description=f"YOLO text labels in {root}: lists {train} and {test}")


def _export_layout(fmt: str):
    """The detector of one of the export layouts, as a ``PhotoLayout``."""
    def detector(root: str) -> PhotoLayout | None:
        found = detect_export_layout(fmt, root)
        if found is None:
            return None
        return PhotoLayout(fmt, root, found.train_set, found.test_set,
                           description=f"{root}: {found.description}", folder=found)
    return detector


_DETECTORS = {"voc": _voc_layout, "labelimg": _labelimg_layout, "coco": _coco_layout,
              "yolo": _yolo_layout, **{fmt: _export_layout(fmt) for fmt in LAYOUTS}}
EXPECTED_BY_FORMAT = {
    "voc": "a VOC devkit (VOCdevkit/VOC<year>/Annotations, JPEGImages, ImageSets/Main)",
    "labelimg": "a LabelImg folder (photos + .xml side by side, in train/ and test/ or in one "
                "folder)",
    "coco": "COCO JSON (annotations/instances_<set>.json + images/<set>/)",
    "yolo": "YOLO text (classes.txt, images/, labels/, train.txt, test.txt)",
    **EXPECTED_BY_LAYOUT}
EXPECTED = "; ".join(EXPECTED_BY_FORMAT[f] for f in AUTO_ORDER[:-1]) + "; or " + \
    EXPECTED_BY_FORMAT[AUTO_ORDER[-1]]


def _found(root: str) -> str:
    """A short account of what a folder holds, for the error message."""
    entries = sorted(os.listdir(root))
    suffixes: dict[str, int] = {}
    for name in entries:
        kind = "folder" if os.path.isdir(os.path.join(root, name)) else (
            os.path.splitext(name)[1].lower() or "no suffix")
        suffixes[kind] = suffixes.get(kind, 0) + 1
    folders = [n + "/" for n in entries if os.path.isdir(os.path.join(root, n))][:6]
    return (", ".join(f"{c} {k}" for k, c in sorted(suffixes.items())) or "nothing") + (
        f" ({', '.join(folders)})" if folders else "")


def detect_layout(root: str, fmt: str = "auto") -> PhotoLayout:
    """The layout of a folder of labelled photos.

    Parameters
    ----------
    root : str
        The folder the user named.
    fmt : str
        ``auto`` (try ``AUTO_ORDER`` in turn) or one of ``FORMATS``.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    ValueError
        No layout (or not the named one) fits: says what was expected and what was found.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: valid: auto, {', '.join(FORMATS)}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a folder (expected {EXPECTED})")
    for name in AUTO_ORDER if fmt == "auto" else (fmt,):
        layout = _DETECTORS[name](root)
        if layout is not None:
            return layout
    what = EXPECTED if fmt == "auto" else EXPECTED_BY_FORMAT[fmt]
    raise ValueError(f"{root}: cannot read it as labelled photos: expected {what}; found "
                     f"{_found(root)}")


def _set_xml_files(layout: PhotoLayout, image_set: str) -> list[str]:
    if layout.format == "voc":
        voc = os.path.join(layout.root, f"VOC{layout.year}")
        with open(os.path.join(voc, "ImageSets", "Main", image_set + ".txt")) as f:
            ids = [ln.split()[0] for ln in f if ln.strip()]
        return [os.path.join(voc, "Annotations", i + ".xml") for i in ids]
    return [x for _, x in labelimg_set_pairs(layout.root, image_set)]


def data_class_names(layout: PhotoLayout) -> list[str]:
    """Class names written in the data (module docstring), in the order training uses."""
    if layout.folder is not None:
        sets = [s for value in (layout.train_set, layout.test_set)
                for s in value.split(",") if s]
        names = layout.folder.class_names(sets)
        where = f"the annotations of {layout.root}"
    elif layout.format in ("voc", "labelimg"):
        files = [p for s in (layout.train_set, layout.test_set)
                 for p in _set_xml_files(layout, s) if os.path.isfile(p)]
        names = xml_class_names(files)
        where = f"the {len(files)} XML files"
    elif layout.format == "coco":
        path = os.path.join(layout.root, "annotations", f"instances_{layout.train_set}.json")
        try:
            with open(path, "rb") as f:
                categories = json.load(f).get("categories", [])
            names = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: cannot read the category names: {err}") from None
        where = path
    else:
        path = os.path.join(layout.root, "classes.txt")
        with open(path, encoding="utf-8") as f:
            names = [ln.strip() for ln in f if ln.strip()]
        where = path
    if not names:
        raise ValueError(f"no class names in {where}: pass --class-names")
    return names
