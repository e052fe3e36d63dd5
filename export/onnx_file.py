"""Export an SSD inference graph (``get_symbol`` / ``deploy.py``) to one ONNX file.

The file takes ``data``: float32 (N, 3, H, W) RGB pixels 0-255 already resized to the data
shape (the mean subtraction is inside the graph) and gives ``detections``: float32 (N, K, 6)
``[class_id, score, xmin, ymin, xmax, ymax]``, corners in 0-1, class -1 on empty rows, K =
min(nms_topk, anchors). The layers come from :mod:`export.onnx_graph`, the anchors are
computed here by MXNet's ``MultiBoxPrior`` and stored as a constant, and ``MultiBoxDetection``
is rebuilt by :mod:`export.onnx_detection` with MXNet 1.9.1's semantics. The file passes
``onnx.checker.check_model(full_check=True)`` and is written atomically.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from config.mxnet_compat import mx
import numpy as np
import onnx
from onnx import helper

from training.checkpoint import atomic_write
from export.onnx_detection import add_multibox_detection
from symbol.common import has_flip_test
from export.onnx_graph import (OPSET, OnnxGraph, UnsupportedGraph, convert_layers, parse_attr,
                                 value_info)

PROJECT_VERSION = "0.1.0"            # setup.py's version (tests/test_onnx.py keeps them equal)
DETECTION_OP = "_contrib_MultiBoxDetection"
IR_VERSION = 8                       # the IR of opset 17: older runtimes load the file too


def find_detection(nodes: list[dict], what: str) -> int:
    """Index of the graph's one MultiBoxDetection node, which must be its only output."""
    found = [i for i, node in enumerate(nodes) if node["op"] == DETECTION_OP]
    if len(found) != 1:
        raise UnsupportedGraph(f"{what} has {len(found)} {DETECTION_OP} nodes; an SSD inference "
                               "graph (deploy.py, get_symbol) has exactly one")
    return found[0]


def compute_anchors(symbol: mx.sym.Symbol, nodes: list[dict], entry: Sequence[int],
                    arg_params: Mapping, aux_params: Mapping,
                    data_shape: tuple[int, int]) -> np.ndarray:
    """MXNet's anchors (A, 4) for the input size: the detection node's third input, run once."""
    name = nodes[entry[0]]["name"]
    internals = symbol.get_internals()
    outputs = [o for o in internals.list_outputs() if o == f"{name}_output"]
    if not outputs:
        raise UnsupportedGraph(f"the anchors of the graph come from {name!r}, which has no "
                               "single output")
    anchors_sym = internals[outputs[0]]
    shape = (1, 3) + tuple(data_shape)
    args = {n: (mx.nd.zeros(shape) if n == "data" else arg_params[n])
            for n in anchors_sym.list_arguments()}
    aux = {n: aux_params[n] for n in anchors_sym.list_auxiliary_states()}
    executor = anchors_sym.bind(mx.cpu(), args, aux_states=aux, grad_req="null")
    return executor.forward(is_train=False)[0].asnumpy().reshape(-1, 4)


def batch_shapes(symbol: mx.sym.Symbol, data_shape: tuple[int, int]) -> dict[str, tuple]:
    """Node name -> (its output shape at batch 1, at batch 2): which dimension is the batch's."""
    internals = symbol.get_internals()
    names = internals.list_outputs()
    shapes = [internals.infer_shape(data=(n, 3) + tuple(data_shape))[1] for n in (1, 2)]
    return {name[:-len("_output")]: (one, two) for name, one, two in zip(names, *shapes)
            if name.endswith("_output")}


def detection_settings(node: dict) -> dict:
    """MultiBoxDetection's attributes (MXNet's defaults where absent)."""
    attrs = node.get("attrs", {})
    if int(parse_attr(attrs, "background_id", 0)) != 0:
        raise UnsupportedGraph(f"{node['name']!r} has background_id {attrs['background_id']}; "
                               "only 0 (MXNet's default) is exported")
    return {"threshold": float(parse_attr(attrs, "threshold", 0.01)),
            "clip": bool(parse_attr(attrs, "clip", True)),
            "variances": [float(v) for v in parse_attr(attrs, "variances", (0.1, 0.1, 0.2, 0.2))],
            "nms_threshold": float(parse_attr(attrs, "nms_threshold", 0.5)),
            "force_suppress": bool(parse_attr(attrs, "force_suppress", False)),
            "nms_topk": int(parse_attr(attrs, "nms_topk", -1))}


