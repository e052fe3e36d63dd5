"""MS COCO reader (pycocotools): ``instances_<set>.json`` + an image folder.

Category ids are mapped to 0..C-1 in increasing id order; crowd annotations (``iscrowd=1``)
are left out; ``[x, y, w, h]`` pixel boxes become normalised ``[x1, y1, x2, y2]``;
difficult is 0.
"""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from dataset.imdb import Imdb, check_box, load_class_names

COCO_NAMES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "names", "mscoco.names")


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
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                coco = COCO(anno_file)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"COCO annotation file {anno_file} is not valid COCO JSON: {err}") from None
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
