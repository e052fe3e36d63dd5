"""Reading the index and the label headers of detection RecordIO files (no image decoding).

A record is ``uint32 magic 0xced7230a, uint32 length, payload, pad to 4 bytes``; the payload
starts with ``IRHeader`` (``uint32 flag, float32 label, uint64 id, uint64 id2``) and, when
``flag > 0``, ``flag`` float32 label values ``[2, W, obj0..., obj1..., ...]``.
"""
from __future__ import annotations

import contextlib
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

RECORD_MAGIC = 0xCED7230A
_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2: 24 bytes


@dataclass
class LabelStats:
    """What the labels of one ``.rec`` file need (see :func:`scan_labels`)."""

    num_images: int
    header_width: int
    object_width: int
    max_objects: int
    num_objects: int
    class_counts: dict[int, int] = field(default_factory=dict)

    @property
    def label_width(self) -> int:
        """Smallest ``label_pad_width`` for this file."""
        return self.header_width + self.object_width * self.max_objects


class RecordWriteError(OSError):
    """Writing a record file failed (disk full, file size limit, I/O error).

    ``path``: the ``.rec``; ``written``: bytes that had reached it; ``cause``: the ``OSError``
    or ``MXNetError`` raised (MXNet's says only ``FileStream.Write incomplete``).
    """

    def __init__(self, path: str, written: int | None, cause: BaseException) -> None:
        super().__init__(f"cannot write {path}: {cause}")
        self.path, self.written, self.cause = path, written, cause


@contextlib.contextmanager
def record_writer(rec_path: str) -> Iterator[Any]:
    """An ``MXIndexedRecordIO`` writer of ``rec_path`` and its ``.idx``, complete or absent.

    Both files are written as ``<name>.tmp`` and renamed when the ``with`` block ends without
    an error; on any error the temporary files are removed, so an older file of the same name
    is never half overwritten. A failed write (``OSError`` other than ``FileNotFoundError``,
    or ``MXNetError``) is raised as :class:`RecordWriteError`; other errors as they came.
    """
    from config.mxnet_compat import mx          # after the caller's setup_threads()

    idx_path = os.path.splitext(rec_path)[0] + ".idx"
    tmp_rec, tmp_idx = rec_path + ".tmp", idx_path + ".tmp"
    try:
        writer = mx.recordio.MXIndexedRecordIO(tmp_idx, tmp_rec, "w")
    except (OSError, mx.base.MXNetError) as err:
        raise RecordWriteError(rec_path, None, err) from None
    try:
        yield writer
        writer.close()
        os.replace(tmp_rec, rec_path)
        os.replace(tmp_idx, idx_path)
    except BaseException as err:
        written = os.path.getsize(tmp_rec) if os.path.exists(tmp_rec) else None
        try:
            writer.close()
        except (OSError, mx.base.MXNetError):
            pass                    # closing flushes: fails again on a full disk
        for tmp in (tmp_rec, tmp_idx):
            if os.path.exists(tmp):
                os.remove(tmp)
        if isinstance(err, (OSError, mx.base.MXNetError)) and not isinstance(
                err, FileNotFoundError):
            raise RecordWriteError(rec_path, written, err) from None
        raise


def check_rec(rec_path: str) -> str:
    """Path of the ``.idx`` of ``rec_path``; clear errors for a missing or empty ``.rec``."""
    if not os.path.isfile(rec_path):
        raise FileNotFoundError(f"record file {rec_path} does not exist")
    if os.path.getsize(rec_path) == 0:
        raise ValueError(f"record file {rec_path} is empty")
    idx_path = os.path.splitext(rec_path)[0] + ".idx"
    if not os.path.isfile(idx_path):
        raise FileNotFoundError(f"index file {idx_path} of {rec_path} does not exist "
                                "(pack with tools/pack_rec.py to get both)")
    return idx_path


