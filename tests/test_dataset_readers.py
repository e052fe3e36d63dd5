"""Readers (VOC, COCO, YOLO), the annotation checks, ConcatDB, the .lst writer, config."""
import os
import shutil

import numpy as np
import pytest

from dataset.concat_db import ConcatDB
from dataset.imdb import format_lst_line, load_class_names
from dataset.mscoco import Coco
from dataset.pascal_voc import PascalVoc
from dataset.recordio_utils import parse_lst_line
from dataset.yolo_format import YoloFormat
from tools.make_synthetic_voc import (SHAPES, SynthConfig, _read_voc_objects, export_coco,
                                      export_yolo, generate, parse_classes)

CLASSES = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("small_voc"))
    voc_dir = generate(SynthConfig(root=root, num_train=10, num_test=4, min_image_size=96,
                                   max_image_size=120, classes=CLASSES, seed=3, progress=False))
    export_coco(voc_dir, "trainval", os.path.join(root, "coco"), CLASSES)
    export_yolo(voc_dir, "trainval", os.path.join(root, "yolo"), CLASSES)
    return root, voc_dir


def _copy_voc(small_voc, tmp_path):
    root, _ = small_voc
    dst = tmp_path / "VOCdevkit"
    shutil.copytree(os.path.join(root, "VOCdevkit"), dst)
    return str(dst), str(dst / "VOC2007")


def _expected_from_xml(voc_dir, stem):
    _, width, height, objects = _read_voc_objects(os.path.join(voc_dir, "Annotations", stem + ".xml"))
    return np.array([[CLASSES.index(o["name"]), (o["box"][0] - 1) / width, (o["box"][1] - 1) / height,
                      o["box"][2] / width, o["box"][3] / height, o["difficult"]] for o in objects])


def test_generator_is_deterministic_and_valid(tmp_path):
    cfg = dict(num_train=3, num_test=1, classes=CLASSES, seed=11, progress=False)
    a = generate(SynthConfig(root=str(tmp_path / "a"), **cfg))
    b = generate(SynthConfig(root=str(tmp_path / "b"), **cfg))
    for stem in ("000001", "000004"):
        with open(os.path.join(a, "Annotations", stem + ".xml")) as fa, \
                open(os.path.join(b, "Annotations", stem + ".xml")) as fb:
            assert fa.read() == fb.read()
    _, width, height, objects = _read_voc_objects(os.path.join(a, "Annotations", "000001.xml"))
    assert objects and all(o["name"] in CLASSES for o in objects)
    for o in objects:  # 1-based inclusive pixel boxes inside the image
        x1, y1, x2, y2 = o["box"]
        assert 1 <= x1 <= x2 <= width and 1 <= y1 <= y2 <= height
    with open(tmp_path / "a" / "class_names.txt") as f:
        assert f.read().split() == list(CLASSES)


def test_generator_rejects_bad_flags(tmp_path):
    with pytest.raises(ValueError, match="--classes"):
        generate(SynthConfig(root=str(tmp_path), classes=("circle", "blob"), progress=False))
    with pytest.raises(ValueError, match="--min-objects"):
        generate(SynthConfig(root=str(tmp_path), min_objects=3, max_objects=2, progress=False))
    assert parse_classes("3") == SHAPES[:3]
    with pytest.raises(ValueError, match="--classes 99"):
        parse_classes("99")


def test_pascal_voc_reads_normalised_labels(small_voc):
    root, voc_dir = small_voc
    imdb = PascalVoc("trainval", "2007", os.path.join(root, "VOCdevkit"), class_names=list(CLASSES))
    assert imdb.num_images == 10 and imdb.classes == list(CLASSES)
    for i, stem in enumerate(imdb.image_set_index):
        label = imdb.label_from_index(i)
        assert label.dtype == np.float32 and label.shape[1] == 6
        np.testing.assert_allclose(label, _expected_from_xml(voc_dir, stem), atol=1e-6)
        assert os.path.isfile(imdb.image_path_from_index(i))


