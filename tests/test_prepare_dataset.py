"""prepare_dataset + pack_rec: record layout, readers of the output, formats agree, errors."""
import os

from config.mxnet_compat import mx
import numpy as np
import pytest

from dataset.recordio_utils import count_records, label_pad_width, read_idx, read_lst, scan_labels
from tools.make_synthetic_voc import SynthConfig, export_coco, export_yolo, generate
from tools.pack_rec import pack_rec
from tools.prepare_dataset import format_summary, main, prepare_dataset

CLASSES = ("circle", "square", "ring")


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("formats"))
    voc_dir = generate(SynthConfig(root=root, num_train=12, num_test=2, classes=CLASSES,
                                   min_image_size=100, max_image_size=140, seed=5, progress=False))
    export_coco(voc_dir, "trainval", os.path.join(root, "coco"), CLASSES)
    export_yolo(voc_dir, "trainval", os.path.join(root, "yolo"), CLASSES)
    out = {}
    for fmt, sub in (("pascal", "VOCdevkit"), ("coco", "coco"), ("yolo", "yolo")):
        out[fmt] = prepare_dataset(fmt, "trainval", os.path.join(root, sub),
                                   os.path.join(root, f"{fmt}.lst"), year="2007", shuffle=False,
                                   class_names=list(CLASSES), progress=False)
    return root, out


def _record_labels(rec_path):
    """{image file name: (N, W) label} read with mx.recordio, plus the decoded image shapes."""
    lst = {idx: os.path.basename(rel) for idx, _, rel in read_lst(os.path.splitext(rec_path)[0] + ".lst")}
    reader = mx.recordio.MXIndexedRecordIO(os.path.splitext(rec_path)[0] + ".idx", rec_path, "r")
    labels, shapes = {}, {}
    for key in reader.keys:
        header, img = mx.recordio.unpack_img(reader.read_idx(key))
        label = np.asarray(header.label)
        assert header.flag == label.size and label[0] == 2 and header.id == key
        labels[lst[key]] = label[2:].reshape(-1, int(label[1]))  # (len-2,) -> (N, W)
        shapes[lst[key]] = img.shape
    reader.close()
    return labels, shapes


def test_formats_give_matching_records(three_formats):
    _, out = three_formats
    voc, _ = _record_labels(out["pascal"]["rec"])
    coco, _ = _record_labels(out["coco"]["rec"])
    yolo, _ = _record_labels(out["yolo"]["rec"])
    assert set(voc) == set(coco) == set(yolo) and len(voc) == 12
    for name, label in voc.items():
        assert label.shape[1] == 6 and yolo[name].shape[1] == 5
        np.testing.assert_allclose(coco[name], label * [1, 1, 1, 1, 1, 0], atol=2e-4)
        np.testing.assert_allclose(yolo[name], label[:, :5], atol=2e-4)


def test_records_match_lst_and_are_readable_by_cpp_iter(three_formats):
    _, out = three_formats
    rec = out["pascal"]["rec"]
    items = read_lst(out["pascal"]["lst"])
    labels, shapes = _record_labels(rec)
    for idx, label, rel in items:
        np.testing.assert_array_equal(labels[os.path.basename(rel)], label[2:].reshape(-1, 6))
    assert [k for k, _ in read_idx(out["pascal"]["idx"])] == [idx for idx, _, _ in items]
    stats = scan_labels(rec)
    it = mx.io.ImageDetRecordIter(path_imgrec=rec, data_shape=(3, 64, 64), batch_size=4,
                                  label_width=-1, label_pad_width=label_pad_width([stats]),
                                  label_pad_value=-1, preprocess_threads=1)
    batch = it.next()
    first = batch.label[0].asnumpy()[0]
    # [channels, rows, cols, raw_len, 2, 6, objects...]
    assert first[4:6].tolist() == [2, 6]
    n = int(first[3] - 2) // 6
    np.testing.assert_allclose(first[6:6 + 6 * n].reshape(n, 6), items[0][1][2:].reshape(n, 6), atol=1e-6)
    assert sum(4 - b.pad for b in [batch] + list(it)) == 12


def test_summary_counts(three_formats):
    _, out = three_formats
    s = out["pascal"]
    stats = scan_labels(s["rec"])
    assert s["images"] == s["num_listed"] == stats.num_images == 12
    assert s["objects"] == stats.num_objects == sum(s["objects_per_class"].values())
    assert s["max_objects_per_image"] == stats.max_objects
    assert s["label_width"] == stats.label_width == 2 + 6 * stats.max_objects
    assert {CLASSES[c]: n for c, n in stats.class_counts.items()} == \
        {k: v for k, v in s["objects_per_class"].items() if v}
    text = format_summary(s)
    assert f"--label-width {s['label_width']}" in text and "circle" in text