def build_onnx_model(symbol: mx.sym.Symbol, arg_params: Mapping, aux_params: Mapping,
                     data_shape: tuple[int, int], mean_pixels: Sequence[float],
                     metadata: Mapping[str, str], what: str = "the graph") -> onnx.ModelProto:
    """The ONNX model of an SSD inference graph (see the module docstring).

    Parameters
    ----------
    symbol : mx.sym.Symbol
        Inference graph ending in MultiBoxDetection (``get_symbol`` or a deploy json).
    arg_params, aux_params : mapping of str to NDArray
        The checkpoint's parameters.
    data_shape : (int, int)
        Input height and width.
    mean_pixels : sequence of 3 floats
        RGB mean subtracted inside the graph.
    metadata : mapping of str to str
        Stored as the model's ``metadata_props`` (network, classes, ...).
    what : str
        Names the graph in error messages (a file, a prefix).

    Raises
    ------
    ValueError
        ``UnsupportedGraph`` naming the operator that is not converted, or a missing parameter.
    """
    nodes = json.loads(symbol.tojson())["nodes"]
    det_index = find_detection(nodes, what)
    det = nodes[det_index]
    cls_entry, loc_entry, anchor_entry = det["inputs"][:3]
    anchors = compute_anchors(symbol, nodes, anchor_entry, arg_params, aux_params, data_shape)
    params = {k: v.asnumpy() for table in (arg_params, aux_params) for k, v in table.items()}

    g = OnnxGraph()
    g.fresh("data")
    mean = np.asarray(mean_pixels, dtype=np.float32).reshape(1, 3, 1, 1)
    centred = g.op("Sub", ["data", g.const("mean_pixels", mean)], "data_minus_mean")
    try:
        names = convert_layers(g, nodes, [cls_entry[0], loc_entry[0]], params, centred,
                               out_shapes=batch_shapes(symbol, data_shape))
    except UnsupportedGraph as err:
        raise UnsupportedGraph(f"{what}: {err}") from None
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    output = add_multibox_detection(g, names[cls_entry[0]], names[loc_entry[0]], anchors,
                                    **detection_settings(det))
    num_rows = output_rows(det, anchors)
    g.prune()
    graph = helper.make_graph(
        g.nodes, "ssd_detection", [value_info("data", ["N", 3] + list(data_shape))],
        [value_info(output, ["N", num_rows, 6])], initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mxnet-ssd", producer_version=PROJECT_VERSION)
    model.ir_version = IR_VERSION
    model.doc_string = ("SSD detector. data: float32 (N, 3, H, W) RGB 0-255 resized to the data "
                        "shape; detections: float32 (N, K, 6) [class_id, score, xmin, ymin, "
                        "xmax, ymax], corners in 0-1, class_id -1 for empty rows.")
    settings = detection_settings(det)
    props = {**metadata, **{k: str(settings[k]) for k in ("nms_threshold", "force_suppress",
                                                           "nms_topk", "threshold")},
             "flip_test": "1" if has_flip_test(symbol) else "0"}
    helper.set_model_props(model, {k: str(v) for k, v in props.items()})
    onnx.checker.check_model(model, full_check=True)
    return model


def output_rows(det: dict, anchors: np.ndarray) -> int:
    """K, the detection rows of the output: min(nms_topk, anchors), all anchors for -1."""
    topk = detection_settings(det)["nms_topk"]
    return anchors.shape[0] if topk <= 0 else min(topk, anchors.shape[0])


def export_metadata(network: str, data_shape: tuple[int, int], class_names: Sequence[str],
                    mean_pixels: Sequence[float], source: str) -> dict[str, str]:
    """The metadata stored in the file (read back by ``export.onnx_detector``)."""
    return {"network": network, "data_shape": f"3,{data_shape[0]},{data_shape[1]}",
            "num_classes": str(len(class_names)), "class_names": json.dumps(list(class_names)),
            "mean_pixels": json.dumps([float(m) for m in mean_pixels]),
            "project": "mxnet-ssd", "project_version": PROJECT_VERSION,
            "mxnet_version": mx.__version__, "source_checkpoint": source,
            "input": "data: float32 (N, 3, H, W) RGB pixels 0-255, resized to the data shape",
            "output": "detections: float32 (N, K, 6) [class_id, score, xmin, ymin, xmax, ymax]"}


def export_onnx(symbol: mx.sym.Symbol, arg_params: Mapping, aux_params: Mapping,
                data_shape: tuple[int, int], mean_pixels: Sequence[float],
                metadata: Mapping[str, str], onnx_path: str, what: str = "the graph") -> str:
    """Build the model (:func:`build_onnx_model`) and write it atomically to ``onnx_path``.

    Nothing is written when the graph cannot be converted; a failed write leaves no partial
    file (``checkpoint.FileWriteError`` naming the file).
    """
    model = build_onnx_model(symbol, arg_params, aux_params, data_shape, mean_pixels, metadata,
                             what)
    atomic_write(onnx_path, lambda tmp: onnx.save_model(model, tmp))
    return onnx_path
