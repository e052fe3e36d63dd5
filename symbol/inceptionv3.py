"""Inception-v3 backbone, names as MXNet's image-classification ``inception-v3`` symbol.

Every convolution is ``{name}_conv2d`` (no bias) + ``{name}_batchnorm`` + ``{name}_relu``;
blocks end in ``ch_concat_{block}_chconcat``. SSD taps ``ch_concat_mixed_7_chconcat``
(stride 16) and ``ch_concat_mixed_10_chconcat`` (stride 32).
"""
from __future__ import annotations

from collections.abc import Sequence

from config.mxnet_compat import mx


def _conv(data: mx.sym.Symbol, num_filter: int, name: str, kernel: tuple[int, int] = (1, 1),
          stride: int = 1, pad: tuple[int, int] = (0, 0)) -> mx.sym.Symbol:
    """Convolution (no bias) + BatchNorm (fixed gamma, eps 1e-3) + ReLU."""
    conv = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=kernel,
                              stride=(stride, stride), pad=pad, no_bias=True,
                              name=f"{name}_conv2d")
    # eps 1e-3 (MXNet's default), as the original's example/ssd/symbol/inceptionv3.py: its
    # checkpoints were trained with it (image-classification's inception-v3 uses 2e-5)
    bn = mx.sym.BatchNorm(data=conv, eps=1e-3, fix_gamma=True, name=f"{name}_batchnorm")
    return mx.sym.Activation(data=bn, act_type="relu", name=f"{name}_relu")


def _tower(data: mx.sym.Symbol, name: str,
           layers: Sequence[tuple[int, tuple[int, int], int, tuple[int, int]]]) -> mx.sym.Symbol:
    """Chain of convolutions named ``{name}_conv``, ``{name}_conv_1``, ``{name}_conv_2``, ..."""
    for i, (num_filter, kernel, stride, pad) in enumerate(layers):
        suffix = "_conv" if i == 0 else f"_conv_{i}"
        data = _conv(data, num_filter, name + suffix, kernel, stride, pad)
    return data


def _pool(data: mx.sym.Symbol, pool_type: str, name: str, stride: int) -> mx.sym.Symbol:
    """3x3 pooling branch, padded only when it keeps the resolution."""
    pad = (1, 1) if stride == 1 else (0, 0)
    return mx.sym.Pooling(data=data, kernel=(3, 3), stride=(stride, stride), pad=pad,
                          pool_type=pool_type, name=name)


def _concat(branches: Sequence[mx.sym.Symbol], name: str) -> mx.sym.Symbol:
    return mx.sym.Concat(*branches, name=f"ch_concat_{name}_chconcat")


_K1, _K3, _K5 = (1, 1), (3, 3), (5, 5)
_K17, _K71, _K13, _K31 = (1, 7), (7, 1), (1, 3), (3, 1)
_P0, _P1, _P2 = (0, 0), (1, 1), (2, 2)
_P03, _P30, _P01, _P10 = (0, 3), (3, 0), (0, 1), (1, 0)


def _block_a(data, num_1x1, num_3x3_red, num_3x3_1, num_3x3_2, num_5x5_red, num_5x5, pool,
             proj, name):
    """35x35 block: 1x1, 5x5, double 3x3, pool-projection."""
    branches = [
        _conv(data, num_1x1, f"{name}_conv"),
        _tower(data, f"{name}_tower", [(num_5x5_red, _K1, 1, _P0), (num_5x5, _K5, 1, _P2)]),
        _tower(data, f"{name}_tower_1", [(num_3x3_red, _K1, 1, _P0), (num_3x3_1, _K3, 1, _P1),
                                         (num_3x3_2, _K3, 1, _P1)]),
        _conv(_pool(data, pool, f"{pool}_pool_{name}_pool", 1), proj, f"{name}_tower_2_conv"),
    ]
    return _concat(branches, name)


def _block_b(data, num_3x3, num_d3x3_red, num_d3x3_1, num_d3x3_2, name):
    """First grid reduction 35 -> 17."""
    branches = [
        _conv(data, num_3x3, f"{name}_conv", _K3, 2),
        _tower(data, f"{name}_tower", [(num_d3x3_red, _K1, 1, _P0), (num_d3x3_1, _K3, 1, _P1),
                                       (num_d3x3_2, _K3, 2, _P0)]),
        _pool(data, "max", f"max_pool_{name}_pool", 2),
    ]
    return _concat(branches, name)


