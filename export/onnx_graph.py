"""MXNet symbol JSON to ONNX nodes: the layers of the SSD zoo, one converter per operator.

:class:`OnnxGraph` collects nodes and constants; :func:`convert_layers` walks the nodes of an
MXNet graph (``json.loads(symbol.tojson())``) that the requested outputs need and adds the ONNX
equivalent of each one. Only the operators the presets of ``symbol/`` use in their inference
graphs (and a few trivial relatives) are known; any other one is refused with a ``ValueError``
naming the operator and the node, never converted approximately.

No MXNet here: parameters arrive as numpy arrays, so this module is testable on its own.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17          # onnxruntime 1.14+ and every mobile/web build of the last years run it

# MXNet operators that are the identity at inference
_IDENTITY_OPS = ("Dropout", "BlockGrad", "_copy", "identity", "stop_gradient")
_BINARY_OPS = {
    "elemwise_add": "Add", "_plus": "Add", "_Plus": "Add", "broadcast_add": "Add",
    "broadcast_plus": "Add", "elemwise_sub": "Sub", "_minus": "Sub", "broadcast_sub": "Sub",
    "elemwise_mul": "Mul", "_mul": "Mul", "broadcast_mul": "Mul",
}
_SCALAR_OPS = {"_mul_scalar": "Mul", "_plus_scalar": "Add", "_minus_scalar": "Sub",
               "_div_scalar": "Div"}
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softrelu": "Softplus"}


class OnnxGraph:
    """Nodes and constants of an ONNX graph under construction, with fresh tensor names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set()

    def fresh(self, base: str) -> str:
        """A tensor name not used yet, ``base`` when free."""
        name, count = base, 1
        while name in self._names:
            name, count = f"{base}_{count}", count + 1
        self._names.add(name)
        return name

    def const(self, base: str, value, dtype=np.float32) -> str:
        """Add a constant tensor; returns its name."""
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def prune(self) -> None:
        """Drop constants no node reads (a ``fix_gamma`` BatchNorm's unused gamma)."""
        used = {name for node in self.nodes for name in node.input}
        self.initializers = [t for t in self.initializers if t.name in used]

    def op(self, op_type: str, inputs: Iterable[str], base: str, num_outputs: int = 1,
           **attrs) -> str | list[str]:
        """Add one node; returns its output name (a list when ``num_outputs`` > 1)."""
        outputs = [self.fresh(base if i == 0 else f"{base}_out{i}") for i in range(num_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs,
                                           name=self.fresh(f"node_{base}"), **attrs))
        return outputs[0] if num_outputs == 1 else outputs


def parse_attr(attrs: Mapping[str, str], key: str, default):
    """An MXNet attribute string (``'(3, 3)'``, ``'True'``, ``'0.5'``) as a Python value."""
    if key not in attrs:
        return default
    text = attrs[key].strip()
    if text in ("True", "False"):
        return text == "True"
    if text in ("None", ""):
        return default
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _ints(value, size: int) -> list[int]:
    """``3`` or ``(3, 3)`` -> ``[3, 3]`` (an int is repeated ``size`` times)."""
    if isinstance(value, (int, float)):
        return [int(value)] * size
    return [int(v) for v in value]


class UnsupportedGraph(ValueError):
    """The MXNet graph holds an operator or setting this exporter does not convert."""


def _refuse(node: dict, what: str) -> UnsupportedGraph:
    return UnsupportedGraph(f"node {node['name']!r} ({node['op']}) {what}; ONNX export supports "
                            f"the operators of the SSD presets only")


