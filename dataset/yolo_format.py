"""YOLO text-label reader: one ``<stem>.txt`` per image with lines ``cls cx cy w h``.

All values are normalised to [0, 1]. Labels are 5 wide (``cls x1 y1 x2 y2``, no difficult
column), as in the original example.
"""
from __future__ import annotations

import os

import numpy as np

from dataset.imdb import CheckReport, Imdb, check_box, load_class_names


def parse_yolo_txt(txt_path: str, num_classes: int, report: CheckReport,
                   ignore_unknown: bool = False) -> np.ndarray:
    """Read one YOLO label file into a float32 (N, 5) normalised ``[cls, x1, y1, x2, y2]``.

    A class id outside ``0..num_classes-1`` raises ValueError, or with ``ignore_unknown`` is
    skipped and counted in ``report.ignored_unknown``.
    """
    if not os.path.isfile(txt_path):
        raise FileNotFoundError(f"label file {txt_path} does not exist")
    rows = []
    with open(txt_path) as f:
        lines = [ln for ln in f if ln.strip()]
    for k, line in enumerate(lines):
        where = f"{txt_path}, object {k}"
        parts = line.split()
        try:
            cls, cx, cy, w, h = int(float(parts[0])), *(float(v) for v in parts[1:5])
            if len(parts) != 5:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"{where}: expected 'cls cx cy w h', got {line.strip()!r}") from None
        if not 0 <= cls < num_classes and ignore_unknown:
            report.ignored_unknown += 1
            report.note(f"{where}: class id {cls} not in the {num_classes} names, ignored")
            continue
        if not 0 <= cls < num_classes:
            raise ValueError(f"{where}: unknown class id {cls}; valid: 0-{num_classes - 1}")
        box = check_box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 1.0, 1.0, where, report)
        if box is not None:
            rows.append([cls, *box])
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


class YoloFormat(Imdb):
    """A YOLO-style dataset.

    Parameters
    ----------
    name : str
        Dataset name.
    classes_path : list of str or str
        Class names (list, comma string, or file with one per line).
    list_file : str
        File with one image stem (or file name) per line.
    image_dir, label_dir : str
        Folders of the images and of the ``.txt`` labels.
    extension : str
        Image file extension used for stems without one.
    shuffle : bool
        Shuffle the image order (seeded by ``seed``).
    """

    def __init__(self, name: str, classes_path: list[str] | str, list_file: str, image_dir: str,
                 label_dir: str, extension: str = ".jpg", shuffle: bool = False,
                 seed: int | None = None) -> None:
        super().__init__(name, load_class_names(classes_path))
        if not os.path.isfile(list_file):
            raise FileNotFoundError(f"image list {list_file} does not exist")
        self.image_dir, self.label_dir, self.extension = image_dir, label_dir, extension
        with open(list_file) as f:
            self.image_set_index = [ln.strip() for ln in f if ln.strip()]
        if not self.image_set_index:
            raise ValueError(f"image list {list_file} is empty")
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(self.image_set_index))
            self.image_set_index = [self.image_set_index[i] for i in order]
        self.labels = [
            parse_yolo_txt(os.path.join(label_dir, os.path.splitext(s)[0] + ".txt"),
                           self.num_classes, self.report)
            for s in self.image_set_index]

    def image_path_from_index(self, index: int) -> str:
        """Path of image ``index``."""
        stem = self.image_set_index[index]
        return os.path.join(self.image_dir, stem if os.path.splitext(stem)[1] else stem + self.extension)
