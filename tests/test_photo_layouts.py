"""Export layouts read as they come (issue 34): one miniature per layout, with the file names
and structure of the real export, read by the layout reader and packed by
``tools/prepare_dataset.py``, every count checked (photos per set, boxes, backgrounds, boxes
clipped or dropped, unknown classes, photos without an annotation, annotations without a
photo).

Every photo here is generated (OpenCV writes small JPEGs, a coloured rectangle per box). The
raccoon test builds the set's upstream layout (``images/`` + ``annotations/``) from the copy in
``../shared/data/raccoon`` and is skipped, with the reason, where that folder is absent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataset.imdb import ANNOTATION_WITHOUT_PHOTO, PHOTO_WITHOUT_ANNOTATION
from dataset.pascal_voc import PascalVoc
from dataset.photo_folder import data_class_names, detect_layout, labelimg_pairs, split_pairs
from dataset.photo_layouts import load_layout, read_data_yaml, read_set
from dataset.photo_sets import natural_key
from dataset.recordio_utils import count_records, scan_labels
from tools.prepare_dataset import format_summary, prepare_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
W, H = 64, 48
COLOURS = {"cat": (40, 40, 220), "dog": (220, 60, 40)}


def scene(k: int) -> list[tuple[str, int, int, int, int]]:
    """Boxes ``(class, x1, y1, x2, y2)`` in pixels of photo ``k``: a cat, and a dog when odd."""
    boxes = [("cat", 4 + k % 8, 4, 30 + k % 8, 30)]
    return boxes + ([("dog", 34, 10, 60, 44)] if k % 2 else [])


def write_photo(path: Path, boxes: list, w: int = W, h: int = H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(path.name)).integers(90, 150, (h, w, 3), dtype=np.uint8)
    for name, x1, y1, x2, y2 in boxes:
        if name in COLOURS:
            pixels[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = COLOURS[name]
    assert cv2.imwrite(str(path), pixels)


def voc_xml(filename: str, boxes: list, w: int = W, h: int = H, path: str = "",
            cvat: bool = False) -> str:
    """VOC XML as LabelImg (1-based integers, ``<path>``, ``verified``) or CVAT (floats,
    ``<occluded>``, ``<attributes>``) write it."""
    objects = ""
    for name, x1, y1, x2, y2 in boxes:
        if cvat:
            box = f"<xmin>{x1 + 1:.2f}</xmin><ymin>{y1 + 1:.2f}</ymin><xmax>{x2:.2f}</xmax><ymax>{y2:.2f}</ymax>"
            extra = ("<occluded>0</occluded><attributes><attribute><name>rotation</name>"
                     "<value>0.0</value></attribute></attributes>")
        else:
            box = f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            extra = "<pose>Unspecified</pose>"
        objects += (f"<object><name>{name}</name>{extra}<truncated>0</truncated>"
                    f"<difficult>0</difficult><bndbox>{box}</bndbox></object>")
    head = '<annotation verified="yes">' if not cvat else "<annotation>"
    return (f"{head}<folder>images</folder><filename>{filename}</filename>"
            + (f"<path>{path}</path>" if path else "")
            + f"<source><database>Unknown</database></source><size><width>{w}</width>"
              f"<height>{h}</height><depth>3</depth></size><segmented>0</segmented>"
              f"{objects}</annotation>")


def yolo_lines(boxes: list, names=("cat", "dog")) -> str:
    return "".join(f"{names.index(n) if n in names else n} {(x1 + x2) / 2 / W:.6f} "
                   f"{(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}\n"
                   for n, x1, y1, x2, y2 in boxes)


def csv_rows(filename: str, boxes: list, scale: int = 1) -> str:
    return "".join(f"{filename},{W * scale},{H * scale},{n},{x1 * scale},{y1 * scale},"
                   f"{x2 * scale},{y2 * scale}\n" for n, x1, y1, x2, y2 in boxes)


CSV_HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def counts(summary: dict) -> dict:
    """What a packed set's summary counted."""
    left_out = summary.get("left_out", {})
    return {"photos": summary["num_listed"], "boxes": summary["objects"],
            "backgrounds": summary["backgrounds"], "clipped": summary["clipped_boxes"],
            "dropped": summary["dropped_boxes"], "unknown": summary["ignored_unknown"],
            "no_annotation": left_out.get(PHOTO_WITHOUT_ANNOTATION, {}).get("count", 0),
            "no_photo": left_out.get(ANNOTATION_WITHOUT_PHOTO, {}).get("count", 0),
            "skipped": len(summary["skipped_images"])}


