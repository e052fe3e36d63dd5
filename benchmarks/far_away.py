"""Far-away copies of a test record: each photo shrunk onto other photos' background (issue 35).

A user's test photos are often taken farther away than the training photos. Sets whose test
boxes are mostly large (raccoon, cards) cannot show whether a recipe finds such objects; this
script makes a copy of a packed test record where they are small:

* each photo is shrunk by a factor drawn from ``--scale LOW HIGH`` and pasted at a random place
  on a canvas of the photo's own size;
* the canvas is a piece of another photo of the same record: the largest strip beside all its
  labelled boxes (left, right, above or below them, ``STRIP_MARGIN`` of the side away from
  them), drawn among the photos whose strip is at
  least ``MIN_STRIP`` of the photo (the largest ones when none is), scaled to cover the canvas,
  so that the background is a real scene without an object of the classes;
* the boxes are rewritten exactly (``x' = (offset + x * shrunk width) / width``); the record
  keeps each photo's key, label layout and class ids, so ``evaluate.py`` and
  ``tools/photo_report.py`` score it with the model's own flags.

It prints how many boxes have a side (the square root of their area, as a share of the photo)
under 0.2 before and after. The same ``--seed`` gives the same file. Example::

    python -m benchmarks.far_away output/photos/test.rec --output output/far/test.rec --scale 0.2 0.3
    python evaluate.py --rec-path output/far/test.rec ...    # the flags the model was trained with
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

import numpy as np  # noqa: E402

SMALL_SIDE = 0.2          # the photo report's "small" band: side < 0.2 of the photo
MIN_STRIP = 0.2           # a background strip covers at least this share of its photo
STRIP_MARGIN = 0.1        # the strip keeps this share of the photo's side away from every box


def box_sides(boxes: np.ndarray) -> np.ndarray:
    """Side of each normalised ``[cls, x1, y1, x2, y2, ...]`` row: sqrt of its area share."""
    if not len(boxes):
        return np.zeros(0)
    return np.sqrt(np.clip(boxes[:, 3] - boxes[:, 1], 0, None) *
                   np.clip(boxes[:, 4] - boxes[:, 2], 0, None))


def free_strip(boxes: np.ndarray) -> tuple[tuple[float, float, float, float], float]:
    """The largest strip of a photo beside all its boxes: ``(x1, y1, x2, y2)`` normalised, and
    its share of the photo (the whole photo when it has no box)."""
    if not len(boxes):
        return (0.0, 0.0, 1.0, 1.0), 1.0
    # an animal's body often reaches past its labelled box (a face, a head): keep a margin
    left, top = float(boxes[:, 1].min()) - STRIP_MARGIN, float(boxes[:, 2].min()) - STRIP_MARGIN
    right = float(boxes[:, 3].max()) + STRIP_MARGIN
    bottom = float(boxes[:, 4].max()) + STRIP_MARGIN
    strips = [(0.0, 0.0, left, 1.0), (right, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, top),
              (0.0, bottom, 1.0, 1.0)]
    strips = [tuple(float(np.clip(v, 0.0, 1.0)) for v in strip) for strip in strips]
    areas = [max(0.0, x2 - x1) * max(0.0, y2 - y1) for x1, y1, x2, y2 in strips]
    best = int(np.argmax(areas))
    return strips[best], areas[best]


def background(image: np.ndarray, strip: tuple[float, float, float, float],
               size: tuple[int, int]) -> np.ndarray:
    """The ``strip`` of ``image`` (no labelled object in it) scaled to cover ``size`` (w, h)
    and cut to it around its centre: a real scene, without an object of the classes."""
    import cv2
    width, height = size
    h, w = image.shape[:2]
    x1, y1, x2, y2 = strip
    crop = image[int(y1 * h):max(int(y1 * h) + 1, int(y2 * h)),
                 int(x1 * w):max(int(x1 * w) + 1, int(x2 * w))]
    ch, cw = crop.shape[:2]
    factor = max(width / cw, height / ch)
    grown = cv2.resize(crop, (max(width, round(cw * factor)), max(height, round(ch * factor))),
                       interpolation=cv2.INTER_LINEAR)
    gh, gw = grown.shape[:2]
    top, left = (gh - height) // 2, (gw - width) // 2
    return grown[top:top + height, left:left + width].copy()


def far_away(photo: np.ndarray, boxes: np.ndarray, canvas: np.ndarray, scale: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``photo`` shrunk by ``scale`` and pasted on ``canvas`` (same size); its boxes moved.

    Parameters
    ----------
    photo, canvas : np.ndarray
        (H, W, 3) images of the same size.
    boxes : np.ndarray
        (N, K) rows ``[cls, x1, y1, x2, y2, ...]`` normalised to the photo.
    scale : float
        Share of the photo's width and height that it keeps, in (0, 1].
    """
    import cv2
    height, width = photo.shape[:2]
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    shrunk = cv2.resize(photo, (new_w, new_h), interpolation=cv2.INTER_AREA)
    left = int(rng.integers(0, width - new_w + 1))
    top = int(rng.integers(0, height - new_h + 1))
    out = canvas.copy()
    out[top:top + new_h, left:left + new_w] = shrunk
    moved = boxes.astype(np.float64).copy()
    moved[:, [1, 3]] = (left + boxes[:, [1, 3]] * new_w) / width
    moved[:, [2, 4]] = (top + boxes[:, [2, 4]] * new_h) / height
    return out, moved.astype(np.float32)


