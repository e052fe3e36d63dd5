"""Batched SSD inference on image files or arrays.

Preprocessing is the record iterator's validation path: RGB, forced resize to the input
shape (bilinear), mean subtraction, no std scaling, so a detector and ``evaluate.py`` see the
same pixels.
"""
from __future__ import annotations

import time
from typing import Sequence

import cv2
from config.mxnet_compat import mx
import numpy as np

from training.checkpoint import load_symbol_file
from evaluate.evaluate_net import check_params, load_params, parse_data_shape
# one image reader for the MXNet and the onnxruntime paths (that module imports no MXNet)
from export.onnx_detector import read_rgb as load_image  # noqa: F401  (demo.py, tests)


def preprocess(image: np.ndarray, data_shape: tuple[int, int],
               mean_pixels: Sequence[float]) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, h, w): force resize, minus the RGB mean."""
    height, width = data_shape
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    data = resized.astype(np.float32) - np.asarray(mean_pixels, dtype=np.float32)
    return data.transpose(2, 0, 1)                       # (h, w, 3) -> (3, h, w)


class Detector:
    """Bind an SSD inference graph once and detect on lists of images.

    Parameters
    ----------
    symbol : mx.sym.Symbol or None
        Inference graph (``get_symbol``); None loads ``{model_prefix}-symbol.json``
        (a deploy checkpoint).
    model_prefix : str
        Checkpoint prefix.
    epoch : int
        Checkpoint epoch.
    data_shape : int, str or tuple
        Input side or (height, width).
    mean_pixels : sequence of 3 floats
        RGB mean.
    batch_size : int
        Images per forward pass.
    ctx : mx.Context, optional
        Device (default CPU).
    arg_params, aux_params : dict, optional
        Parameters to use instead of loading ``{model_prefix}-{epoch:04d}.params``.
    """

    def __init__(self, symbol: mx.sym.Symbol | None, model_prefix: str, epoch: int, data_shape,
                 mean_pixels: Sequence[float] = (123, 117, 104), batch_size: int = 1,
                 ctx: mx.Context | None = None, arg_params: dict | None = None,
                 aux_params: dict | None = None) -> None:
        if batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {batch_size}")
        self.data_shape = parse_data_shape(data_shape)
        self.mean_pixels = tuple(float(m) for m in mean_pixels)
        self.batch_size = int(batch_size)
        self.ctx = ctx or mx.cpu()
        if symbol is None:
            symbol = load_symbol_file(f"{model_prefix}-symbol.json", "--deploy")
        if arg_params is None:
            arg_params, aux_params = load_params(model_prefix, epoch)
        aux_params = aux_params or {}
        input_shape = (self.batch_size, 3) + self.data_shape
        check_params(symbol, arg_params, aux_params, input_shape, f"checkpoint {model_prefix}")
        self.module = mx.mod.Module(symbol, data_names=("data",), label_names=None,
                                    context=self.ctx)
        self.module.bind(data_shapes=[("data", input_shape)], for_training=False)
        self.module.set_params(arg_params, aux_params, allow_missing=False, force_init=True)
        self.last_forward_s = 0.0

    def detect_arrays(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Detections for RGB uint8 images.

        Returns
        -------
        list of np.ndarray
            Per image (K, 6) ``[cls, score, x1, y1, x2, y2]`` with cls >= 0, coordinates
            normalised to [0, 1], sorted by descending score.
        """
        results: list[np.ndarray] = []
        self.last_forward_s = 0.0
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            data = np.zeros((self.batch_size, 3) + self.data_shape, dtype=np.float32)
            for i, image in enumerate(chunk):
                data[i] = preprocess(image, self.data_shape, self.mean_pixels)
            begin = time.perf_counter()
            self.module.forward(mx.io.DataBatch([mx.nd.array(data)]), is_train=False)
            dets = self.module.get_outputs()[0].asnumpy()    # (B, N, 6)
            self.last_forward_s += time.perf_counter() - begin
            for i in range(len(chunk)):
                kept = dets[i][dets[i, :, 0] >= 0]
                results.append(kept[np.argsort(-kept[:, 1], kind="stable")])
        return results

    def im_detect(self, image_paths: Sequence[str]) -> list[np.ndarray]:
        """Detections for image files (see :meth:`detect_arrays`)."""
        return self.detect_arrays([load_image(path) for path in image_paths])
