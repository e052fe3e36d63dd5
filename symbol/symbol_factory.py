"""Network presets as data, and the public symbol builders.

Each preset is a literal dict keyed by network name and input side. ``get_config`` returns a
validated copy; ``get_symbol_train`` / ``get_symbol`` build the graphs. The presets reproduce
the original example (REFERENCE.md section 3.2); ``tiny`` is ours (docs/NETWORKS.md).

Config keys
-----------
backbone : module under ``symbol/`` providing ``get_body(**backbone_args)``.
backbone_args : keyword arguments of that ``get_body``.
from_layers : backbone layer names to detect on, ``''`` for an extra layer on the previous one.
num_filters / strides / pads : per layer; extra layers get a 1x1 conv (``max(min_filter,
    nf // 2)`` filters) and a 3x3 conv (nf, stride, pad); -1 for backbone layers.
sizes : per layer ``[min, sqrt(min*next)]`` anchor sizes, fraction of the image side.
ratios : per layer aspect ratios (a flat list is applied to every layer).
normalizations : per layer L2Normalization scale init, -1 for none (an int applies to all).
steps : per layer anchor step as a fraction of the image, or empty for 1 / map size.
min_filter : minimum width of the extra layers' 1x1 convolution.
extra_batchnorm : BatchNorm after each extra-layer convolution (optional, default False: the
    original's extra layers have none).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

from config.mxnet_compat import mx

from symbol import symbol_builder

_R3 = [1, 2, 0.5]
_R5 = [1, 2, 0.5, 3, 1.0 / 3]

# SSD300-style sizes and ratios (6 layers), shared by vgg300, resnet and inception
_SIZES_6 = [[.1, .141], [.2, .272], [.37, .447], [.54, .619], [.71, .79], [.88, .961]]
_RATIOS_6 = [_R3, _R5, _R5, _R5, _R3, _R3]
# SSD512-style sizes and ratios (7 layers), shared by vgg512 and mobilenet
_SIZES_7 = [[.07, .1025], [.15, .2121], [.3, .3674], [.45, .5196], [.6, .6708], [.75, .8216],
            [.9, .9721]]
_RATIOS_7 = [_R3, _R5, _R5, _R5, _R5, _R3, _R3]

_VGG16_300 = {
    "backbone": "vgg16_reduced", "backbone_args": {},
    "from_layers": ["relu4_3", "relu7", "", "", "", ""],
    "num_filters": [512, -1, 512, 256, 256, 256],
    "strides": [-1, -1, 2, 2, 1, 1],
    "pads": [-1, -1, 1, 1, 0, 0],
    "sizes": _SIZES_6, "ratios": _RATIOS_6,
    "normalizations": [20, -1, -1, -1, -1, -1],
    "steps": [x / 300.0 for x in (8, 16, 32, 64, 100, 300)],
    "min_filter": 128,
}
# SSD512 as in the paper: the last 3x3 layer (pad 1) has stride 2, giving a 1x1 map and
# 24564 anchors. The original used stride 1 there: a 2x2 map (24576 anchors) whose cells
# (0,1), (1,0), (1,1) have anchor centres outside the image. Both have the same parameters and
# the kept cell computes exactly the original's cell (0,0), so its checkpoints load unchanged;
# strides=[-1, -1, 2, 2, 2, 2, 1] rebuilds the original (docs/NETWORKS.md).
_VGG16_512 = {
    "backbone": "vgg16_reduced", "backbone_args": {},
    "from_layers": ["relu4_3", "relu7", "", "", "", "", ""],
    "num_filters": [512, -1, 512, 256, 256, 256, 256],
    "strides": [-1, -1, 2, 2, 2, 2, 2],
    "pads": [-1, -1, 1, 1, 1, 1, 1],
    "sizes": _SIZES_7, "ratios": _RATIOS_7,
    "normalizations": [20, -1, -1, -1, -1, -1, -1],
    "steps": [x / 512.0 for x in (8, 16, 32, 64, 128, 256, 512)],
    "min_filter": 128,
}
_RESNET50 = {
    "backbone": "resnet", "backbone_args": {"num_layers": 50},
    "from_layers": ["stage3_unit6_plus", "stage4_unit3_plus", "", "", "", ""],
    "num_filters": [-1, -1, 512, 256, 256, 128],
    "strides": [-1, -1, 2, 2, 2, 2],
    "pads": [-1, -1, 1, 1, 1, 1],
    "sizes": _SIZES_6, "ratios": _RATIOS_6,
    "normalizations": -1, "steps": [], "min_filter": 128,
}
_RESNET101 = {
    "backbone": "resnet", "backbone_args": {"num_layers": 101},
    "from_layers": ["stage3_unit23_plus", "stage4_unit3_plus", "", "", "", ""],
    "num_filters": [-1, -1, 512, 256, 256, 128],
    "strides": [-1, -1, 2, 2, 2, 2],
    "pads": [-1, -1, 1, 1, 1, 1],
    "sizes": _SIZES_6, "ratios": _RATIOS_6,
    "normalizations": -1, "steps": [], "min_filter": 128,
}
_INCEPTIONV3 = {
    "backbone": "inceptionv3", "backbone_args": {},
    "from_layers": ["ch_concat_mixed_7_chconcat", "ch_concat_mixed_10_chconcat", "", "", "", ""],
    "num_filters": [-1, -1, 512, 256, 256, 128],
    "strides": [-1, -1, 2, 2, 2, 2],
    "pads": [-1, -1, 1, 1, 1, 1],
    "sizes": _SIZES_6, "ratios": _RATIOS_6,
    "normalizations": -1, "steps": [], "min_filter": 128,
}
_MOBILENET = {
    "backbone": "mobilenet", "backbone_args": {},
    "from_layers": ["conv_12_relu", "conv_14_relu", "", "", "", "", ""],
    "num_filters": [-1, -1, 512, 256, 256, 256, 256],
    "strides": [-1, -1, 2, 2, 2, 2, 2],
    "pads": [-1, -1, 1, 1, 1, 1, 1],
    "sizes": _SIZES_7, "ratios": _RATIOS_7,
    "normalizations": -1, "steps": [], "min_filter": 128,
}
# Small CPU preset (ours): stride 8/16/32 backbone maps + two extra stride-2 layers. Anchor
# sizes are about 2.5-3.5x the anchor step of their map at 160 px (SSD300: ~3.8x), so an object
# anywhere in the image has several anchors with IoU > 0.5; they cover objects of about 9% to
# 100% of the image side (docs/RECIPE.md).
_TINY = {
    "backbone": "tiny", "backbone_args": {},
    "from_layers": ["tiny_relu3", "tiny_relu4", "tiny_relu5", "", ""],
    "num_filters": [-1, -1, -1, 128, 128],
    "strides": [-1, -1, -1, 2, 2],
    "pads": [-1, -1, -1, 1, 1],
    "sizes": [[.12, .17], [.25, .33], [.45, .55], [.65, .75], [.85, .95]],
    "ratios": [_R3, _R3, _R3, _R3, _R3],
    "normalizations": -1, "steps": [], "min_filter": 64,
}
_TINY_SHAPES = tuple(range(64, 513, 32))
# tiny for real photographs (ours, docs/RECIPE.md "Real photographs"): BatchNorm in the two
# extra layers too, so that every convolution of the network is normalised; the same anchors.
_TINY_PHOTO = dict(_TINY, extra_batchnorm=True)

PRESETS: dict[str, dict[int, dict]] = {
    "vgg16_reduced": {300: _VGG16_300, 512: _VGG16_512},
    "resnet50": {300: _RESNET50, 512: _RESNET50},
    "resnet101": {300: _RESNET101, 512: _RESNET101},
    "inceptionv3": {299: _INCEPTIONV3, 512: _INCEPTIONV3},
    "mobilenet": {300: _MOBILENET, 512: _MOBILENET},
    "tiny": {side: _TINY for side in _TINY_SHAPES},
    "tiny_photo": {side: _TINY_PHOTO for side in _TINY_SHAPES},
}

CONFIG_KEYS = ("backbone", "backbone_args", "from_layers", "num_filters", "strides", "pads",
               "sizes", "ratios", "normalizations", "steps", "min_filter", "extra_batchnorm")


def list_networks() -> list[str]:
    """Names of every preset, sorted."""
    return sorted(PRESETS)


def list_shapes(network: str) -> list[int]:
    """Input sides supported by ``network`` (ValueError for an unknown network)."""
    _check_network(network)
    return sorted(PRESETS[network])


def _check_network(network: str) -> None:
    if network not in PRESETS:
        raise ValueError(f"unknown network {network!r}; valid networks: "
                         f"{', '.join(list_networks())}")


def _describe_shapes(network: str) -> str:
    shapes = sorted(PRESETS[network])
    if len(shapes) > 4:
        return f"multiples of 32 from {shapes[0]} to {shapes[-1]}"
    return ", ".join(str(s) for s in shapes)


def data_side(data_shape: int | Sequence[int]) -> int:
    """Square input side from an int, ``(H, W)`` or ``(3, H, W)`` (ValueError otherwise)."""
    if isinstance(data_shape, (int,)) and not isinstance(data_shape, bool):
        return int(data_shape)
    if isinstance(data_shape, Sequence) and not isinstance(data_shape, str):
        dims = [int(d) for d in data_shape]
        if len(dims) == 3 and dims[0] == 3:
            dims = dims[1:]
        if len(dims) == 2 and dims[0] == dims[1]:
            return dims[0]
    raise ValueError(f"data_shape {data_shape!r} is not supported: give one int side "
                     "(square input) or (3, S, S)")


def get_config(network: str, data_shape: int | Sequence[int], **overrides) -> dict:
    """Validated copy of the preset for ``network`` at ``data_shape``.

    Parameters
    ----------
    network : str
        One of ``list_networks()``.
    data_shape : int or sequence of int
        Input side (or ``(3, S, S)``); one of ``list_shapes(network)``.
    **overrides
        Replacement values for config keys (``sizes=``, ``ratios=``, ``pads=`` ...).

    Returns
    -------
    dict
        Keys ``CONFIG_KEYS``; lists are fresh copies, ``ratios`` and ``normalizations``
        expanded to one entry per layer.

    Raises
    ------
    ValueError
        Unknown network, shape or key, or an inconsistent setting (the message names it).
    """
    _check_network(network)
    side = data_side(data_shape)
    if side not in PRESETS[network]:
        raise ValueError(f"data_shape {side} is not supported by {network}; valid: "
                         f"{_describe_shapes(network)}")
    unknown = sorted(set(overrides) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown network option(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(CONFIG_KEYS)}")
    config = copy.deepcopy(PRESETS[network][side])
    config.update(copy.deepcopy(overrides))
    return _normalize(config, f"{network}/{side}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _normalize(config: dict, where: str) -> dict:
    """Expand shorthand values and check every key; messages name the key and preset."""
    config.setdefault("extra_batchnorm", False)
    num_layers = len(config["from_layers"])
    if num_layers == 0 or not config["from_layers"][0]:
        raise ValueError(f"from_layers must start with a backbone layer name ({where})")
    if config["ratios"] and all(_is_number(r) for r in config["ratios"]):
        config["ratios"] = [list(config["ratios"]) for _ in range(num_layers)]
    if _is_number(config["normalizations"]):
        config["normalizations"] = [config["normalizations"]] * num_layers
    for key in ("num_filters", "strides", "pads", "sizes", "ratios", "normalizations"):
        config[key] = [list(v) if isinstance(v, (list, tuple)) else v for v in config[key]]
        if len(config[key]) != num_layers:
            raise ValueError(f"{key} has {len(config[key])} entries but from_layers has "
                             f"{num_layers} ({where})")
    config["steps"] = list(config["steps"])
    if config["steps"] and len(config["steps"]) != num_layers:
        raise ValueError(f"steps has {len(config['steps'])} entries but from_layers has "
                         f"{num_layers} ({where}); use [] for 1 / map size")
    for k, name in enumerate(config["from_layers"]):
        if not name and not (config["num_filters"][k] > 0 and config["strides"][k] > 0
                             and config["pads"][k] >= 0):
            raise ValueError(f"extra layer {k} needs num_filters > 0, strides > 0 and pads >= 0, "
                             f"got {config['num_filters'][k]}, {config['strides'][k]}, "
                             f"{config['pads'][k]} ({where})")
        if config["normalizations"][k] > 0 and config["num_filters"][k] <= 0:
            raise ValueError(f"normalizations[{k}] > 0 needs the channel count in "
                             f"num_filters[{k}] ({where})")
        sizes, ratios = config["sizes"][k], config["ratios"][k]
        if not sizes or not all(_is_number(s) and s > 0 for s in sizes):
            raise ValueError(f"sizes[{k}] = {sizes!r} must be a non-empty list of positive "
                             f"numbers ({where})")
        if not ratios or not all(_is_number(r) and r > 0 for r in ratios):
            raise ValueError(f"ratios[{k}] = {ratios!r} must be a non-empty list of positive "
                             f"numbers ({where})")
    if not (isinstance(config["min_filter"], int) and config["min_filter"] > 0):
        raise ValueError(f"min_filter = {config['min_filter']!r} must be a positive int ({where})")
    return config


def _check_detection_args(num_classes: int, nms_thresh: float, nms_topk: int) -> None:
    if not (isinstance(num_classes, int) and num_classes > 0):
        raise ValueError(f"num_classes = {num_classes!r} must be a positive int "
                         "(object classes, background excluded)")
    if not 0 < nms_thresh <= 1:
        raise ValueError(f"nms_thresh = {nms_thresh!r} must be in (0, 1]")
    if not (nms_topk == -1 or nms_topk > 0):
        raise ValueError(f"nms_topk = {nms_topk!r} must be > 0, or -1 for all")


def get_symbol_train(network: str, data_shape: int | Sequence[int], num_classes: int,
                     nms_thresh: float = 0.5, force_suppress: bool = False, nms_topk: int = 400,
                     with_det: bool = True, minimum_negative_samples: int = 0,
                     negative_mining_ratio: float = 3.0, fast_ops: bool = False,
                     **kwargs) -> mx.sym.Symbol:
    """Training graph of a preset.

    Parameters
    ----------
    network : str
        One of ``list_networks()``.
    data_shape : int or sequence of int
        Input side.
    num_classes : int
        Object classes, background excluded.
    nms_thresh, force_suppress, nms_topk
        MultiBoxDetection settings of ``det_out``.
    with_det : bool
        Add ``det_out``; bind for training with False (no NMS per batch), save with True.
    minimum_negative_samples : int
        Minimum mined negatives per image (0 as the original).
    negative_mining_ratio : float
        Mined negatives per matched anchor (3 as the original).
    fast_ops : bool
        Bind-for-training forms: one convolution for loc + cls padded to a multiple of 16
        channels, the L2 normalisation as convolutions (``symbol.common.multibox_layer``),
        ResNet's strided projections as slice + 1x1 (``symbol.resnet.strided_projection``);
        same parameters and function. Keep False for the graph you save.
    **kwargs
        Config overrides, see ``get_config``.

    Returns
    -------
    mx.sym.Symbol
        ``cls_prob`` (B, C+1, N), ``loc_loss`` (B, 4N), ``cls_label`` (B, N)
        and, with ``with_det``, ``det_out`` (B, N, 6).
    """
    config = get_config(network, data_shape, **kwargs)
    _check_detection_args(num_classes, nms_thresh, nms_topk)
    if minimum_negative_samples < 0:
        raise ValueError(f"minimum_negative_samples = {minimum_negative_samples} must be >= 0")
    if not negative_mining_ratio > 0:
        raise ValueError(f"negative_mining_ratio = {negative_mining_ratio} must be > 0")
    return symbol_builder.get_symbol_train(
        num_classes=num_classes, nms_thresh=nms_thresh, force_suppress=bool(force_suppress),
        nms_topk=nms_topk, with_det=with_det,
        minimum_negative_samples=int(minimum_negative_samples),
        # a whole ratio is written as the original wrote it ("3", not "3.0") in -symbol.json
        negative_mining_ratio=(int(negative_mining_ratio)
                               if float(negative_mining_ratio).is_integer()
                               else float(negative_mining_ratio)),
        fast_ops=bool(fast_ops),
        **config)


def get_symbol(network: str, data_shape: int | Sequence[int], num_classes: int,
               nms_thresh: float = 0.5, force_suppress: bool = False, nms_topk: int = 400,
               flip_test: bool = False, **kwargs) -> mx.sym.Symbol:
    """Inference graph of a preset.

    Parameters
    ----------
    network : str
        One of ``list_networks()``.
    data_shape : int or sequence of int
        Input side.
    num_classes : int
        Object classes, background excluded.
    nms_thresh, force_suppress, nms_topk
        MultiBoxDetection settings.
    flip_test : bool
        Average every image's predictions with its left-right mirror's (``--flip-test``;
        see :func:`check_flip_test`).
    **kwargs
        Config overrides, see ``get_config``.

    Returns
    -------
    mx.sym.Symbol
        ``detection_output`` (B, N, 6) ``[cls, score, x1, y1, x2, y2]``, cls -1 = none.
    """
    config = get_config(network, data_shape, **kwargs)
    _check_detection_args(num_classes, nms_thresh, nms_topk)
    if flip_test:
        check_flip_test(network, data_shape, **kwargs)
    return symbol_builder.get_symbol(num_classes=num_classes, nms_thresh=nms_thresh,
                                     force_suppress=bool(force_suppress), nms_topk=nms_topk,
                                     flip_test=bool(flip_test), **config)


def check_flip_test(network: str, data_shape: int | Sequence[int], **overrides) -> None:
    """Refuse ``--flip-test`` where the anchor grid does not mirror onto itself.

    The mirrored image's prediction at column ``W-1-j`` is averaged with the image's at column
    ``j``: the same anchor only when the anchor centres ``(j + 0.5) * step`` are symmetric
    about the middle, i.e. ``step * W == 1`` on every layer. Presets without ``steps`` (1 / map
    size) always are, and so is ``vgg16_reduced`` at 512; its steps at 300 (8 / 300 on a
    38-column map) are not.

    Raises
    ------
    ValueError
        Naming the first layer whose grid is off, its columns, its step and their span.
    """
    config = get_config(network, data_shape, **overrides)
    if not config["steps"]:
        return
    for step, layer in zip(config["steps"], describe_feature_layers(network, data_shape,
                                                                     **overrides)):
        columns = layer["shape"][2]
        if abs(step * columns - 1.0) > 1e-6:
            raise ValueError(
                f"--flip-test: the anchors of network {network!r} at {data_shape} do not mirror "
                f"onto each other (layer {layer['name']}: {columns} columns of step "
                f"{step:.4f} span {step * columns:.4f} of the width, not 1): leave "
                "--flip-test out")


def feature_layer_name(config: Mapping, k: int) -> str:
    """Name of feature layer ``k`` (prefix of its ``*_loc_pred_conv`` etc.)."""
    name = config["from_layers"][k]
    return name if name else f"multi_feat_{k}_conv_3x3_relu"


def describe_feature_layers(network: str, data_shape: int | Sequence[int],
                            **overrides) -> list[dict]:
    """Per feature layer: name, output shape and anchors (shape inference only).

    Parameters
    ----------
    network : str
        One of ``list_networks()``.
    data_shape : int or sequence of int
        Input side.
    **overrides
        Config overrides, see ``get_config``.

    Returns
    -------
    list of dict
        Keys ``name``, ``shape`` (C, H, W), ``anchors_per_location``, ``anchors``.
    """
    config = get_config(network, data_shape, **overrides)
    side = data_side(data_shape)
    _, _, anchors = symbol_builder.build_heads(num_classes=1, **config)
    internals = anchors.get_internals()
    names = [feature_layer_name(config, k) for k in range(len(config["from_layers"]))]
    probe = mx.sym.Group([internals[f"{n}_output"] for n in names])
    _, out_shapes, _ = probe.infer_shape(data=(1, 3, side, side))
    layers = []
    for k, (name, shape) in enumerate(zip(names, out_shapes)):
        per_location = len(config["sizes"][k]) - 1 + len(config["ratios"][k])
        layers.append({"name": name, "shape": tuple(shape[1:]),
                       "anchors_per_location": per_location,
                       "anchors": per_location * math.prod(shape[2:])})
    return layers


def count_anchors(network: str, data_shape: int | Sequence[int], **overrides) -> int:
    """Total number of anchors N of a preset at ``data_shape``."""
    return sum(layer["anchors"] for layer in
               describe_feature_layers(network, data_shape, **overrides))