def pack(root: Path, tmp_path: Path, fmt: str = "auto") -> tuple:
    """Detect the layout, then pack its training and test sets as train_photos does."""
    layout = detect_layout(str(root), fmt)
    names = data_class_names(layout)
    out = {}
    for part, image_set in (("train", layout.train_set), ("test", layout.test_set)):
        summary = prepare_dataset({"voc": "pascal"}.get(layout.format, layout.format),
                                  image_set, layout.root, str(tmp_path / "out" / f"{part}.lst"),
                                  year=layout.year, shuffle=False, class_names=names,
                                  keep_backgrounds=True, progress=False)
        stats = scan_labels(summary["rec"])          # the packed records: placeholders dropped
        assert count_records(summary["rec"]) == summary["num_listed"]
        assert stats.num_objects == summary["objects"]
        out[part] = summary
    return layout, names, out


def lst_names(summary: dict) -> list[str]:
    lines = Path(summary["lst"]).read_text().splitlines()
    return [os.path.basename(ln.split("\t")[-1]) for ln in lines]


# ------------------------------------------------------------------ photos + XML folders
def raccoon_upstream(root: Path) -> Path:
    """The raccoon repository's layout in miniature: images/raccoon-N.jpg, annotations/
    raccoon-N.xml (LabelImg), README, scripts, data/ with the TensorFlow CSVs and records,
    training/ with a config."""
    for name in ("README.md", "LICENSE", "generate_tfrecord.py", "xml_to_csv.py",
                 "split labels.ipynb"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x\n")
    (root / "training").mkdir()
    (root / "training" / "ssd_mobilenet_v1_pets.config").write_text("model {}\n")
    (root / "data").mkdir()
    (root / "data" / "train.record").write_bytes(b"\x00" * 16)
    all_rows = "".join(csv_rows(f"raccoon-{k}.jpg", scene(k)) for k in range(1, 13))
    for name in ("raccoon_labels.csv", "train_labels.csv", "test_labels.csv"):
        (root / "data" / name).write_text(CSV_HEADER + all_rows)
    for k in range(1, 14):                      # raccoon-13.jpg: no XML
        boxes = scene(k) if k != 4 else []      # raccoon-4: no box (a background)
        if k == 6:                              # a box past the right edge: clipped
            boxes = [("cat", 30, 4, W + 20, 30)] + boxes[1:]
        write_photo(root / "images" / f"raccoon-{k}.jpg", boxes)
        if k == 7:                              # a box of no width: dropped
            boxes = boxes + [("cat", 10, 10, 10, 20)]
        if k == 13:
            continue
        # LabelImg's <filename>/<path> name the labeller's files (raccoon-3: another one)
        filename = f"raccoon-{k}.jpg" if k != 3 else "raccoon-99.png"
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"raccoon-{k}.xml").write_text(voc_xml(
            filename, boxes, path=f"/Users/someone/Desktop/raccoon/images/{filename}"))
    (root / "annotations" / "raccoon-14.xml").write_text(voc_xml("raccoon-14.jpg", scene(14)))
    return root


