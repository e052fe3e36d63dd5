"""MS COCO reader (pycocotools): ``instances_<set>.json`` + an image folder.

Category ids are mapped to 0..C-1 in increasing id order; crowd annotations (``iscrowd=1``)
are left out; ``[x, y, w, h]`` pixel boxes become normalised ``[x1, y1, x2, y2]``;
difficult is 0.
"""
from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np

from dataset.imdb import Imdb, check_box, load_class_names

COCO_NAMES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "names", "mscoco.names")


# keys every entry must have: the ones this reader uses, plus ``area`` and ``iscrowd`` of an
# annotation, which pycocotools' COCOeval reads (crowd matching and area ranges)
REQUIRED_KEYS = {
    "image": {"id": "a number", "file_name": "a string", "width": "a number",
              "height": "a number"},
    "annotation": {"id": "a number", "image_id": "a number", "category_id": "a number",
                   "bbox": "[x, y, w, h]", "area": "a number", "iscrowd": "0 or 1"},
    "category": {"id": "a number", "name": "a string"},
}


def _check_entry(entry: object, kind: str, k: int, anno_file: str) -> None:
    """One image / annotation / category: a dict with every required key, typed."""
    where = f"{anno_file}: {kind} #{k}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is a {type(entry).__name__}, not an object")
    for key, valid in REQUIRED_KEYS[kind].items():
        if key not in entry:
            raise ValueError(f"{where} has no {key!r} ({valid}); every {kind} needs "
                             f"{', '.join(REQUIRED_KEYS[kind])}")
        value = entry[key]
        if valid == "a string":
            ok = isinstance(value, str) and value != ""
        elif valid == "[x, y, w, h]":
            ok = (isinstance(value, list) and len(value) == 4
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          for v in value))
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"{where}: {key!r} is {value!r}, expected {valid}")


def check_coco_document(document: object, anno_file: str) -> None:
    """Check the structure of an instances JSON before pycocotools indexes it.

    ``images`` and ``categories`` are required lists; ``annotations`` is optional (image-info
    files of test sets have none). Every entry must hold the keys of ``REQUIRED_KEYS``.

    Parameters
    ----------
    document : object
        The parsed JSON.
    anno_file : str
        File name used in the messages.

    Raises
    ------
    ValueError
        Naming the file, the entry and the missing or malformed key.
    """
    if not isinstance(document, dict):
        raise ValueError(f"COCO annotation file {anno_file} is not valid COCO JSON: the top "
                         f"level is a {type(document).__name__}, not an object with 'images', "
                         f"'annotations' and 'categories'")
    for key in ("images", "categories", "annotations"):
        if key not in document:
            if key == "annotations":
                continue
            raise ValueError(f"COCO annotation file {anno_file} has no {key!r} list; an "
                             f"instances JSON holds 'images', 'annotations' and 'categories'")
        if not isinstance(document[key], list):
            raise ValueError(f"COCO annotation file {anno_file}: {key!r} is a "
                             f"{type(document[key]).__name__}, not a list")
        for k, entry in enumerate(document[key]):
            _check_entry(entry, key[:-1] if key != "categories" else "category", k, anno_file)


class Coco(Imdb):
    """Images and labels of one COCO annotation file.

    Parameters
    ----------
    anno_file : str
        ``instances_<set>.json``.
    image_dir : str
        Folder of the images (``file_name`` is relative to it).
    shuffle : bool
        Shuffle the image order (seeded by ``seed``).
    class_names : list of str or str, optional
        Names for the categories in id order; default: the names in the JSON.
    seed : int, optional
        Seed of the shuffle.
    """

    def __init__(self, anno_file: str, image_dir: str, shuffle: bool = False,
                 is_train: bool = True, class_names: list[str] | str | None = None,
                 seed: int | None = None) -> None:
        from pycocotools.coco import COCO

        if not os.path.isfile(anno_file):
            raise FileNotFoundError(f"COCO annotation file {anno_file} does not exist")
        if os.path.getsize(anno_file) == 0:
            raise ValueError(f"COCO annotation file {anno_file} is empty")
        try:
            with open(anno_file, "rb") as f:
                document = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"COCO annotation file {anno_file} is not valid COCO JSON: "
                             f"{err}") from None
        check_coco_document(document, anno_file)
        coco = COCO()
        coco.dataset = document
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        cat_ids = sorted(coco.getCatIds())
        json_names = [coco.loadCats(c)[0]["name"] for c in cat_ids]
        names = load_class_names(class_names) if class_names else json_names
        if len(names) != len(cat_ids):
            raise ValueError(f"--class-names has {len(names)} names but {anno_file} has "
                             f"{len(cat_ids)} categories ({', '.join(json_names)})")
        super().__init__("coco_" + os.path.splitext(os.path.basename(anno_file))[0], names)
        self.image_dir = image_dir
        self._cat_to_cls = {c: i for i, c in enumerate(cat_ids)}
        image_ids = sorted(coco.getImgIds())
        if shuffle:
            image_ids = [image_ids[i] for i in np.random.default_rng(seed).permutation(len(image_ids))]
        self._file_names = {}
        for image_id in image_ids:
            info = coco.loadImgs(image_id)[0]
            self._file_names[image_id] = info["file_name"]
            self.image_set_index.append(image_id)
            self.labels.append(self._load_label(coco, info, anno_file))

    def _load_label(self, coco, info: dict, anno_file: str) -> np.ndarray:
        width, height = float(info["width"]), float(info["height"])
        rows = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=info["id"], iscrowd=None)):
            if ann.get("iscrowd", 0):
                continue
            where = f"{anno_file}, image {info['file_name']}, annotation {ann['id']}"
            if ann["category_id"] not in self._cat_to_cls:
                raise ValueError(f"{where}: unknown category id {ann['category_id']}; valid: "
                                 f"{sorted(self._cat_to_cls)}")
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = check_box(x, y, x + w, y + h, width, height, where, self.report)
            if box is not None:
                rows.append([self._cat_to_cls[ann["category_id"]], *box, 0.0])
        return np.array(rows, dtype=np.float32).reshape(-1, 6)

    def image_path_from_index(self, index: int) -> str:
        """Path of image ``index``."""
        return os.path.join(self.image_dir, self._file_names[self.image_set_index[index]])
