"""Property-based tests (hypothesis) of the annotation/list parsers and the label decoding.

Well-formed random inputs round-trip exactly (to the 4 decimals of the ``.lst`` format);
malformed random inputs raise the project's own errors (ValueError / FileNotFoundError with a
message naming the file), never another exception. Known gaps are explicit examples marked
``xfail(strict=True)`` (the to-do list, see docs/notes/RELIABILITY.md).
"""
from __future__ import annotations

import json
import os
import tempfile

from config.mxnet_compat import mx
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from dataset.imdb import CheckReport, Imdb, format_lst_line
from dataset.iterator import DetRecordIter, _stats_from_lst
from dataset.mscoco import Coco
from dataset.pascal_voc import parse_voc_xml
from dataset.recordio_utils import parse_lst_line, read_lst, scan_labels
from dataset.yolo_format import parse_yolo_txt

# database=None: no .hypothesis/ folder in the repository
SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
OUR_ERRORS = (ValueError, FileNotFoundError)

unit = st.floats(0.0, 1.0, allow_nan=False, width=32)
safe_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\t"),
                    min_size=1, max_size=20).filter(lambda s: s.strip() == s and s)


@st.composite
def labels(draw, width: int | None = None, max_objects: int = 8, num_classes: int = 30):
    """A float32 (N, W) label: class ids, ordered boxes in [0, 1], difficult 0/1 when W = 6."""
    width = width or draw(st.sampled_from([5, 6]))
    rows = []
    for _ in range(draw(st.integers(1, max_objects))):
        x = sorted(draw(st.lists(unit, min_size=2, max_size=2)))
        y = sorted(draw(st.lists(unit, min_size=2, max_size=2)))
        row = [draw(st.integers(0, num_classes - 1)), x[0], y[0], x[1], y[1]]
        if width == 6:
            row.append(draw(st.integers(0, 1)))
        rows.append(row)
    return np.array(rows, dtype=np.float32)


def _tmpdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="ssd_prop_")


# --------------------------------------------------------------------------------------------
# .lst lines (dataset/imdb.py writer, dataset/recordio_utils.py reader)
# --------------------------------------------------------------------------------------------
@SETTINGS
@given(index=st.integers(0, 10 ** 6), label=labels(), relpath=safe_text)
def test_lst_line_round_trip(index, label, relpath):
    line = format_lst_line(index, label, relpath)
    assert line.endswith("\n") and line.count("\n") == 1
    got_index, got_label, got_path = parse_lst_line(line, "x.lst", 1)
    assert got_index == index and got_path == relpath
    assert got_label[:2].tolist() == [2.0, float(label.shape[1])]
    # "{:.4f}": every value within half a unit of the 4th decimal
    np.testing.assert_allclose(got_label[2:].reshape(label.shape), label, atol=5.1e-5)


class _ListDb(Imdb):
    """An in-memory Imdb for the writer round trip."""

    def __init__(self, label_list, paths):
        super().__init__("prop", [f"c{i}" for i in range(30)])
        self.labels, self.image_set_index = label_list, paths

    def image_path_from_index(self, index):
        return self.image_set_index[index]


@SETTINGS
@given(width=st.sampled_from([5, 6]), data=st.data())
def test_save_imglist_read_lst_round_trip(width, data):
    label_list = data.draw(st.lists(labels(width=width), min_size=1, max_size=6))
    empty = data.draw(st.lists(st.booleans(), min_size=len(label_list),
                               max_size=len(label_list)))
    label_list = [np.zeros((0, width), np.float32) if e else lb
                  for lb, e in zip(label_list, empty)]
    assume(not all(empty))
    with _tmpdir() as root:
        paths = [os.path.join(root, "img", f"{i}.jpg") for i in range(len(label_list))]
        db = _ListDb(label_list, paths)
        lst = os.path.join(root, "out.lst")
        count = db.save_imglist(lst, root=root)
        kept = [(p, lb) for p, lb in zip(paths, label_list) if lb.size]
        assert count == len(kept) and len(db.report.empty_images) == sum(empty)
        items = read_lst(lst)
        stats = _stats_from_lst(lst)
    assert [i for i, _, _ in items] == list(range(len(kept)))
    for (_, got, rel), (path, label) in zip(items, kept):
        assert rel == os.path.relpath(path, root)
        np.testing.assert_allclose(got[2:].reshape(label.shape), label, atol=5.1e-5)
    assert stats.object_width == width and stats.num_images == len(kept)
    assert stats.max_objects == max(lb.shape[0] for _, lb in kept)
    assert stats.num_objects == sum(lb.shape[0] for _, lb in kept)