def test_photos_with_xml_in_a_sibling_folder_split_80_20_in_natural_order(tmp_path):
    root = raccoon_upstream(tmp_path / "raccoon_dataset")
    layout, names, out = pack(root, tmp_path)
    assert layout.format == "voc_folders" and names == ["cat", "dog"]
    assert "images/ with VOC XML in annotations/" in layout.description
    assert "12 photos with annotations, no test set: split 80/20 in natural order" in \
        layout.description and "10 train / 2 test" in layout.description
    assert lst_names(out["test"]) == ["raccoon-5.jpg", "raccoon-10.jpg"]     # not raccoon-2
    assert counts(out["train"]) == {"photos": 10, "boxes": 14, "backgrounds": 1, "clipped": 1,
                                    "dropped": 1, "unknown": 0, "no_annotation": 1,
                                    "no_photo": 1, "skipped": 0}
    assert counts(out["test"]) == {"photos": 2, "boxes": 3, "backgrounds": 0, "clipped": 0,
                                   "dropped": 0, "unknown": 0, "no_annotation": 0,
                                   "no_photo": 0, "skipped": 0}
    text = format_summary(out["train"])
    assert "1 image(s) without objects kept as backgrounds" in text
    assert "left out: 1 photo(s) without an annotation (e.g. " in text and "raccoon-13.jpg" in text
    assert "1 annotation(s) without a photo (e.g. " in text and "raccoon-14.xml" in text
    # raccoon-3's XML names another file: matched by its own name, its boxes read
    train = read_set(load_layout("voc_folders", str(root)), "train", names)
    k = train.image_set_index.index(str(root / "images" / "raccoon-3.jpg"))
    np.testing.assert_allclose(train.labels[k][:, 1:5],
                               [[b[1] / W, b[2] / H, b[3] / W, b[4] / H] for b in scene(3)],
                               atol=1e-6)


def test_photos_with_xml_in_train_and_test_subfolders(tmp_path):
    root = tmp_path / "set"
    for part, ks in (("train", range(1, 5)), ("test", range(5, 8))):
        for k in ks:
            write_photo(root / "images" / part / f"p{k}.jpg", scene(k))
            if k != 7:                                  # test/p7.jpg: no XML
                (root / "Annotations" / part).mkdir(parents=True, exist_ok=True)
                (root / "Annotations" / part / f"p{k}.xml").write_text(voc_xml(f"p{k}.jpg", scene(k)))
    layout, _, out = pack(root, tmp_path)
    assert (layout.format, layout.train_set, layout.test_set) == ("voc_folders", "train", "test")
    assert counts(out["train"])["photos"] == 4 and counts(out["train"])["boxes"] == 6
    assert counts(out["test"]) == {"photos": 2, "boxes": 3, "backgrounds": 0, "clipped": 0,
                                   "dropped": 0, "unknown": 0, "no_annotation": 1,
                                   "no_photo": 0, "skipped": 0}


