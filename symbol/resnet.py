"""ResNet (v2, pre-activation bottleneck) backbone, names as MXNet's image-classification resnet.

Parameter names: ``bn_data``, ``conv0``, ``bn0``, ``stage{s}_unit{u}_bn{1,2,3}``,
``stage{s}_unit{u}_conv{1,2,3}``, ``stage{s}_unit{u}_sc``. Unlike the original, every residual
sum is named ``stage{s}_unit{u}_plus`` (the original used the auto-generated ``_plusN``,
which changes when a second network is built in the same process).
"""
from __future__ import annotations

from config.mxnet_compat import mx

# depth -> units per stage (bottleneck blocks)
UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_FILTERS = (64, 256, 512, 1024, 2048)
_BN_EPS = 2e-5
_BN_MOM = 0.9


def _bn_relu(data: mx.sym.Symbol, name: str, relu_name: str) -> mx.sym.Symbol:
    """BatchNorm (learned gamma) followed by ReLU."""
    bn = mx.sym.BatchNorm(data=data, fix_gamma=False, eps=_BN_EPS, momentum=_BN_MOM, name=name)
    return mx.sym.Activation(data=bn, act_type="relu", name=relu_name)


def residual_unit(data: mx.sym.Symbol, num_filter: int, stride: int, dim_match: bool,
                  name: str, fast_ops: bool = False) -> mx.sym.Symbol:
    """Pre-activation bottleneck unit; output named ``{name}_plus``.

    Parameters
    ----------
    data : mx.sym.Symbol
        Input.
    num_filter : int
        Output channels (the bottleneck uses a quarter).
    stride : int
        Stride of the 3x3 convolution (and of the projection shortcut).
    dim_match : bool
        Identity shortcut when True, else a 1x1 projection ``{name}_sc``.
    name : str
        ``stage{s}_unit{u}``.
    fast_ops : bool
        Training-speed form of a strided projection with at least
        ``SLICED_PROJECTION_MIN_FILTERS`` outputs (:func:`strided_projection`).

    Returns
    -------
    mx.sym.Symbol
        The residual sum.
    """
    mid = num_filter // 4
    act1 = _bn_relu(data, f"{name}_bn1", f"{name}_relu1")
    conv1 = mx.sym.Convolution(data=act1, num_filter=mid, kernel=(1, 1), no_bias=True,
                               name=f"{name}_conv1")
    act2 = _bn_relu(conv1, f"{name}_bn2", f"{name}_relu2")
    conv2 = mx.sym.Convolution(data=act2, num_filter=mid, kernel=(3, 3), stride=(stride, stride),
                               pad=(1, 1), no_bias=True, name=f"{name}_conv2")
    act3 = _bn_relu(conv2, f"{name}_bn3", f"{name}_relu3")
    conv3 = mx.sym.Convolution(data=act3, num_filter=num_filter, kernel=(1, 1), no_bias=True,
                               name=f"{name}_conv3")
    if dim_match:
        shortcut = data
    elif fast_ops and stride > 1 and num_filter >= SLICED_PROJECTION_MIN_FILTERS:
        shortcut = strided_projection(act1, num_filter, stride, f"{name}_sc")
    else:
        shortcut = mx.sym.Convolution(data=act1, num_filter=num_filter, kernel=(1, 1),
                                      stride=(stride, stride), no_bias=True, name=f"{name}_sc")
    return mx.sym.elemwise_add(conv3, shortcut, name=f"{name}_plus")


# The slice form pays off for the last stage's projection only (ResNet-50-300, batch 8,
# forward + backward of the whole training graph, 8 interleaved rounds: 1080 ms with all three
# projections sliced, 1058 ms with the 2048-filter one only, 1098 ms with the 512- and
# 1024-filter ones only; docs/notes/SPEED.md)
SLICED_PROJECTION_MIN_FILTERS = 2048


def strided_projection(data: mx.sym.Symbol, num_filter: int, stride: int,
                       name: str) -> mx.sym.Symbol:
    """A 1x1 stride-``stride`` convolution as a strided slice + a 1x1 stride-1 convolution.

    The same parameter (``{name}_weight``) and the same products: a 1x1 convolution with
    stride s reads only every s-th pixel. MKL-DNN's backward of the strided 1x1 convolution is
    about twice as slow as its forward; after the slice it runs its 1x1 kernels (forward +
    backward of ResNet-50-300's stage-4 projection at batch 8: 108 -> 61 ms, docs/notes/SPEED.md).
    """
    every = mx.sym.slice(data, begin=(None, None, None, None), end=(None, None, None, None),
                         step=(1, 1, stride, stride), name=f"{name}_subsample")
    return mx.sym.Convolution(data=every, num_filter=num_filter, kernel=(1, 1), no_bias=True,
                              name=name)


def get_body(num_layers: int = 50, fast_ops: bool = False, **kwargs) -> mx.sym.Symbol:
    """Build the trunk up to the last residual unit (stride 32).

    Parameters
    ----------
    num_layers : int
        50, 101 or 152.
    fast_ops : bool
        Training-speed forms, same parameters (:func:`strided_projection`).
    **kwargs
        Ignored (uniform backbone interface).

    Returns
    -------
    mx.sym.Symbol
        ``stage4_unit{n}_plus``: (B, 2048, H/32, W/32).
    """
    if num_layers not in UNITS:
        raise ValueError(f"num_layers={num_layers} is not supported; valid: {sorted(UNITS)}")
    data = mx.sym.Variable("data")
    data = mx.sym.BatchNorm(data=data, fix_gamma=True, eps=_BN_EPS, momentum=_BN_MOM,
                            name="bn_data")
    body = mx.sym.Convolution(data=data, num_filter=_FILTERS[0], kernel=(7, 7), stride=(2, 2),
                              pad=(3, 3), no_bias=True, name="conv0")
    body = _bn_relu(body, "bn0", "relu0")
    body = mx.sym.Pooling(data=body, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max",
                          name="pool0")
    for stage, num_units in enumerate(UNITS[num_layers], start=1):
        for unit in range(1, num_units + 1):
            stride = 2 if unit == 1 and stage > 1 else 1
            body = residual_unit(body, _FILTERS[stage], stride, dim_match=unit > 1,
                                 name=f"stage{stage}_unit{unit}", fast_ops=fast_ops)
    return body