def _convolution(g: OnnxGraph, node: dict, inputs: list[str], attrs: dict) -> str:
    kernel = _ints(parse_attr(attrs, "kernel", ()), 2)
    dims = len(kernel)
    if dims != 2 or parse_attr(attrs, "layout", "NCHW") not in ("NCHW", None):
        raise _refuse(node, f"has kernel {kernel} / layout {attrs.get('layout')}: not a 2-D "
                      "NCHW convolution")
    pad = _ints(parse_attr(attrs, "pad", (0,) * dims), dims)
    no_bias = parse_attr(attrs, "no_bias", False)
    return g.op("Conv", inputs[:2] if no_bias else inputs[:3], node["name"],
                kernel_shape=kernel, strides=_ints(parse_attr(attrs, "stride", (1,) * dims), dims),
                pads=pad + pad, dilations=_ints(parse_attr(attrs, "dilate", (1,) * dims), dims),
                group=int(parse_attr(attrs, "num_group", 1)))


def _batchnorm(g: OnnxGraph, node: dict, inputs: list[str], attrs: dict,
               shapes: Mapping[str, tuple]) -> str:
    if int(parse_attr(attrs, "axis", 1)) != 1:
        raise _refuse(node, f"normalises axis {attrs['axis']}, not the channels")
    gamma = inputs[1]
    if parse_attr(attrs, "fix_gamma", True):         # MXNet uses 1 whatever gamma holds
        gamma = g.const(f"{node['name']}_unit_gamma", np.ones(shapes[inputs[1]], np.float32))
    return g.op("BatchNormalization", [inputs[0], gamma] + inputs[2:5], node["name"],
                epsilon=float(parse_attr(attrs, "eps", 1e-3)))


def _pooling(g: OnnxGraph, node: dict, inputs: list[str], attrs: dict) -> str:
    pool_type = parse_attr(attrs, "pool_type", "max")
    if pool_type not in ("max", "avg"):
        raise _refuse(node, f"has pool_type {pool_type!r}")
    onnx_type = "MaxPool" if pool_type == "max" else "AveragePool"
    if parse_attr(attrs, "global_pool", False):
        return g.op("Global" + onnx_type, inputs[:1], node["name"])
    kernel = _ints(parse_attr(attrs, "kernel", ()), 2)
    pad = _ints(parse_attr(attrs, "pad", (0, 0)), 2)
    convention = parse_attr(attrs, "pooling_convention", "valid")
    if convention not in ("valid", "full"):
        raise _refuse(node, f"has pooling_convention {convention!r}")
    extra = {}
    if pool_type == "avg":       # MXNet averages over the padded window unless told otherwise
        extra["count_include_pad"] = int(parse_attr(attrs, "count_include_pad", True))
    return g.op(onnx_type, inputs[:1], node["name"], kernel_shape=kernel, pads=pad + pad,
                strides=_ints(parse_attr(attrs, "stride", (1, 1)), 2),
                ceil_mode=int(convention == "full"), **extra)


def _reshape(g: OnnxGraph, node: dict, inputs: list[str], attrs: dict,
             out_shapes: Mapping[str, tuple] | None = None) -> str:
    shape = [int(s) for s in parse_attr(attrs, "shape", ())]
    if parse_attr(attrs, "reverse", False) or not shape:
        raise _refuse(node, f"has shape {tuple(shape)} (reverse or no shape is not converted)")
    if any(s < -1 for s in shape):
        # codes -2/-3/-4: the output shape as inferred at batch sizes 1 and 2; the one
        # dimension that differs scales with the batch and becomes ONNX's -1
        if not out_shapes or node["name"] not in out_shapes:
            raise _refuse(node, f"has shape {tuple(shape)} and its output shape is not known")
        one, two = out_shapes[node["name"]]
        shape = [-1 if a != b else int(a) for a, b in zip(one, two)]
        if shape.count(-1) > 1:
            raise _refuse(node, f"has {shape.count(-1)} dimensions that grow with the batch")
    target = g.const(f"{node['name']}_shape", shape, np.int64)
    return g.op("Reshape", [inputs[0], target], node["name"])


_INT64_MIN = -(2 ** 63)
_INT64_MAX = 2 ** 63 - 1


