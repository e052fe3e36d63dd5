"""Parameter names of the original example that differ from this project's, and their conversion.

The original (apache/mxnet ``example/ssd``, zhreshold/mxnet-ssd) named every layer of every
preset as this project does, with one exception: its ResNet presets tapped the backbone at
MXNet's auto-generated names of the residual sums, ``_plusN`` (N counts the sums built in a
fresh process from 0, so unit 13 of resnet50 is ``_plus12``), and the multibox heads on those
layers inherited the names: ``_plus12_loc_pred_conv_weight``, ``_plus15_cls_pred_conv_bias``.
Here the sums are named ``stage{s}_unit{u}_plus`` and the heads
``stage3_unit6_plus_loc_pred_conv_weight``. Backbone, extra-layer, scale and the other heads'
names are the same (``tests/test_legacy_checkpoints.py`` checks every preset).

:func:`convert_legacy_params` and :func:`convert_legacy_symbol` rename a checkpoint's
parameters and a saved ``-symbol.json``'s variables to this project's names; the checkpoint
readers (``checkpoint.load_param_file``, ``checkpoint.load_symbol_file``) call them on every
file, so an original checkpoint and the same weights saved here give identical results.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TypeVar

from config.mxnet_compat import mx

Value = TypeVar("Value")

# the original's feature-layer name -> ours, per preset (apache/mxnet v1.x symbol_factory)
LEGACY_LAYER_NAMES: dict[str, dict[str, str]] = {
    "resnet50": {"_plus12": "stage3_unit6_plus", "_plus15": "stage4_unit3_plus"},
    "resnet101": {"_plus29": "stage3_unit23_plus", "_plus32": "stage4_unit3_plus"},
}
# one table for every preset: no two presets use the same _plusN, so a file converts the same
# way whichever network reads it
_RENAMES = {old: new for table in LEGACY_LAYER_NAMES.values() for old, new in table.items()}
assert len(_RENAMES) == sum(len(t) for t in LEGACY_LAYER_NAMES.values())

# an optional "arg:"/"aux:" key prefix, the layer, and a head parameter suffix
_HEAD_PARAM = re.compile(r"(?P<kind>(?:arg|aux):)?(?P<layer>_plus\d+)"
                         r"(?P<suffix>_(?:loc|cls)_pred_conv_(?:weight|bias))")


def legacy_to_current(name: str) -> str | None:
    """This project's name for one of the original's parameter names, None if it is not one.

    ``name`` may carry the ``arg:``/``aux:`` prefix of a ``.params`` key, which is kept:
    ``arg:_plus12_loc_pred_conv_weight`` -> ``arg:stage3_unit6_plus_loc_pred_conv_weight``.
    """
    match = _HEAD_PARAM.fullmatch(name)
    if match is None or match.group("layer") not in _RENAMES:
        return None
    return (match.group("kind") or "") + _RENAMES[match.group("layer")] + match.group("suffix")


def convert_legacy_params(params: Mapping[str, Value]
                          ) -> tuple[dict[str, Value], list[tuple[str, str]]]:
    """Rename the original's parameter names in a checkpoint to this project's.

    Parameters
    ----------
    params : mapping of str to NDArray (or anything)
        ``mx.nd.load`` of a ``.params`` file (``arg:``/``aux:`` keys) or ``arg_params``.

    Returns
    -------
    converted : dict
        The same values; only the original's names changed, order kept.
    renamed : list of (str, str)
        ``(old, new)`` for every renamed key (empty for a file of this project).

    Raises
    ------
    ValueError
        The file holds a parameter under both names (the two would disagree).
    """
    converted: dict[str, Value] = {}
    renamed: list[tuple[str, str]] = []
    for key, value in params.items():
        new = legacy_to_current(key)
        if new is not None:
            if new in params:
                raise ValueError(f"parameter {new!r} is stored twice, also under the original "
                                 f"example's name {key!r}")
            renamed.append((key, new))
            key = new
        converted[key] = value
    return converted, renamed


def convert_legacy_symbol(symbol: mx.sym.Symbol
                          ) -> tuple[mx.sym.Symbol, list[tuple[str, str]]]:
    """Rename the original's parameter variables of a graph (a saved ``-symbol.json``).

    Only variables are renamed (what binds to the checkpoint's parameters); operator names
    and the computation are unchanged.

    Returns
    -------
    symbol : mx.sym.Symbol
        The graph with this project's parameter names (``symbol`` itself if none differ).
    renamed : list of (str, str)
        ``(old, new)`` for every renamed variable.
    """
    graph = json.loads(symbol.tojson())
    renamed: list[tuple[str, str]] = []
    for node in graph["nodes"]:
        if node["op"] != "null":
            continue
        new = legacy_to_current(node["name"])
        if new is not None:
            renamed.append((node["name"], new))
            node["name"] = new
    if not renamed:
        return symbol, renamed
    return mx.sym.load_json(json.dumps(graph)), renamed


def describe_renames(renamed: list[tuple[str, str]]) -> str:
    """``_plus12_* -> stage3_unit6_plus_*, ...`` for a log line (layers, not every parameter)."""
    layers: dict[str, str] = {}
    for old, new in renamed:
        match = _HEAD_PARAM.fullmatch(old)
        if match:
            layers[match.group("layer")] = _RENAMES[match.group("layer")]
    return ", ".join(f"{old}_* -> {new}_*" for old, new in sorted(layers.items()))


# The ImageNet backbone files of each preset: (--pretrained, --epoch, what the file is and where
# the original / MXNet documented it). The original's train.py defaults to the first for every
# network; the file names of the others are those of MXNet's model zoo.
ORIGINAL_PRETRAINED: dict[str, tuple[str, int, str]] = {
    "vgg16_reduced": (
        "model/vgg16_reduced", 1,
        "the ImageNet VGG16-reduced classifier (fc6/fc7 as convolutions, converted from Caffe) "
        "that the original README's 'Train the model' section links as 'the converted "
        "pretrained vgg16_reduced model' "
        "(https://github.com/zhreshold/mxnet-ssd/releases/download/v0.2-beta/vgg16_reduced.zip; "
        "unzip its .params and .json into model/)"),
    "resnet50": (
        "model/resnet-50", 0,
        "the ImageNet ResNet-50 of MXNet's model zoo (resnet-50-0000.params and "
        "resnet-50-symbol.json from http://data.mxnet.io/models/imagenet/resnet/50-layers/)"),
    "resnet101": (
        "model/resnet-101", 0,
        "the ImageNet ResNet-101 of MXNet's model zoo (resnet-101-0000.params and "
        "resnet-101-symbol.json from http://data.mxnet.io/models/imagenet/resnet/101-layers/)"),
    "inceptionv3": (
        "model/Inception-7", 1,
        "the ImageNet Inception-v3 of MXNet's model zoo, converted from TensorFlow "
        "(Inception-7-0001.params and Inception-7-symbol.json in "
        "http://data.mxnet.io/models/imagenet/inception-v3.tar.gz)"),
    "mobilenet": (
        "model/mobilenet", 0,
        "an ImageNet MobileNet-v1 classifier with zhreshold/mxnet-ssd's layer names "
        "(conv_1_conv2d, conv_2_dw_conv2d, ..., conv_14_conv2d, fc); the original names no "
        "download, so save yours as model/mobilenet-0000.params"),
}


def describe_pretrained(network: str, path: str) -> str:
    """Why a missing ``--pretrained`` file matters and where the original's users got it.

    Parameters
    ----------
    network : str
        ``--network`` of the run.
    path : str
        The ``.params`` file that was not found.

    Returns
    -------
    str
        One or two sentences for the error message, ending with the ``--pretrained ''`` hint.
    """
    import os
    base = os.path.basename(path)
    known = {os.path.basename(prefix) + f"-{epoch:04d}.params": (name, text)
             for name, (prefix, epoch, text) in ORIGINAL_PRETRAINED.items()}
    parts = []
    if base in known:
        parts.append(f"{base} is {known[base][1]}")
    if network in ORIGINAL_PRETRAINED and (base not in known or known[base][0] != network):
        prefix, epoch, text = ORIGINAL_PRETRAINED[network]
        parts.append(f"for --network {network} start from {text}: --pretrained {prefix} "
                     f"--epoch {epoch}")
    parts.append("--pretrained '' trains from scratch (no file needed)")
    return "; ".join(parts)
