"""Runtime faults (issue 17, cases 1-4): bad records, kill -9, full disks, two runs on a prefix.

Each fault must end in a clear one-line error naming the file (and record), or in a logged and
counted recovery: never a C++ abort, a hang, a silent wrong result or a lost checkpoint.
docs/RELIABILITY.md lists every fault with the test here that shows it.
"""
from __future__ import annotations

import os
import shutil
import struct

import pytest

from dataset.record_check import (BadRecordError, check_records, scan_records,
                                  select_records)
from dataset.recordio_utils import read_idx

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------------------------
# corrupting record files
# --------------------------------------------------------------------------------------------
def copy_rec(src_rec: str, folder: str, name: str = "data") -> str:
    """Copy ``src_rec`` and its ``.idx`` to ``folder/name.rec``; return the new ``.rec``."""
    dst = os.path.join(str(folder), f"{name}.rec")
    shutil.copy(src_rec, dst)
    shutil.copy(os.path.splitext(src_rec)[0] + ".idx", os.path.splitext(dst)[0] + ".idx")
    return dst


def record_layout(rec_path: str, position: int) -> tuple[int, int, int]:
    """(record offset, payload length, offset of the image bytes) of record ``position``."""
    _, offset = read_idx(os.path.splitext(rec_path)[0] + ".idx")[position]
    with open(rec_path, "rb") as f:
        f.seek(offset)
        _, lrec = struct.unpack("<II", f.read(8))
        flag = struct.unpack("<I", f.read(4))[0]
    return offset, lrec & ((1 << 29) - 1), offset + 8 + 24 + 4 * flag


def flip_image_bytes(rec_path: str, position: int, fraction: float, count: int = 16) -> None:
    """XOR ``count`` bytes of record ``position``'s JPEG at ``fraction`` of its length."""
    offset, length, image = record_layout(rec_path, position)
    start = image + int((offset + 8 + length - image - count) * fraction)
    with open(rec_path, "r+b") as f:
        f.seek(start)
        data = f.read(count)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in data))


def garble_label_header(rec_path: str, position: int) -> None:
    """Overwrite the ``[2, W]`` label header of record ``position`` with garbage."""
    offset, _, _ = record_layout(rec_path, position)
    with open(rec_path, "r+b") as f:
        f.seek(offset + 8 + 24)
        f.write(struct.pack("<ff", 123456.0, -7.0))


# --------------------------------------------------------------------------------------------
# case 1: records
# --------------------------------------------------------------------------------------------
def test_clean_records_pass(synth_data):
    report = scan_records(synth_data.train_rec)
    assert report.num_records == synth_data.num_train
    assert report.bad == []


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.5, 0.95])
def test_flipped_image_bytes_named(synth_data, tmp_path, fraction):
    # 0 / 0.02: JPEG headers (imdecode fails: the C++ iterator dies in an OpenCV assertion);
    # 0.5 / 0.95: entropy-coded data (decodes to a garbled picture with a libjpeg warning)
    rec = copy_rec(synth_data.train_rec, tmp_path)
    flip_image_bytes(rec, 5, fraction)
    report = scan_records(rec)
    assert [b.position for b in report.bad] == [5]
    assert "image" in report.bad[0].reason
    with pytest.raises(BadRecordError, match=r"--train-path .*data\.rec record 5 \(key \d+, "
                                             r"offset \d+\): image .*1 of 48 records"):
        select_records(rec, "stop", "--train-path")


def test_truncated_rec(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    os.truncate(rec, os.path.getsize(rec) - 100)     # cuts into the last record
    report = scan_records(rec)
    assert [b.position for b in report.bad] == [synth_data.num_train - 1]
    assert "truncated .rec" in report.bad[0].reason


def test_idx_past_the_end(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    with open(os.path.splitext(rec)[0] + ".idx", "a") as f:
        f.write(f"999\t{os.path.getsize(rec) + 4096}\n")
    report = scan_records(rec)
    assert [(b.position, b.key) for b in report.bad] == [(synth_data.num_train, 999)]
    assert "points past the end" in report.bad[0].reason


def test_idx_of_another_rec(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    shutil.copy(synth_data.val_idx, os.path.splitext(rec)[0] + ".idx")
    with pytest.raises(BadRecordError, match=r"\.idx does not belong to this \.rec|"
                                             r"does not describe"):
        select_records(rec, "skip", "--train-path")


def test_idx_missing_records(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    idx = os.path.splitext(rec)[0] + ".idx"
    with open(idx) as f:
        lines = f.readlines()
    with open(idx, "w") as f:
        f.writelines(lines[:10] + lines[11:])
    with pytest.raises(BadRecordError, match=r"1 record\(s\) of the \.rec are not in the \.idx"):
        scan_records(rec)


def test_garbage_label_header(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    garble_label_header(rec, 7)
    report = scan_records(rec)
    assert [b.position for b in report.bad] == [7]
    assert "garbage label header [123456.0, -7.0]" in report.bad[0].reason


def test_check_is_cached_by_size_and_mtime(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    first = check_records(rec)
    assert not first.cached and first.bad == []
    assert check_records(rec).cached
    flip_image_bytes(rec, 3, 0.0)                     # same size, new mtime
    os.utime(rec, ns=(os.stat(rec).st_atime_ns, os.stat(rec).st_mtime_ns + 10**9))
    again = check_records(rec)
    assert not again.cached and [b.position for b in again.bad] == [3]


def test_skip_copy_reads_through_mxnet(synth_data, tmp_path):
    from dataset.iterator import DetRecordIter

    rec = copy_rec(synth_data.train_rec, tmp_path)
    flip_image_bytes(rec, 2, 0.0)
    garble_label_header(rec, 9)
    selection = select_records(rec, "skip", "--train-path")
    assert [b.position for b in selection.skipped] == [2, 9]
    assert selection.path != rec and scan_records(selection.path).bad == []
    it = DetRecordIter(selection.path, 8, 64, shuffle=False)
    assert it.num_images == synth_data.num_train - 2
    images = sum(batch.data[0].shape[0] - batch.pad for batch in it)
    assert images == synth_data.num_train - 2
    # the copy is reused while the original is unchanged
    assert select_records(rec, "skip", "--train-path").path == selection.path


def test_skip_refuses_a_mostly_bad_file(synth_data, tmp_path):
    rec = copy_rec(synth_data.train_rec, tmp_path)
    os.truncate(rec, os.path.getsize(rec) // 3)
    with pytest.raises(BadRecordError, match="too many to skip"):
        select_records(rec, "skip", "--rec-path")
