"""Layers shared by every SSD network: extra feature layers and the multibox heads.

Every layer gets an explicit name so that parameter names match the original example's
checkpoints (``multi_feat_2_conv_1x1_conv_weight``, ``relu4_3_scale``,
``relu4_3_loc_pred_conv_weight``, ...) and nothing depends on MXNet's global name counters.
"""
from __future__ import annotations

from collections.abc import Sequence

import mxnet as mx


def conv_act_layer(from_layer: mx.sym.Symbol, name: str, num_filter: int,
                   kernel: tuple[int, int] = (1, 1), pad: tuple[int, int] = (0, 0),
                   stride: tuple[int, int] = (1, 1), act_type: str = "relu",
                   use_batchnorm: bool = False) -> mx.sym.Symbol:
    """Convolution (+ optional BatchNorm) + activation, named ``{name}_conv`` / ``{name}_{act}``.

    Parameters
    ----------
    from_layer : mx.sym.Symbol
        Input feature map.
    name : str
        Base name of the new layers.
    num_filter : int
        Output channels.
    kernel, pad, stride : tuple of int
        Convolution geometry (h, w).
    act_type : str
        Activation type (``relu`` ...).
    use_batchnorm : bool
        Insert ``{name}_bn`` between the convolution and the activation.

    Returns
    -------
    mx.sym.Symbol
        The activation output.
    """
    out = mx.sym.Convolution(data=from_layer, kernel=kernel, pad=pad, stride=stride,
                             num_filter=num_filter, name=f"{name}_conv")
    if use_batchnorm:
        out = mx.sym.BatchNorm(data=out, name=f"{name}_bn")
    return mx.sym.Activation(data=out, act_type=act_type, name=f"{name}_{act_type}")


