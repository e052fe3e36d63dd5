"""Print a per-layer summary of an SSD network and draw its graph (when graphviz is installed).

Example::

    python tools/visualize_net.py --network tiny --data-shape 128 --num-classes 3
    python tools/visualize_net.py --network vgg16_reduced --train --output /tmp/ssd300

The summary lists every layer with parameters or a feature map used for detection (output
shape, parameter count), then the feature layers (map size, anchors per location, anchors)
and the totals. The picture needs the ``graphviz`` Python package and its ``dot`` program.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from collections.abc import Sequence

if __package__ in (None, ""):  # run by path (python tools/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads

setup_threads()
from config.mxnet_compat import mx  # noqa: E402  (after setup_threads)

from symbol.symbol_factory import (data_side, describe_feature_layers, get_symbol,  # noqa: E402
                                   get_symbol_train)


def get_parser() -> argparse.ArgumentParser:
    """Flags of the original ``tools/visualize_net.py`` plus ``--output``."""
    parser = argparse.ArgumentParser(description="Summarise and draw an SSD network")
    parser.add_argument("--network", type=str, default="vgg16_reduced",
                        help="network preset name (default: vgg16_reduced)")
    parser.add_argument("--num-classes", type=int, default=20,
                        help="object classes, background excluded (default: 20)")
    parser.add_argument("--data-shape", type=int, default=300,
                        help="input side in pixels (default: 300)")
    parser.add_argument("--train", action="store_true",
                        help="show the training graph (losses, det_out) instead of the "
                             "inference graph")
    parser.add_argument("--output", type=str, default="",
                        help="graph picture path without extension (default: "
                             "ssd_<network>_<data-shape>[_train] in the current folder)")
    return parser


def layer_rows(symbol: mx.sym.Symbol, data_shape: int, label_rows: int = 3) -> list[dict]:
    """One row per operator node: name, op, output shape and own parameter count.

    Parameters
    ----------
    symbol : mx.sym.Symbol
        Training or inference graph.
    data_shape : int
        Input side.
    label_rows : int
        Label rows used for shape inference of a training graph.

    Returns
    -------
    list of dict
        Keys ``name``, ``op``, ``shape`` (without batch axis) and ``params``.
    """
    shapes = {"data": (1, 3, data_shape, data_shape)}
    if "label" in symbol.list_arguments():
        shapes["label"] = (1, label_rows, 6)
    internals = symbol.get_internals()
    arg_shapes, out_shapes, aux_shapes = internals.infer_shape(**shapes)
    var_shapes = dict(zip(internals.list_arguments(), arg_shapes))
    var_shapes.update(zip(internals.list_auxiliary_states(), aux_shapes))
    output_shapes = dict(zip(internals.list_outputs(), out_shapes))
    nodes = json.loads(symbol.tojson())["nodes"]
    rows = []
    for node in nodes:
        if node["op"] == "null":
            continue
        inputs = [nodes[i[0]]["name"] for i in node["inputs"]]
        params = sum(math.prod(var_shapes[n]) for n in inputs
                     if n in var_shapes and n not in shapes)
        shape = output_shapes.get(f"{node['name']}_output")
        if shape is None:  # multi-output operators
            shape = output_shapes.get(f"{node['name']}_output0")
        rows.append({"name": node["name"], "op": node["op"],
                     "shape": tuple(shape[1:]) if shape else (), "params": params})
    return rows


def summary(network: str, num_classes: int, data_shape: int, train: bool = False) -> str:
    """Text summary: every layer with parameters, feature layers with anchors, totals."""
    side = data_side(data_shape)
    if train:
        symbol = get_symbol_train(network, side, num_classes)
    else:
        symbol = get_symbol(network, side, num_classes)
    features = describe_feature_layers(network, side)
    feature_names = {layer["name"] for layer in features}
    rows = layer_rows(symbol, side)
    lines = [f"{network} @ {side}x{side}, {num_classes} classes "
             f"({'training' if train else 'inference'} graph)",
             f"{'layer':<48} {'op':<22} {'output shape':<20} {'params':>12}"]
    for row in rows:
        if row["params"] or row["name"] in feature_names:
            lines.append(f"{row['name']:<48} {row['op']:<22} {str(row['shape']):<20} "
                         f"{row['params']:>12,}")
    lines.append("")
    lines.append(f"{'feature layer':<48} {'map (C, H, W)':<20} {'anchors/loc':>11} "
                 f"{'anchors':>9}")
    for layer in features:
        lines.append(f"{layer['name']:<48} {str(layer['shape']):<20} "
                     f"{layer['anchors_per_location']:>11} {layer['anchors']:>9,}")
    total_params = sum(row["params"] for row in rows)
    lines.append(f"total anchors: {sum(layer['anchors'] for layer in features):,}")
    lines.append(f"total parameters: {total_params:,} "
                 f"({len(symbol.list_arguments()) + len(symbol.list_auxiliary_states())} "
                 "arrays incl. inputs)")
    outputs = ", ".join(f"{name} {tuple(shape)}" for name, shape in zip(
        symbol.list_outputs(), symbol.infer_shape(
            data=(1, 3, side, side), **({"label": (1, 3, 6)} if train else {}))[1]))
    lines.append(f"outputs (batch 1): {outputs}")
    return "\n".join(lines)


def draw(symbol: mx.sym.Symbol, path: str) -> str:
    """Render ``symbol`` to ``path + '.png'`` with graphviz.

    Raises
    ------
    RuntimeError
        When the graphviz package or its ``dot`` program is missing (message says how to
        install them).
    """
    hint = ("drawing needs graphviz: pip install graphviz and the 'dot' program "
            "(Debian/Ubuntu: apt-get install graphviz)")
    try:
        import graphviz  # noqa: F401  (only to detect it)
    except ImportError:
        raise RuntimeError(f"graphviz Python package not installed; {hint}") from None
    if shutil.which("dot") is None:
        raise RuntimeError(f"graphviz 'dot' program not found on PATH; {hint}")
    graph = mx.viz.plot_network(symbol, hide_weights=True)
    graph.format = "png"
    return graph.render(path, cleanup=True)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = get_parser().parse_args(argv)
    try:
        text = summary(args.network, args.num_classes, args.data_shape, args.train)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    side = args.data_shape
    symbol = (get_symbol_train(args.network, side, args.num_classes) if args.train
              else get_symbol(args.network, side, args.num_classes))
    path = args.output or f"ssd_{args.network}_{side}{'_train' if args.train else ''}"
    try:
        print(f"graph picture: {draw(symbol, path)}")
    except RuntimeError as err:
        print(f"no graph picture: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
