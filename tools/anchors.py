"""Anchor coverage of a network preset on a dataset's boxes, and anchors fitted to them.

SSD trains an anchor as a positive when its IoU with a ground-truth box is at least 0.5. This
tool reads the boxes of a training ``.rec`` (or ``.lst``), builds the anchors of a preset at
``--data-shape`` with MXNet's own ``MultiBoxPrior``, and prints per feature layer how many boxes
find an anchor with IoU >= ``--thresh`` there, then the same for anchors proposed by
``dataset/anchor_fit.py`` (ratios by k-means on the boxes' aspect, sizes by k-means on their area
then a search that only keeps changes raising the coverage; a preset that already covers every
box keeps its sizes).

``--output FILE`` writes the proposal as JSON (``{"sizes": ..., "ratios": ...}``) for
``train.py --anchors FILE`` (and ``evaluate.py`` / ``demo.py --anchors FILE``).

Example::

    python tools/anchors.py output/rac/trainval.rec --network tiny --data-shape 256 \\
        --output output/rac/anchors.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import setup_threads  # noqa: E402

setup_threads()

from dataset.anchor_fit import coverage, format_coverage, load_boxes, propose_anchors  # noqa: E402
from symbol.anchors import layer_anchors, load_anchor_file  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser of the anchor tool."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("boxes", help="training .rec (with its .idx) or detection .lst")
    p.add_argument("--network", default="tiny", help="network preset")
    p.add_argument("--data-shape", type=int, default=256, help="input side in px")
    p.add_argument("--thresh", type=float, default=0.5,
                   help="IoU a box needs with an anchor (SSD's positive threshold)")
    p.add_argument("--anchors", default=None,
                   help="JSON of sizes/ratios to report instead of proposing new ones")
    p.add_argument("--output", default=None, help="write the proposed sizes/ratios to this JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        if not 0 < args.thresh <= 1:
            raise ValueError(f"--thresh {args.thresh}: need a value in (0, 1]")
        boxes = load_boxes(args.boxes)
        before = coverage(boxes, layer_anchors(args.network, args.data_shape), args.thresh)
        if args.anchors:
            proposal = load_anchor_file(args.anchors)
        else:
            sizes, ratios = propose_anchors(boxes, args.network, args.data_shape, args.thresh)
            proposal = {"sizes": sizes, "ratios": ratios}
        after = coverage(boxes, layer_anchors(args.network, args.data_shape, **proposal),
                         args.thresh)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(boxes)} boxes from {args.boxes}; {args.network} at {args.data_shape} px, "
          f"IoU threshold {args.thresh:g}")
    print(format_coverage(before, f"preset {args.network}"))
    print(format_coverage(after, "given anchors" if args.anchors else "proposed anchors"))
    if args.output:
        proposal.update(network=args.network, data_shape=args.data_shape,
                        coverage_before=before["fraction"], coverage_after=after["fraction"])
        with open(args.output, "w") as f:
            json.dump(proposal, f, indent=2)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
