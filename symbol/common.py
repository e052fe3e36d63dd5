"""Layers shared by every SSD network: extra feature layers and the multibox heads.

Every layer gets an explicit name so that parameter names match the original example's
checkpoints (``multi_feat_2_conv_1x1_conv_weight``, ``relu4_3_scale``,
``relu4_3_loc_pred_conv_weight``, ...) and nothing depends on MXNet's global name counters.
"""
from __future__ import annotations

from collections.abc import Sequence

from config.mxnet_compat import mx


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


def with_mirrored_images(data: mx.sym.Symbol) -> mx.sym.Symbol:
    """(B, 3, H, W) -> (2B, 3, H, W): every image followed by its left-right mirror."""
    mirrored = mx.sym.flip(data, axis=3, name="flip_test_mirror")
    pair = mx.sym.stack(data, mirrored, axis=1, name="flip_test_pair")        # (B, 2, 3, H, W)
    return mx.sym.reshape(pair, shape=(-3, -2), name="flip_test_batch")


def has_flip_test(symbol: mx.sym.Symbol) -> bool:
    """Whether an inference graph averages each image with its mirror (a ``--flip-test`` one)."""
    return "flip_test_batch_output" in symbol.get_internals().list_outputs()


def merge_mirrored(pred: mx.sym.Symbol, name: str, num_anchors: int, is_loc: bool
                   ) -> mx.sym.Symbol:
    """Average a head's prediction for each image with its mirror's, mirrored back.

    ``pred`` is a head convolution's output (2B, A*width, H, W) on the batch of
    :func:`with_mirrored_images`. The mirror's map is flipped back along W, so that location
    (h, w) of both holds the same anchor (a grid that mirrors onto itself: steps of 1 / map
    width, see ``symbol_factory.check_flip_test``), and for the box offsets the sign of the
    horizontal centre offset is turned (channel 0 of every anchor's 4); the widths, heights and
    class logits are unchanged by a mirror. Returns (B, A*width, H, W), the mean of the two.
    """
    pair = mx.sym.reshape(pred, shape=(-4, -1, 2, -2), name=f"{name}_pair")  # (B, 2, A*w, H, W)
    own = mx.sym.slice_axis(pair, axis=1, begin=0, end=1, name=f"{name}_own")
    back = mx.sym.flip(mx.sym.slice_axis(pair, axis=1, begin=1, end=2, name=f"{name}_mirror"),
                       axis=4, name=f"{name}_mirror_back")
    if is_loc:                                        # (B, 1, A*4, H, W) -> (B, 1, A, 4, H, W)
        rows = mx.sym.reshape(back, shape=(0, 0, -4, num_anchors, 4, -2), name=f"{name}_xywh")
        dx = mx.sym.slice_axis(rows, axis=3, begin=0, end=1, name=f"{name}_dx") * -1.0
        rest = mx.sym.slice_axis(rows, axis=3, begin=1, end=4, name=f"{name}_dy_dw_dh")
        rows = mx.sym.concat(dx, rest, dim=3, name=f"{name}_mirrored_xywh")
        back = mx.sym.reshape(rows, shape=(0, 0, -3, -2), name=f"{name}_mirrored")
    mean = (own + back) * 0.5
    return mx.sym.reshape(mean, shape=(-3, -2), name=f"{name}_flip_mean")  # (B, A*w, H, W)