lst_token = st.one_of(st.sampled_from(["2", "6", "5", "0", "1.5", "-1", "x", "", " ", "3",
                                       "1e3", "0.2500"]),
                      st.text(st.characters(blacklist_categories=("Cs",),
                                            blacklist_characters="\t\n\r"), max_size=6))


@SETTINGS
@given(tokens=st.lists(lst_token, max_size=14))
def test_lst_random_line_is_parsed_or_refused(tokens):
    line = "\t".join(tokens) + "\n"
    try:
        index, label, path = parse_lst_line(line, "rand.lst", 3)
    except ValueError as err:
        assert "rand.lst line 3" in str(err)
        return
    assert label[0] >= 2 and label[1] >= 5
    assert (label.size - int(label[0])) % int(label[1]) == 0
    assert path == tokens[-1]


@pytest.mark.parametrize("header", ["inf", "nan"])
def test_lst_non_finite_header(header):
    with pytest.raises(ValueError, match="rand.lst line 1"):
        parse_lst_line(f"0\t{header}\t6\t0\t.1\t.1\t.5\t.5\t0\ta.jpg\n", "rand.lst", 1)


# --------------------------------------------------------------------------------------------
# PASCAL VOC XML (dataset/pascal_voc.py)
# --------------------------------------------------------------------------------------------
CLASSES = ["cat", "dog", "car"]


@st.composite
def voc_objects(draw, width: int, height: int):
    """Objects with 1-based inclusive pixel boxes inside a width x height image."""
    objects = []
    for _ in range(draw(st.integers(0, 6))):
        x1 = draw(st.integers(1, width - 1))
        x2 = draw(st.integers(x1 + 1, width))
        y1 = draw(st.integers(1, height - 1))
        y2 = draw(st.integers(y1 + 1, height))
        objects.append((draw(st.sampled_from(CLASSES)), x1, y1, x2, y2,
                        draw(st.integers(0, 1))))
    return objects


def voc_xml(width: int, height: int, objects) -> str:
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height>"
             "<depth>3</depth></size>"]
    for name, x1, y1, x2, y2, difficult in objects:
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                     f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                     "</bndbox></object>")
    return "".join(parts) + "</annotation>"


@SETTINGS
@given(data=st.data(), width=st.integers(2, 2000), height=st.integers(2, 2000))
def test_voc_xml_round_trip(data, width, height):
    objects = data.draw(voc_objects(width, height))
    with _tmpdir() as root:
        path = os.path.join(root, "a.xml")
        with open(path, "w") as f:
            f.write(voc_xml(width, height, objects))
        report = CheckReport()
        label = parse_voc_xml(path, CLASSES, report)
    assert label.shape == (len(objects), 6) and label.dtype == np.float32
    assert report.clipped_boxes == report.dropped_boxes == 0
    for row, (name, x1, y1, x2, y2, difficult) in zip(label, objects):
        expected = [CLASSES.index(name), (x1 - 1) / width, (y1 - 1) / height, x2 / width,
                    y2 / height, difficult]
        np.testing.assert_allclose(row, expected, rtol=1e-6, atol=1e-7)


@SETTINGS
@given(data=st.data(), cut=st.integers(0, 10 ** 6), junk=st.text(max_size=8),
       mode=st.sampled_from(["truncate", "replace", "insert"]))
def test_voc_xml_mangled_is_parsed_or_refused(data, cut, junk, mode):
    text = voc_xml(64, 48, data.draw(voc_objects(64, 48)))
    pos = cut % (len(text) + 1)
    if mode == "truncate":
        text = text[:pos]
    elif mode == "replace":
        text = text[:pos] + junk + text[pos + len(junk):]
    else:
        text = text[:pos] + junk + text[pos:]
    with _tmpdir() as root:
        path = os.path.join(root, "m.xml")
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        try:
            label = parse_voc_xml(path, CLASSES, CheckReport())
        except OUR_ERRORS as err:
            assert "m.xml" in str(err)
            return
    assert label.ndim == 2 and label.shape[1] == 6
    assert np.all((label[:, 1:5] >= 0) & (label[:, 1:5] <= 1))


