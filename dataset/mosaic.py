"""Four-photo mosaics: more medium and small objects, in real surroundings, for small sets.

A detector trained from scratch on a few hundred photos in which most objects fill the frame
learns "this photo shows the class" on its coarse feature maps instead of "this region is the
object": for a medium-sized object its most confident box covers the whole photo
(docs/RECIPE.md, "Real photographs"). A mosaic puts four training photos, each shrunk to
``scale`` of the mosaic's side, around a random centre point; each photo is cut by its
quadrant, so objects appear at half their size or less, beside other photos' backgrounds,
and partly cut. Zooming out onto a flat canvas (``--augment`` zoom-out) shrinks them too but
gives the network an easy, empty background; mosaics did what zoom-out did not (RECIPE.md).

The mosaics are made once, before training, and written with the training record's photos
(byte for byte) into a new record, the photos at random places among the mosaics, so that
every part of the file holds its share of whole photos (the iterator shuffles parts of the
file, ``dataset/iterator.py``); the C++ iterator's crops, flips and colour jitter still apply
on top, and ``train.py`` reads the file like any other record.

Box rules: a box keeps its clipped part when at least ``min_visible`` of its area is inside
its photo's quadrant; a box cut more than that is dropped (its object is then mostly gone); a
mosaic left with no box is not written.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from dataset.recordio_utils import check_rec, read_idx, record_writer

logger = logging.getLogger(__name__)


@dataclass
class MosaicReport:
    """What :func:`write_mosaic_rec` wrote."""

    out_rec: str
    num_photos: int          # records copied from the source
    num_mosaics: int         # mosaics written among them
    boxes_kept: int          # boxes (whole or clipped) in the mosaics
    boxes_dropped: int       # boxes cut to less than min_visible of their area
    side: int                # mosaic side in px
    first_key: int = 0       # record key of the first mosaic (the photos keep theirs, below)


def _quadrant(q: int, cx: int, cy: int, side: int) -> tuple[int, int, int, int]:
    """Canvas rectangle ``(x1, y1, x2, y2)`` of quadrant ``q`` (0 top-left, 1 top-right,
    2 bottom-left, 3 bottom-right) around the centre ``(cx, cy)``."""
    x1, x2 = (0, cx) if q in (0, 2) else (cx, side)
    y1, y2 = (0, cy) if q in (0, 1) else (cy, side)
    return x1, y1, x2, y2


def place_boxes(objects: np.ndarray, offset: tuple[int, int], size: tuple[int, int],
                visible: tuple[int, int, int, int], side: int,
                min_visible: float) -> tuple[np.ndarray, int]:
    """Map a photo's boxes into the mosaic.

    Parameters
    ----------
    objects : np.ndarray
        ``(N, W)`` rows ``[cls, x1, y1, x2, y2(, difficult)]``, normalised to the photo.
    offset : (int, int)
        Canvas position of the photo's top-left pixel (may be negative: cut off).
    size : (int, int)
        ``(width, height)`` of the shrunk photo in px.
    visible : (int, int, int, int)
        Canvas rectangle in which the photo shows.
    side : int
        Mosaic side in px (the boxes come back normalised to it).
    min_visible : float
        Smallest share of a box's area that must stay visible for it to be kept.

    Returns
    -------
    (np.ndarray, int)
        The kept rows, clipped and normalised to the mosaic, and the number dropped.
    """
    x0, y0 = offset
    w, h = size
    vx1, vy1, vx2, vy2 = visible
    kept, dropped = [], 0
    for row in objects:
        bx1, by1 = row[1] * w + x0, row[2] * h + y0
        bx2, by2 = row[3] * w + x0, row[4] * h + y0
        area = max(bx2 - bx1, 0.0) * max(by2 - by1, 0.0)
        cx1, cy1, cx2, cy2 = max(bx1, vx1), max(by1, vy1), min(bx2, vx2), min(by2, vy2)
        if area <= 0:
            continue                            # a degenerate box: nothing to keep
        if (cx2 <= cx1 or cy2 <= cy1 or (cx2 - cx1) * (cy2 - cy1) < min_visible * area
                or min(cx2 - cx1, cy2 - cy1) < 2):
            dropped += 1
            continue
        out = row.copy()
        out[1:5] = (cx1 / side, cy1 / side, cx2 / side, cy2 / side)
        kept.append(out)
    return np.array(kept, dtype=np.float32).reshape(-1, objects.shape[1]), dropped


def make_mosaic(photos: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator,
                side: int, scale: tuple[float, float] = (0.5, 1.0),
                min_visible: float = 0.5, fill: tuple[int, int, int] = (104, 117, 123),
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """One mosaic of four photos.

    Parameters
    ----------
    photos : list of (image, objects)
        Four BGR ``uint8`` images with their ``(N, W)`` normalised boxes.
    rng : np.random.Generator
        Source of the centre point and the scales.
    side : int
        Mosaic side in px.
    scale : (float, float)
        Range of each photo's longest side, as a fraction of ``side``.
    min_visible : float
        See :func:`place_boxes`.
    fill : (int, int, int)
        BGR colour where no photo reaches (the mean pixel: zero after mean subtraction).

    Returns
    -------
    (np.ndarray, np.ndarray, int)
        The ``(side, side, 3)`` image, its boxes normalised to it, and boxes dropped.
    """
    import cv2

    if len(photos) != 4:
        raise ValueError(f"a mosaic needs 4 photos, got {len(photos)}")
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = fill
    cx, cy = (int(v) for v in rng.uniform(0.3, 0.7, size=2) * side)
    boxes, dropped = [], 0
    for q, (img, objects) in enumerate(photos):
        height, width = img.shape[:2]
        factor = rng.uniform(*scale) * side / max(height, width)
        w, h = max(1, round(width * factor)), max(1, round(height * factor))
        small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        qx1, qy1, qx2, qy2 = _quadrant(q, cx, cy, side)
        # the photo's corner touches the centre point; its far side is cut by the canvas
        x0 = cx - w if q in (0, 2) else cx
        y0 = cy - h if q in (0, 1) else cy
        vx1, vy1 = max(qx1, x0), max(qy1, y0)
        vx2, vy2 = min(qx2, x0 + w), min(qy2, y0 + h)
        if vx2 <= vx1 or vy2 <= vy1:
            continue
        canvas[vy1:vy2, vx1:vx2] = small[vy1 - y0:vy2 - y0, vx1 - x0:vx2 - x0]
        kept, lost = place_boxes(objects, (x0, y0), (w, h), (vx1, vy1, vx2, vy2), side,
                                 min_visible)
        boxes.append(kept)
        dropped += lost
    if not boxes:
        return canvas, np.zeros((0, photos[0][1].shape[1]), np.float32), dropped
    return canvas, np.concatenate(boxes), dropped


def read_photo(reader, rec_path: str, key: int) -> tuple[np.ndarray, np.ndarray]:
    """Record ``key`` of an open ``MXIndexedRecordIO``: the BGR image and its ``(N, W)`` boxes
    (padding rows, class < 0, removed)."""
    import cv2
    from config.mxnet_compat import mx

    header, img = mx.recordio.unpack_img(reader.read_idx(key), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{rec_path} record {key}: the image cannot be decoded")
    label = np.asarray(header.label, dtype=np.float32)
    objects = label[int(label[0]):].reshape(-1, int(label[1]))
    return img, objects[objects[:, 0] >= 0]


def write_mosaic_rec(src_rec: str, out_rec: str, copies: float = 2.0, seed: int = 1,
                     scale: tuple[float, float] = (0.5, 1.0), min_visible: float = 0.5,
                     side: int = 0, quality: int = 95, progress: bool = True) -> MosaicReport:
    """Write ``src_rec``'s N records and ``copies`` x N mosaics to ``out_rec`` (+ ``.idx``),
    the records at random places among the mosaics (keys kept; mosaics numbered after them).

    Parameters
    ----------
    src_rec : str
        Packed training record (its ``.idx`` beside it).
    out_rec : str
        Output record; written under a temporary name and renamed when complete (on any
        error the temporary files are removed; a failed write raises
        :class:`~dataset.recordio_utils.RecordWriteError`).
    copies : float
        Mosaics per source record (rounded); 0 copies the record alone.
    seed : int
        Seed of the photo choice, centre points and scales (the same seed, the same file).
    scale, min_visible :
        See :func:`make_mosaic`.
    side : int
        Mosaic side in px; 0: the longest side of the source images.
    quality : int
        JPEG quality of the mosaics.
    progress : bool
        Show a progress bar.
    """
    from config.mxnet_compat import mx
    from tqdm import tqdm

    if copies < 0:
        raise ValueError(f"--copies {copies}: need 0 or more mosaics per photo")
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"--scale {scale[0]} {scale[1]}: need 0 < low <= high")
    if not 0 < min_visible <= 1:
        raise ValueError(f"--min-visible {min_visible}: need a share in (0, 1]")
    if os.path.abspath(src_rec) == os.path.abspath(out_rec):
        raise ValueError(f"--output {out_rec}: must differ from the source record")
    idx_path = check_rec(src_rec)
    entries = read_idx(idx_path)
    if len(entries) < 4:
        raise ValueError(f"{src_rec}: {len(entries)} records; a mosaic needs 4 photos")
    reader = mx.recordio.MXIndexedRecordIO(idx_path, src_rec, "r")
    keys = [key for key, _ in entries]
    rng = np.random.default_rng(seed)
    num_mosaics = int(round(copies * len(keys)))
    written = kept = dropped = 0
    try:
        if side <= 0:
            side = max(max(read_photo(reader, src_rec, k)[0].shape[:2]) for k in keys[:64])
        # True: an original, False: a mosaic (its own stream: a seed gives the same mosaics)
        slots = np.zeros(len(keys) + num_mosaics, dtype=bool)
        slots[np.random.default_rng([seed, 1]).choice(len(slots), len(keys), replace=False)] = True
        originals = iter(keys)
        with record_writer(out_rec) as writer:
            next_key = max(keys) + 1
            for slot in tqdm(slots, desc="photos + mosaics", unit="img", disable=not progress):
                if slot:                            # an original, as stored
                    key = next(originals)
                    writer.write_idx(key, reader.read_idx(key))
                    continue
                chosen = rng.choice(len(keys), size=4, replace=False)
                photos = [read_photo(reader, src_rec, keys[i]) for i in chosen]
                image, boxes, lost = make_mosaic(photos, rng, side, scale, min_visible)
                dropped += lost
                if not len(boxes):
                    continue
                label = np.concatenate([[2, boxes.shape[1]], boxes.ravel()]).astype(np.float32)
                header = mx.recordio.IRHeader(0, label, next_key, 0)
                writer.write_idx(next_key, mx.recordio.pack_img(header, image, quality=quality,
                                                                img_fmt=".jpg"))
                next_key += 1
                written += 1
                kept += len(boxes)
    finally:
        reader.close()
    logger.info("%s: %d photos + %d mosaics of %d px (boxes kept %d, dropped %d)",
                out_rec, len(keys), written, side, kept, dropped)
    return MosaicReport(out_rec, len(keys), written, kept, dropped, side, max(keys) + 1)