def _link_raccoon(root: Path, voc: Path) -> None:
    """raccoon's upstream layout from the devkit copy: images/ + annotations/ (+ files)."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for photo in (voc / "JPEGImages").iterdir():
        os.symlink(photo, root / "images" / photo.name)
    for xml in (voc / "Annotations").iterdir():
        os.symlink(xml, root / "annotations" / xml.name)
    for name in ("README.md", "LICENSE", "xml_to_csv.py", "data/train_labels.csv",
                 "data/test_labels.csv", "data/raccoon_labels.csv",
                 "training/ssd_mobilenet_v1_pets.config"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(CSV_HEADER if name.endswith(".csv") else "x\n")


def test_raccoon_in_its_upstream_layout_reads_as_the_measured_devkit(tmp_path):
    voc = SHARED_DATA / "raccoon" / "VOCdevkit" / "VOC2007"
    if not voc.is_dir():
        pytest.skip(f"real-photo data not found at {voc} (the raccoon set of the shared data "
                    "folder beside the checkout)")
    root = tmp_path / "raccoon_dataset"
    _link_raccoon(root, voc)
    layout = detect_layout(str(root))
    assert layout.format == "voc_folders" and data_class_names(layout) == ["raccoon"]
    assert "200 photos with annotations" in layout.description
    assert "160 train / 40 test" in layout.description
    test_ids = [f"raccoon-{n}" for n in range(5, 201, 5)]
    # the split of the measured figures: the devkit's test.txt
    devkit_test = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    assert test_ids == devkit_test
    folder = load_layout("voc_folders", str(root))
    assert [Path(i.photo).stem for i in folder.spec("test").items] == test_ids
    # the same labels as the devkit reader gives, photo by photo
    for image_set, part in (("trainval", "train"), ("test", "test")):
        ours = read_set(folder, part, ["raccoon"])
        theirs = PascalVoc(image_set, "2007", str(voc.parent), class_names=["raccoon"])
        assert sorted(Path(p).stem for p in ours.image_set_index) == sorted(theirs.image_set_index)
        by_id = dict(zip(theirs.image_set_index, theirs.labels))
        for path, label in zip(ours.image_set_index, ours.labels):
            np.testing.assert_allclose(label, by_id[Path(path).stem], atol=1e-6)
        assert [Path(p).name for p, _ in ours.report.skipped_images] == [
            Path(p).name for p, _ in theirs.report.skipped_images]
    summary = prepare_dataset("voc_folders", "test", str(root), str(tmp_path / "t.lst"),
                              shuffle=False, class_names=["raccoon"], resize=64,
                              keep_backgrounds=True, progress=False)
    assert summary["num_listed"] == 40 and lst_names(summary)[:3] == [
        "raccoon-5.jpg", "raccoon-10.jpg", "raccoon-15.jpg"]
    assert summary["left_out"][PHOTO_WITHOUT_ANNOTATION]["count"] == 0


# ------------------------------------------------------------------ TensorFlow CSV
def test_tensorflow_csv_train_and_test_files(tmp_path):
    root = tmp_path / "tf"
    for k in range(1, 11):                          # raccoon-10.jpg: in no CSV
        write_photo(root / "images" / f"raccoon-{k}.jpg", scene(k))
    train = ""
    for k in range(1, 8):
        boxes = scene(k)
        if k == 2:                                  # past the right edge: clipped
            boxes = [("cat", 30, 4, W + 10, 30)]
        if k == 3:                                  # no width: dropped
            boxes = boxes + [("dog", 12, 12, 12, 30)]
        train += csv_rows(f"raccoon-{k}.jpg", boxes, scale=2 if k == 5 else 1)
    train += csv_rows("raccoon-42.jpg", scene(42))   # no such photo
    test = "".join(csv_rows(f"raccoon-{k}.jpg", scene(k)) for k in (8, 9))
    (root / "data").mkdir()
    (root / "data" / "train_labels.csv").write_text(CSV_HEADER + train)
    (root / "data" / "test_labels.csv").write_text(CSV_HEADER + test)
    (root / "data" / "raccoon_labels.csv").write_text(CSV_HEADER + train + test)
    layout, names, out = pack(root, tmp_path)
    assert (layout.format, layout.train_set, layout.test_set) == ("tf_csv", "train", "test")
    assert "raccoon (9) not used" in layout.description and names == ["cat", "dog"]
    assert counts(out["train"]) == {"photos": 7, "boxes": 11, "backgrounds": 0, "clipped": 1,
                                    "dropped": 1, "unknown": 0, "no_annotation": 1,
                                    "no_photo": 1, "skipped": 0}
    assert out["train"]["fixes"] == {"resized": 1}   # raccoon-5: labelled at twice the size
    assert counts(out["test"])["photos"] == 2 and counts(out["test"])["boxes"] == 3
    # one CSV: split 80/20
    for name in ("train_labels.csv", "test_labels.csv"):
        (root / "data" / name).unlink()
    layout = detect_layout(str(root))
    assert layout.format == "tf_csv" and "8 train / 1 test" in layout.description


# ------------------------------------------------------------------ Roboflow
def rf_name(k: int) -> str:
    return f"raccoon-{k}_jpg.rf.{k:08x}c0ffee.jpg"


def roboflow_coco(root: Path) -> Path:
    """Roboflow's COCO export: train/ valid/ test/, each _annotations.coco.json beside the
    photos; a project category (id 0) whose children are the classes."""
    for name in ("README.dataset.txt", "README.roboflow.txt"):
        root.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x\n")
    cats = [{"id": 0, "name": "pets", "supercategory": "none"},
            {"id": 1, "name": "cat", "supercategory": "pets"},
            {"id": 2, "name": "dog", "supercategory": "pets"}]
    for split, ks in (("train", range(1, 7)), ("valid", (7, 8)), ("test", (9, 10, 11))):
        images, anns = [], []
        for k in ks:
            boxes = scene(k) if k not in (3, 11) else []    # 3, 11: backgrounds
            if k == 5:
                boxes = [("cat", 40, 4, W + 8, 30)] + boxes[1:]     # clipped
            write_photo(root / split / rf_name(k), boxes)
            if k == 4:
                boxes = boxes + [(9, 5, 5, 20, 20)]          # category 9: not in the JSON
            if k == 6:
                boxes = boxes + [("dog", 20, 20, 20, 40)]    # no width: dropped
            images.append({"id": k, "license": 1, "file_name": rf_name(k), "height": H,
                           "width": W, "date_captured": "2024-01-01T00:00:00+00:00"})
            for n, x1, y1, x2, y2 in boxes:
                anns.append({"id": len(anns), "image_id": k,
                             "category_id": {"cat": 1, "dog": 2}.get(n, n),
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                             "segmentation": [], "iscrowd": 0})
        if split == "train":
            images.append({"id": 99, "license": 1, "file_name": rf_name(99), "height": H,
                           "width": W})                     # no such photo
            anns.append({"id": len(anns), "image_id": 99, "category_id": 1,
                         "bbox": [1, 1, 10, 10], "area": 100, "segmentation": [], "iscrowd": 0})
            write_photo(root / split / rf_name(98), scene(98))   # not in the JSON
        (root / split / "_annotations.coco.json").write_text(json.dumps(
            {"info": {"year": "2024"}, "licenses": [{"id": 1, "name": "CC BY 4.0"}],
             "categories": cats, "images": images, "annotations": anns}))
    return root


def test_roboflow_coco_export(tmp_path):
    layout, names, out = pack(roboflow_coco(tmp_path / "rf"), tmp_path)
    assert (layout.format, layout.train_set, layout.test_set) == ("roboflow", "train", "test")
    assert names == ["cat", "dog"]                     # the project category left out
    assert "valid (2) not used (--train-set train,valid" in layout.description
    assert counts(out["train"]) == {"photos": 6, "boxes": 7, "backgrounds": 1, "clipped": 1,
                                    "dropped": 1, "unknown": 1, "no_annotation": 1,
                                    "no_photo": 1, "skipped": 0}
    assert counts(out["test"]) == {"photos": 3, "boxes": 3, "backgrounds": 1, "clipped": 0,
                                   "dropped": 0, "unknown": 0, "no_annotation": 0,
                                   "no_photo": 0, "skipped": 0}
    text = format_summary(out["train"])
    assert "1 of unknown classes ignored" in text and "1 box(es) clipped" in text


def roboflow_yolo(root: Path, names_block: bool = False) -> Path:
    """Roboflow's YOLO export: data.yaml (paths ../train/images ...), train/ and valid/ (no
    test split) each with images/ and labels/."""
    names = "names:\n  0: cat\n  1: dog\n" if names_block else "nc: 2\nnames: ['cat', 'dog']\n"
    root.mkdir(parents=True)
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\n\n" + names + "\nroboflow:\n"
        "  workspace: someone\n  project: pets\n  version: 3\n  license: CC BY 4.0\n"
        "  url: https://universe.roboflow.com/someone/pets/dataset/3\n")
    (root / "README.roboflow.txt").write_text("x\n")
    for split, ks in (("train", range(1, 7)), ("valid", (7, 8))):
        (root / split / "labels").mkdir(parents=True)
        for k in ks:
            boxes = scene(k)
            write_photo(root / split / "images" / rf_name(k), boxes)
            if k == 3:
                boxes = []                                       # empty file: a background
            if k == 4:
                boxes = boxes + [(5, 5, 5, 20, 20)]              # id 5: not in the names
            if k == 5:
                boxes = [("cat", 40, 4, W + 8, 30)] + boxes[1:]  # past the edge: clipped
            if k == 6:
                boxes = boxes + [("dog", 20, 20, 20, 40)]        # no width: dropped
            (root / split / "labels" / (rf_name(k)[:-4] + ".txt")).write_text(yolo_lines(boxes))
    write_photo(root / "train" / "images" / rf_name(98), scene(98))          # no label file
    (root / "train" / "labels" / (rf_name(99)[:-4] + ".txt")).write_text(yolo_lines(scene(1)))
    return root


def test_roboflow_yolo_export_without_a_test_split_tests_on_valid(tmp_path):
    layout, names, out = pack(roboflow_yolo(tmp_path / "rf"), tmp_path)
    assert (layout.format, layout.train_set, layout.test_set) == ("roboflow", "train", "valid")
    assert names == ["cat", "dog"] and "YOLO data.yaml" in layout.description
    assert counts(out["train"]) == {"photos": 6, "boxes": 7, "backgrounds": 1, "clipped": 1,
                                    "dropped": 1, "unknown": 1, "no_annotation": 1,
                                    "no_photo": 1, "skipped": 0}
    assert counts(out["test"])["photos"] == 2 and counts(out["test"])["boxes"] == 3
    assert out["train"]["object_width"] == 6


def test_data_yaml_names_as_a_list_or_an_id_mapping(tmp_path):
    for block in (False, True):
        root = roboflow_yolo(tmp_path / f"rf{block}", names_block=block)
        data = read_data_yaml(str(root / "data.yaml"))
        assert data["names"] == ["cat", "dog"] and data["train"] == "../train/images"
        assert data["roboflow"]["project"] == "pets"
    (tmp_path / "bad.yaml").write_text("train: x\n")
    with pytest.raises(ValueError, match="bad.yaml: no class names"):
        read_data_yaml(str(tmp_path / "bad.yaml"))


def roboflow_voc(root: Path, splits: dict) -> Path:
    """Roboflow's VOC export: each split folder holds the photos and their XML."""
    for split, ks in splits.items():
        for k in ks:
            boxes = scene(k) if k else []                         # photo 0: a background
            write_photo(root / split / rf_name(k), boxes)
            (root / split / (rf_name(k)[:-4] + ".xml")).write_text(voc_xml(rf_name(k), boxes))
    return root


