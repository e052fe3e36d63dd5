"""What an annotation reader needs to know about a photo: stored size, EXIF orientation, damage.

Photos from phones and the web carry quirks that silently break box normalisation:

* an EXIF ``Orientation`` tag (5-8: the viewer shows the stored pixels turned by 90 degrees),
* an annotation written for the turned image (LabelImg ``<size>`` width and height swapped),
* a JPEG cut short (no end-of-image marker: the bottom of the photo decodes grey),
* grayscale, CMYK or PNG files (OpenCV's ``IMREAD_COLOR`` turns them into 3-channel BGR).

The rule of this project: a box always refers to the STORED pixels. ``tools/pack_rec.py``
decodes with ``IMREAD_IGNORE_ORIENTATION``, and a reader whose annotation describes the turned
image maps the box back with :func:`boxes_to_stored`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# EXIF orientations that swap width and height when the photo is shown
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG", ".BMP")


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of one image file (nothing is decoded but the header and the tail)."""

    path: str
    width: int          # stored pixels
    height: int
    mode: str           # PIL mode: RGB, L, CMYK, RGBA, P, I;16 ...
    format: str         # JPEG, PNG, ...
    orientation: int    # EXIF orientation, 1 when absent
    truncated: bool     # a JPEG without its end-of-image marker

    @property
    def shown_size(self) -> tuple[int, int]:
        """(width, height) as a viewer that applies the EXIF orientation shows the photo."""
        if self.orientation in SWAPPING_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def _jpeg_is_truncated(path: str) -> bool:
    """True if the file does not end with the JPEG end-of-image marker (trailing zeros allowed)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 4096))
        tail = f.read().rstrip(b"\x00")
    return not tail.endswith(b"\xff\xd9")


def read_image_info(path: str) -> ImageInfo:
    """Size, mode, format, EXIF orientation and truncation of an image file.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not an image PIL can identify (the message names it).
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = int(img.getexif().get(0x0112, 1) or 1)
            mode, fmt = img.mode, img.format or "?"
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"image file {path} cannot be read as an image: {err}") from None
    truncated = fmt == "JPEG" and _jpeg_is_truncated(path)
    return ImageInfo(path, width, height, mode, fmt, orientation if 1 <= orientation <= 8 else 1,
                     truncated)


def find_image(folder: str, stem: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> str:
    """Path of ``folder/stem.<ext>`` for the first extension that exists (``.jpg`` if none)."""
    for ext in extensions:
        path = os.path.join(folder, stem + ext)
        if os.path.isfile(path):
            return path
    return os.path.join(folder, stem + extensions[0])


def boxes_to_stored(boxes: np.ndarray, orientation: int) -> np.ndarray:
    """Map normalised boxes drawn on the SHOWN (EXIF-turned) photo to its stored pixels.

    Parameters
    ----------
    boxes : np.ndarray
        (N, 4) ``[x1, y1, x2, y2]`` in [0, 1] of the shown image.
    orientation : int
        EXIF orientation 1-8.

    Returns
    -------
    np.ndarray
        (N, 4) boxes in [0, 1] of the stored image.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    # inverse of the shown <- stored transform, as functions of the shown point (u, v)
    inverse = {
        1: lambda u, v: (u, v),
        2: lambda u, v: (1 - u, v),          # mirrored left-right
        3: lambda u, v: (1 - u, 1 - v),      # turned 180 degrees
        4: lambda u, v: (u, 1 - v),          # mirrored top-bottom
        5: lambda u, v: (v, u),              # transposed
        6: lambda u, v: (v, 1 - u),          # shown turned 90 degrees clockwise
        7: lambda u, v: (1 - v, 1 - u),      # transversed
        8: lambda u, v: (1 - v, u),          # shown turned 90 degrees counter-clockwise
    }[orientation]
    xa, ya = inverse(boxes[:, 0], boxes[:, 1])
    xb, yb = inverse(boxes[:, 2], boxes[:, 3])
    return np.stack([np.minimum(xa, xb), np.minimum(ya, yb),
                     np.maximum(xa, xb), np.maximum(ya, yb)], axis=1)
