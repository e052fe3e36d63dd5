"""Pack a detection ``.lst`` into an indexed RecordIO file (``.rec`` + ``.idx``).

Same output as ``im2rec.py --pack-label``: every record holds ``IRHeader(flag=len(label),
label=float32 [2, W, obj...], id=idx, id2=0)`` followed by the image re-encoded as JPEG
(quality 95). Images are decoded as stored (EXIF orientation ignored: labels refer to the
stored pixels, see ``dataset/image_info.py``), grayscale/CMYK/PNG as 3-channel colour. Images are decoded and encoded by ``--num-thread`` worker processes; records are
written in ``.lst`` order. ``--resize N`` shrinks images whose LONGER side exceeds N px so that
it becomes N (aspect kept, never upscaled; labels are normalised so they do not change).
Files are written as ``<name>.rec.tmp`` / ``<name>.idx.tmp`` and renamed when complete.

Example::

    python tools/pack_rec.py data/train.lst --root data/VOCdevkit --num-thread 2
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys

if __package__ in (None, ""):  # run by path (python tools/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

import cv2
import numpy as np
from tqdm import tqdm

from dataset.recordio_utils import RecordWriteError, read_lst, record_writer

logger = logging.getLogger("pack_rec")


def _encode(job: tuple[str, int, int]) -> tuple[bytes | None, str]:
    """Worker: read, optionally shrink, and JPEG-encode one image (no mxnet needed here)."""
    path, resize, quality = job
    # boxes refer to the stored pixels (dataset/image_info.py): never apply EXIF orientation
    img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        return None, path
    if resize > 0 and max(img.shape[:2]) > resize:
        scale = resize / float(max(img.shape[:2]))
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return (buf.tobytes() if ok else None), path


def pack_rec(lst_path: str, root: str, rec_path: str | None = None, num_thread: int = 1,
             resize: int = 0, quality: int = 95, progress: bool = True) -> tuple[str, str]:
    """Pack the images of ``lst_path`` with their labels into ``.rec`` / ``.idx``.

    Parameters
    ----------
    lst_path : str
        Detection list (REFERENCE §3.1 format).
    root : str
        Folder the list's relative image paths start from.
    rec_path : str, optional
        Output ``.rec``; default ``lst_path`` with ``.rec`` instead of ``.lst``.
    num_thread : int
        Worker processes for decoding/encoding.
    resize : int
        If > 0, longest image side at most this many pixels.
    quality : int
        JPEG quality.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    tuple of str
        ``(rec_path, idx_path)``.
    """
    from config.mxnet_compat import mx  # after the caller's setup_threads()

    from training.checkpoint import FileWriteError, explain_write_failure

    if num_thread < 1:
        raise ValueError(f"--num-thread {num_thread}: need at least 1")
    if resize < 0:
        raise ValueError(f"--resize {resize}: need 0 (keep size) or a positive side in px")
    items = read_lst(lst_path)
    if rec_path is None:
        rec_path = os.path.splitext(lst_path)[0] + ".rec"
    idx_path = os.path.splitext(rec_path)[0] + ".idx"
    paths = [os.path.join(root, rel) for _, _, rel in items]
    for path in paths:  # cheap check before any work: every image is there
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path} listed in {lst_path} does not exist "
                                    f"(--root {root!r} + the list's relative path)")
    jobs = [(p, resize, quality) for p in paths]
    pool = multiprocessing.get_context("fork").Pool(num_thread) if num_thread > 1 else None
    try:
        with record_writer(rec_path) as writer:
            results = pool.imap(_encode, jobs, chunksize=32) if pool else map(_encode, jobs)
            for (index, label, _), (buf, path) in zip(
                    items, tqdm(results, total=len(jobs), desc="pack", unit="img",
                                disable=not progress)):
                if buf is None:
                    raise ValueError(f"image {path} (list {lst_path}) cannot be decoded")
                header = mx.recordio.IRHeader(0, label, index, 0)  # pack sets flag = len(label)
                writer.write_idx(index, mx.recordio.pack(header, buf))
    except RecordWriteError as err:
        # the C++ writer says only "FileStream.Write incomplete": name the file and why
        raise FileWriteError(explain_write_failure(err.path, err.cause, err.written)) from None
    finally:
        if pool:
            pool.close()
            pool.join()
    logger.info("packed %d images into %s", len(items), rec_path)
    return rec_path, idx_path


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser of the packer."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("lst", help="detection .lst file")
    p.add_argument("--root", required=True, help="folder the list's image paths are relative to")
    p.add_argument("--rec", default=None, help="output .rec (default: the .lst path with .rec)")
    p.add_argument("--num-thread", type=int, default=1, help="worker processes")
    p.add_argument("--resize", type=int, default=0, help="longest side at most N px (0: keep)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from config.runtime import setup_threads
    setup_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_parser().parse_args(argv)
    from training.checkpoint import FileWriteError  # imports mxnet: after setup_threads()
    try:
        pack_rec(args.lst, args.root, args.rec, args.num_thread, args.resize, args.quality)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileWriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