def test_pascal_voc_default_names_and_shuffle(small_voc):
    root, _ = small_voc
    names = load_class_names(None, default_file=os.path.join("dataset", "names", "pascal_voc.names"))
    assert len(names) == 20 and names[14] == "person"
    with pytest.raises(ValueError, match="object 0: unknown class '(circle|square|triangle)'; valid: aeroplane"):
        PascalVoc("trainval", "2007", os.path.join(root, "VOCdevkit"))  # VOC names by default
    a = PascalVoc("trainval", "2007", os.path.join(root, "VOCdevkit"), shuffle=True, seed=1,
                  class_names=",".join(CLASSES))
    b = PascalVoc("trainval", "2007", os.path.join(root, "VOCdevkit"), class_names=list(CLASSES))
    assert sorted(a.image_set_index) == b.image_set_index != a.image_set_index


def test_coco_and_yolo_match_voc(small_voc):
    root, _ = small_voc
    voc = PascalVoc("trainval", "2007", os.path.join(root, "VOCdevkit"), class_names=list(CLASSES))
    coco = Coco(os.path.join(root, "coco", "annotations", "instances_trainval.json"),
                os.path.join(root, "coco", "images", "trainval"))
    yolo = YoloFormat("yolo", os.path.join(root, "yolo", "classes.txt"),
                      os.path.join(root, "yolo", "trainval.txt"), os.path.join(root, "yolo", "images"),
                      os.path.join(root, "yolo", "labels"))
    assert coco.classes == yolo.classes == list(CLASSES)
    for i in range(voc.num_images):
        base = os.path.basename(voc.image_path_from_index(i))
        assert os.path.basename(coco.image_path_from_index(i)) == base
        assert os.path.basename(yolo.image_path_from_index(i)) == base
        expected = voc.label_from_index(i)
        np.testing.assert_allclose(coco.label_from_index(i)[:, :5], expected[:, :5], atol=1e-5)
        assert (coco.label_from_index(i)[:, 5] == 0).all()
        assert yolo.label_from_index(i).shape[1] == 5
        np.testing.assert_allclose(yolo.label_from_index(i), expected[:, :5], atol=1e-5)


