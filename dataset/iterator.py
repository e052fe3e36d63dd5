"""``DetRecordIter``: the C++ ``ImageDetRecordIter`` with labels shaped for SSD.

Each batch: ``data[0]`` (B, 3, H, W) RGB float32, mean-subtracted (no std scaling);
``label[0]`` (B, max_objects, object_width) rows ``[cls, x1, y1, x2, y2(, difficult)]``
normalised to [0, 1], padded rows all -1; ``pad`` = wrapped images at the end of the last
batch (do not score them).

Reading ahead: every training batch carries ``read_ahead``, a callable that starts reading the
next batch on a background thread. ``DetectionModule.forward`` calls it once the batch's data
has been handed to MXNet's engine (which is when the C++ reader may recycle its buffer), so
the next batch is ready when ``Module.fit`` asks for it; :meth:`next` waits for it then.

Epochs are reproducible: with shuffling on, the C++ iterator of epoch ``e`` is created with
seed ``seed + e``, so the order (and the augmentation stream) of an epoch depends only on
``(seed, e)``; :meth:`reset` moves to the next epoch. Build with ``epoch=k`` to resume.

Shuffling reaches the whole file: left to itself, ``ImageDetRecordIter(shuffle=True)`` reads
the record front to back in 8 MB chunks and shuffles only inside each chunk (about 170 photos
of 45 KB), so every epoch meets the records in nearly the file's order. With shuffling on, the
file is read as parts of ``SHUFFLE_PART_MB`` in an order drawn anew each epoch (MXNet's
``shuffle_chunk_size`` / ``shuffle_chunk_seed``), each part shuffled inside; a file of one
part reads as before (docs/notes/RECIPE.md, "Fifth look").
"""
from __future__ import annotations

import functools
import logging
import math
import threading
import time
from typing import Any

from config.mxnet_compat import mx

from dataset.record_check import BadRecordError
from dataset.recordio_utils import LabelStats, count_records, read_lst, scan_labels

logger = logging.getLogger(__name__)

# words of MXNet's C++ errors while reading records (not of an invalid argument)
_READ_FAILURES = ("threadediter", "recordio", "RecordIO", "OpenCV", "image_det", "label")
SHUFFLE_PART_MB = 4  # MXNet logs a warning per iterator for parts under 4 MB
_CPP_HEADER = 4  # ImageDetRecordIter prepends [channels, rows, cols, raw_len] to every label


def _stats_from_lst(lst_path: str) -> LabelStats:
    """Label statistics of a detection ``.lst`` (used when ``path_imglist`` overrides labels)."""
    items = read_lst(lst_path)
    widths = {int(label[1]) for _, label, _ in items}
    if len(widths) > 1:
        raise ValueError(f"list file {lst_path}: lines have different object widths {sorted(widths)}")
    width = widths.pop()
    counts: dict[int, int] = {}
    max_objects = num_objects = 0
    for _, label, _ in items:
        objects = label[2:].reshape(-1, width)  # (len-2,) -> (N, W)
        max_objects = max(max_objects, objects.shape[0])
        num_objects += objects.shape[0]
        for c in objects[:, 0].astype(int):
            counts[int(c)] = counts.get(int(c), 0) + 1
    return LabelStats(len(items), 2, width, max_objects, num_objects, counts)


