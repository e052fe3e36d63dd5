"""MobileNet-v1 backbone, names as zhreshold/mxnet-ssd's ``symbol/mobilenet.py``.

Each block is ``{name}_conv2d`` (no bias) + ``{name}_batchnorm`` + ``{name}_relu`` with names
``conv_1``, ``conv_2_dw``, ``conv_2``, ..., ``conv_14_dw``, ``conv_14``. SSD taps ``conv_12_relu``
(stride 16) and ``conv_14_relu`` (stride 32).
"""
from __future__ import annotations

from config.mxnet_compat import mx

# (block index, output filters, stride of the depthwise 3x3) for blocks 2..14
_BLOCKS = ((2, 64, 1), (3, 128, 2), (4, 128, 1), (5, 256, 2), (6, 256, 1), (7, 512, 2),
           (8, 512, 1), (9, 512, 1), (10, 512, 1), (11, 512, 1), (12, 512, 1),
           (13, 1024, 2), (14, 1024, 1))


def _conv_bn_relu(data: mx.sym.Symbol, name: str, num_filter: int, kernel: int, stride: int,
                  num_group: int = 1) -> mx.sym.Symbol:
    """Convolution (no bias) + BatchNorm (fixed gamma) + ReLU."""
    pad = kernel // 2
    conv = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(kernel, kernel),
                              stride=(stride, stride), pad=(pad, pad), num_group=num_group,
                              no_bias=True, name=f"{name}_conv2d")
    bn = mx.sym.BatchNorm(data=conv, fix_gamma=True, name=f"{name}_batchnorm")
    return mx.sym.Activation(data=bn, act_type="relu", name=f"{name}_relu")


def get_body(**kwargs) -> mx.sym.Symbol:
    """Build the trunk up to ``conv_14_relu``.

    Parameters
    ----------
    **kwargs
        Ignored (uniform backbone interface).

    Returns
    -------
    mx.sym.Symbol
        ``conv_14_relu``: (B, 1024, H/32, W/32).
    """
    net = _conv_bn_relu(mx.sym.Variable("data"), "conv_1", 32, 3, 2)
    channels = 32
    for index, num_filter, stride in _BLOCKS:
        net = _conv_bn_relu(net, f"conv_{index}_dw", channels, 3, stride, num_group=channels)
        net = _conv_bn_relu(net, f"conv_{index}", num_filter, 1, 1)
        channels = num_filter
    return net