def write_far_away_rec(src_rec: str, out_rec: str, scale: tuple[float, float] = (0.2, 0.3),
                       seed: int = 0, quality: int = 95) -> dict:
    """Write the far-away copy of ``src_rec`` to ``out_rec`` (+ ``.idx``, written atomically).

    Returns the counts: ``photos``, ``boxes``, ``small_before``, ``small_after``.
    """
    from config.mxnet_compat import mx
    from dataset.mosaic import read_photo
    from dataset.recordio_utils import check_rec, read_idx, record_writer

    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"--scale {scale[0]} {scale[1]}: need 0 < LOW <= HIGH <= 1")
    if os.path.abspath(src_rec) == os.path.abspath(out_rec):
        raise ValueError(f"--output {out_rec}: must differ from the source record")
    idx_path = check_rec(src_rec)
    keys = [key for key, _ in read_idx(idx_path)]
    if len(keys) < 2:
        raise ValueError(f"{src_rec}: {len(keys)} record(s); the background needs another photo")
    rng = np.random.default_rng(seed)
    reader = mx.recordio.MXIndexedRecordIO(idx_path, src_rec, "r")
    counts = {"photos": 0, "boxes": 0, "small_before": 0, "small_after": 0}
    os.makedirs(os.path.dirname(os.path.abspath(out_rec)), exist_ok=True)
    try:
        photos = {key: read_photo(reader, src_rec, key) for key in keys}
        strips = {key: free_strip(boxes) for key, (_, boxes) in photos.items()}
        with record_writer(out_rec) as writer:
            for key in keys:
                photo, boxes = photos[key]
                others = [k for k in keys if k != key]
                wide = [k for k in others if strips[k][1] >= MIN_STRIP]
                pool = wide or sorted(others, key=lambda k: -strips[k][1])[:max(1, len(others) // 4)]
                other = pool[int(rng.integers(0, len(pool)))]
                height, width = photo.shape[:2]
                canvas = background(photos[other][0], strips[other][0], (width, height))
                image, moved = far_away(photo, boxes, canvas, float(rng.uniform(*scale)), rng)
                label = np.concatenate([[2, boxes.shape[1]], moved.ravel()]).astype(np.float32)
                header = mx.recordio.IRHeader(0, label, key, 0)
                writer.write_idx(key, mx.recordio.pack_img(header, image, quality=quality,
                                                           img_fmt=".jpg"))
                counts["photos"] += 1
                counts["boxes"] += len(boxes)
                counts["small_before"] += int((box_sides(boxes) < SMALL_SIDE).sum())
                counts["small_after"] += int((box_sides(moved) < SMALL_SIDE).sum())
    finally:
        reader.close()
    return counts


def get_parser() -> argparse.ArgumentParser:
    """Parser of ``python -m benchmarks.far_away``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("rec", help="packed test record (its .idx beside it), e.g. a photo "
                               "command's WORKDIR/test.rec")
    p.add_argument("--output", required=True, help="the far-away record to write")
    p.add_argument("--scale", type=float, nargs=2, default=(0.2, 0.3), metavar=("LOW", "HIGH"),
                   help="share of the width and height each photo keeps, drawn per photo")
    p.add_argument("--seed", type=int, default=0, help="seed of the scales, places, backgrounds")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = get_parser().parse_args(argv)
    from config.runtime import setup_threads
    setup_threads()
    try:
        counts = write_far_away_rec(args.rec, args.output, tuple(args.scale), args.seed)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    boxes = max(1, counts["boxes"])
    print(f"{counts['photos']} photos, {counts['boxes']} boxes; side < {SMALL_SIDE:g} of the photo: "
          f"{counts['small_before']} before ({counts['small_before'] / boxes:.0%}), "
          f"{counts['small_after']} after ({counts['small_after'] / boxes:.0%}); "
          f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