# --------------------------------------------------------------------------------------------
# COCO JSON (dataset/mscoco.py)
# --------------------------------------------------------------------------------------------
@st.composite
def coco_documents(draw):
    """A valid instances JSON: categories with sparse ids, images, boxes inside the images."""
    cat_ids = sorted(draw(st.sets(st.integers(1, 90), min_size=1, max_size=5)))
    images, annotations = [], []
    for image_id in range(1, draw(st.integers(1, 4)) + 1):
        width, height = draw(st.integers(2, 640)), draw(st.integers(2, 640))
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width,
                       "height": height})
        for _ in range(draw(st.integers(0, 4))):
            x, y = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
            w, h = draw(st.integers(1, width - x)), draw(st.integers(1, height - y))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": draw(st.sampled_from(cat_ids)),
                                "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": int(draw(st.integers(0, 5)) == 0)})
    categories = [{"id": c, "name": f"class{c}"} for c in cat_ids]
    return {"images": images, "annotations": annotations, "categories": categories}


def _write_json(root: str, doc) -> str:
    path = os.path.join(root, "instances_prop.json")
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@SETTINGS
@given(doc=coco_documents())
def test_coco_round_trip(doc):
    with _tmpdir() as root:
        db = Coco(_write_json(root, doc), root)
    cat_ids = sorted(c["id"] for c in doc["categories"])
    assert db.classes == [f"class{c}" for c in cat_ids]
    assert db.image_set_index == sorted(im["id"] for im in doc["images"])
    for image_id, label in zip(db.image_set_index, db.labels):
        info = next(im for im in doc["images"] if im["id"] == image_id)
        anns = [a for a in doc["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
        assert label.shape == (len(anns), 6)
        for row, ann in zip(label, anns):
            x, y, w, h = ann["bbox"]
            expected = [cat_ids.index(ann["category_id"]), x / info["width"],
                        y / info["height"], (x + w) / info["width"], (y + h) / info["height"], 0]
            np.testing.assert_allclose(row, expected, rtol=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None, database=None)
@given(doc=coco_documents(), cut=st.integers(0, 10 ** 6))
def test_coco_truncated_json_is_refused(doc, cut):
    text = json.dumps(doc)
    text = text[:cut % len(text)]
    with _tmpdir() as root:
        with pytest.raises(OUR_ERRORS, match="instances_prop.json"):
            Coco(_write_json(root, text), root)


@settings(max_examples=40, deadline=None, database=None, derandomize=True,
          phases=(Phase.generate,))          # no shrinking: the first failure is enough
@given(doc=coco_documents(), data=st.data())
def test_coco_missing_key_is_refused(doc, data):
    assume(doc["annotations"])
    where = data.draw(st.sampled_from(["images", "annotations", "categories", "image",
                                       "annotation"]))
    if where in ("image", "annotation"):
        entry = doc[where + "s"][0]
        del entry[data.draw(st.sampled_from(sorted(entry)))]
    else:
        del doc[where]
    with _tmpdir() as root:
        try:
            Coco(_write_json(root, doc), root)
        except OUR_ERRORS as err:
            assert "instances_prop.json" in str(err)
        else:
            # a document without annotations may be valid only when none are referenced
            assert where == "annotations"


# --------------------------------------------------------------------------------------------
# YOLO text labels (dataset/yolo_format.py)
# --------------------------------------------------------------------------------------------
@st.composite
def yolo_rows(draw):
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        w, h = draw(st.floats(0.01, 1.0)), draw(st.floats(0.01, 1.0))
        cx = draw(st.floats(w / 2, 1 - w / 2))
        cy = draw(st.floats(h / 2, 1 - h / 2))
        rows.append((draw(st.integers(0, 4)), cx, cy, w, h))
    return rows


@SETTINGS
@given(rows=yolo_rows())
def test_yolo_round_trip(rows):
    with _tmpdir() as root:
        path = os.path.join(root, "a.txt")
        with open(path, "w") as f:
            f.writelines(f"{c} {cx!r} {cy!r} {w!r} {h!r}\n" for c, cx, cy, w, h in rows)
        report = CheckReport()
        label = parse_yolo_txt(path, 5, report)
    assert label.shape == (len(rows), 5)
    for row, (c, cx, cy, w, h) in zip(label, rows):
        expected = [c, max(cx - w / 2, 0), max(cy - h / 2, 0), min(cx + w / 2, 1),
                    min(cy + h / 2, 1)]
        np.testing.assert_allclose(row, expected, atol=1e-6)


yolo_token = st.one_of(st.sampled_from(["0", "1", "4", "5", "-1", "0.5", "0.2", "1.7", "x",
                                        "nan", "1e-3", "2.0"]),
                       st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")),
                               min_size=1, max_size=5))


@SETTINGS
@given(lines=st.lists(st.lists(yolo_token, min_size=1, max_size=7), min_size=1, max_size=4))
def test_yolo_random_lines_are_parsed_or_refused(lines):
    with _tmpdir() as root:
        path = os.path.join(root, "r.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(" ".join(tokens) + "\n" for tokens in lines)
        try:
            label = parse_yolo_txt(path, 5, CheckReport())
        except ValueError as err:
            assert "r.txt, object" in str(err)
            return
    assert label.ndim == 2 and label.shape[1] == 5
    assert np.all((label[:, 0] >= 0) & (label[:, 0] < 5))
    assert np.all((label[:, 1:] >= 0) & (label[:, 1:] <= 1))
    assert np.all(label[:, 3] > label[:, 1]) and np.all(label[:, 4] > label[:, 2])


def test_yolo_nan_coordinate_is_refused(tmp_path):
    path = tmp_path / "n.txt"
    path.write_text("0 nan 0.5 0.2 0.2\n")
    with pytest.raises(ValueError, match="n.txt, object 0"):
        parse_yolo_txt(str(path), 5, CheckReport())


# --------------------------------------------------------------------------------------------
# record label decoding (dataset/recordio_utils.py) and the iterator's list validation
# --------------------------------------------------------------------------------------------
def _write_rec(root: str, label_list, name: str = "p") -> str:
    rec, idx = os.path.join(root, name + ".rec"), os.path.join(root, name + ".idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for i, label in enumerate(label_list):
        flat = np.concatenate([[2, label.shape[1]], label.reshape(-1)]).astype(np.float32)
        writer.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, flat, i, 0),
                                             b"\xff\xd8\xff" + bytes(i % 7)))
    writer.close()
    return rec


