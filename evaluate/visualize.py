"""Draw detections on an image with matplotlib (Agg backend: works without a display)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def class_color(class_id: int) -> tuple[float, float, float]:
    """A fixed colour per class id (tab20, then tab20b)."""
    import matplotlib
    palette = matplotlib.colormaps["tab20"].colors + matplotlib.colormaps["tab20b"].colors
    return tuple(palette[int(class_id) % len(palette)])[:3]


def draw_detections(image: np.ndarray, dets: np.ndarray, class_names: Sequence[str] | None,
                    out_path: str, thresh: float = 0.5, title: str | None = None,
                    min_side: int = 480) -> int:
    """Save ``image`` with boxes, class names and scores drawn.

    Parameters
    ----------
    image : np.ndarray
        RGB uint8 (H, W, 3).
    dets : np.ndarray
        (K, 6) ``[cls, score, x1, y1, x2, y2]`` normalised coordinates.
    class_names : sequence of str, optional
        Name of each class id (ids beyond it are printed as numbers).
    out_path : str
        Output picture (format from the extension, e.g. ``.png`` / ``.jpg``).
    thresh : float
        Minimum score drawn.
    title : str, optional
        Figure title.
    min_side : int
        Pictures whose longer side is below this are enlarged to it, so labels stay legible
        on small inputs (0 keeps the image size).

    Returns
    -------
    int
        Number of boxes drawn.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = image.shape[:2]
    dpi = 100
    scale = max(1.0, min_side / max(height, width))
    fig = plt.figure(figsize=(width * scale / dpi, height * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image)
    ax.set_axis_off()
    drawn = 0
    for row in np.asarray(dets).reshape(-1, 6):
        cls, score = int(row[0]), float(row[1])
        if cls < 0 or score < thresh:
            continue
        x1, x2 = row[2] * width, row[4] * width
        y1, y2 = row[3] * height, row[5] * height
        color = class_color(cls)
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                                   linewidth=2.5))
        name = class_names[cls] if class_names is not None and cls < len(class_names) else str(cls)
        ax.text(x1, y1 - 2, f"{name} {score:.3f}", fontsize=9, color="white",
                bbox={"facecolor": color, "alpha": 0.6, "pad": 1, "edgecolor": "none"})
        drawn += 1
    if title:
        ax.set_title(title, fontsize=8)
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return drawn
