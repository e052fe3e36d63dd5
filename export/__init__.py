"""How a trained model leaves MXNet: the ONNX export and its onnxruntime reader (docs/ONNX.md).

- :mod:`export.onnx_graph`: the network's layers, converted from the symbol JSON (no MXNet).
- :mod:`export.onnx_detection`: ``MultiBoxDetection`` rebuilt from ONNX operators with MXNet
  1.9.1's semantics.
- :mod:`export.onnx_file`: the ``.onnx`` file itself (``export_onnx``, its metadata), written
  by ``deploy.py --onnx``.
- :mod:`export.onnx_detector`: ``OnnxDetector`` / ``OnnxModule`` on onnxruntime (no MXNet),
  used by ``evaluate.py --onnx`` and ``demo.py --onnx``.

The package is named ``export``, not ``onnx``, so that it never hides the ``onnx`` distribution.
"""