def read_idx(idx_path: str) -> list[tuple[int, int]]:
    """Read an ``.idx`` file into ``[(key, offset), ...]`` in file order.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, or a line that is not ``key<TAB>offset``.
    """
    if not os.path.isfile(idx_path):
        raise FileNotFoundError(f"index file {idx_path} does not exist")
    entries = []
    with open(idx_path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                entries.append((int(parts[0]), int(parts[1])))
            except (ValueError, IndexError):
                raise ValueError(f"{idx_path} line {line_no}: expected 'key<TAB>offset', "
                                 f"got {line.strip()!r}") from None
    return entries


def count_records(rec_path: str) -> int:
    """Number of records of ``rec_path``, from its ``.idx``."""
    return len(read_idx(check_rec(rec_path)))


class LabelLayoutError(ValueError):
    """A record's packed label is missing or is not ``[2, W, objects...]`` with W 5 or 6."""


def label_size(head: bytes) -> int:
    """Bytes of IRHeader plus packed label that a payload starting with ``head`` (24+ bytes) holds."""
    return _HEADER.size + 4 * _HEADER.unpack_from(head)[0]


def parse_label(head: bytes, length: int) -> np.ndarray:
    """The packed label of a record payload; the one check of the label layout.

    Parameters
    ----------
    head : bytes
        The start of the payload: the IRHeader and, where they fit in ``length``, the
        ``flag`` label values after it (``label_size(head)`` bytes).
    length : int
        Size of the whole payload (IRHeader, label and image bytes).

    Returns
    -------
    np.ndarray
        ``(flag,)`` float32 ``[2, W, obj0..., obj1..., ...]``.

    Raises
    ------
    LabelLayoutError
        No packed label, or a header or length that is not ``2 + W x objects``.
    """
    if length < _HEADER.size:
        raise LabelLayoutError(f"{length}-byte record is shorter than its 24-byte header")
    flag = _HEADER.unpack_from(head)[0]
    if flag == 0 or _HEADER.size + 4 * flag > length:
        raise LabelLayoutError(f"header flag {flag} does not give a packed label inside the "
                               f"{length}-byte record (pack with --pack-label / tools/pack_rec.py)")
    label = np.frombuffer(head, dtype="<f4", count=flag, offset=_HEADER.size)
    width = int(label[1]) if flag > 1 and np.isfinite(label[1]) else 0
    if flag < 2 or label[0] != 2 or width not in (5, 6):
        raise LabelLayoutError(f"label header {label[:2].tolist()} is not [2, 5] or [2, 6]")
    if (flag - 2) % width:
        raise LabelLayoutError(f"label length {flag} is not 2 + {width} x objects")
    return label


def _read_label(f, rec_path: str, file_size: int, key: int, offset: int) -> np.ndarray:
    """The label of the record at ``offset``, reading only its header bytes."""
    where = f"{rec_path} record {key} (offset {offset})"
    if offset + 8 + _HEADER.size > file_size:
        raise ValueError(f"{where}: offset past the end of the file ({file_size} bytes): "
                         "the .idx does not match the .rec")
    f.seek(offset)
    magic, lrec = struct.unpack("<II", f.read(8))
    if magic != RECORD_MAGIC:
        raise ValueError(f"{where}: no record starts here (magic {magic:#x}): "
                         "the .idx does not match the .rec, or the .rec is corrupt")
    length = lrec & ((1 << 29) - 1)
    if offset + 8 + length > file_size:
        raise ValueError(f"{where}: record of {length} bytes runs past the end of the file: "
                         "truncated .rec")
    head = f.read(_HEADER.size)
    wanted = label_size(head)
    if wanted <= length:
        head += f.read(wanted - _HEADER.size)
    try:
        return parse_label(head, length)
    except LabelLayoutError as exc:
        raise LabelLayoutError(f"{where}: {exc}") from None


def scan_labels(rec_path: str) -> LabelStats:
    """Read every record's label header (not the images) and summarise them.

    Raises
    ------
    FileNotFoundError
        Missing ``.rec`` or ``.idx``.
    ValueError
        Empty file, index not matching, truncated or corrupt record, bad label layout, or
        records with different object widths.
    """
    idx_path = check_rec(rec_path)
    entries = read_idx(idx_path)
    if not entries:
        raise ValueError(f"index file {idx_path} is empty")
    file_size = os.path.getsize(rec_path)
    widths: set[int] = set()
    counts: Counter = Counter()
    max_objects = num_objects = 0
    with open(rec_path, "rb") as f:
        for key, offset in entries:
            label = _read_label(f, rec_path, file_size, key, offset)
            width = int(label[1])
            widths.add(width)
            objects = label[2:].reshape(-1, width)  # (len-2,) -> (N, W)
            objects = objects[objects[:, 0] >= 0]
            counts.update(int(c) for c in objects[:, 0])
            max_objects = max(max_objects, objects.shape[0])
            num_objects += objects.shape[0]
    if len(widths) > 1:
        raise ValueError(f"{rec_path}: records have different object widths {sorted(widths)}")
    return LabelStats(num_images=len(entries), header_width=2, object_width=widths.pop(),
                      max_objects=max_objects, num_objects=num_objects,
                      class_counts=dict(sorted(counts.items())))


def read_labels(rec_path: str) -> list[np.ndarray]:
    """Every record's objects (not the images), in ``.idx`` order.

    Returns
    -------
    list of np.ndarray
        One float32 ``(num_objects, W)`` array per record, rows ``[cls, x1, y1, x2, y2(,
        difficult)]`` normalised to [0, 1]; padding rows (class < 0) removed.
    """
    idx_path = check_rec(rec_path)
    entries = read_idx(idx_path)
    if not entries:
        raise ValueError(f"index file {idx_path} is empty")
    file_size = os.path.getsize(rec_path)
    labels = []
    with open(rec_path, "rb") as f:
        for key, offset in entries:
            label = _read_label(f, rec_path, file_size, key, offset)
            objects = label[2:].reshape(-1, int(label[1]))  # (len-2,) -> (N, W)
            labels.append(objects[objects[:, 0] >= 0].astype(np.float32))
    return labels


def label_pad_width(stats_list: list[LabelStats]) -> int:
    """Smallest ``label_pad_width`` that fits every file given (train and val share it).

    Raises
    ------
    ValueError
        Empty list, or files with different object widths.
    """
    if not stats_list:
        raise ValueError("label_pad_width needs the stats of at least one file")
    widths = {s.object_width for s in stats_list}
    if len(widths) > 1:
        raise ValueError(f"record files have different object widths {sorted(widths)}; "
                         "train and validation data must use the same label layout")
    return max(s.label_width for s in stats_list)


def parse_lst_line(line: str, lst_path: str, line_no: int) -> tuple[int, np.ndarray, str]:
    """Parse one detection ``.lst`` line into (index, float32 label, relpath).

    Raises
    ------
    ValueError
        The line does not hold ``idx, 2, W, values..., path`` with a whole number of objects.
    """
    parts = line.rstrip("\n").split("\t")
    where = f"{lst_path} line {line_no}"
    if len(parts) < 4:
        raise ValueError(f"{where}: expected 'idx<TAB>2<TAB>W<TAB>values...<TAB>path', "
                         f"got {len(parts)} field(s)")
    try:
        index = int(float(parts[0]))
        label = np.array([float(v) for v in parts[1:-1]], dtype=np.float32)
    except ValueError as err:
        raise ValueError(f"{where}: not a number ({err})") from None
    if not np.all(np.isfinite(label)):
        bad = [parts[1 + i] for i in np.flatnonzero(~np.isfinite(label))[:3]]
        raise ValueError(f"{where}: non-finite label value(s) {bad}; every label value must be "
                         f"a finite number")
    header_width = int(label[0]) if label.size else 0
    object_width = int(label[1]) if label.size > 1 else 0
    if header_width < 2 or object_width < 5 or label.size < header_width:
        raise ValueError(f"{where}: label header {label[:2].tolist()} must be [2, 5 or 6]")
    if (label.size - header_width) % object_width != 0:
        raise ValueError(f"{where}: {label.size - header_width} label values after the header "
                         f"are not a multiple of the object width {object_width}")
    return index, label, parts[-1]


def read_lst(lst_path: str) -> list[tuple[int, np.ndarray, str]]:
    """Read a whole detection ``.lst`` file (see :func:`parse_lst_line`)."""
    if not os.path.isfile(lst_path):
        raise FileNotFoundError(f"list file {lst_path} does not exist")
    with open(lst_path) as f:
        items = [parse_lst_line(ln, lst_path, i + 1) for i, ln in enumerate(f) if ln.strip()]
    if not items:
        raise ValueError(f"list file {lst_path} is empty")
    return items
