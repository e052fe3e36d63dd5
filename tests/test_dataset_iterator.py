"""DetRecordIter: label layout, padding, round trip of boxes, deterministic epochs, errors."""
import numpy as np
import pytest

from config.config import cfg
from dataset.iterator import DetRecordIter
from dataset.recordio_utils import read_lst, scan_labels


def _lst_labels(lst_path):
    return {idx: label[2:].reshape(-1, int(label[1])) for idx, label, _ in read_lst(lst_path)}


def test_shapes_and_padding_rows(synth_data):
    it = DetRecordIter(synth_data.val_rec, 4, synth_data.image_size, **cfg.valid)
    stats = scan_labels(synth_data.val_rec)
    assert it.provide_data[0].shape == (4, 3, synth_data.image_size, synth_data.image_size)
    assert it.provide_label[0].shape == (4, stats.max_objects, 6)
    batch = it.next()
    label = batch.label[0].asnumpy()
    assert batch.data[0].shape == (4, 3, synth_data.image_size, synth_data.image_size)
    padded = label[:, :, 0] < 0
    assert padded.any()  # some image has fewer than max_objects
    assert (label[padded] == -1).all()
    valid = label[~padded]
    assert ((valid[:, 1:5] >= 0) & (valid[:, 1:5] <= 1)).all()


def test_round_trip_boxes_match_lst(synth_data):
    """annotations -> .lst -> .rec -> DetRecordIter (no aug) gives back the listed boxes."""
    expected = _lst_labels(synth_data.val_lst)
    it = DetRecordIter(synth_data.val_rec, 4, synth_data.image_size, **cfg.valid)
    seen = 0
    for batch in it:
        label = batch.label[0].asnumpy()
        for row, idx in enumerate(batch.index[:4 - batch.pad]):
            objs = label[row][label[row, :, 0] >= 0]
            np.testing.assert_allclose(objs, expected[int(idx)], atol=1e-3)
            seen += 1
    assert seen == synth_data.num_val


def test_pad_and_unique_images_per_epoch(synth_data):
    it = DetRecordIter(synth_data.train_rec, 5, 64, **cfg.valid)  # 48 images: last batch pad 2
    ids, pads = [], []
    for batch in it:
        pads.append(batch.pad)
        ids.extend(int(i) for i in batch.index[:5 - batch.pad])
    assert pads == [0] * 9 + [2]
    assert len(ids) == len(set(ids)) == synth_data.num_train
    it.reset()
    assert sum(5 - b.pad for b in it) == synth_data.num_train


def test_deterministic_epochs(synth_data):
    kwargs = dict(cfg.train, preprocess_threads=1)

    def first_batch(epoch):
        it = DetRecordIter(synth_data.train_rec, 8, 64, epoch=epoch, **kwargs)
        b = it.next()
        return b.data[0].asnumpy(), b.label[0].asnumpy(), list(b.index)

    d1, l1, i1 = first_batch(1)
    d1b, l1b, i1b = first_batch(1)
    d0, _, i0 = first_batch(0)
    assert i1 == i1b
    np.testing.assert_array_equal(d1, d1b)
    np.testing.assert_array_equal(l1, l1b)
    assert i0 != i1 or not np.array_equal(d0, d1)
    # reset() moves epoch 0 -> 1: the same as building at epoch 1
    it = DetRecordIter(synth_data.train_rec, 8, 64, epoch=0, **kwargs)
    it.next()
    it.reset()
    assert it.epoch == 1 and list(it.next().index) == i1


def test_label_pad_width_checks(synth_data):
    stats = scan_labels(synth_data.train_rec)
    needed = 2 + 6 * stats.max_objects
    with pytest.raises(ValueError, match=f"needs at least {needed}"):
        DetRecordIter(synth_data.train_rec, 4, 64, label_pad_width=needed - 1, **cfg.valid)
    it = DetRecordIter(synth_data.train_rec, 4, 64, label_pad_width=50, **cfg.valid)
    assert it.provide_label[0].shape == (4, 8, 6)
    assert it.next().label[0].shape == (4, 8, 6)
    with pytest.raises(FileNotFoundError, match="nope.rec"):
        DetRecordIter(synth_data.train_rec.replace("train.rec", "nope.rec"), 4, 64)
    with pytest.raises(ValueError, match="data_shape"):
        DetRecordIter(synth_data.train_rec, 4, (3, 64), **cfg.valid)


def test_path_imglist_overrides_labels(synth_data, tmp_path):
    # a list with one object per image: labels must come from it
    lines = []
    for idx, label, rel in read_lst(synth_data.val_lst):
        lines.append("\t".join([str(idx), "2.0000", "6.0000"] + ["{:.4f}".format(v) for v in label[2:8]] + [rel]))
    lst = tmp_path / "one.lst"
    lst.write_text("\n".join(lines) + "\n")
    it = DetRecordIter(synth_data.val_rec, 4, 64, path_imglist=str(lst), **cfg.valid)
    assert it.provide_label[0].shape == (4, 1, 6)
    expected = _lst_labels(str(lst))
    batch = it.next()
    for row, idx in enumerate(batch.index):
        np.testing.assert_allclose(batch.label[0].asnumpy()[row], expected[int(idx)], atol=1e-3)
    bad = tmp_path / "bad.lst"
    bad.write_text("0\t2.0000\t6.0000\t1.0\t0.1\t0.1\t0.2\tVOC2007/x.jpg\n")
    with pytest.raises(ValueError, match="bad.lst line 1"):
        DetRecordIter(synth_data.val_rec, 4, 64, path_imglist=str(bad), **cfg.valid)