def test_roboflow_voc_and_csv_exports(tmp_path):
    # VOC with train/ valid/ test/: a LabelImg folder, read as before
    full = roboflow_voc(tmp_path / "voc3", {"train": range(1, 5), "valid": (5,), "test": (6,)})
    layout = detect_layout(str(full))
    assert (layout.format, layout.train_set, layout.test_set) == ("labelimg", "train", "test")
    # only train/: the Roboflow reader splits it 80/20
    layout, _, out = pack(roboflow_voc(tmp_path / "voc1", {"train": range(0, 5)}), tmp_path / "a")
    assert layout.format == "roboflow" and "4 train / 1 test" in layout.description
    assert counts(out["train"])["photos"] == 4 and counts(out["train"])["backgrounds"] == 1
    assert lst_names(out["test"]) == [rf_name(4)]
    # CSV: train/_annotations.csv and test/_annotations.csv
    csv_root = tmp_path / "csv"
    for split, ks in (("train", range(1, 5)), ("test", (5, 6))):
        rows = CSV_HEADER
        for k in ks:
            write_photo(csv_root / split / rf_name(k), scene(k))
            rows += csv_rows(rf_name(k), scene(k))
        (csv_root / split / "_annotations.csv").write_text(rows)
    write_photo(csv_root / "train" / rf_name(9), scene(9))          # not in the CSV
    layout, _, out = pack(csv_root, tmp_path / "b")
    assert (layout.format, layout.train_set, layout.test_set) == ("roboflow", "train", "test")
    assert counts(out["train"]) == {"photos": 4, "boxes": 6, "backgrounds": 0, "clipped": 0,
                                    "dropped": 0, "unknown": 0, "no_annotation": 1,
                                    "no_photo": 0, "skipped": 0}
    assert counts(out["test"])["boxes"] == 3


