"""Add four-photo mosaics to a new copy of a training record (small sets of real photos).

Each mosaic shows four training photos, shrunk and cut around a random centre point, so the
network sees more medium and small objects among real backgrounds (``dataset/mosaic.py``
explains the rules; docs/RECIPE.md the runs that chose it). The output holds the source
records, unchanged, at random places among the mosaics; train on it with
``train.py --train-path``.
Example (the real-photo recipe, ``tools/train_photos.py``, runs this step)::

    python tools/mosaic.py output/photos/train.rec --output output/photos/train_mosaic.rec \\
        --copies 2 --seed 1

Use it for training records only: a validation or test record must stay as the photos are.
"""
from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads  # noqa: E402

setup_threads()

from training.checkpoint import explain_write_failure  # noqa: E402
from dataset.mosaic import write_mosaic_rec  # noqa: E402
from dataset.recordio_utils import RecordWriteError  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("rec", help="packed training record (.rec with its .idx)")
    p.add_argument("--output", required=True, help="record to write (.rec; its .idx beside it)")
    p.add_argument("--copies", type=float, default=2.0,
                   help="mosaics per source photo (the epoch grows by this factor)")
    p.add_argument("--seed", type=int, default=1, help="seed of the photo choice and layout")
    p.add_argument("--scale", type=float, nargs=2, default=(0.5, 1.0), metavar=("LOW", "HIGH"),
                   help="each photo's longest side in the mosaic, as a share of its side")
    p.add_argument("--min-visible", type=float, default=0.5,
                   help="a box cut by its quadrant is kept when this share of it shows")
    p.add_argument("--side", type=int, default=0,
                   help="mosaic side in px (0: the longest side of the source images)")
    p.add_argument("--preview", default="",
                   help="also draw the first four mosaics with their boxes into this image file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def draw_preview(rec_path: str, first_key: int, path: str, count: int = 4) -> None:
    """Draw the first ``count`` records of ``rec_path`` keyed ``first_key`` or above (the
    mosaics) with their boxes, 2 a row."""
    import cv2
    from config.mxnet_compat import mx
    import numpy as np

    from dataset.mosaic import read_photo
    from dataset.recordio_utils import check_rec, read_idx

    idx_path = check_rec(rec_path)
    keys = [key for key, _ in read_idx(idx_path) if key >= first_key][:count]
    reader = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "r")
    tiles = []
    try:
        for key in keys:
            img, objects = read_photo(reader, rec_path, key)
            h, w = img.shape[:2]
            for row in objects:
                cv2.rectangle(img, (int(row[1] * w), int(row[2] * h)),
                              (int(row[3] * w), int(row[4] * h)), (0, 255, 0), 2)
            tiles.append(img)
    finally:
        reader.close()
    if not tiles:
        return
    side = max(max(t.shape[:2]) for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, side - t.shape[0], 0, side - t.shape[1],
                                cv2.BORDER_CONSTANT, value=(255, 255, 255)) for t in tiles]
    tiles += [np.full_like(tiles[0], 255)] * (len(tiles) % 2)
    rows = [np.hstack(tiles[i:i + 2]) for i in range(0, len(tiles), 2)]
    if not cv2.imwrite(path, np.vstack(rows)):
        raise ValueError(f"--preview {path}: cannot write this image file (extension?)")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        report = write_mosaic_rec(args.rec, args.output, copies=args.copies, seed=args.seed,
                                  scale=tuple(args.scale), min_visible=args.min_visible,
                                  side=args.side, progress=not args.quiet)
        if args.preview and report.num_mosaics:
            draw_preview(report.out_rec, report.first_key, args.preview)
    except RecordWriteError as err:               # disk full, file size limit, I/O error
        print(f"error: {explain_write_failure(err.path, err.cause, err.written)}",
              file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report.out_rec}: {report.num_photos} photos + {report.num_mosaics} mosaics "
          f"of {report.side} px; boxes in the mosaics {report.boxes_kept}, dropped (cut to less "
          f"than {args.min_visible:g} of their area) {report.boxes_dropped}")
    if args.preview and report.num_mosaics:
        print(f"drew the first mosaics with their boxes: {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
