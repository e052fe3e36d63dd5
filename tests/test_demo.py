"""demo.py, the Detector and the drawing."""
from __future__ import annotations

import glob
import os

import cv2
import numpy as np
import pytest

from evaluate.detector import Detector, load_image, preprocess
from evaluate.visualize import class_color, draw_detections
from tests.test_evaluate import SHAPE, load_cli, save_random_checkpoint


@pytest.fixture(scope="module")
def checkpoint(synth_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_ckpt")
    save_random_checkpoint(str(folder / f"ssd_tiny_{SHAPE}"), synth_data.num_classes)
    return folder


@pytest.fixture(scope="module")
def images(synth_data):
    paths = sorted(glob.glob(os.path.join(synth_data.devkit, "VOC2007", "JPEGImages", "*.jpg")))
    assert len(paths) >= 3
    return paths[:3]


def demo_args(synth_data, checkpoint, out_dir, *extra):
    return ["--network", "tiny", "--data-shape", str(SHAPE), "--prefix", str(checkpoint / "ssd_"),
            "--epoch", "1", "--cpu", "--class-names", ",".join(synth_data.class_names),
            "--output-dir", str(out_dir), *extra]


def test_preprocess_matches_record_iterator(synth_data):
    """The detector sees the pixels the validation iterator feeds (RGB, resize, mean)."""
    from config.config import cfg
    from dataset.iterator import DetRecordIter
    from config.mxnet_compat import mx
    recordio = mx.recordio
    record = recordio.MXIndexedRecordIO(synth_data.val_idx, synth_data.val_rec, "r")
    _, encoded = recordio.unpack(record.read_idx(record.keys[0]))
    record.close()
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    ours = preprocess(rgb, (96, 96), (123, 117, 104))
    batch = next(iter(DetRecordIter(synth_data.val_rec, 1, (3, 96, 96), **cfg.valid)))
    theirs = batch.data[0].asnumpy()[0]
    assert ours.shape == theirs.shape == (3, 96, 96)
    # same colour order and mean; resampling may differ by a grey level or two at edges
    assert np.abs(ours - theirs).mean() < 2.0
    assert np.abs(ours[0] - theirs[2]).mean() > np.abs(ours - theirs).mean()


def test_detector_batches_give_same_detections(checkpoint, images, synth_data):
    prefix = str(checkpoint / f"ssd_tiny_{SHAPE}")
    from symbol.symbol_factory import get_symbol
    symbol = get_symbol("tiny", SHAPE, synth_data.num_classes)
    single = Detector(symbol, prefix, 1, SHAPE, batch_size=1).im_detect(images)
    batched = Detector(symbol, prefix, 1, SHAPE, batch_size=2).im_detect(images)
    assert len(single) == len(batched) == 3
    for a, b in zip(single, batched):
        assert a.shape[1] == 6 and (a[:, 0] >= 0).all()
        assert np.all(np.diff(a[:, 1]) <= 0)                     # sorted by score
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_detector_errors(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match="image .* not found"):
        load_image(str(tmp_path / "none.jpg"))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot be decoded"):
        load_image(str(tmp_path / "bad.jpg"))
    with pytest.raises(ValueError, match="run deploy.py"):      # training graph, no deploy
        Detector(None, str(checkpoint / f"ssd_tiny_{SHAPE}"), 1, SHAPE)


def test_draw_detections_colours_boxes(tmp_path):
    image = np.full((100, 120, 3), 255, dtype=np.uint8)
    dets = np.array([[1, 0.9, 0.2, 0.2, 0.8, 0.8], [0, 0.1, 0.1, 0.1, 0.3, 0.3]])
    out = str(tmp_path / "boxes.png")
    assert draw_detections(image, dets, ["a", "b"], out, thresh=0.5, min_side=0) == 1  # low score skipped
    drawn = cv2.cvtColor(cv2.imread(out), cv2.COLOR_BGR2RGB)
    assert drawn.shape == image.shape
    expected = np.array(class_color(1)) * 255
    # the right edge of the box (x = 0.8 * 120 = 96) has the class colour mid-height
    column = drawn[40:60, 94:99].reshape(-1, 3).astype(float)
    assert np.min(np.abs(column - expected).sum(axis=1)) < 30
    assert class_color(0) != class_color(1)


@pytest.mark.slow
def test_demo_writes_pictures(synth_data, checkpoint, images, tmp_path, capsys):
    cli = load_cli("demo")
    folder = tmp_path / "in"
    folder.mkdir()
    for path in images:
        os.symlink(path, folder / os.path.basename(path))
    out_dir = tmp_path / "out"
    status = cli.main(demo_args(synth_data, checkpoint, out_dir, "--images", str(folder),
                                "--batch-size", "2", "--thresh", "0.2"))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    written = sorted(os.listdir(out_dir))
    assert written == sorted(os.path.splitext(os.path.basename(p))[0] + ".png" for p in images)
    for name in written:
        picture = cv2.imread(str(out_dir / name))
        assert picture is not None and picture.shape[:2] == (480, 480)   # small inputs enlarged
    assert "detection time:" in captured.out
    assert "3 picture(s) written" in captured.out


def test_demo_no_force_reaches_the_graph(synth_data, checkpoint, tmp_path):
    cli = load_cli("demo")
    for extra, expected in (((), "True"), (("--no-force",), "False")):
        args = cli.get_parser().parse_args(demo_args(synth_data, checkpoint, tmp_path, *extra))
        detector = cli.build_detector(args, synth_data.num_classes)
        attrs = detector.module.symbol.attr_dict()
        suppress = [a["force_suppress"] for a in attrs.values() if "force_suppress" in a]
        assert suppress == [expected]


def test_demo_input_errors(synth_data, checkpoint, tmp_path, capsys):
    cli = load_cli("demo")
    assert cli.main(demo_args(synth_data, checkpoint, tmp_path, "--images",
                              str(tmp_path / "missing.jpg"))) == 2
    assert "neither an image file nor a folder" in capsys.readouterr().err
    assert cli.main(demo_args(synth_data, checkpoint, tmp_path, "--frame-resize", "x")) == 2
    assert "--frame-resize" in capsys.readouterr().err
    (tmp_path / "a.jpg").write_bytes(b"")
    assert cli.list_images("a", str(tmp_path), ".jpg") == [str(tmp_path / "a.jpg")]


def test_demo_camera_clear_without_camera(synth_data, checkpoint, tmp_path, capsys):
    cli = load_cli("demo")
    capture = cv2.VideoCapture(0)
    has_camera = capture.isOpened()
    capture.release()
    status = cli.main(demo_args(synth_data, checkpoint, tmp_path / "cam", "--camera",
                                "--camera-frames", "1"))
    if has_camera:
        assert status == 0 and os.path.isfile(tmp_path / "cam" / "frame_00000.jpg")
    else:
        assert status == 2
        assert "no camera could be opened" in capsys.readouterr().err