def test_num_parts_shards_cover_everything(synth_data):
    seen = []
    for part in range(2):
        it = DetRecordIter(synth_data.val_rec, 4, 64, num_parts=2, part_index=part, **cfg.valid)
        part_ids = [int(i) for b in it for i in b.index[:4 - b.pad]]
        assert 0 < len(part_ids) < synth_data.num_val
        seen.extend(part_ids)
    assert sorted(seen) == list(range(synth_data.num_val))


# ------------------------------------------------------------------ reading ahead (issue 18)
def _epochs(it, epochs, ahead, old_batch_too=False):
    """(index, data, label) of every batch over ``epochs`` passes, reading ahead or not."""
    seen, previous = [], None
    for _ in range(epochs):
        for batch in it:
            # the C++ reader may reuse the buffer once the next batch is read: copy first
            seen.append((list(batch.index), batch.data[0].asnumpy(), batch.label[0].asnumpy()))
            if old_batch_too and previous is not None:
                previous.read_ahead()          # an older batch: must not read on
            if ahead:
                batch.read_ahead()
            previous = batch
        it.reset()
    return seen


@pytest.mark.parametrize("old_batch_too", [False, True])
def test_reading_ahead_gives_the_same_batches(synth_data, old_batch_too):
    kwargs = dict(cfg.train, preprocess_threads=1)
    plain = _epochs(DetRecordIter(synth_data.train_rec, 8, 64, **kwargs), 2, ahead=False)
    ahead = _epochs(DetRecordIter(synth_data.train_rec, 8, 64, **kwargs), 2, ahead=True,
                    old_batch_too=old_batch_too)
    assert len(plain) == len(ahead) == 2 * 6
    for (i1, d1, l1), (i2, d2, l2) in zip(plain, ahead):
        assert i1 == i2
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)


def test_read_ahead_of_an_older_batch_reads_nothing(synth_data):
    it = DetRecordIter(synth_data.train_rec, 8, 64, **cfg.valid)
    first = it.next()
    second = it.next()
    first.read_ahead()
    assert it._ahead is None                      # only the newest batch may read on
    second.read_ahead()
    assert it._ahead is not None
    assert list(it.next().index) != list(second.index)


def test_read_ahead_passes_the_end_of_the_pass_and_errors(synth_data, monkeypatch):
    it = DetRecordIter(synth_data.train_rec, 16, 64, **cfg.valid)    # 48 images: 3 batches
    for _ in range(3):
        it.next().read_ahead()
    with pytest.raises(StopIteration):
        it.next()
    it.reset()                                    # nothing pending: a fresh pass
    batch = it.next()

    def broken(self):
        raise RuntimeError("bad record in the reader thread")
    monkeypatch.setattr(DetRecordIter, "_read", broken)
    batch.read_ahead()
    with pytest.raises(RuntimeError, match="reader thread"):
        it.next()


def _noise_record(tmp_path, count, side=200):
    """A record of ``count`` photos of noise (about 48 KB each at 200 px), one box each."""
    from config.mxnet_compat import mx
    from dataset.recordio_utils import record_writer

    rec = str(tmp_path / "noise.rec")
    image = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    label = np.array([2, 6, 0, 0.1, 0.1, 0.9, 0.9, 0], np.float32)
    with record_writer(rec) as writer:
        for i in range(count):
            writer.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, label, i, 0), image,
                                                     quality=95))
    return rec


def test_shuffling_reaches_the_whole_file_each_epoch(tmp_path):
    # 240 photos of ~48 KB: MXNet alone reads 8 MB (~170 photos) at a time, front to back, so
    # every epoch would begin among the first 170; read as parts in a new order each epoch
    from config.config import train_augmentation

    rec = _noise_record(tmp_path, 240)
    it = DetRecordIter(rec, 8, 32, **train_augmentation("none"))
    firsts, orders = [], []
    for _ in range(4):
        ids = [int(i) for b in it for i in b.index[:8 - b.pad]]
        assert sorted(ids) == list(range(240))          # each photo once an epoch
        firsts.append(ids[:24])
        orders.append(ids)
        it.reset()
    assert any(max(first) >= 170 for first in firsts), firsts
    assert len({tuple(o) for o in orders}) == 4
    # two shards still split the file between them
    seen = []
    for part in range(2):
        shard = DetRecordIter(rec, 8, 32, num_parts=2, part_index=part,
                              **train_augmentation("none"))
        seen += [int(i) for b in shard for i in b.index[:8 - b.pad]]
    assert sorted(seen) == list(range(240))