def test_pack_parallel_resize_and_atomic(three_formats, tmp_path):
    root, out = three_formats
    lst = out["pascal"]["lst"]
    devkit = os.path.join(root, "VOCdevkit")
    rec2, idx2 = pack_rec(lst, devkit, str(tmp_path / "p2.rec"), num_thread=2, resize=64, progress=False)
    assert not any(p.endswith(".tmp") for p in os.listdir(tmp_path))
    base, _ = _record_labels(out["pascal"]["rec"])
    # same order and labels as the single-process pack; images shrunk to longest side 64
    reader = mx.recordio.MXIndexedRecordIO(idx2, rec2, "r")
    items = read_lst(lst)
    assert reader.keys == [i for i, _, _ in items]
    for idx, label, rel in items:
        header, img = mx.recordio.unpack_img(reader.read_idx(idx))
        np.testing.assert_array_equal(header.label, label)
        assert max(img.shape[:2]) == 64
    reader.close()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pack_rec(lst, str(tmp_path), str(tmp_path / "bad.rec"), progress=False)
    assert not os.path.exists(tmp_path / "bad.rec.tmp")


def test_recordio_utils_errors(three_formats, tmp_path):
    _, out = three_formats
    rec, idx = out["pascal"]["rec"], out["pascal"]["idx"]
    assert count_records(rec) == 12
    with open(rec, "rb") as f:
        data = f.read()
    with open(idx) as f:
        idx_text = f.read()
    trunc = tmp_path / "t.rec"
    trunc.write_bytes(data[:len(data) // 2])
    (tmp_path / "t.idx").write_text(idx_text)
    with pytest.raises(ValueError, match="t.rec record .*(truncated|past the end)"):
        scan_labels(str(trunc))
    shifted = tmp_path / "s.rec"
    shifted.write_bytes(data)
    (tmp_path / "s.idx").write_text("".join(f"{k}\t{o + 4}\n" for k, o in read_idx(idx)))
    with pytest.raises(ValueError, match="does not match the .rec"):
        scan_labels(str(shifted))
    (tmp_path / "e.rec").write_bytes(b"")
    with pytest.raises(ValueError, match="e.rec is empty"):
        scan_labels(str(tmp_path / "e.rec"))
    (tmp_path / "n.rec").write_bytes(data)
    with pytest.raises(FileNotFoundError, match="n.idx"):
        scan_labels(str(tmp_path / "n.rec"))
    # a record packed without a detection label header
    w = mx.recordio.MXIndexedRecordIO(str(tmp_path / "c.idx"), str(tmp_path / "c.rec"), "w")
    w.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, np.array([1, 7, 0, 0, 1, 1], np.float32), 0, 0), b"x"))
    w.close()
    with pytest.raises(ValueError, match=r"label header \[1.0, 7.0\]"):
        scan_labels(str(tmp_path / "c.rec"))


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["--root", str(tmp_path / "missing"), "--target", str(tmp_path / "x.lst")]) == 2
    assert "error: --root" in capsys.readouterr().err
    assert main(["--root", str(tmp_path), "--target", str(tmp_path / "x.rec")]) == 2
    assert "must be a .lst" in capsys.readouterr().err


def test_multiple_sets_concatenated(three_formats, tmp_path):
    root, _ = three_formats
    s = prepare_dataset("pascal", "trainval,test", os.path.join(root, "VOCdevkit"),
                        str(tmp_path / "all.lst"), year="2007", class_names=",".join(CLASSES),
                        progress=False)
    assert s["num_listed"] == count_records(s["rec"]) == 14
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        prepare_dataset("pascal", "trainval", os.path.join(root, "VOCdevkit"),
                        str(tmp_path / "y.lst"), year="2007,2012", class_names=list(CLASSES),
                        progress=False)


@pytest.mark.parametrize("fmt", ["pascal", "coco", "yolo"])
def test_each_format_trains_one_epoch_with_train_py(three_formats, fmt, tmp_path):
    import train

    _, out = three_formats
    prefix = tmp_path / "ssd"
    code = train.main(["--train-path", out[fmt]["rec"], "--val-path", "", "--network", "tiny",
                       "--data-shape", "64", "--num-class", str(len(CLASSES)),
                       "--class-names", ",".join(CLASSES), "--batch-size", "4", "--lr", "0.01",
                       "--end-epoch", "1", "--gpus", "", "--pretrained", "", "--freeze", "",
                       "--prefix", str(prefix), "--log", ""])
    assert code == 0
    saved = mx.nd.load(f"{prefix}_tiny_64-0001.params")
    assert saved and all(np.isfinite(v.asnumpy()).all() for v in saved.values())