def multibox_layer(from_layers: Sequence[mx.sym.Symbol], num_classes: int,
                   sizes: Sequence[Sequence[float]], ratios: Sequence[Sequence[float]],
                   normalizations: Sequence[float], num_channels: Sequence[int],
                   steps: Sequence[float] = (), clip: bool = False, fast_ops: bool = False,
                   flip_test: bool = False
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
    fast_ops : bool
        Training-speed forms with the same parameters (names, shapes) and the same function
        up to float rounding: :func:`fused_predictions`, :func:`scaled_l2_normalization`, and
        no (zero) gradient through MultiBoxPrior (docs/notes/SPEED.md). The graphs that are saved,
        evaluated and deployed keep the plain operators.
    flip_test : bool
        The layers hold image/mirror pairs (:func:`with_mirrored_images`): every head's
        prediction is the mean of the image's and its mirror's (:func:`merge_mirrored`).
        Inference only; not with ``fast_ops``.

    Returns
    -------
    loc_preds : mx.sym.Symbol
        (B, 4N).
    cls_preds : mx.sym.Symbol
        (B, C+1, N).
    anchors : mx.sym.Symbol
        (1, N, 4) [x1, y1, x2, y2] normalised.
    """
    if flip_test and fast_ops:
        raise ValueError("flip_test is an inference graph; fast_ops is for training")
    loc_layers, cls_layers, anchor_layers = [], [], []
    num_outputs = num_classes + 1  # background is class 0
    for k, layer in enumerate(from_layers):
        name = layer.name
        if normalizations[k] > 0:
            scale = mx.sym.Variable(name=f"{name}_scale", shape=(1, num_channels[k], 1, 1),
                                    init=mx.init.Constant(normalizations[k]),
                                    attr={"__wd_mult__": "0.1"})
            if fast_ops:
                layer = scaled_l2_normalization(layer, scale, num_channels[k], name)
            else:
                layer = mx.sym.L2Normalization(data=layer, mode="channel", name=f"{name}_norm")
                layer = mx.sym.broadcast_mul(lhs=scale, rhs=layer, name=f"{name}_scale_mul")
        num_anchors = len(sizes[k]) - 1 + len(ratios[k])
        channels = feature_channels(layer) if fast_ops else None

        if channels:
            loc, cls = fused_predictions(layer, name, channels, num_anchors,
                                         (4, num_outputs))
            loc_layers.append(loc)
            cls_layers.append(cls)
        else:
            for kind, width, outputs in (("loc", 4, loc_layers),
                                         ("cls", num_outputs, cls_layers)):
                bias = mx.sym.Variable(name=f"{name}_{kind}_pred_conv_bias",
                                       init=mx.init.Constant(0.0), attr={"__lr_mult__": "2.0"})
                pred = mx.sym.Convolution(data=layer, bias=bias, kernel=(3, 3), pad=(1, 1),
                                          num_filter=num_anchors * width,
                                          name=f"{name}_{kind}_pred_conv")
                if flip_test:
                    pred = merge_mirrored(pred, f"{name}_{kind}_pred", num_anchors,
                                          is_loc=kind == "loc")
                # (B, A*width, H, W) -> (B, H, W, A*width) -> (B, H*W*A, width)
                pred = mx.sym.transpose(pred, axes=(0, 2, 3, 1),
                                        name=f"{name}_{kind}_pred_nhwc")
                outputs.append(mx.sym.Reshape(data=pred, shape=(0, -1, width),
                                              name=f"{name}_{kind}_pred_rows"))

        step = (steps[k], steps[k]) if steps else (-1.0, -1.0)
        if fast_ops:
            # anchors depend on the map's shape only: MultiBoxPrior's backward writes a zero
            # gradient of the whole feature map, which is then summed into its real gradient
            layer = mx.sym.BlockGrad(layer, name=f"{name}_anchor_input")
        anchors = mx.sym.contrib.MultiBoxPrior(layer, sizes=_tuple_str(sizes[k]),
                                               ratios=_tuple_str(ratios[k]), clip=clip,
                                               steps=step, name=f"{name}_anchors")
        anchor_layers.append(anchors)                     # (1, H*W*A, 4)

    # Every concatenation joins 3-D (B, rows, width) tensors. MXNet 1.9's MKL-DNN Concat
    # (used for 2-D and 4-D inputs only) leaks about 2.5 KB of native memory per training
    # step: flattened 2-D concats here made a soak run's resident memory grow by
    # ~20 KB a batch (docs/notes/RELIABILITY.md, "Memory"). The 3-D form takes MXNet's own Concat.
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


# Output channels of a convolution that MKL-DNN runs with its AVX-512 kernels; other counts
# (an SSD head's 4 * anchors or (classes + 1) * anchors: 16, 20, 24, 30, 84, 126 ...) fall back
# to its GEMM or AVX2 kernels, 2-3x slower per output channel (docs/notes/SPEED.md, issue 18).
_FAST_CHANNELS = 16
L2_NORM_EPS = 1e-10          # L2Normalization's default eps


def feature_channels(layer: mx.sym.Symbol) -> int | None:
    """Channels of a feature map symbol (independent of the input size), None if unknown."""
    try:
        _, out_shapes, _ = layer.infer_shape_partial(data=(1, 3, 512, 512))
    except mx.base.MXNetError:
        return None
    if not out_shapes or not out_shapes[0] or len(out_shapes[0]) != 4:
        return None
    channels = int(out_shapes[0][1])
    return channels if channels > 0 else None


def fused_predictions(layer: mx.sym.Symbol, name: str, channels: int, num_anchors: int,
                      widths: tuple[int, int]) -> tuple[mx.sym.Symbol, mx.sym.Symbol]:
    """The loc and cls prediction convolutions of one feature map as one convolution.

    The parameters are the plain head's (``{name}_loc_pred_conv_weight`` (4A, C, 3, 3),
    ``..._bias``, ``{name}_cls_pred_conv_*``): they are stacked along the output channels,
    with zero filters (no parameters, no gradient) up to a multiple of 16 channels, so MKL-DNN
    reads the feature map once and runs its fast kernels: on ResNet-50-300's 19x19x1024 map,
    52 -> 20 ms for forward + backward at batch 8. Each output channel is the same
    3x3xC dot product as in two separate convolutions; only the summation order differs.

    Parameters
    ----------
    layer : mx.sym.Symbol
        Feature map (B, C, H, W).
    name : str
        Its name (prefix of the parameter names).
    channels : int
        C.
    num_anchors : int
        Anchors per location A.
    widths : (int, int)
        Values per anchor of loc (4) and cls (classes + 1).

    Returns
    -------
    loc, cls : mx.sym.Symbol
        (B, H*W*A, 4) and (B, H*W*A, classes + 1), as the plain head's rows.
    """
    weights, biases, counts = [], [], []
    for kind, width in zip(("loc", "cls"), widths):
        count = num_anchors * width
        weight = mx.sym.Variable(name=f"{name}_{kind}_pred_conv_weight",
                                 shape=(count, channels, 3, 3))
        bias = mx.sym.Variable(name=f"{name}_{kind}_pred_conv_bias", shape=(count,),
                               init=mx.init.Constant(0.0), attr={"__lr_mult__": "2.0"})
        # 3-D pieces: MXNet 1.9's MKL-DNN Concat (2-D/4-D inputs) leaks in training
        weights.append(mx.sym.Reshape(weight, shape=(count, channels, 9),
                                      name=f"{name}_{kind}_pred_weight_rows"))
        biases.append(mx.sym.Reshape(bias, shape=(count, 1, 1),
                                     name=f"{name}_{kind}_pred_bias_rows"))
        counts.append(count)
    total = sum(counts)
    padding = -total % _FAST_CHANNELS
    if padding:
        weights.append(mx.sym.zeros((padding, channels, 9), name=f"{name}_pred_weight_pad"))
        biases.append(mx.sym.zeros((padding, 1, 1), name=f"{name}_pred_bias_pad"))
    weight = mx.sym.Reshape(mx.sym.Concat(*weights, dim=0, name=f"{name}_pred_weight_stack"),
                            shape=(total + padding, channels, 3, 3), name=f"{name}_pred_weight")
    bias = mx.sym.Reshape(mx.sym.Concat(*biases, dim=0, name=f"{name}_pred_bias_stack"),
                          shape=(total + padding,), name=f"{name}_pred_bias")
    pred = mx.sym.Convolution(data=layer, weight=weight, bias=bias, kernel=(3, 3), pad=(1, 1),
                              num_filter=total + padding, name=f"{name}_pred_conv")
    # (B, channels, H, W) -> (B, H, W, channels) -> per kind (B, H*W*A, width)
    pred = mx.sym.transpose(pred, axes=(0, 2, 3, 1), name=f"{name}_pred_nhwc")
    outputs, begin = [], 0
    for kind, width, count in zip(("loc", "cls"), widths, counts):
        part = mx.sym.slice_axis(pred, axis=3, begin=begin, end=begin + count,
                                 name=f"{name}_{kind}_pred_nhwc")
        outputs.append(mx.sym.Reshape(part, shape=(0, -1, width), name=f"{name}_{kind}_pred_rows"))
        begin += count
    return outputs[0], outputs[1]


def scaled_l2_normalization(layer: mx.sym.Symbol, scale: mx.sym.Symbol, channels: int,
                            name: str) -> mx.sym.Symbol:
    """``scale * L2Normalization(layer, mode='channel')`` built from convolutions.

    The channel sum of squares is a 1x1 convolution with fixed ones, and ``scale / norm`` a
    1x1 convolution of the inverse norm with the scale as its weight, so the per-channel
    reduction of the scale's gradient runs in MKL-DNN instead of ``broadcast_mul``'s backward:
    on VGG16-SSD300's 38x38x512 ``relu4_3`` at batch 8, 145 -> 22 ms for forward + backward.
    Same eps (1e-10) as ``L2Normalization``; same values up to float rounding.

    Parameters
    ----------
    layer : mx.sym.Symbol
        Feature map (B, C, H, W).
    scale : mx.sym.Symbol
        The ``{name}_scale`` variable, (1, C, 1, 1).
    channels : int
        C.
    name : str
        Prefix of the new nodes.

    Returns
    -------
    mx.sym.Symbol
        (B, C, H, W).
    """
    ones = mx.sym.BlockGrad(mx.sym.ones((1, channels, 1, 1), name=f"{name}_norm_ones"),
                            name=f"{name}_norm_ones_fixed")
    squares = mx.sym.square(layer, name=f"{name}_norm_sq")
    sum_sq = mx.sym.Convolution(data=squares, weight=ones, num_filter=1, kernel=(1, 1),
                                no_bias=True, name=f"{name}_norm_sum")        # (B, 1, H, W)
    inv_norm = mx.sym.rsqrt(sum_sq + L2_NORM_EPS, name=f"{name}_norm_inv")
    factor = mx.sym.Convolution(data=inv_norm, weight=mx.sym.Reshape(scale, shape=(channels, 1, 1, 1)),
                                num_filter=channels, kernel=(1, 1), no_bias=True,
                                name=f"{name}_scale_factor")                   # (B, C, H, W)
    return mx.sym.elemwise_mul(layer, factor, name=f"{name}_scale_mul")
