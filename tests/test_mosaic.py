"""Four-photo mosaics (dataset/mosaic.py, tools/mosaic.py): boxes follow their pixels."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from dataset.mosaic import make_mosaic, place_boxes, write_mosaic_rec
from dataset.recordio_utils import read_idx, read_labels, scan_labels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_box_inside_its_quadrant_is_moved_and_scaled():
    objects = np.array([[2, 0.25, 0.5, 0.75, 1.0, 1]], np.float32)   # difficult flag kept
    kept, dropped = place_boxes(objects, offset=(10, 20), size=(100, 40),
                                visible=(0, 0, 200, 200), side=200, min_visible=0.5)
    assert dropped == 0
    np.testing.assert_allclose(kept, [[2, 35 / 200, 40 / 200, 85 / 200, 60 / 200, 1]], atol=1e-6)


@pytest.mark.parametrize("cut_at, kept_rows", [(70, 1), (40, 0)])
def test_a_cut_box_is_clipped_or_dropped_by_its_visible_share(cut_at, kept_rows):
    # a 100-px box from x=0 to 100; the quadrant shows x < cut_at: 70 % (kept) or 40 % (dropped)
    objects = np.array([[0, 0.0, 0.0, 1.0, 1.0]], np.float32)
    kept, dropped = place_boxes(objects, offset=(0, 0), size=(100, 100),
                                visible=(0, 0, cut_at, 100), side=100, min_visible=0.5)
    assert (len(kept), dropped) == (kept_rows, 1 - kept_rows)
    if kept_rows:
        np.testing.assert_allclose(kept[0, 1:5], [0, 0, cut_at / 100, 1.0], atol=1e-6)


def _photo(colour, box, size=(80, 120)):
    """A photo of one flat colour with a white object at ``box`` (normalised)."""
    h, w = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = colour
    x1, y1, x2, y2 = box
    img[round(y1 * h):round(y2 * h), round(x1 * w):round(x2 * w)] = 255
    return img, np.array([[0, *box]], np.float32)


def test_every_mosaic_box_covers_its_white_object():
    rng = np.random.default_rng(0)
    photos = [_photo((40 * i, 60, 200 - 40 * i), (0.3, 0.2, 0.7, 0.8)) for i in range(4)]
    seen = 0
    for _ in range(40):
        image, boxes, _ = make_mosaic(photos, rng, side=160, scale=(0.4, 1.0))
        assert image.shape == (160, 160, 3)
        for row in boxes:
            x1, y1, x2, y2 = (int(round(v * 160)) for v in row[1:5])
            inside = image[y1 + 1:y2 - 1, x1 + 1:x2 - 1]
            assert inside.size and inside.min() >= 230, (row, inside.min())  # white only
            seen += 1
    assert seen > 40                            # most objects survive the cut


def test_the_canvas_outside_the_photos_is_the_fill_colour():
    rng = np.random.default_rng(3)
    photos = [_photo((0, 0, 0), (0.4, 0.4, 0.6, 0.6))] * 4
    image, _, _ = make_mosaic(photos, rng, side=200, scale=(0.2, 0.2), fill=(7, 8, 9))
    # four 24x16 photos around a centre in the middle 40 %: the corners are empty
    assert (image[0, 0] == (7, 8, 9)).all() and (image[-1, -1] == (7, 8, 9)).all()
    assert (image == 0).any()                   # the photos are there too


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _raw_records(rec):
    """``[(key, bytes)]`` of a record in file order."""
    from config.mxnet_compat import mx

    reader = mx.recordio.MXIndexedRecordIO(rec[:-4] + ".idx", rec, "r")
    try:
        return [(key, reader.read_idx(key)) for key, _ in read_idx(rec[:-4] + ".idx")]
    finally:
        reader.close()


def test_record_keeps_the_photos_among_the_mosaics(synth_data, tmp_path):
    out = str(tmp_path / "mosaic.rec")
    report = write_mosaic_rec(synth_data.train_rec, out, copies=1.5, seed=4, progress=False)
    source = _raw_records(synth_data.train_rec)
    records = _raw_records(out)
    assert report.num_photos == len(source) == synth_data.num_train
    assert 0.9 * 1.5 * len(source) <= report.num_mosaics <= 1.5 * len(source)
    assert len(records) == len(source) + report.num_mosaics
    keys = [k for k, _ in records]
    assert len(set(keys)) == len(keys)
    # the photos byte for byte, in their order, spread over the file (not all in front)
    source_keys = {k for k, _ in source}
    at = [i for i, (k, _) in enumerate(records) if k in source_keys]
    assert [records[i] for i in at] == source
    assert at[-1] - at[0] > len(records) / 2 and at != list(range(len(source)))
    labels = read_labels(out)
    photos_at = set(at)
    mosaics = [labels[i] for i in range(len(records)) if i not in photos_at]
    assert sum(len(m) for m in mosaics) == report.boxes_kept
    assert all(len(m) and (m[:, 1:5] >= 0).all() and (m[:, 1:5] <= 1).all() for m in mosaics)
    assert all((m[:, 3] > m[:, 1]).all() and (m[:, 4] > m[:, 2]).all() for m in mosaics)
    assert scan_labels(out).object_width == scan_labels(synth_data.train_rec).object_width
    # the same seed writes the same file; another seed another one
    again = str(tmp_path / "again.rec")
    write_mosaic_rec(synth_data.train_rec, again, copies=1.5, seed=4, progress=False)
    assert _digest(again) == _digest(out)
    other = str(tmp_path / "other.rec")
    write_mosaic_rec(synth_data.train_rec, other, copies=1.5, seed=5, progress=False)
    assert _digest(other) != _digest(out)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_mosaic_record_trains_through_the_iterator(synth_data, tmp_path):
    from config.config import cfg
    from dataset.iterator import DetRecordIter

    out = str(tmp_path / "mosaic.rec")
    report = write_mosaic_rec(synth_data.train_rec, out, copies=1, seed=1, progress=False)
    it = DetRecordIter(out, 8, 64, **dict(cfg.train))
    images = sum(b.data[0].shape[0] - b.pad for b in it)
    assert images == report.num_photos + report.num_mosaics


@pytest.mark.parametrize("flags, words", [
    (["--copies", "-1"], "--copies -1"),
    (["--scale", "0.8", "0.5"], "--scale 0.8 0.5"),
    (["--min-visible", "0"], "--min-visible 0"),
])
def test_cli_names_a_bad_value(synth_data, tmp_path, flags, words):
    out = tmp_path / "m.rec"
    proc = subprocess.run([sys.executable, "tools/mosaic.py", synth_data.train_rec,
                           "--output", str(out), "--quiet", *flags],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert not out.exists()


def test_cli_refuses_to_overwrite_its_source(synth_data):
    before = _digest(synth_data.train_rec)
    proc = subprocess.run([sys.executable, "tools/mosaic.py", synth_data.train_rec,
                           "--output", synth_data.train_rec, "--quiet"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "must differ from the source" in proc.stderr
    assert _digest(synth_data.train_rec) == before


def test_cli_writes_the_record_and_a_preview(synth_data, tmp_path):
    import cv2

    out, preview = tmp_path / "m.rec", tmp_path / "preview.png"
    proc = subprocess.run([sys.executable, "tools/mosaic.py", synth_data.train_rec,
                           "--output", str(out), "--copies", "0.5", "--side", "96",
                           "--preview", str(preview), "--quiet"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{synth_data.num_train} photos + " in proc.stdout
    image = cv2.imread(str(preview))
    assert image is not None and image.shape[:2] == (192, 192)     # 2 x 2 mosaics of 96 px


def test_cli_names_a_failed_write_and_leaves_no_partial_file(synth_data, tmp_path):
    import resource

    out = tmp_path / "m.rec"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = subprocess.run([sys.executable, "tools/mosaic.py", synth_data.train_rec,
                           "--output", str(out), "--quiet"], cwd=REPO, capture_output=True,
                          text=True, preexec_fn=limit)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {out}: file size limit reached (ulimit -f / RLIMIT_FSIZE "
        f"100000 bytes)")
    assert os.listdir(tmp_path) == []