class DetRecordIter(mx.io.DataIter):
    """Detection record iterator for SSD.

    Parameters
    ----------
    path_imgrec : str
        ``.rec`` file (its ``.idx`` beside it).
    batch_size : int
        Images per batch.
    data_shape : int or tuple
        Side of the square input, or ``(3, H, W)``.
    mean_pixels : tuple of 3 float
        RGB mean subtracted from the images.
    label_pad_width : int
        Label length per image after padding (header + objects); -1 computes the smallest
        one from the data. Train and validation iterators must use the same value.
    path_imglist : str
        Optional ``.lst`` whose labels replace the record labels.
    num_parts, part_index : int
        Shard the data for distributed training.
    seed : int, optional
        Base seed of shuffling; default ``kwargs['seed']`` (cfg.train: 233) or 0.
    epoch : int
        Epoch the first pass belongs to (resume).
    **kwargs
        Other ``ImageDetRecordIter`` arguments (``cfg.train`` / ``cfg.valid``).
    """

    def __init__(self, path_imgrec: str, batch_size: int, data_shape: int | tuple,
                 mean_pixels: tuple[float, float, float] = (123, 117, 104),
                 label_pad_width: int = -1, path_imglist: str = "", num_parts: int = 1,
                 part_index: int = 0, seed: int | None = None, epoch: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(batch_size)
        if isinstance(data_shape, int):
            data_shape = (3, data_shape, data_shape)
        data_shape = tuple(int(v) for v in data_shape)
        if len(data_shape) != 3 or data_shape[0] != 3 or min(data_shape) <= 0:
            raise ValueError(f"data_shape {data_shape}: need an int or (3, H, W)")
        if len(mean_pixels) != 3:
            raise ValueError(f"mean_pixels {mean_pixels}: need 3 values (R, G, B)")
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: need at least 1")
        if not 0 <= part_index < num_parts:
            raise ValueError(f"part_index {part_index} / num_parts {num_parts}: need 0 <= index < parts")
        stats = scan_labels(path_imgrec)
        if path_imglist:
            list_stats = _stats_from_lst(path_imglist)
            if list_stats.object_width != stats.object_width:
                raise ValueError(f"list {path_imglist} has object width {list_stats.object_width} "
                                 f"but {path_imgrec} has {stats.object_width}")
            stats = list_stats
        needed = stats.label_width
        if label_pad_width == -1:
            label_pad_width = needed
        elif label_pad_width < needed:
            raise ValueError(f"label_pad_width (--label-width) {label_pad_width} is too small for "
                             f"{path_imglist or path_imgrec}: it needs at least {needed} "
                             f"(2 + {stats.object_width} x {stats.max_objects} objects)")
        self.stats = stats
        self.label_pad_width = label_pad_width
        self.data_shape = data_shape
        self.object_width = stats.object_width
        # the C++ label is [4 header values, 2, W, objects..., -1...] of length pad + 4
        self.label_start = _CPP_HEADER + 2
        self.max_objects = (label_pad_width + _CPP_HEADER - self.label_start) // self.object_width
        self.num_images = self._part_size(count_records(path_imgrec) if not path_imglist
                                          else stats.num_images, num_parts, part_index)
        kwargs = dict(kwargs)
        base_seed = seed if seed is not None else int(kwargs.pop("seed", 0))
        kwargs.pop("seed", None)
        self.seed, self.epoch = base_seed, int(epoch)
        self._cpp_kwargs = dict(
            path_imgrec=path_imgrec, path_imglist=path_imglist, batch_size=batch_size,
            data_shape=data_shape, label_width=-1, label_pad_width=label_pad_width,
            label_pad_value=-1, mean_r=mean_pixels[0], mean_g=mean_pixels[1],
            mean_b=mean_pixels[2], resize_mode="force", round_batch=True,
            num_parts=num_parts, part_index=part_index, **kwargs)
        self._iter = self._make_iter()
        self._ahead: threading.Thread | None = None     # reads the next batch (read_ahead)
        self._ahead_result: Any = None                 # its DataBatch or exception
        self._served = 0                               # batches returned by next()
        self.provide_data = [mx.io.DataDesc("data", (batch_size,) + data_shape)]
        self.provide_label = [mx.io.DataDesc(
            "label", (batch_size, self.max_objects, self.object_width))]

    @staticmethod
    def _part_size(total: int, num_parts: int, part_index: int) -> int:
        # approximate per-shard count (the C++ reader splits by byte ranges); informational
        start = total * part_index // num_parts
        end = total * (part_index + 1) // num_parts
        return end - start

    def _read_failure(self, err: mx.base.MXNetError) -> BadRecordError:
        """The C++ reader failed (a bad record): one line naming the file, no C++ traceback.

        The last line of defence: train.py and evaluate.py check the records in Python first
        (``dataset/record_check.py``), so this is reached only by unchecked files.
        """
        path = self._cpp_kwargs["path_imgrec"]
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        return BadRecordError(f"{path}: MXNet's ImageDetRecordIter failed reading it "
                              f"({lines[-1] if lines else 'no message'}); list its bad records "
                              f"with python tools/prepare_dataset.py --check-rec {path}")

    def _make_iter(self) -> mx.io.DataIter:
        kwargs = dict(self._cpp_kwargs, seed=self.seed + self.epoch)
        kwargs.setdefault("verbose", False)
        if kwargs.get("shuffle"):          # the parts' order: a new draw each epoch
            kwargs.setdefault("shuffle_chunk_size", SHUFFLE_PART_MB)
            kwargs.setdefault("shuffle_chunk_seed", self.seed + self.epoch)
        try:
            return mx.io.ImageDetRecordIter(**kwargs)   # reads the first batch already
        except mx.base.MXNetError as err:
            if not any(word in str(err) for word in _READ_FAILURES):
                raise                                     # a bad argument, not a bad record
            raise self._read_failure(err) from None

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one pass (the last one padded)."""
        return math.ceil(self.num_images / self.batch_size)

    def reset(self) -> None:
        """Start the next epoch (reshuffled with seed ``seed + epoch`` when shuffling).

        The C++ iterator is rebuilt rather than reset: after a wrapped last batch
        (``round_batch``) its own reset skips the wrapped images in the next pass.
        """
        self._join_ahead()                # its batch belongs to the finished pass
        self.epoch += 1
        self._iter = self._make_iter()

    def next(self) -> mx.io.DataBatch:
        """Next batch; ``pad`` counts wrapped images of the last batch.

        The batch's ``read_ahead()`` starts reading the one after it in the background; call
        it only once every operator that reads this batch's ``data`` has been pushed to
        MXNet's engine (the C++ reader waits for those, then reuses the buffer).
        """
        result = self._join_ahead()
        if result is None:
            result = self._read()
        if isinstance(result, BaseException):
            raise result
        self._served += 1
        result.read_ahead = functools.partial(self._start_ahead, self._served)
        return result

    def _start_ahead(self, served: int) -> None:
        # only for the newest batch: reading on recycles the buffer of the newest batch, which
        # must not happen before that batch's data is in the engine's queue
        if self._ahead is None and served == self._served:
            self._ahead = threading.Thread(target=self._read_ahead, name="DetRecordIter-ahead",
                                           daemon=True)
            self._ahead.start()

    def _read_ahead(self) -> None:
        try:
            self._ahead_result = self._read()
        except BaseException as err:  # noqa: BLE001 - re-raised by next() in the caller
            self._ahead_result = err

    def _join_ahead(self) -> Any:
        """Wait for the batch read ahead, if any; its DataBatch or exception, else None."""
        if self._ahead is None:
            return None
        self._ahead.join()
        result, self._ahead, self._ahead_result = self._ahead_result, None, None
        return result

    def _read(self) -> mx.io.DataBatch:
        """One batch from the C++ reader, label reshaped (raises StopIteration at the end)."""
        try:
            batch = self._iter.next()  # raises StopIteration at the end of the pass
        except mx.base.MXNetError as err:
            raise self._read_failure(err) from None
        label = batch.label[0]
        if label.shape[1] < self.label_start + self.object_width:
            raise RuntimeError(f"invalid ImageDetRecordIter label of shape {label.shape}")
        end = self.label_start + self.max_objects * self.object_width
        # (B, 4 + pad_width) -> (B, max_objects, object_width), sliced on the host: the C++
        # iterator's array is ready, while an NDArray slice would queue behind the training
        # operators already pushed, and the first read of the label (DetectionModule's row
        # trim) would then wait for the previous batch's update (docs/notes/SPEED.md, issue 18)
        rows = label.asnumpy()[:, self.label_start:end]
        label = mx.nd.array(rows.reshape((self.batch_size, self.max_objects, self.object_width)),
                            dtype=rows.dtype)
        return mx.io.DataBatch(data=batch.data, label=[label], pad=batch.pad, index=batch.index,
                               provide_data=self.provide_data, provide_label=self.provide_label)

    def iter_next(self) -> bool:  # pragma: no cover - next() is overridden
        raise NotImplementedError


def measure_io(train_iter: mx.io.DataIter, frequent: int = 20,
               num_batches: int | None = None) -> float:
    """``--test-io``: read (and augment) the training data only; returns images/s.

    Parameters
    ----------
    train_iter : mx.io.DataIter
        The training iterator, full augmentation.
    frequent : int
        Log the speed every ``frequent`` batches.
    num_batches : int, optional
        Stop after this many batches (default: one epoch).

    Returns
    -------
    float
        Images per second over the whole read.
    """
    train_iter.reset()
    start = tic = time.time()
    images = window = 0
    for nbatch, batch in enumerate(train_iter):
        for array in batch.data:
            array.wait_to_read()
        size = batch.data[0].shape[0] - (batch.pad or 0)
        images += size
        window += size
        if (nbatch + 1) % max(1, frequent) == 0:
            logger.info("Batch [%d]\tSpeed: %.2f samples/sec", nbatch + 1,
                        window / max(time.time() - tic, 1e-9))
            tic, window = time.time(), 0
        if num_batches is not None and nbatch + 1 >= num_batches:
            break
    speed = images / max(time.time() - start, 1e-9)
    logger.info("test-io: %d images in %.2f s: %.2f images/s", images, time.time() - start, speed)
    return speed