# ------------------------------------------------------------------ CVAT
def cvat_voc(root: Path, subsets: dict[str, range]) -> Path:
    """CVAT's PASCAL VOC 1.1 export: Annotations/, JPEGImages/, ImageSets/Main/<subset>.txt
    with the per-label lists beside them, ImageSets/Segmentation, labelmap.txt."""
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir()
    (root / "Annotations").mkdir()
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                       "cat:250,50,83::\ndog:51,221,255::\n")
    for subset, ks in subsets.items():
        ids = [f"frame_{k:06d}" for k in ks]
        for name in ("Main", "Segmentation"):
            (root / "ImageSets" / name / f"{subset}.txt").write_text("\n".join(ids) + "\n")
        for label in ("cat", "dog"):
            (root / "ImageSets" / "Main" / f"{label}_{subset}.txt").write_text(
                "".join(f"{i} {1 if any(b[0] == label for b in scene(k)) else -1}\n"
                        for i, k in zip(ids, ks)))
        for image_id, k in zip(ids, ks):
            boxes = scene(k) if k != 2 else []              # frame 2: no box
            if k != 9:                                       # frame 9: no photo exported
                write_photo(root / "JPEGImages" / f"{image_id}.jpg", boxes)
            (root / "Annotations" / f"{image_id}.xml").write_text(
                voc_xml(f"{image_id}.jpg", boxes, cvat=True))
    return root


