"""VGG16-reduced backbone of SSD (fc6/fc7 as convolutions, dilated fc6).

Layer names follow the original (``conv1_1`` ... ``conv5_3``, ``fc6``, ``fc7``, ``relu4_3``,
``relu7``) so that the ImageNet ``vgg16_reduced`` weights and SSD checkpoints load unchanged.
"""
from __future__ import annotations

from config.mxnet_compat import mx

# (group, number of 3x3 convolutions, filters)
_GROUPS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def get_body(**kwargs) -> mx.sym.Symbol:
    """Build the trunk up to ``relu7``.

    Parameters
    ----------
    **kwargs
        Ignored (uniform backbone interface).

    Returns
    -------
    mx.sym.Symbol
        ``relu7``: (B, 1024, H/16, W/16) (with pool3's ``full`` convention, 300 -> 19).
    """
    net = mx.sym.Variable("data")
    for group, num_convs, num_filter in _GROUPS:
        for i in range(1, num_convs + 1):
            net = mx.sym.Convolution(data=net, kernel=(3, 3), pad=(1, 1), num_filter=num_filter,
                                     name=f"conv{group}_{i}")
            net = mx.sym.Activation(data=net, act_type="relu", name=f"relu{group}_{i}")
        if group == 5:
            # pool5 keeps the resolution: 3x3, stride 1, pad 1
            net = mx.sym.Pooling(data=net, pool_type="max", kernel=(3, 3), stride=(1, 1),
                                 pad=(1, 1), name="pool5")
        else:
            # pool3 rounds up (75 -> 38 at 300 px), as Caffe's SSD
            convention = "full" if group == 3 else "valid"
            net = mx.sym.Pooling(data=net, pool_type="max", kernel=(2, 2), stride=(2, 2),
                                 pooling_convention=convention, name=f"pool{group}")
    net = mx.sym.Convolution(data=net, kernel=(3, 3), pad=(6, 6), dilate=(6, 6),
                             num_filter=1024, name="fc6")
    net = mx.sym.Activation(data=net, act_type="relu", name="relu6")
    net = mx.sym.Convolution(data=net, kernel=(1, 1), num_filter=1024, name="fc7")
    return mx.sym.Activation(data=net, act_type="relu", name="relu7")