def _block_c(data, num_1x1, d7, q7, proj, name):
    """17x17 block with factorised 7x7 towers; ``d7`` 3 widths, ``q7`` 5 widths."""
    branches = [
        _conv(data, num_1x1, f"{name}_conv"),
        _tower(data, f"{name}_tower", [(d7[0], _K1, 1, _P0), (d7[1], _K17, 1, _P03),
                                       (d7[2], _K71, 1, _P30)]),
        _tower(data, f"{name}_tower_1", [(q7[0], _K1, 1, _P0), (q7[1], _K71, 1, _P30),
                                         (q7[2], _K17, 1, _P03), (q7[3], _K71, 1, _P30),
                                         (q7[4], _K17, 1, _P03)]),
        _conv(_pool(data, "avg", f"avg_pool_{name}_pool", 1), proj, f"{name}_tower_2_conv"),
    ]
    return _concat(branches, name)


def _block_d(data, num_3x3_red, num_3x3, d7, name):
    """Second grid reduction 17 -> 8."""
    branches = [
        _tower(data, f"{name}_tower", [(num_3x3_red, _K1, 1, _P0), (num_3x3, _K3, 2, _P0)]),
        _tower(data, f"{name}_tower_1", [(d7[0], _K1, 1, _P0), (d7[1], _K17, 1, _P03),
                                         (d7[2], _K71, 1, _P30), (d7[3], _K3, 2, _P0)]),
        _pool(data, "max", f"max_pool_{name}_pool", 2),
    ]
    return _concat(branches, name)


def _block_e(data, pool, name):
    """8x8 block with split 1x3/3x1 outputs (widths fixed by Inception-v3)."""
    tower = _conv(data, 384, f"{name}_tower_conv")
    tower_1 = _tower(data, f"{name}_tower_1", [(448, _K1, 1, _P0), (384, _K3, 1, _P1)])
    branches = [
        _conv(data, 320, f"{name}_conv"),
        _conv(tower, 384, f"{name}_tower_mixed_conv", _K13, 1, _P01),
        _conv(tower, 384, f"{name}_tower_mixed_conv_1", _K31, 1, _P10),
        _conv(tower_1, 384, f"{name}_tower_1_mixed_conv", _K13, 1, _P01),
        _conv(tower_1, 384, f"{name}_tower_1_mixed_conv_1", _K31, 1, _P10),
        _conv(_pool(data, pool, f"{pool}_pool_{name}_pool", 1), 192, f"{name}_tower_2_conv"),
    ]
    return _concat(branches, name)


def get_body(**kwargs) -> mx.sym.Symbol:
    """Build the trunk up to ``ch_concat_mixed_10_chconcat``.

    Parameters
    ----------
    **kwargs
        Ignored (uniform backbone interface).

    Returns
    -------
    mx.sym.Symbol
        (B, 2048, 8, 8) at 299 px.
    """
    net = _conv(mx.sym.Variable("data"), 32, "conv", _K3, 2)
    net = _conv(net, 32, "conv_1", _K3)
    net = _conv(net, 64, "conv_2", _K3, 1, _P1)
    net = mx.sym.Pooling(data=net, kernel=(3, 3), stride=(2, 2), pool_type="max", name="pool")
    net = _conv(net, 80, "conv_3")
    net = _conv(net, 192, "conv_4", _K3)
    net = mx.sym.Pooling(data=net, kernel=(3, 3), stride=(2, 2), pool_type="max", name="pool1")
    net = _block_a(net, 64, 64, 96, 96, 48, 64, "avg", 32, "mixed")
    net = _block_a(net, 64, 64, 96, 96, 48, 64, "avg", 64, "mixed_1")
    net = _block_a(net, 64, 64, 96, 96, 48, 64, "avg", 64, "mixed_2")
    net = _block_b(net, 384, 64, 96, 96, "mixed_3")
    net = _block_c(net, 192, (128, 128, 192), (128, 128, 128, 128, 192), 192, "mixed_4")
    net = _block_c(net, 192, (160, 160, 192), (160, 160, 160, 160, 192), 192, "mixed_5")
    net = _block_c(net, 192, (160, 160, 192), (160, 160, 160, 160, 192), 192, "mixed_6")
    net = _block_c(net, 192, (192, 192, 192), (192, 192, 192, 192, 192), 192, "mixed_7")
    net = _block_d(net, 192, 320, (192, 192, 192, 192), "mixed_8")
    net = _block_e(net, "avg", "mixed_9")
    return _block_e(net, "max", "mixed_10")
