"""``tiny``: a small BatchNorm backbone for CPU training from scratch (not in the original).

Five 3x3 stride-2 stages ``tiny_conv{i}`` (no bias) + ``tiny_bn{i}`` + ``tiny_relu{i}``;
SSD taps ``tiny_relu3`` (stride 8), ``tiny_relu4`` (16) and ``tiny_relu5`` (32).
"""
from __future__ import annotations

import mxnet as mx

# output filters of each stride-2 stage
STAGE_FILTERS = (16, 32, 64, 128, 128)


def get_body(**kwargs) -> mx.sym.Symbol:
    """Build the trunk up to ``tiny_relu5``.

    Parameters
    ----------
    **kwargs
        Ignored (uniform backbone interface).

    Returns
    -------
    mx.sym.Symbol
        ``tiny_relu5``: (B, 128, H/32, W/32).
    """
    net = mx.sym.Variable("data")
    for i, num_filter in enumerate(STAGE_FILTERS, start=1):
        net = mx.sym.Convolution(data=net, num_filter=num_filter, kernel=(3, 3), stride=(2, 2),
                                 pad=(1, 1), no_bias=True, name=f"tiny_conv{i}")
        net = mx.sym.BatchNorm(data=net, fix_gamma=False, name=f"tiny_bn{i}")
        net = mx.sym.Activation(data=net, act_type="relu", name=f"tiny_relu{i}")
    return net
