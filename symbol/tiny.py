"""``tiny``: a small BatchNorm backbone for CPU training from scratch (not in the original).

Five stages, each a 3x3 stride-2 convolution ``tiny_conv{i}`` (no bias) + ``tiny_bn{i}`` +
ReLU; stages 3-5 (the ones SSD detects on) add a 3x3 stride-1 ``tiny_conv{i}b`` + ``tiny_bn{i}b``
+ ReLU. SSD taps the stage outputs ``tiny_relu3`` (stride 8), ``tiny_relu4`` (16) and
``tiny_relu5`` (32).

``stage_depth`` sets the convolutions per stage: a stage of depth 2 is ``tiny_conv{i}`` /
``tiny_bn{i}`` / ``tiny_relu{i}a`` then ``tiny_conv{i}b`` / ``tiny_bn{i}b`` / ``tiny_relu{i}``,
so a stage output keeps its name ``tiny_relu{i}`` (and the detection heads theirs) whatever the
depth. The second convolution of stages 3-5 learned faster per epoch for its ~15 % more time
per epoch (docs/RECIPE.md).
"""
from __future__ import annotations

from collections.abc import Sequence

from config.mxnet_compat import mx

# output filters of each stride-2 stage
STAGE_FILTERS = (16, 32, 64, 128, 128)
# 3x3 convolutions per stage (the first has stride 2)
STAGE_DEPTH = (1, 1, 2, 2, 2)


def _conv_bn_relu(net: mx.sym.Symbol, num_filter: int, stride: int, conv_name: str,
                  bn_name: str, relu_name: str) -> mx.sym.Symbol:
    net = mx.sym.Convolution(data=net, num_filter=num_filter, kernel=(3, 3),
                             stride=(stride, stride), pad=(1, 1), no_bias=True, name=conv_name)
    net = mx.sym.BatchNorm(data=net, fix_gamma=False, name=bn_name)
    return mx.sym.Activation(data=net, act_type="relu", name=relu_name)


def get_body(stage_depth: Sequence[int] = STAGE_DEPTH,
             stage_filters: Sequence[int] = STAGE_FILTERS, **kwargs) -> mx.sym.Symbol:
    """Build the trunk up to ``tiny_relu5``.

    Parameters
    ----------
    stage_depth : sequence of int
        3x3 convolutions in each of the five stages (>= 1; the first has stride 2).
    stage_filters : sequence of int
        Output channels of each stage.
    **kwargs
        Ignored (uniform backbone interface).

    Returns
    -------
    mx.sym.Symbol
        ``tiny_relu5``: (B, stage_filters[-1], H/32, W/32).
    """
    if len(stage_depth) != len(stage_filters) or min(stage_depth) < 1:
        raise ValueError(f"stage_depth {tuple(stage_depth)} needs one entry >= 1 per stage "
                         f"({len(stage_filters)} stages)")
    net = mx.sym.Variable("data")
    for i, (num_filter, depth) in enumerate(zip(stage_filters, stage_depth), start=1):
        for j in range(depth):
            suffix = "" if j == 0 else chr(ord("a") + j)        # '', 'b', 'c', ...
            relu = f"tiny_relu{i}" if j == depth - 1 else f"tiny_relu{i}{chr(ord('a') + j)}"
            net = _conv_bn_relu(net, num_filter, 2 if j == 0 else 1, f"tiny_conv{i}{suffix}",
                                f"tiny_bn{i}{suffix}", relu)
    return net
