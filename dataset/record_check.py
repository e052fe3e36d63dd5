"""Validate a detection ``.rec`` against its ``.idx`` before MXNet's C++ reader sees it.

MXNet's ``ImageDetRecordIter`` reads the ``.rec`` sequentially in C++: a record whose image
cannot be decoded ends in an OpenCV assertion (``resize.cpp ... !ssize.empty()``), a truncated
file in ``Invalid RecordIO Format``, a garbage label header in ``object_width_ >= 5``, all as
MXNet C++ tracebacks without the record. :func:`check_records` walks every record the ``.idx``
lists in Python first and names each bad one by its position in the ``.idx`` (the record
index), its key and its byte offset:

* the record structure: magic number, length, multi-part records, the end of the file
  (an ``.idx`` pointing past the end, a truncated ``.rec``);
* that the ``.idx`` describes this ``.rec``: a record starts at every offset it lists and the
  records it lists cover the whole file (an ``.idx`` of another ``.rec``);
* the packed label: ``IRHeader`` flag, ``[2, 5|6]`` header, whole objects, finite values;
* the image: decoded by OpenCV at 1/8 scale (the whole entropy-coded stream is still read);
  an image that does not decode, or that libjpeg reports as corrupt ("Corrupt JPEG data"), is
  bad: MXNet would abort on the first and train on a garbled picture for the second.

The result is cached beside the ``.rec`` (``.<name>.rec.check.json``), keyed by the size and
modification time of both files, so only the first run on a file pays for the scan.

:func:`select_records` applies ``--bad-records``: ``stop`` raises :class:`BadRecordError`
naming the file and the first bad record; ``skip`` logs every bad record once and returns a
copy of the ``.rec``/``.idx`` without them (``.<name>.good.rec`` beside the original, reused
while the original is unchanged) for the C++ iterator to read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import struct
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from dataset.recordio_utils import (RECORD_MAGIC, LabelLayoutError, check_rec, label_size,
                                     parse_label, read_idx)

logger = logging.getLogger(__name__)

BAD_RECORD_POLICIES = ("stop", "skip")
CHECK_VERSION = 1                # bump when the checks change: cached results are redone
MAX_SKIPPED_FRACTION = 0.5       # skip refuses a file with more bad records than this
_LENGTH_MASK = (1 << 29) - 1      # lrec: low 29 bits length, high 3 bits continuation flag
_PART_WHOLE, _PART_START, _PART_MIDDLE, _PART_END = 0, 1, 2, 3


class BadRecordError(ValueError):
    """A record file holds bad records and ``--bad-records`` is ``stop`` (or skip refused)."""


@dataclass(frozen=True)
class BadRecord:
    """One bad record: ``position`` in the ``.idx`` (0-based), its key, offset and why."""

    position: int
    key: int
    offset: int
    reason: str

    def describe(self, rec_path: str) -> str:
        """``data/train.rec record 5 (key 12, offset 40960): <reason>``."""
        return (f"{rec_path} record {self.position} (key {self.key}, offset {self.offset}): "
                f"{self.reason}")


@dataclass
class RecordReport:
    """Result of :func:`check_records`."""

    rec_path: str
    num_records: int
    bad: list[BadRecord] = field(default_factory=list)
    seconds: float = 0.0        # time of the scan (of the cached scan when ``cached``)
    cached: bool = False

    @property
    def num_good(self) -> int:
        """Records that passed every check."""
        return self.num_records - len(self.bad)


class _RecordError(Exception):
    """Internal: the reason one record is bad."""


class _StderrProbe:
    """Redirect file descriptor 2 to a temporary file to catch libjpeg's warnings.

    libjpeg reports corrupt entropy-coded data ("Corrupt JPEG data: premature end of data
    segment") only as a warning printed by C code on stderr, while OpenCV returns the garbled
    image; :meth:`take` returns the decoder's lines printed since the previous call. Other
    output (another thread's log lines) is passed on to the real stderr.
    """

    def __enter__(self) -> "_StderrProbe":
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self._seen = 0
        return self

    def take(self) -> str:
        size = os.fstat(self._file.fileno()).st_size
        if size == self._seen:
            return ""
        self._file.seek(self._seen)
        lines = self._file.read(size - self._seen).decode("utf-8", "replace").splitlines(True)
        self._seen = size
        decoder = [ln for ln in lines if "jpeg" in ln.lower()]
        other = "".join(ln for ln in lines if "jpeg" not in ln.lower())
        if other:
            os.write(self._saved, other.encode())
        return "".join(decoder)

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.close()


def _read_record(f, file_size: int, offset: int) -> tuple[bytes, int]:
    """Payload of the record starting at ``offset`` (parts joined) and the offset after it."""
    parts, pos = [], offset
    while True:
        if pos + 8 > file_size:
            what = "the .idx points past the end of" if pos == offset else "truncated"
            raise _RecordError(f"{what} the .rec ({file_size} bytes)")
        f.seek(pos)
        magic, lrec = struct.unpack("<II", f.read(8))
        if magic != RECORD_MAGIC:
            where = "" if pos == offset else f" at offset {pos}"
            raise _RecordError(f"no record starts here{where} (magic {magic:#010x}): the .idx "
                               "does not match the .rec, or the .rec is corrupt")
        length, part = lrec & _LENGTH_MASK, lrec >> 29
        if pos + 8 + length > file_size:
            raise _RecordError(f"{length}-byte record runs past the end of the .rec "
                               f"({file_size} bytes): truncated .rec")
        expected = (_PART_WHOLE, _PART_START) if pos == offset else (_PART_MIDDLE, _PART_END)
        if part not in expected:
            raise _RecordError(f"record part flag {part} where {expected} was expected: corrupt "
                               "record header")
        parts.append(f.read(length))
        pos += 8 + (length + 3) // 4 * 4
        if part in (_PART_WHOLE, _PART_END):
            # dmlc splits a payload at every aligned magic number and drops it: put it back
            return struct.pack("<I", RECORD_MAGIC).join(parts), pos


def _image_bytes(payload: bytes) -> bytes:
    """Check the packed label of ``payload``; return the image bytes after it."""
    try:
        label = parse_label(payload, len(payload))
    except LabelLayoutError as exc:
        raise _RecordError(str(exc)) from None
    if not np.all(np.isfinite(label)):
        raise _RecordError("non-finite label value(s)")
    image = payload[label_size(payload):]
    if not image:
        raise _RecordError("no image bytes after the label")
    return image


def _check_image(image: bytes, probe: _StderrProbe | None) -> None:
    import cv2  # noqa: PLC0415 - only the image check needs OpenCV

    decoded = cv2.imdecode(np.frombuffer(image, dtype=np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    warning = probe.take().strip() if probe is not None else ""
    if decoded is None or decoded.size == 0:
        detail = f" ({warning.splitlines()[0]})" if warning else ""
        raise _RecordError(f"image ({len(image)} bytes) cannot be decoded{detail}")
    if warning:
        raise _RecordError(f"image ({len(image)} bytes) is corrupt: {warning.splitlines()[0]}")


def scan_records(rec_path: str, decode: bool = True) -> RecordReport:
    """Check every record the ``.idx`` of ``rec_path`` lists (no cache).

    Parameters
    ----------
    rec_path : str
        ``.rec`` file; its ``.idx`` is beside it.
    decode : bool
        Also decode every image (the slow part); False checks structure and labels only.

    Returns
    -------
    RecordReport

    Raises
    ------
    FileNotFoundError
        Missing ``.rec`` or ``.idx``.
    BadRecordError
        The ``.idx`` is empty or does not describe this ``.rec`` (records it does not list).
    """
    idx_path = check_rec(rec_path)
    entries = read_idx(idx_path)
    if not entries:
        raise BadRecordError(f"index file {idx_path} of {rec_path} is empty")
    file_size = os.path.getsize(rec_path)
    starts = {offset for _, offset in entries}
    bad, unlisted = [], []
    tic = time.perf_counter()
    with open(rec_path, "rb") as f, (_StderrProbe() if decode else nullcontext()) as probe:
        for position, (key, offset) in enumerate(entries):
            try:
                payload, end = _read_record(f, file_size, offset)
                image = _image_bytes(payload)
                if decode:
                    _check_image(image, probe)
            except _RecordError as err:
                bad.append(BadRecord(position, key, offset, str(err)))
                continue
            if end != file_size and end not in starts:
                unlisted.append(end)
    if unlisted:
        raise BadRecordError(
            f"{idx_path} does not match {rec_path}: {len(unlisted)} record(s) of the .rec "
            f"are not in the .idx (first at offset {min(unlisted)}); the .idx belongs to "
            f"another .rec or is out of date: pack the data again with tools/pack_rec.py")
    return RecordReport(rec_path, len(entries), bad, time.perf_counter() - tic)


def _file_key(rec_path: str, decode: bool) -> dict:
    idx_path = os.path.splitext(rec_path)[0] + ".idx"
    rec, idx = os.stat(rec_path), os.stat(idx_path)
    return {"version": CHECK_VERSION, "decode": decode, "rec": [rec.st_size, rec.st_mtime_ns],
            "idx": [idx.st_size, idx.st_mtime_ns]}


def _beside(rec_path: str, suffix: str) -> str:
    folder, name = os.path.split(os.path.abspath(rec_path))
    return os.path.join(folder, f".{name}{suffix}")


def _write_text_atomic(path: str, text: str) -> bool:
    """Best effort (a read-only data folder just means no cache)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return True
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        return False


def check_records(rec_path: str, decode: bool = True, use_cache: bool = True) -> RecordReport:
    """:func:`scan_records` with its result cached beside the ``.rec``.

    Parameters
    ----------
    rec_path : str
        ``.rec`` file; its ``.idx`` is beside it.
    decode : bool
        Also decode every image.
    use_cache : bool
        Read and write ``.<name>.rec.check.json`` (keyed by size and mtime of both files).

    Returns
    -------
    RecordReport
        ``cached`` tells whether the scan was skipped.
    """
    check_rec(rec_path)
    cache_path = _beside(rec_path, ".check.json")
    key = _file_key(rec_path, decode)
    if use_cache and os.path.isfile(cache_path):
        try:
            with open(cache_path) as f:
                saved = json.load(f)
            if saved.get("key") == key:
                return RecordReport(rec_path, int(saved["num_records"]),
                                    [BadRecord(**b) for b in saved["bad"]],
                                    float(saved["seconds"]), cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            pass            # unreadable cache: scan again
    report = scan_records(rec_path, decode)
    if use_cache and _file_key(rec_path, decode) == key:   # unchanged while scanned
        _write_text_atomic(cache_path, json.dumps({
            "key": key, "num_records": report.num_records, "seconds": report.seconds,
            "bad": [dataclasses.asdict(b) for b in report.bad]}))
    return report


def write_without(rec_path: str, bad: list[BadRecord], out_rec: str) -> None:
    """Copy the good records of ``rec_path`` (as stored, keys kept) to ``out_rec`` + ``.idx``."""
    entries = read_idx(os.path.splitext(rec_path)[0] + ".idx")
    skip = {b.position for b in bad}
    out_idx = os.path.splitext(out_rec)[0] + ".idx"
    tmp_rec, tmp_idx = f"{out_rec}.tmp{os.getpid()}", f"{out_idx}.tmp{os.getpid()}"
    file_size = os.path.getsize(rec_path)
    try:
        with open(rec_path, "rb") as src, open(tmp_rec, "wb") as dst, open(tmp_idx, "w") as idx:
            for position, (key, offset) in enumerate(entries):
                if position in skip:
                    continue
                _, end = _read_record(src, file_size, offset)
                idx.write(f"{key}\t{dst.tell()}\n")
                src.seek(offset)
                dst.write(src.read(end - offset))
        os.replace(tmp_rec, out_rec)
        os.replace(tmp_idx, out_idx)
    finally:
        for tmp in (tmp_rec, tmp_idx):
            if os.path.exists(tmp):
                os.remove(tmp)


@dataclass
class RecordSelection:
    """What :func:`select_records` decided: the file for the iterator and what it left out."""

    path: str                   # the .rec to read (the original, or the copy without bad records)
    report: RecordReport
    skipped: list[BadRecord] = field(default_factory=list)


def select_records(rec_path: str, policy: str = "stop", flag: str = "--train-path",
                   decode: bool = True) -> RecordSelection:
    """Check ``rec_path`` and apply ``--bad-records``.

    Parameters
    ----------
    rec_path : str
        ``.rec`` file (``.idx`` beside it).
    policy : str
        ``stop``: raise on the first bad record; ``skip``: log each bad record once and
        return a copy without them.
    flag : str
        The flag that named the file, for messages (``--train-path``, ``--rec-path``).
    decode : bool
        Decode every image (see :func:`check_records`).

    Returns
    -------
    RecordSelection

    Raises
    ------
    BadRecordError
        ``stop`` and a bad record; ``skip`` and more than half the records bad, or none good.
    """
    if policy not in BAD_RECORD_POLICIES:
        raise ValueError(f"--bad-records {policy!r}: choose one of "
                         f"{', '.join(BAD_RECORD_POLICIES)}")
    report = check_records(rec_path, decode)
    how = "cached check" if report.cached else f"checked in {report.seconds:.2f} s"
    logger.info("%s %s: %d records, %d bad (%s)", flag, rec_path, report.num_records,
                len(report.bad), how)
    if not report.bad:
        return RecordSelection(rec_path, report)
    first = report.bad[0]
    count = f"{len(report.bad)} of {report.num_records} records are bad"
    if len(report.bad) > MAX_SKIPPED_FRACTION * report.num_records or not report.num_good:
        raise BadRecordError(f"{flag} {first.describe(rec_path)} ({count}: too many to skip; "
                             f"the .idx does not match the .rec or the whole file is damaged: "
                             f"pack the data again)")
    if policy == "stop":
        raise BadRecordError(f"{flag} {first.describe(rec_path)} ({count}); pass --bad-records "
                             f"skip to leave them out, or pack the data again")
    for bad in report.bad:
        logger.warning("--bad-records skip: leaving out %s", bad.describe(rec_path))
    return RecordSelection(_good_copy(rec_path, report), report, list(report.bad))


def _good_copy(rec_path: str, report: RecordReport) -> str:
    """``.<name>.good.rec`` beside ``rec_path`` (or in the temp folder), reused while valid."""
    stem = os.path.splitext(os.path.basename(rec_path))[0]
    folder = os.path.dirname(os.path.abspath(rec_path))
    if not os.access(folder, os.W_OK):     # one name per source in the shared temp folder
        digest = hashlib.sha1(os.path.abspath(rec_path).encode()).hexdigest()[:10]
        folder, stem = tempfile.gettempdir(), f"{stem}.{digest}"
    out_rec = os.path.join(folder, f".{stem}.good.rec")
    stamp_path = out_rec + ".source.json"
    stamp = json.dumps({"source": os.path.abspath(rec_path), "key": _file_key(rec_path, True),
                        "skipped": [b.position for b in report.bad]}, sort_keys=True)
    out_idx = os.path.splitext(out_rec)[0] + ".idx"
    if os.path.isfile(out_rec) and os.path.isfile(out_idx) and os.path.isfile(stamp_path):
        with open(stamp_path) as f:
            if f.read() == stamp:
                return out_rec
    write_without(rec_path, report.bad, out_rec)
    _write_text_atomic(stamp_path, stamp)
    logger.info("Wrote %s: %d records without the %d bad ones", out_rec, report.num_good,
                len(report.bad))
    return out_rec


def add_bad_records_arg(parser) -> None:
    """``--bad-records stop|skip`` (train.py and evaluate.py)."""
    parser.add_argument("--bad-records", dest="bad_records", choices=BAD_RECORD_POLICIES,
                        default="stop",
                        help="a record that cannot be read (corrupt image, garbage label, "
                             "truncated .rec): 'stop' with an error naming the file and the "
                             "record index, or 'skip' it (logged once, counted in the "
                             "checkpoint card) (default: stop)")