def multi_layer_feature(body: mx.sym.Symbol, from_layers: Sequence[str],
                        num_filters: Sequence[int], strides: Sequence[int],
                        pads: Sequence[int], min_filter: int = 128,
                        extra_batchnorm: bool = False) -> list[mx.sym.Symbol]:
    """Take feature layers from ``body`` by name and append the extra SSD layers.

    Entry ``k`` with ``from_layers[k] == ''`` appends ``multi_feat_{k}_conv_1x1``
    (``max(min_filter, num_filters[k] // 2)`` filters) and ``multi_feat_{k}_conv_3x3``
    (``num_filters[k]`` filters, stride ``strides[k]``, pad ``pads[k]``) on the previous layer.

    Parameters
    ----------
    body : mx.sym.Symbol
        Backbone; every named entry of ``from_layers`` must be one of its internal layers.
    from_layers : sequence of str
        Layer names (``'relu4_3'``) or ``''`` for an extra layer; the first must be a name.
    num_filters, strides, pads : sequence of int
        Per entry; ignored (-1) for layers taken from the body.
    min_filter : int
        Minimum width of the 1x1 bottleneck convolution.
    extra_batchnorm : bool
        BatchNorm (``multi_feat_{k}_conv_1x1_bn`` ...) after each extra convolution (the
        original has none; ``tiny_photo`` uses it to train from scratch).

    Returns
    -------
    list of mx.sym.Symbol
        One feature map per entry of ``from_layers``.
    """
    internals = body.get_internals()
    available = set(internals.list_outputs())
    layers: list[mx.sym.Symbol] = []
    for k, (from_layer, num_filter, stride, pad) in enumerate(
            zip(from_layers, num_filters, strides, pads)):
        if from_layer:
            key = f"{from_layer}_output"
            if key not in available:
                raise ValueError(f"from_layers[{k}] = {from_layer!r} is not a layer of the "
                                 f"backbone {body.name!r}")
            layers.append(internals[key])
            continue
        num_1x1 = max(min_filter, num_filter // 2)
        conv_1x1 = conv_act_layer(layers[-1], f"multi_feat_{k}_conv_1x1", num_1x1,
                                  use_batchnorm=extra_batchnorm)
        conv_3x3 = conv_act_layer(conv_1x1, f"multi_feat_{k}_conv_3x3", num_filter,
                                  kernel=(3, 3), pad=(pad, pad), stride=(stride, stride),
                                  use_batchnorm=extra_batchnorm)
        layers.append(conv_3x3)
    return layers


def _tuple_str(values: Sequence[float]) -> str:
    """MultiBoxPrior attribute string, e.g. ``(0.1,0.141)``."""
    return "(" + ",".join(str(v) for v in values) + ")"


def multibox_layer(from_layers: Sequence[mx.sym.Symbol], num_classes: int,
                   sizes: Sequence[Sequence[float]], ratios: Sequence[Sequence[float]],
                   normalizations: Sequence[float], num_channels: Sequence[int],
                   steps: Sequence[float] = (), clip: bool = False
                   ) -> tuple[mx.sym.Symbol, mx.sym.Symbol, mx.sym.Symbol]:
    """Loc/cls prediction convolutions and anchors on every feature layer.

    Parameters
    ----------
    from_layers : sequence of mx.sym.Symbol
        Feature maps; their names prefix the head layers (``{name}_loc_pred_conv``).
    num_classes : int
        Object classes, background excluded (class 0 of the outputs is background).
    sizes, ratios : sequence of sequence of float
        Per layer anchor sizes (fraction of the image side) and aspect ratios;
        anchors per location = ``len(sizes[k]) - 1 + len(ratios[k])``.
    normalizations : sequence of float
        Per layer L2Normalization scale init, -1 for none (``{name}_norm``, ``{name}_scale``).
    num_channels : sequence of int
        Channels of each layer (needed for the scale's shape where normalised).
    steps : sequence of float
        Per layer anchor step (fraction of the image); empty: 1 / map size.
    clip : bool
        Clip anchors to the image.

    Returns
    -------
    loc_preds : mx.sym.Symbol
        (B, 4N).
    cls_preds : mx.sym.Symbol
        (B, C+1, N).
    anchors : mx.sym.Symbol
        (1, N, 4) [x1, y1, x2, y2] normalised.
    """
    loc_layers, cls_layers, anchor_layers = [], [], []
    num_outputs = num_classes + 1  # background is class 0
    for k, layer in enumerate(from_layers):
        name = layer.name
        if normalizations[k] > 0:
            layer = mx.sym.L2Normalization(data=layer, mode="channel", name=f"{name}_norm")
            scale = mx.sym.Variable(name=f"{name}_scale", shape=(1, num_channels[k], 1, 1),
                                    init=mx.init.Constant(normalizations[k]),
                                    attr={"__wd_mult__": "0.1"})
            layer = mx.sym.broadcast_mul(lhs=scale, rhs=layer, name=f"{name}_scale_mul")
        num_anchors = len(sizes[k]) - 1 + len(ratios[k])

        for kind, width, outputs in (("loc", 4, loc_layers), ("cls", num_outputs, cls_layers)):
            bias = mx.sym.Variable(name=f"{name}_{kind}_pred_conv_bias",
                                   init=mx.init.Constant(0.0), attr={"__lr_mult__": "2.0"})
            pred = mx.sym.Convolution(data=layer, bias=bias, kernel=(3, 3), pad=(1, 1),
                                      num_filter=num_anchors * width,
                                      name=f"{name}_{kind}_pred_conv")
            # (B, A*width, H, W) -> (B, H, W, A*width) -> (B, H*W*A, width)
            pred = mx.sym.transpose(pred, axes=(0, 2, 3, 1), name=f"{name}_{kind}_pred_nhwc")
            outputs.append(mx.sym.Reshape(data=pred, shape=(0, -1, width),
                                          name=f"{name}_{kind}_pred_rows"))

        step = (steps[k], steps[k]) if steps else (-1.0, -1.0)
        anchors = mx.sym.contrib.MultiBoxPrior(layer, sizes=_tuple_str(sizes[k]),
                                               ratios=_tuple_str(ratios[k]), clip=clip,
                                               steps=step, name=f"{name}_anchors")
        anchor_layers.append(anchors)                     # (1, H*W*A, 4)

    # Every concatenation joins 3-D (B, rows, width) tensors. MXNet 1.9's MKL-DNN Concat
    # (used for 2-D and 4-D inputs only) leaks about 2.5 KB of native memory per training
    # step: flattened 2-D concats here made a soak run's resident memory grow by
    # ~20 KB a batch (docs/RELIABILITY.md, "Memory"). The 3-D form takes MXNet's own Concat.
    loc_preds = mx.sym.Concat(*loc_layers, num_args=len(loc_layers), dim=1,
                              name="multibox_loc_concat")
    # (B, N, 4) -> (B, 4N)
    loc_preds = mx.sym.Reshape(data=loc_preds, shape=(0, -1), name="multibox_loc_pred")
    cls_preds = mx.sym.Concat(*cls_layers, num_args=len(cls_layers), dim=1,
                              name="multibox_cls_concat")
    # (B, N, C+1) -> (B, C+1, N)
    cls_preds = mx.sym.transpose(cls_preds, axes=(0, 2, 1), name="multibox_cls_pred")
    anchors = mx.sym.Concat(*anchor_layers, num_args=len(anchor_layers), dim=1,
                            name="multibox_anchors")
    return loc_preds, cls_preds, anchors