def _slice(g: OnnxGraph, node: dict, inputs: list[str], attrs: dict) -> str:
    """``slice_axis`` (one axis, begin/end) and ``flip``/``reverse`` (Slice with step -1)."""
    name = node["name"]
    axis = parse_attr(attrs, "axis", 0)
    if node["op"] in ("flip", "reverse"):
        axes = _ints(axis, 1)
        if len(axes) != 1:
            raise _refuse(node, f"reverses {len(axes)} axes (one is converted)")
        starts, ends, steps = [-1], [_INT64_MIN], [-1]
    else:
        axes = [int(axis)]
        begin, end = parse_attr(attrs, "begin", 0), parse_attr(attrs, "end", None)
        starts, ends, steps = [int(begin)], [_INT64_MAX if end is None else int(end)], [1]
    return g.op("Slice", [inputs[0], g.const(f"{name}_starts", starts, np.int64),
                          g.const(f"{name}_ends", ends, np.int64),
                          g.const(f"{name}_axes", axes, np.int64),
                          g.const(f"{name}_steps", steps, np.int64)], name)


def _stack(g: OnnxGraph, node: dict, inputs: list[str], attrs: dict) -> str:
    name, axis = node["name"], int(parse_attr(attrs, "axis", 0))
    axes = g.const(f"{name}_axes", [axis], np.int64)
    parts = [g.op("Unsqueeze", [x, axes], f"{name}_{i}") for i, x in enumerate(inputs)]
    return g.op("Concat", parts, name, axis=axis)


def _l2_normalization(g: OnnxGraph, node: dict, inputs: list[str], attrs: dict) -> str:
    mode = parse_attr(attrs, "mode", "instance")
    if mode != "channel":
        raise _refuse(node, f"has mode {mode!r} (only 'channel' is converted)")
    name = node["name"]
    squares = g.op("ReduceSumSquare", inputs[:1], f"{name}_sumsq", axes=[1], keepdims=1)
    eps = g.const(f"{name}_eps", float(parse_attr(attrs, "eps", 1e-10)))
    norm = g.op("Sqrt", [g.op("Add", [squares, eps], f"{name}_sumsq_eps")], f"{name}_norm")
    return g.op("Div", [inputs[0], norm], name)                     # x / sqrt(sum x^2 + eps)


def _softmax(g: OnnxGraph, node: dict, inputs: list[str], attrs: dict) -> str:
    if node["op"] == "SoftmaxActivation":
        if parse_attr(attrs, "mode", "instance") != "channel":
            raise _refuse(node, "has mode 'instance' (only 'channel' is converted)")
        axis = 1
    else:
        axis = int(parse_attr(attrs, "axis", -1))
        if parse_attr(attrs, "temperature", None) not in (None, 1, 1.0):
            raise _refuse(node, f"has temperature {attrs['temperature']}")
    return g.op("Softmax", inputs[:1], node["name"], axis=axis)


def _simple(g: OnnxGraph, node: dict, inputs: list[str], attrs: dict) -> str:
    """Operators with a one-to-one ONNX counterpart."""
    op, name = node["op"], node["name"]
    if op in _BINARY_OPS:
        return g.op(_BINARY_OPS[op], inputs[:2], name)
    if op in _IDENTITY_OPS:
        return g.op("Identity", inputs[:1], name)
    if op == "Activation":
        act = parse_attr(attrs, "act_type", "relu")
        if act not in _ACTIVATIONS:
            raise _refuse(node, f"has act_type {act!r}")
        return g.op(_ACTIVATIONS[act], inputs[:1], name)
    if op == "LeakyReLU":
        act = parse_attr(attrs, "act_type", "leaky")
        if act != "leaky":
            raise _refuse(node, f"has act_type {act!r}")
        return g.op("LeakyRelu", inputs[:1], name, alpha=float(parse_attr(attrs, "slope", 0.25)))
    if op in _SCALAR_OPS:
        scalar = g.const(f"{name}_scalar", float(parse_attr(attrs, "scalar", 0.0)))
        return g.op(_SCALAR_OPS[op], [inputs[0], scalar], name)
    if op in ("Concat", "concat"):
        return g.op("Concat", inputs, name, axis=int(parse_attr(attrs, "dim", 1)))
    if op in ("Flatten", "flatten"):
        return g.op("Flatten", inputs[:1], name, axis=1)
    if op == "transpose":
        axes = parse_attr(attrs, "axes", ())
        return g.op("Transpose", inputs[:1], name, **({"perm": list(axes)} if axes else {}))
    raise _refuse(node, "is not converted")