@SETTINGS
@given(width=st.sampled_from([5, 6]), data=st.data())
def test_scan_labels_matches_written_labels(width, data):
    label_list = data.draw(st.lists(labels(width=width, max_objects=12), min_size=1,
                                    max_size=8))
    with _tmpdir() as root:
        stats = scan_labels(_write_rec(root, label_list))
    assert stats.num_images == len(label_list)
    assert (stats.header_width, stats.object_width) == (2, width)
    assert stats.max_objects == max(lb.shape[0] for lb in label_list)
    assert stats.num_objects == sum(lb.shape[0] for lb in label_list)
    classes, counts = np.unique(np.concatenate([lb[:, 0] for lb in label_list]),
                                return_counts=True)
    assert stats.class_counts == {int(c): int(n) for c, n in zip(classes, counts)}
    assert stats.label_width == 2 + width * stats.max_objects


@SETTINGS
@given(data=st.data(), position=st.integers(0, 10 ** 6), value=st.binary(min_size=1,
                                                                          max_size=8),
       truncate=st.booleans())
def test_scan_labels_corrupted_rec_is_read_or_refused(data, position, value, truncate):
    label_list = data.draw(st.lists(labels(width=6, max_objects=4), min_size=1, max_size=4))
    with _tmpdir() as root:
        rec = _write_rec(root, label_list)
        size = os.path.getsize(rec)
        with open(rec, "r+b") as f:
            if truncate:
                f.truncate(position % size)
            else:
                f.seek(position % size)
                f.write(value[:size - position % size])
        try:
            stats = scan_labels(rec)
        except ValueError as err:
            assert "p.rec" in str(err)
            return
    # corruption inside the image bytes or the ids is not visible in the labels
    assert stats.num_images == len(label_list)
    assert stats.object_width in (5, 6) and stats.max_objects >= 0


@SETTINGS
@given(width=st.sampled_from([5, 6]), data=st.data())
def test_iterator_list_validation(width, data):
    """A .lst overriding the record's labels: same width accepted and sized from the list;
    other width or a too-small --label-width refused before the C++ iterator is built."""
    list_labels = data.draw(st.lists(labels(width=width, max_objects=10), min_size=1,
                                     max_size=5))
    rec_width = data.draw(st.sampled_from([5, 6]))
    with _tmpdir() as root:
        rec = _write_rec(root, [np.zeros((1, rec_width), np.float32)])
        lst = os.path.join(root, "o.lst")
        with open(lst, "w") as f:
            f.writelines(format_lst_line(i, lb, f"{i}.jpg") for i, lb in enumerate(list_labels))
        needed = 2 + width * max(lb.shape[0] for lb in list_labels)
        if rec_width != width:
            with pytest.raises(ValueError, match=f"o.lst has object width {width}"):
                DetRecordIter(rec, 1, 64, path_imglist=lst)
        else:
            with pytest.raises(ValueError, match=f"at least {needed}"):
                DetRecordIter(rec, 1, 64, path_imglist=lst, label_pad_width=needed - 1)
            assert _stats_from_lst(lst).label_width == needed