def test_cvat_pascal_voc_export(tmp_path):
    layout, names, out = pack(cvat_voc(tmp_path / "cvat", {"default": range(0, 10)}), tmp_path)
    assert layout.format == "cvat_voc" and names == ["cat", "dog"]
    assert "9 photos with annotations, no test set" in layout.description
    assert "8 train / 1 test" in layout.description
    assert lst_names(out["test"]) == ["frame_000004.jpg"]
    assert counts(out["train"]) == {"photos": 8, "boxes": 11, "backgrounds": 1, "clipped": 0,
                                    "dropped": 0, "unknown": 0, "no_annotation": 0,
                                    "no_photo": 1, "skipped": 0}
    # float corners, 1-based as VOC: frame 1's cat box
    train = read_set(load_layout("cvat_voc", str(tmp_path / "cvat")), "train", names)
    np.testing.assert_allclose(train.labels[1][0, 1:5], [5 / W, 4 / H, 31 / W, 30 / H], atol=1e-6)
    # named subsets: the test subset is the test set
    layout = detect_layout(str(cvat_voc(tmp_path / "subsets", {"train": range(0, 6),
                                                                "test": range(10, 12)})))
    assert (layout.format, layout.train_set, layout.test_set) == ("cvat_voc", "train", "test")


def test_cvat_yolo_export(tmp_path):
    root = tmp_path / "cvat"
    (root / "obj_train_data").mkdir(parents=True)
    (root / "obj.names").write_text("cat\ndog\n")
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n"
                                   "backup = backup/\n")
    listed = []
    for k in range(0, 9):
        name = f"frame_{k:06d}"
        listed.append(f"data/obj_train_data/{name}.jpg")
        if k == 8:
            continue                                      # listed, not exported
        write_photo(root / "obj_train_data" / f"{name}.jpg", scene(k))
        boxes = {1: [], 3: scene(3) + [(4, 5, 5, 20, 20)]}.get(k, scene(k))
        if k != 6:                                        # frame 6: no label file
            (root / "obj_train_data" / f"{name}.txt").write_text(yolo_lines(boxes))
    (root / "train.txt").write_text("\n".join(listed) + "\n")
    layout, names, out = pack(root, tmp_path)
    assert layout.format == "cvat_yolo" and names == ["cat", "dog"]
    assert "6 train / 1 test" in layout.description
    assert lst_names(out["test"]) == ["frame_000004.jpg"]        # 5th of 0-5, 7 (6: no label)
    assert counts(out["train"]) == {"photos": 6, "boxes": 8, "backgrounds": 1, "clipped": 0,
                                    "dropped": 0, "unknown": 1, "no_annotation": 1,
                                    "no_photo": 1, "skipped": 0}


# ------------------------------------------------------------------ detection, errors, order
def test_natural_order_and_the_labelimg_folder_split(tmp_path):
    assert sorted(["raccoon-10.jpg", "raccoon-2.jpg", "Raccoon-1.jpg"], key=natural_key) == [
        "Raccoon-1.jpg", "raccoon-2.jpg", "raccoon-10.jpg"]
    for k in range(1, 13):
        write_photo(tmp_path / f"IMG_{k}.JPG", scene(k))
        (tmp_path / f"IMG_{k}.xml").write_text(voc_xml(f"IMG_{k}.JPG", scene(k)))
    write_photo(tmp_path / "IMG_13.JPG", scene(13))                       # unlabelled
    (tmp_path / "IMG_14.xml").write_text(voc_xml("IMG_14.JPG", scene(14)))  # photo deleted
    test = [os.path.basename(p) for p, _ in split_pairs(labelimg_pairs(str(tmp_path)), "test")]
    assert test == ["IMG_5.JPG", "IMG_10.JPG"]
    layout, _, out = pack(tmp_path, tmp_path / "x")
    assert layout.format == "labelimg" and "10 train / 2 test" in layout.description
    assert lst_names(out["test"]) == ["IMG_5.JPG", "IMG_10.JPG"]
    assert counts(out["train"]) == {"photos": 10, "boxes": 15, "backgrounds": 0, "clipped": 0,
                                    "dropped": 0, "unknown": 0, "no_annotation": 1,
                                    "no_photo": 1, "skipped": 0}
    assert counts(out["test"])["no_annotation"] == counts(out["test"])["no_photo"] == 0


