"""Real photographs: LabelImg/photo quirks read correctly, the anchor tool, and the raccoon path.

The end-to-end test reads ``../shared/data/raccoon`` (200 LabelImg-annotated photos, see its
README); it is skipped, with the reason, where that folder is absent.
"""
import json
import os
import subprocess
import sys

from config.mxnet_compat import mx
import numpy as np
import pytest
from PIL import Image

from dataset.image_info import boxes_to_stored, read_image_info
from dataset.imdb import CheckReport
from dataset.recordio_utils import count_records
from dataset.pascal_voc import PascalVoc, parse_voc_xml
from dataset import anchor_fit
from symbol import anchors as anchor_tool
from tools.prepare_dataset import format_summary, prepare_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RACCOON = os.path.join(REPO, "..", "shared", "data", "raccoon")
EXIF_ORIENTATION = 0x0112


def _xml(stem: str, width: int, height: int, boxes: list, filename: str = "elsewhere.jpg") -> str:
    """A LabelImg-style annotation: <path>/<filename> of the labeller's own files, verified=."""
    objects = "".join(
        f"<object><name>cat</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in boxes)
    return (f'<annotation verified="yes"><folder>images</folder><filename>{filename}</filename>'
            f"<path>C:\\Users\\someone\\Desktop\\{filename}</path><source><database>Unknown"
            f"</database></source><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size><segmented>0</segmented>{objects}</annotation>")


def _photo(width: int, height: int, box: tuple, mode: str = "RGB") -> Image.Image:
    """A grey photo with a white rectangle on the stored pixels (x1, y1, x2, y2 exclusive)."""
    pixels = np.full((height, width, 3), 60, np.uint8)
    pixels[box[1]:box[3], box[0]:box[2]] = 255
    img = Image.fromarray(pixels)
    return img.convert(mode) if mode != "RGB" else img


def _white_box(img: np.ndarray) -> tuple:
    """(x1, y1, x2, y2) normalised extent of the bright pixels of a decoded image."""
    ys, xs = np.nonzero(img.reshape(img.shape[0], img.shape[1], -1).max(axis=2) > 200)
    h, w = img.shape[:2]
    return xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h


@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_drawn_on_the_turned_photo_map_to_the_stored_pixels(orientation):
    stored = _photo(120, 80, (10, 20, 50, 40))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    stored.info["exif"] = exif.tobytes()
    stored.getexif()[EXIF_ORIENTATION] = orientation
    from PIL import ImageOps
    shown = np.asarray(ImageOps.exif_transpose(stored))
    box_on_shown = np.array([_white_box(shown)])
    np.testing.assert_allclose(boxes_to_stored(box_on_shown, orientation),
                               [[10 / 120, 20 / 80, 50 / 120, 40 / 80]], atol=1e-9)


@pytest.fixture(scope="module")
def quirky_voc(tmp_path_factory):
    """A VOC folder of photos with LabelImg and camera quirks, each box on a white rectangle."""
    root = tmp_path_factory.mktemp("quirky") / "VOCdevkit"
    voc = root / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    cases = {}

    def add(stem, img, xml, ext=".jpg", **save):
        img.save(voc / "JPEGImages" / f"{stem}{ext}", **save)
        (voc / "Annotations" / f"{stem}.xml").write_text(xml)
        cases[stem] = voc / "JPEGImages" / f"{stem}{ext}"

    add("plain", _photo(160, 120, (16, 24, 80, 96)), _xml("plain", 160, 120, [(17, 25, 80, 96)]))
    # phone photo stored 160x120 with orientation 6: shown (and labelled) as 120x160
    turned = _photo(160, 120, (40, 30, 120, 90))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    shown_box = _white_box(np.asarray(turned.transpose(Image.Transpose.ROTATE_270)))
    b = [round(shown_box[0] * 120) + 1, round(shown_box[1] * 160) + 1,
         round(shown_box[2] * 120), round(shown_box[3] * 160)]
    add("turned", turned, _xml("turned", 120, 160, [b]), exif=exif.tobytes())
    # labelled at 320x240, the file was then resized to 160x120
    add("resized", _photo(160, 120, (16, 24, 80, 96)), _xml("resized", 320, 240, [(33, 49, 160, 192)]))
    # LabelImg wrote <width>0</width>
    add("zerosize", _photo(160, 120, (16, 24, 80, 96)), _xml("zerosize", 0, 0, [(17, 25, 80, 96)]))
    add("gray", _photo(160, 120, (16, 24, 80, 96), "L"), _xml("gray", 160, 120, [(17, 25, 80, 96)]))
    add("cmyk", _photo(160, 120, (16, 24, 80, 96), "CMYK"), _xml("cmyk", 160, 120, [(17, 25, 80, 96)]))
    add("png", _photo(160, 120, (16, 24, 80, 96), "RGBA"), _xml("png", 160, 120, [(17, 25, 80, 96)]),
        ext=".png")
    # a size that fits nothing: skipped with the reason
    add("wrongsize", _photo(160, 120, (16, 24, 80, 96)), _xml("wrongsize", 100, 100, [(17, 25, 80, 96)]))
    # a JPEG cut short
    add("cut", _photo(160, 120, (16, 24, 80, 96)), _xml("cut", 160, 120, [(17, 25, 80, 96)]))
    data = cases["cut"].read_bytes()
    cases["cut"].write_bytes(data[: len(data) * 2 // 3])
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(cases) + "\n")
    return root, cases


def test_photo_quirks_are_read_or_skipped_with_the_reason(quirky_voc, tmp_path, capsys):
    root, cases = quirky_voc
    summary = prepare_dataset("pascal", "trainval", str(root), str(tmp_path / "q.lst"),
                              year="2007", shuffle=False, class_names=["cat"], progress=False)
    skipped = dict(summary["skipped_images"])
    assert set(skipped) == {str(cases["wrongsize"]), str(cases["cut"])}
    assert "truncated JPEG" in skipped[str(cases["cut"])]
    assert "100x100" in skipped[str(cases["wrongsize"])] and "160x120" in skipped[str(cases["wrongsize"])]
    assert summary["num_listed"] == 7
    assert summary["fixes"]["exif_turned"] == 1 and summary["fixes"]["resized"] == 1
    assert summary["fixes"]["size_from_image"] == 1
    text = format_summary(summary)
    assert "images skipped: 2" in text and "box sizes" in text and "truncated JPEG" in text
    # every packed record: the label lies on the white rectangle of the packed pixels
    reader = mx.recordio.MXIndexedRecordIO(str(tmp_path / "q.idx"), str(tmp_path / "q.rec"), "r")
    for key in reader.keys:
        header, img = mx.recordio.unpack_img(reader.read_idx(key))
        label = np.asarray(header.label)[2:].reshape(-1, 6)   # (len-2,) -> (N, 6)
        np.testing.assert_allclose(label[0, 1:5], _white_box(img), atol=0.02)
    reader.close()


def test_image_info_reads_orientation_and_truncation(quirky_voc):
    _, cases = quirky_voc
    turned = read_image_info(str(cases["turned"]))
    assert (turned.width, turned.height, turned.orientation) == (160, 120, 6)
    assert turned.shown_size == (120, 160) and not turned.truncated
    assert read_image_info(str(cases["cut"])).truncated
    assert read_image_info(str(cases["cmyk"])).mode == "CMYK"


def test_xml_size_is_trusted_without_the_image(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(_xml("a", 200, 100, [(1, 1, 100, 50)]))
    label = parse_voc_xml(str(path), ["cat"], CheckReport())
    np.testing.assert_allclose(label[0, 1:5], [0, 0, 0.5, 0.5])


def test_pascal_voc_finds_png_and_jpeg_extensions(quirky_voc):
    root, cases = quirky_voc
    db = PascalVoc("trainval", "2007", str(root), class_names=["cat"])
    paths = [db.image_path_from_index(i) for i in range(db.num_images)]
    assert str(cases["png"]) in paths and len(paths) == 7


# ---------------------------------------------------------------------------------- anchors
def test_coverage_counts_boxes_with_an_anchor_at_the_threshold():
    layers = anchor_tool.layer_anchors("tiny", 160)
    every = np.concatenate([layer["anchors"] for layer in layers])
    boxes = np.array([every[0], every[len(every) // 2], [0.0, 0.0, 0.02, 0.9]])
    boxes = np.clip(boxes, 0, 1)
    result = anchor_fit.coverage(boxes, layers, thresh=0.5)
    assert result["boxes"] == 3
    # the thin sliver matches no anchor; the two clipped anchor boxes match at least themselves
    best = anchor_tool.box_iou(boxes, every).max(axis=1)
    assert result["covered"] == int((best >= 0.5).sum()) and best[2] < 0.5
    assert sum(layer["covered"] >= 0 for layer in result["per_layer"]) == len(layers)


def test_proposed_anchors_cover_more_small_boxes_than_the_preset():
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.1, 0.9, size=(300, 2))
    sides = rng.uniform(0.04, 0.07, size=(300, 1)) * [1.0, 2.5]     # small, tall boxes
    boxes = np.clip(np.concatenate([centres - sides / 2, centres + sides / 2], axis=1), 0, 1)
    before = anchor_fit.coverage(boxes, anchor_tool.layer_anchors("tiny", 160))
    sizes, ratios = anchor_fit.propose_anchors(boxes, "tiny", 160)
    after = anchor_fit.coverage(boxes, anchor_tool.layer_anchors("tiny", 160, sizes, ratios))
    assert after["covered"] > before["covered"]
    assert ratios[0][0] == pytest.approx(0.4, rel=0.2)                   # width / height ~ 1/2.5
    assert all(a[0] <= b[0] for a, b in zip(sizes, sizes[1:]))         # sizes grow with the map


def test_anchor_tool_runs_by_path_and_as_module(synth_data, tmp_path):
    out = tmp_path / "anchors.json"
    for cmd in ([sys.executable, "tools/anchors.py"], [sys.executable, "-m", "tools.anchors"]):
        proc = subprocess.run(cmd + [synth_data.train_rec, "--data-shape", "160",
                                     "--output", str(out)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "preset tiny" in proc.stdout and "proposed anchors" in proc.stdout
    content = json.loads(out.read_text())
    assert content["coverage_after"] >= content["coverage_before"]
    assert len(content["sizes"]) == len(content["ratios"]) == 5


def test_anchor_tool_names_a_bad_file(tmp_path):
    proc = subprocess.run([sys.executable, "tools/anchors.py", str(tmp_path / "none.rec")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "none" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------- raccoon, end to end
def _raccoon_voc(tmp_path, train_numbers, test_numbers):
    """A VOC folder of raccoon photos linked from ../shared/data/raccoon (skip where absent)."""
    voc = os.path.join(RACCOON, "VOCdevkit", "VOC2007")
    if not os.path.isdir(voc):
        pytest.skip(f"real-photo data not found at {os.path.abspath(RACCOON)} (the raccoon set "
                    "of ../shared/data; see its README)")
    root = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    split = {"trainval": [f"raccoon-{n}" for n in train_numbers],
             "test": [f"raccoon-{n}" for n in test_numbers]}
    for name, ids in split.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
        for i in ids:
            os.symlink(os.path.join(voc, "JPEGImages", f"{i}.jpg"), root / "JPEGImages" / f"{i}.jpg")
            os.symlink(os.path.join(voc, "Annotations", f"{i}.xml"), root / "Annotations" / f"{i}.xml")
    return tmp_path / "VOCdevkit"


@pytest.fixture
def few_raccoons(tmp_path):
    """A VOC folder of 10 raccoon photos (8 train, 2 test), linked from ../shared/data/raccoon."""
    return _raccoon_voc(tmp_path, (1, 2, 3, 4, 6, 7, 8, 9), (5, 10))


def test_raccoon_photos_prepare_train_evaluate(few_raccoons, tmp_path):
    """tools/train_photos.py on 10 real photos: records, mosaics, anchors, 2 epochs, evaluation,
    mAP."""
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "tools/train_photos.py", "--voc-root", str(few_raccoons),
         "--class-names", os.path.join(RACCOON, "class_names.txt"), "--workdir", str(work),
         "--end-epoch", "2", "--data-shape", "128", "--no-pictures", "--no-flip-test",
         "--train-args", "--batch-size 4 --frequent 1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    train = json.loads((work / "train_summary.json").read_text())
    assert train["num_listed"] == 8 and train["skipped_images"] == []
    assert train["objects_per_class"]["raccoon"] >= 8
    assert sum(train["box_size_histogram"].values()) == train["objects"]
    log = (work / "train.log").read_text()
    assert "Anchor coverage" in log and "preset tiny" in log
    assert "train_mosaic.rec" in log                # trained on the photos + their mosaics
    assert count_records(str(work / "train_mosaic.rec")) > 8
    summary = json.loads((work / "photos_summary.json").read_text())
    assert 0.0 <= summary["voc07_map"] <= 1.0
    assert os.path.isfile(summary["evaluated"])      # the checkpoint that was evaluated
    assert "Finished: VOC07 mAP" in proc.stdout
    assert "--flip-test" not in proc.stdout and "its mirror" not in proc.stdout
    assert summary["recipe"]["flip_test"] is False


def test_tiny_photo_normalises_the_extra_layers_and_tiny_keeps_its_graph():
    from symbol.symbol_factory import get_config, get_symbol_train
    photo = get_symbol_train("tiny_photo", 256, 1, with_det=False).list_arguments()
    plain = get_symbol_train("tiny", 256, 1, with_det=False).list_arguments()
    extra_bn = [n for n in photo if n.startswith("multi_feat_") and "_bn_" in n]
    assert len(extra_bn) == 8            # 2 extra layers x (1x1, 3x3) x (gamma, beta)
    assert not [n for n in plain if n.startswith("multi_feat_") and "_bn_" in n]
    assert set(photo) - set(plain) == set(extra_bn)
    assert get_config("tiny_photo", 256)["sizes"] == get_config("tiny", 256)["sizes"]


def test_average_checkpoints_means_every_array_and_names_a_missing_epoch(tmp_path):
    from tools.average_checkpoints import average_checkpoints, parse_epochs
    prefix = str(tmp_path / "ssd_tiny_128")
    for epoch, value in ((3, 1.0), (4, 2.0), (5, 6.0)):
        mx.nd.save(f"{prefix}-{epoch:04d}.params",
                   {"arg:w": mx.nd.full((2, 3), value), "aux:bn_moving_mean": mx.nd.full((3,), -value)})
    assert parse_epochs("3-5") == [3, 4, 5] and parse_epochs("5,3") == [3, 5]
    out = average_checkpoints(prefix, [3, 4, 5], str(tmp_path / "avg_tiny_128"))
    assert out.endswith("avg_tiny_128-0005.params")
    saved = mx.nd.load(out)
    np.testing.assert_allclose(saved["arg:w"].asnumpy(), np.full((2, 3), 3.0))
    np.testing.assert_allclose(saved["aux:bn_moving_mean"].asnumpy(), np.full((3,), -3.0))
    with pytest.raises(FileNotFoundError, match="0006.params"):
        average_checkpoints(prefix, [5, 6], str(tmp_path / "x"))
    with pytest.raises(ValueError, match="--epochs"):
        parse_epochs("a-b")


def test_anchors_flag_values_resolve_to_config_overrides(synth_data, tmp_path):
    from dataset.anchor_fit import coverage_lines, resolve_anchors
    assert resolve_anchors("", "tiny", 160, synth_data.train_rec) == {}
    fitted = resolve_anchors("fit", "tiny", 160, synth_data.train_rec)
    assert set(fitted) == {"sizes", "ratios"} and len(fitted["sizes"]) == 5
    path = tmp_path / "a.json"
    path.write_text(json.dumps(fitted))
    assert resolve_anchors(str(path), "tiny", 160, synth_data.train_rec) == fitted
    path.write_text(json.dumps({"sizes": [[0.1]], "ratios": [[1]]}))
    with pytest.raises(ValueError, match="--anchors .*a.json: anchors do not fit tiny at 160"):
        resolve_anchors(str(path), "tiny", 160, synth_data.train_rec)
    with pytest.raises(FileNotFoundError, match="--anchors .*none.json"):
        resolve_anchors(str(tmp_path / "none.json"), "tiny", 160, synth_data.train_rec)
    lines = coverage_lines(synth_data.train_rec, "tiny", 160, fitted)
    assert lines[0].startswith("Anchor coverage") and any("anchors used" in ln for ln in lines)


def test_three_training_photos_train_without_mosaics(tmp_path):
    voc = _raccoon_voc(tmp_path, (1, 2, 3), (5, 10, 11))
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "tools/train_photos.py", "--voc-root", str(voc),
         "--class-names", "raccoon", "--workdir", str(work), "--end-epoch", "1",
         "--data-shape", "128", "--no-pictures", "--train-args", "--batch-size 3"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "only 3 training photo(s): no mosaics" in proc.stdout
    assert not (work / "train_mosaic.rec").exists()
    assert "Finished: VOC07 mAP" in proc.stdout
