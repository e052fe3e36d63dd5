"""Folders of labelled photos as users bring them (dataset/photo_folder.py), the photo
command's decisions (tools/train_photos.py) and its end report (evaluate/photo_report.py).

Every folder here is generated: real JPEGs written with OpenCV, a coloured rectangle per box.
The cards test reads ``../shared/data/cards`` (a LabelImg folder) and is skipped, with the
reason, where that folder is absent.
"""
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dataset.photo_folder import (LabelImgFolder, data_class_names, detect_layout,
                                  labelimg_pairs, split_pairs)
from evaluate.photo_report import (analyse, box_iou, format_report, match_photo,
                                   pick_worst_best, size_band, worst_best_picture)
from tools.prepare_dataset import prepare_dataset
from tools.train_photos import (box_side_quantile, budget_epochs, choose_epoch, mosaic_copies,
                                mosaic_scale, schedule_epochs, still_rising, strip_flag,
                                validation_curve)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARDS = os.path.join(REPO, "..", "shared", "data", "cards")
COLOURS = {"cat": (40, 40, 220), "dog": (220, 60, 40)}      # BGR per class


def _photos(count: int, seed: int = 0) -> list[tuple[str, int, int, list]]:
    """(stem, width, height, [(class, x1, y1, x2, y2) pixels]) of ``count`` photos."""
    rng = np.random.default_rng(seed)
    photos = []
    for k in range(count):
        w, h = (160, 120) if k % 2 else (120, 160)
        boxes = []
        for j in range(1 + k % 2):
            name = ("cat", "dog")[(k + j) % 2]
            x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            boxes.append((name, x1, y1, x1 + int(rng.integers(20, w // 2)),
                          y1 + int(rng.integers(20, h // 2))))
        photos.append((f"IMG_{100 + k}", w, h, boxes))
    return photos


def _write_jpeg(path, w: int, h: int, boxes: list) -> None:
    pixels = np.random.default_rng(len(str(path))).integers(90, 150, (h, w, 3), dtype=np.uint8)
    for name, x1, y1, x2, y2 in boxes:
        pixels[y1:y2, x1:x2] = COLOURS[name]
    assert cv2.imwrite(str(path), pixels)


def _labelimg_xml(filename: str, w: int, h: int, boxes: list) -> str:
    objects = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}"
                      f"</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>"
                      f"</object>" for n, x1, y1, x2, y2 in boxes)
    return (f'<annotation verified="yes"><folder>x</folder><filename>{filename}</filename>'
            f"<path>C:\\labels\\{filename}</path><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objects}</annotation>")


def write_labelimg(folder, photos: list) -> None:
    """Photos with their LabelImg XML side by side (upper-case .JPG, as phones write)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, w, h, boxes in photos:
        _write_jpeg(folder / f"{stem}.JPG", w, h, boxes)
        (folder / f"{stem}.xml").write_text(_labelimg_xml(f"{stem}.JPG", w, h, boxes))


def write_coco(root, sets: dict) -> None:
    """``annotations/instances_<set>.json`` + ``images/<set>/``."""
    (root / "annotations").mkdir(parents=True)
    cats = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    ids = {"cat": 3, "dog": 7}
    for name, photos in sets.items():
        (root / "images" / name).mkdir(parents=True)
        images, annotations = [], []
        for k, (stem, w, h, boxes) in enumerate(photos):
            _write_jpeg(root / "images" / name / f"{stem}.jpg", w, h, boxes)
            images.append({"id": k, "file_name": f"{stem}.jpg", "width": w, "height": h})
            annotations += [{"id": len(annotations), "image_id": k, "category_id": ids[n],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                             "iscrowd": 0} for n, x1, y1, x2, y2 in boxes]
        (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": cats}))


def write_yolo(root, sets: dict) -> None:
    """``classes.txt``, ``images/``, ``labels/`` and one list of image names per set."""
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("dog\ncat\n")
    for name, photos in sets.items():
        for stem, w, h, boxes in photos:
            _write_jpeg(root / "images" / f"{stem}.jpg", w, h, boxes)
            (root / "labels" / f"{stem}.txt").write_text("".join(
                f"{('dog', 'cat').index(n)} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} "
                f"{(x2 - x1) / w} {(y2 - y1) / h}\n" for n, x1, y1, x2, y2 in boxes))
        (root / f"{name}.txt").write_text("".join(f"{s}.jpg\n" for s, *_ in photos))


def write_voc(root, sets: dict) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    for name, photos in sets.items():
        for stem, w, h, boxes in photos:
            _write_jpeg(voc / "JPEGImages" / f"{stem}.jpg", w, h, boxes)
            (voc / "Annotations" / f"{stem}.xml").write_text(_labelimg_xml(stem, w, h, boxes))
        (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(s + "\n" for s, *_ in photos))


# ---------------------------------------------------------------- formats and layouts
def test_labelimg_train_test_subfolders_are_detected_and_read(tmp_path):
    photos = _photos(6)
    write_labelimg(tmp_path / "images" / "train", photos[:4])
    write_labelimg(tmp_path / "images" / "test", photos[4:])
    (tmp_path / "images" / "train" / "IMG_999.JPG").write_bytes(b"unlabelled")  # no XML: left out
    layout = detect_layout(str(tmp_path))
    assert (layout.format, layout.train_set, layout.test_set) == ("labelimg", "images/train",
                                                                  "images/test")
    assert data_class_names(layout) == ["cat", "dog"]               # sorted, from the XML
    imdb = LabelImgFolder(str(tmp_path), "images/train", ["cat", "dog"])
    assert imdb.num_images == 4 and imdb.image_path_from_index(0).endswith("IMG_100.JPG")
    stem, w, h, boxes = photos[0]
    name, x1, y1, x2, y2 = boxes[0]
    np.testing.assert_allclose(imdb.label_from_index(0)[0, :5],
                               [("cat", "dog").index(name), x1 / w, y1 / h, x2 / w, y2 / h],
                               atol=1e-6)


def test_one_labelimg_folder_splits_80_20_by_name(tmp_path):
    write_labelimg(tmp_path, _photos(10))
    layout = detect_layout(str(tmp_path))
    assert layout.format == "labelimg" and "split 80/20" in layout.description
    assert "8 train / 2 test" in layout.description
    pairs = labelimg_pairs(str(tmp_path))
    test = [os.path.basename(p) for p, _ in split_pairs(pairs, "test")]
    assert test == ["IMG_104.JPG", "IMG_109.JPG"]                    # every 5th in name order
    train = LabelImgFolder(str(tmp_path), "train", "cat,dog")
    held = LabelImgFolder(str(tmp_path), "test", "cat,dog")
    assert train.num_images == 8 and held.num_images == 2
    assert not set(train.image_set_index) & set(held.image_set_index)


def test_one_labelimg_folder_under_images_is_found(tmp_path):
    write_labelimg(tmp_path / "images", _photos(5))
    layout = detect_layout(str(tmp_path))
    assert layout.root == str(tmp_path / "images") and "4 train / 1 test" in layout.description


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_coco_yolo_and_voc_folders_are_detected_with_their_class_names(tmp_path, fmt):
    photos = _photos(5)
    sets = {"train": photos[:3], "val": photos[3:]} if fmt != "voc" else {
        "trainval": photos[:3], "test": photos[3:]}
    {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}[fmt](tmp_path, sets)
    layout = detect_layout(str(tmp_path))
    assert layout.format == fmt
    names = data_class_names(layout)
    assert names == {"coco": ["cat", "dog"], "yolo": ["dog", "cat"], "voc": ["cat", "dog"]}[fmt]
    summary = prepare_dataset({"voc": "pascal"}.get(fmt, fmt), layout.train_set, layout.root,
                              str(tmp_path / "out" / "train.lst"), year=layout.year,
                              class_names=names if fmt != "coco" else None, resize=0,
                              progress=False)
    assert summary["num_listed"] == 3 and summary["objects"] == sum(len(p[3]) for p in photos[:3])
    assert summary["classes"] == names


def test_prepare_dataset_packs_a_labelimg_folder(tmp_path):
    write_labelimg(tmp_path / "train", _photos(4))
    summary = prepare_dataset("labelimg", "train", str(tmp_path), str(tmp_path / "o" / "t.lst"),
                              class_names=["cat", "dog"], progress=False)
    assert summary["num_listed"] == 4 and os.path.getsize(summary["rec"]) > 0
    assert summary["objects_per_class"] == {"cat": 4, "dog": 2}


def test_an_unreadable_folder_gets_one_error_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "pics").mkdir()
    with pytest.raises(ValueError, match="expected a VOC devkit .* found 1 .txt, 1 folder"):
        detect_layout(str(tmp_path))
    with pytest.raises(ValueError, match="--format 'csv'"):
        detect_layout(str(tmp_path), "csv")
    proc = subprocess.run([sys.executable, "tools/train_photos.py", str(tmp_path),
                           "--workdir", str(tmp_path / "w")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "found" in lines[0]


# ---------------------------------------------------------------- the command's decisions
def test_schedule_scales_with_the_set_and_the_budget():
    # the mosaics fill an epoch to about 2720 images, 8-16 a photo
    assert mosaic_copies(160)[0] == 16 and mosaic_copies(296)[0] == 8     # raccoon, cards
    assert mosaic_copies(240)[0] == 10 and mosaic_copies(40)[0] == 16
    assert mosaic_copies(5000)[0] == 8
    assert "16 mosaics a photo" in mosaic_copies(160)[1]
    # each photo seen ~108 times, at least 2160 updates
    assert schedule_epochs(160, 16)[0] == 7           # raccoon: 340 updates an epoch, 17 x 7
    assert schedule_epochs(296, 8)[0] == 12           # cards: 333 updates an epoch, 9 x 12
    assert schedule_epochs(132, 16)[0] == 8           # fewer photos: more epochs, 2160 updates
    assert schedule_epochs(3, 16)[0] == 40            # no mosaics under 4 photos; capped
    assert schedule_epochs(296, 0)[0] == 40
    assert budget_epochs(10, 60, 30, 45) == 1 + (600 - 60 - 45 - 30) // 30
    assert budget_epochs(1, 50, 30, 45) == 2


# Box-size histograms of prepare_dataset's summaries (training sets).
RACCOON_BOXES = {"0-0.05": 0, "0.05-0.1": 0, "0.1-0.2": 2, "0.2-0.3": 2, "0.3-0.5": 29,
                 "0.5-0.7": 51, "0.7-1": 90}
CARDS_BOXES = {"0-0.05": 0, "0.05-0.1": 0, "0.1-0.2": 13, "0.2-0.3": 161, "0.3-0.5": 321,
               "0.5-0.7": 32, "0.7-1": 0}


def test_box_side_quantile_interpolates_inside_its_bin():
    assert box_side_quantile({"0-0.5": 10, "0.5-1": 10}, 0.25) == pytest.approx(0.25)
    assert box_side_quantile({"0-0.5": 0, "0.5-1": 4}, 0.5) == pytest.approx(0.75)
    assert box_side_quantile({"0-0.5": 0}, 0.1) == 1.0                    # no boxes
    # raccoon: 4 of 174 boxes below 0.3, so its tenth lies in 0.3-0.5
    assert box_side_quantile(RACCOON_BOXES, 0.1) == pytest.approx(0.3 + 0.2 * 13.4 / 29)
    assert 0.2 < box_side_quantile(CARDS_BOXES, 0.1) < 0.25


def test_mosaic_scale_keeps_small_boxes_above_the_finest_anchor():
    # raccoon and cards keep the measured 0.5-1 (their small tenth stays coverable at 0.5)
    assert mosaic_scale(RACCOON_BOXES, 0.12)[0] == 0.5
    low, why = mosaic_scale(CARDS_BOXES, 0.12)
    assert low == 0.5 and why.startswith("mosaic scale 0.5-1:") and "stays above 0.085" in why
    # most boxes at 0.1-0.2 of the photo: shrunk to 0.5 they would be 0.05-0.1, many < 0.085
    small = {"0.05-0.1": 0, "0.1-0.2": 60, "0.2-0.3": 20, "0.3-0.5": 20}
    low, why = mosaic_scale(small, 0.12)
    assert low == pytest.approx(0.12 / 2 ** 0.5 / box_side_quantile(small, 0.1), abs=0.01)
    assert 0.7 < low < 0.9 and "would shrink below 0.085" in why
    # boxes smaller than the finest anchor even in the photos: not shrunk at all
    assert mosaic_scale({"0.05-0.1": 10}, 0.12)[0] == 1.0
    # finer (fitted) anchors allow more shrinking
    assert mosaic_scale(small, 0.08)[0] < mosaic_scale(small, 0.12)[0]
    # a lower floor (--mosaic-floor) lets raccoon's photos shrink further, down to where its
    # smallest tenth of boxes would pass below the finest anchor
    low, why = mosaic_scale(RACCOON_BOXES, 0.12, floor=0.2)
    assert 0.2 <= low < 0.5 and f"mosaic scale {low:g}-1" in why
    assert low == max(0.2, round(0.12 / 2 ** 0.5 / box_side_quantile(RACCOON_BOXES, 0.1), 2))
    with pytest.raises(ValueError, match="--mosaic-floor 0"):
        mosaic_scale(RACCOON_BOXES, 0.12, floor=0)


def test_the_last_epoch_is_kept_unless_the_best_beats_it_beyond_noise():
    log = "\n".join(f"x Epoch[{e - 1}] Validation-mAP={v}" for e, v in
                    ((1, 0.2), (2, 0.6), (3, 0.78), (4, 0.8)))
    curve = validation_curve(log + "\nEpoch[3] New best Validation-mAP=0.8: saved x")
    assert curve == {1: 0.2, 2: 0.6, 3: 0.78, 4: 0.8}
    assert choose_epoch(curve, 4, 100)[0] == 4
    curve[4] = 0.65                  # 0.13 lower; 2 s.e. of 0.65 on 100 boxes: 0.095
    epoch, why = choose_epoch(curve, 4, 100)
    assert epoch == 3 and "kept epoch 3" in why
    assert choose_epoch(curve, 4, 10)[0] == 4                 # 10 boxes: within the noise


def test_still_rising_and_the_train_longer_command():
    assert still_rising({e: 0.1 * e for e in range(1, 8)}, 200)
    assert not still_rising({e: 0.5 for e in range(1, 8)}, 200)
    assert not still_rising({1: 0.1, 2: 0.5}, 200)
    assert strip_flag(["d", "--end-epoch", "3", "--seed=2", "--end-epoch=4"],
                      "--end-epoch") == ["d", "--seed=2"]


# ---------------------------------------------------------------- the end report
def _label(rows):
    return np.array([list(r) + [0.0] for r in rows] + [[-1] * 6], np.float32)


def test_report_counts_found_confused_and_missed_boxes_by_size():
    labels = [_label([(0, 0.1, 0.1, 0.45, 0.45), (1, 0.6, 0.6, 0.7, 0.7)]),
              _label([(1, 0.0, 0.0, 0.9, 0.9)])]
    dets = [np.array([[0, 0.9, 0.1, 0.1, 0.5, 0.52], [0, 0.8, 0.6, 0.6, 0.7, 0.7],
                      [-1, 0, 0, 0, 0, 0]], np.float32),
            np.array([[1, 0.3, 0.0, 0.0, 0.9, 0.9]], np.float32)]   # below the score thresh
    assert [o[1] for o in match_photo(labels[0], dets[0])] == ["found", "confused"]
    result = analyse(labels, dets)
    assert result["confusions"] == {(1, 0): 1}
    assert result["bands"] == {"small": [1, 1], "medium": [0, 1], "large": [1, 1]}
    assert result["missed_per_photo"] == [1, 1] and (result["found"], result["boxes"]) == (1, 3)
    text = format_report({"a": 0.5, "b": None}, result, ["a", "b"])
    assert "b -> a: 1" in text and "small 1 of 1" in text and "1 of 3" in text
    assert size_band(np.array([0, 0, 0.19, 0.19])) == "small"
    np.testing.assert_allclose(box_iou(np.array([[0, 0, 1, 1.]]), np.array([[0, 0, 0.5, 1.]])),
                               [[0.5]])


def test_worst_and_best_photos_are_picked_and_drawn(tmp_path):
    worst, best = pick_worst_best([0, 3, 1, 0], [2, 3, 1, 1], count=2)
    assert worst == [1, 2] and best == [3, 0]
    images = [np.full((60, 80, 3), 120, np.uint8) for _ in range(4)]
    labels = [_label([(0, 0.1, 0.1, 0.5, 0.5)])] * 4
    dets = [np.array([[0, 0.9, 0.1, 0.1, 0.5, 0.5]], np.float32)] * 4
    path = worst_best_picture(images, labels, dets, worst, best, ["a"], str(tmp_path / "wb.jpg"),
                              height=50)
    picture = cv2.imread(path)
    assert picture is not None and picture.shape[0] == 2 * (22 + 50)


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_train_photos_on_one_labelimg_folder_end_to_end(tmp_path):
    """One LabelImg folder, no class names: split, classes from the data, report, summary."""
    write_labelimg(tmp_path / "photos", _photos(15))
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "tools/train_photos.py", str(tmp_path / "photos"), "--workdir",
         str(work), "--end-epoch", "2", "--data-shape", "128", "--mosaic-copies", "1",
         "--pack-side", "128", "--mosaic-min-visible", "0.6", "--train-args", "--batch-size 4"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "classes from the data (2): cat, dog" in proc.stdout
    # the photos packed at most 128 px a side (160 x 120 here), the mosaics as large
    assert proc.stdout.count("--resize 128") == 2 and "--min-visible 0.6" in proc.stdout
    assert "mosaics of 128 px" in proc.stdout
    assert "12 train / 3 test" in proc.stdout
    assert (work / "model" / "class_names.txt").read_text() == "cat\ndog\n"
    summary = json.loads((work / "photos_summary.json").read_text())
    assert summary["data"]["format"] == "labelimg" and summary["kept_epoch"] in (1, 2)
    assert set(summary["validation_curve"]) == {"1", "2"}
    # evaluated, reported and exported with each photo averaged with its mirror (the default)
    assert summary["recipe"]["flip_test"] is True
    assert "input 128x128 + its mirror, 3 images" in proc.stdout
    assert proc.stdout.count("--flip-test") == 4   # evaluate.py, photo_report.py, demo.py, deploy.py
    assert re.search(r"python deploy\.py .*--flip-test --onnx", proc.stdout)
    report = (work / "report" / "report.txt").read_text()
    assert "class  AP" in report and "boxes not found by size" in report
    assert cv2.imread(str(work / "report" / "worst_best.jpg")) is not None


@pytest.mark.slow
def test_cards_labelimg_folder_as_it_is_at_a_reduced_size(tmp_path):
    """The cards folder's layout (images/train + images/test, .JPG and .jpg), 24 + 8 photos."""
    if not os.path.isdir(os.path.join(CARDS, "images", "train")):
        pytest.skip(f"real-photo data not found at {os.path.abspath(CARDS)} (the cards set of "
                    "../shared/data; see its README)")
    for part, count in (("train", 24), ("test", 8)):
        folder = tmp_path / "cards" / "images" / part
        folder.mkdir(parents=True)
        for photo, xml in labelimg_pairs(os.path.join(CARDS, "images", part))[:count]:
            os.symlink(photo, folder / os.path.basename(photo))
            os.symlink(xml, folder / os.path.basename(xml))
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "tools/train_photos.py", str(tmp_path / "cards"), "--workdir", str(work),
         "--minutes", "1.5", "--data-shape", "128", "--no-pictures"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--minutes 1.5: the first epoch took" in proc.stdout
    summary = json.loads((work / "photos_summary.json").read_text())
    assert summary["data"]["train_photos"] == 24 and summary["data"]["test_photos"] == 8
    assert len(summary["data"]["classes"]) >= 2
    assert summary["recipe"]["end_epoch"] >= 2
    assert len(summary["validation_curve"]) == summary["recipe"]["end_epoch"]
    assert 0.0 <= summary["voc07_map"] <= 1.0