def test_a_folder_of_no_layout_names_every_layout_and_what_it_holds(tmp_path):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError) as err:
        detect_layout(str(tmp_path))
    message = str(err.value)
    for expected in ("a VOC devkit", "LabelImg", "COCO JSON", "YOLO text", "CVAT PASCAL VOC 1.1",
                     "images/ with VOC XML in annotations/", "Roboflow", "TensorFlow CSV",
                     "CVAT YOLO 1.1", "found 1 .csv, 1 folder (pictures/)"):
        assert expected in message
    with pytest.raises(ValueError, match="cannot read it as labelled photos: expected a "
                                         "Roboflow export"):
        detect_layout(str(tmp_path), "roboflow")
    with pytest.raises(ValueError, match="--root .*: not photos in images/"):
        load_layout("voc_folders", str(tmp_path))


# ------------------------------------------------------------------ the command
@pytest.mark.slow
def test_train_photos_on_a_roboflow_export_end_to_end(tmp_path):
    """tools/train_photos.py on the Roboflow COCO miniature: one summary per set with every
    count, a background trained and scored, one epoch."""
    root = roboflow_coco(tmp_path / "rf")
    work = tmp_path / "work"
    began = time.time()
    proc = subprocess.run(
        [sys.executable, "tools/train_photos.py", str(root), "--workdir", str(work),
         "--end-epoch", "1", "--no-pictures", "--data-shape", "128", "--pack-side", "128",
         "--mosaic-copies", "1", "--train-args", "--batch-size 4"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    seconds = time.time() - began
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "classes from the data (2): cat, dog" in out
    assert "Roboflow COCO JSON" in out and "valid (2) not used" in out
    assert out.count("--keep-backgrounds") == 2
    assert "1 box(es) clipped, 1 dropped (no size), 1 of unknown classes ignored, 1 image(s) " \
           "without objects kept as backgrounds" in out
    assert "left out: 1 photo(s) without an annotation" in out
    summary = json.loads((work / "photos_summary.json").read_text())
    assert summary["data"]["format"] == "roboflow"
    assert (summary["data"]["train_photos"], summary["data"]["test_photos"]) == (6, 3)
    assert "3 images" in out               # the background test photo is scored too
    assert "Finished: VOC07 mAP" in out
    assert seconds < 120, f"{seconds:.0f} s"


def test_split_folders_each_holding_images_and_annotations(tmp_path):
    """train/images + train/annotations, test/... (the split above the photo and XML folders,
    as many Kaggle sets ship); other folder names too (imgs/, xmls/)."""
    root = tmp_path / "split_first"
    for split, first, count, (photo_dir, xml_dir) in (("train", 0, 5, ("images", "annotations")),
                                                        ("test", 10, 2, ("imgs", "xmls"))):
        for k in range(first, first + count):
            write_photo(root / split / photo_dir / f"p{k}.jpg", scene(k))
            (root / split / xml_dir).mkdir(parents=True, exist_ok=True)
            (root / split / xml_dir / f"p{k}.xml").write_text(voc_xml(f"p{k}.jpg", scene(k)))
    write_photo(root / "train" / "images" / "unlabelled.jpg", [])
    layout, names, out = pack(root, tmp_path)
    assert (layout.format, layout.train_set, layout.test_set) == ("roboflow", "train", "test")
    assert "each with a photo and a VOC XML folder (test/imgs/+xmls/, train/images/+annotations/)" \
        in layout.description
    assert names == ["cat", "dog"]
    assert counts(out["train"]) == {"photos": 5, "boxes": 7, "backgrounds": 0, "clipped": 0,
                                    "dropped": 0, "unknown": 0, "no_annotation": 1,
                                    "no_photo": 0, "skipped": 0}
    assert counts(out["test"])["photos"] == 2 and counts(out["test"])["boxes"] == 3