def convert_node(g: OnnxGraph, node: dict, inputs: list[str],
                 shapes: Mapping[str, tuple], out_shapes: Mapping[str, tuple] | None = None
                 ) -> str:
    """Add the ONNX form of one MXNet node (its inputs already named); returns its output.

    ``out_shapes``: node name -> (output shape at batch 1, at batch 2), for reshapes with
    MXNet's special codes (``export.onnx_file.batch_shapes``).
    """
    attrs = node.get("attrs", node.get("attr", node.get("param", {}))) or {}
    op = node["op"]
    if op == "Convolution":
        return _convolution(g, node, inputs, attrs)
    if op == "BatchNorm":
        return _batchnorm(g, node, inputs, attrs, shapes)
    if op == "Pooling":
        return _pooling(g, node, inputs, attrs)
    if op in ("Reshape", "reshape"):
        return _reshape(g, node, inputs, attrs, out_shapes)
    if op in ("slice_axis", "flip", "reverse"):
        return _slice(g, node, inputs, attrs)
    if op == "stack":
        return _stack(g, node, inputs, attrs)
    if op == "L2Normalization":
        return _l2_normalization(g, node, inputs, attrs)
    if op in ("softmax", "SoftmaxActivation"):
        return _softmax(g, node, inputs, attrs)
    return _simple(g, node, inputs, attrs)


def needed_nodes(nodes: list[dict], outputs: Iterable[int]) -> list[int]:
    """Indices of the nodes the given node indices depend on (them included), in graph order."""
    seen, stack = set(), list(outputs)
    while stack:
        index = stack.pop()
        if index not in seen:
            seen.add(index)
            stack.extend(entry[0] for entry in nodes[index]["inputs"])
    return sorted(seen)


def convert_layers(g: OnnxGraph, nodes: list[dict], outputs: Iterable[int],
                   params: Mapping[str, np.ndarray], data_tensor: str,
                   data_name: str = "data", out_shapes: Mapping[str, tuple] | None = None
                   ) -> dict[int, str]:
    """Convert what ``outputs`` (node indices) need; returns node index -> ONNX tensor name.

    Variables other than ``data_name`` become constants from ``params``; a node with an output
    index other than 0 used as an input is refused (no zoo layer has one at inference).
    ``out_shapes``: see :func:`convert_node`.

    Raises
    ------
    ValueError
        A parameter is missing from ``params``, or an operator is not converted.
    """
    names: dict[int, str] = {}
    shapes: dict[str, tuple] = {}
    for index in needed_nodes(nodes, outputs):
        node = nodes[index]
        if node["op"] == "null":
            if node["name"] == data_name:
                names[index] = data_tensor
                continue
            if node["name"] not in params:
                raise ValueError(f"the checkpoint has no parameter {node['name']!r} needed by "
                                 "the graph")
            value = np.asarray(params[node["name"]], dtype=np.float32)
            names[index] = g.const(node["name"], value)
            shapes[names[index]] = value.shape
            continue
        for entry in node["inputs"]:
            if entry[1] != 0:
                raise _refuse(node, f"reads output {entry[1]} of {nodes[entry[0]]['name']!r}")
        inputs = [names[entry[0]] for entry in node["inputs"]]
        names[index] = convert_node(g, node, inputs, shapes, out_shapes)
    return names


def value_info(name: str, shape: list, elem_type: int = TensorProto.FLOAT):
    """A graph input/output description (dimension names for the dynamic ones)."""
    return helper.make_tensor_value_info(name, elem_type, shape)