def test_coco_excludes_crowd_and_maps_category_ids(tmp_path):
    import json
    import cv2
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((50, 100, 3), np.uint8))
    doc = {"images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 50}],
           "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
           "annotations": [
               {"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 5, 20, 10], "iscrowd": 0, "area": 200},
               {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 50, 50], "iscrowd": 1, "area": 2500}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    coco = Coco(str(tmp_path / "ann.json"), str(tmp_path))
    assert coco.classes == ["car", "dog"]   # ids 3, 18 -> 0, 1
    np.testing.assert_allclose(coco.label_from_index(0), [[1, 0.1, 0.1, 0.3, 0.3, 0]], atol=1e-6)


def _write_xml(path, objects, width=100, height=80):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects)
    path.write_text(f"<annotation><size><width>{width}</width><height>{height}</height>"
                    f"<depth>3</depth></size>{objs}</annotation>")


def _one_image_voc(tmp_path, objects):
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets/Main/trainval.txt").write_text("img1\n")
    import cv2
    cv2.imwrite(str(voc / "JPEGImages/img1.jpg"), np.zeros((80, 100, 3), np.uint8))
    _write_xml(voc / "Annotations/img1.xml", objects)
    return str(tmp_path / "VOCdevkit"), voc


def test_checks_clip_drop_and_unknown(tmp_path):
    devkit, _ = _one_image_voc(tmp_path, [("circle", (1, 1, 50, 40), 0),
                                          ("square", (-9, 10, 120, 30), 1),   # clipped
                                          ("circle", (60, 20, 59, 30), 0),    # zero/negative size
                                          ("hexagon", (5, 5, 10, 10), 0)])
    with pytest.raises(ValueError, match=r"img1\.xml, object 3: unknown class 'hexagon'.*circle"):
        PascalVoc("trainval", "2007", devkit, class_names=list(CLASSES))
    imdb = PascalVoc("trainval", "2007", devkit, class_names=list(CLASSES), ignore_unknown=True)
    label = imdb.label_from_index(0)
    np.testing.assert_allclose(label, [[0, 0, 0, 0.5, 0.5, 0], [1, 0, 9 / 80, 1, 30 / 80, 1]], atol=1e-6)
    summary = imdb.summary()
    assert (summary["clipped_boxes"], summary["dropped_boxes"], summary["ignored_unknown"]) == (1, 1, 1)
    assert summary["objects_per_class"] == {"circle": 1, "square": 1, "triangle": 0}
    assert summary["max_objects_per_image"] == 2 and summary["label_width"] == 14
    assert any("object 2" in m and "dropped" in m for m in imdb.report.messages)


def test_checks_empty_annotation_missing_image_and_no_objects(tmp_path):
    devkit, voc = _one_image_voc(tmp_path, [])
    imdb = PascalVoc("trainval", "2007", devkit, class_names=list(CLASSES))
    assert imdb.label_from_index(0).shape == (0, 6)
    with pytest.raises(ValueError, match="no image with objects"):
        imdb.save_imglist(str(tmp_path / "x.lst"))
    assert imdb.report.empty_images == [imdb.image_path_from_index(0)]
    (voc / "Annotations/img1.xml").write_text("")
    with pytest.raises(ValueError, match=r"img1\.xml is empty"):
        PascalVoc("trainval", "2007", devkit, class_names=list(CLASSES))
    _write_xml(voc / "Annotations/img1.xml", [("circle", (1, 1, 5, 5), 0)])
    os.remove(voc / "JPEGImages/img1.jpg")
    imdb = PascalVoc("trainval", "2007", devkit, class_names=list(CLASSES))
    with pytest.raises(FileNotFoundError, match=r"img1\.jpg does not exist"):
        imdb.check_images()
    (voc / "JPEGImages/img1.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"img1\.jpg is not a JPEG"):
        imdb.check_images()
    with pytest.raises(FileNotFoundError, match="sets found: trainval"):
        PascalVoc("val", "2007", devkit, class_names=list(CLASSES))


def test_lst_line_format_and_parse():
    label = np.array([[14, 0.1, 0.2, 0.5, 0.6, 1]], np.float32)
    line = format_lst_line(3, label, "VOC2007/JPEGImages/a.jpg")
    assert line == ("3\t2.0000\t6.0000\t14.0000\t0.1000\t0.2000\t0.5000\t0.6000\t1.0000"
                    "\tVOC2007/JPEGImages/a.jpg\n")
    idx, parsed, rel = parse_lst_line(line, "x.lst", 1)
    assert idx == 3 and rel.endswith("a.jpg")
    np.testing.assert_allclose(parsed[2:].reshape(-1, 6), label, atol=1e-6)
    with pytest.raises(ValueError, match="x.lst line 1: 5 label values"):
        parse_lst_line("0\t2\t6\t1\t2\t3\t4\t5\ta.jpg", "x.lst", 1)


def test_concat_db_refuses_different_classes(small_voc):
    root, _ = small_voc
    devkit = os.path.join(root, "VOCdevkit")
    a = PascalVoc("trainval", "2007", devkit, class_names=list(CLASSES))
    b = PascalVoc("test", "2007", devkit, class_names=list(CLASSES))
    both = ConcatDB([a, b])
    assert both.num_images == 14
    assert both.image_path_from_index(12) == b.image_path_from_index(2)
    np.testing.assert_array_equal(both.label_from_index(11), b.label_from_index(1))
    c = PascalVoc("test", "2007", devkit, class_names=list(CLASSES) + ["cross"])
    with pytest.raises(ValueError, match="classes must be equal"):
        ConcatDB([a, c])


def test_config_values():
    from config.config import cfg
    from config.runtime import decode_threads
    train, valid = cfg.train, cfg.valid
    assert train.num_crop_sampler == 5 and train.min_crop_overlaps == (0.1, 0.3, 0.5, 0.7, 0.9)
    assert train.rand_crop_prob == pytest.approx(5 / 6) and train.crop_emit_mode == "center"
    assert (train.rand_pad_prob, train.max_pad_scale, train.fill_value) == (0.5, 4.0, 127)
    assert (train.max_random_hue, train.max_random_contrast, train.inter_method) == (18, 0.5, 10)
    assert (train.shuffle, train.seed, train.rand_mirror_prob) == (True, 233, 0.5)
    assert valid.num_crop_sampler == 0 and valid.rand_mirror_prob == 0 and not valid.shuffle
    assert train.preprocess_threads == valid.preprocess_threads == decode_threads()
    with pytest.raises(AttributeError, match="no config key"):
        train.no_such_key
