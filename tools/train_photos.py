"""One command from a VOC folder of photos to a trained detector and its mAP, on a CPU.

Steps (each one the project's real command-line tool, echoed as it runs):

1. ``tools/prepare_dataset.py`` on the ``trainval`` and ``test`` sets of ``--voc-root`` (images
   packed with the longest side at most ``PACK_SIDE`` px; the summary lists box sizes and any
   image skipped, and why);
2. ``tools/mosaic.py``: a copy of the training record with ``mosaic_copies`` four-photo mosaics
   per photo appended (objects at half their size or less, among other photos' backgrounds);
3. ``tools/anchors.py`` on the training record: the anchor coverage of the preset, and anchors
   fitted to the boxes (``anchors.json``), used when the preset leaves more than 5 % of the
   training boxes without an anchor of IoU >= 0.5 (``min_coverage``);
4. ``train.py`` with the real-photo recipe below, from scratch;
5. ``tools/average_checkpoints.py`` over the last ``average_epochs`` epochs, when more than one
   (the recipe keeps the last epoch's weights: averaging scored lower, docs/RECIPE.md);
6. ``evaluate.py`` (VOC07 mAP on the test set);
7. ``demo.py`` on a few test photos (pictures with the detections), unless ``--no-pictures``.

The recipe and every run that chose it: docs/RECIPE.md, "Real photographs". Example::

    python tools/train_photos.py --voc-root ../shared/data/raccoon/VOCdevkit \\
        --class-names ../shared/data/raccoon/class_names.txt --workdir output/photos
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from tools.run_demo import run  # noqa: E402  (echo a step, stream its output, stop on failure)

# The real-photo CPU recipe (chosen by measurement: docs/RECIPE.md, benchmarks/photo_sweep.py).
PHOTO_RECIPE = {
    "network": "tiny_photo",  # tiny with BatchNorm in the extra layers: every conv normalised
    "data_shape": 256,      # photos need more pixels than the synthetic shapes' 160
    "batch_size": 8,        # 180 updates per epoch of 160 photos + 8 x 160 mosaics
    "lr": 0.1,              # SGD, momentum 0.9, as the synthetic recipe
    "warmup_epochs": 2,     # linear warm-up
    "lr_schedule": "cosine",  # cosine decay to lr / 1000 at the last epoch
    "end_epoch": 12,        # of photos + mosaics: 9x the images of an epoch of photos alone;
                            # longer runs overfit the fixed mosaics (docs/RECIPE.md)
    "wd": 0.0005,
    "augment": "light",     # crops keeping >= 50 % of the side, zoom-out <= 2x, colour, mirror
    "mosaic_copies": 8,     # four-photo mosaics per training photo, appended to its record:
                            # medium and small objects among real backgrounds (0.80 vs 0.64)
    "neg_ratio": 6,         # hard negatives per matched anchor (the original: 3): trains the
                            # large anchors off whole-photo boxes around medium-sized objects
    "min_coverage": 0.95,   # below this share of training boxes with a positive anchor, the
                            # anchors of tools/anchors.py are used instead of the preset's
    "average_epochs": 1,    # 1: the last epoch's weights (averaging the last 5 scored lower)
    "seed": 1,
}
PACK_SIDE = 320             # longest side of the packed photos (crops then still have detail)


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--voc-root", required=True,
                   help="the VOCdevkit folder (VOC<year>/JPEGImages, Annotations, ImageSets/Main)")
    p.add_argument("--year", default="2007", help="VOC<year> folder inside --voc-root")
    p.add_argument("--class-names", required=True, help="comma list or file, one name a line")
    p.add_argument("--train-set", default="trainval", help="ImageSets/Main set to train on")
    p.add_argument("--test-set", default="test", help="ImageSets/Main set to measure on")
    p.add_argument("--workdir", default="output/photos",
                   help="folder for records, checkpoints, evaluation and pictures")
    p.add_argument("--end-epoch", type=int, default=PHOTO_RECIPE["end_epoch"],
                   help="training epochs")
    p.add_argument("--data-shape", type=int, default=PHOTO_RECIPE["data_shape"],
                   help="network input side in px")
    p.add_argument("--mosaic-copies", type=float, default=PHOTO_RECIPE["mosaic_copies"],
                   help="four-photo mosaics per training photo (0: train on the photos alone)")
    p.add_argument("--seed", type=int, default=PHOTO_RECIPE["seed"],
                   help="seed of the mosaics and of training (initialisation, order, augmentation)")
    p.add_argument("--train-args", default="",
                   help="extra flags for train.py, appended after the recipe's")
    p.add_argument("--no-pictures", dest="pictures", action="store_false",
                   help="skip demo.py's pictures of detections")
    return p


def recipe_train_flags(end_epoch: int, data_shape: int, anchors_file: str = "",
                       seed: int = PHOTO_RECIPE["seed"]) -> list[str]:
    """``train.py`` flags of the real-photo recipe (no data paths, classes, prefix or log)."""
    r = PHOTO_RECIPE
    flags = ["--network", r["network"], "--data-shape", str(data_shape),
             "--batch-size", str(r["batch_size"]), "--lr", str(r["lr"]),
             "--warmup-epochs", str(r["warmup_epochs"]), "--lr-schedule", r["lr_schedule"],
             "--wd", str(r["wd"]), "--freeze", "", "--pretrained", "", "--seed", str(seed),
             "--end-epoch", str(end_epoch), "--augment", r["augment"],
             "--neg-ratio", str(r["neg_ratio"]),
             "--save-period", "1" if r["average_epochs"] > 1 else "10"]
    if anchors_file:
        flags += ["--anchors", anchors_file]
    return flags


def class_list(value: str) -> list[str]:
    """Class names from a comma list or a file."""
    if os.path.isfile(value):
        return [n.strip() for n in Path(value).read_text().splitlines() if n.strip()]
    return [n.strip() for n in value.split(",") if n.strip()]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = get_parser().parse_args(argv)
    voc_dir = Path(args.voc_root) / f"VOC{args.year}"
    if not voc_dir.is_dir():
        print(f"error: --voc-root {args.voc_root}: no VOC{args.year} folder in it", file=sys.stderr)
        return 2
    names = class_list(args.class_names)
    if not names:
        print(f"error: --class-names {args.class_names!r}: no names", file=sys.stderr)
        return 2
    work = Path(args.workdir).resolve()
    (work / "model").mkdir(parents=True, exist_ok=True)
    py = sys.executable
    started = time.time()
    common = ["--dataset", "pascal", "--year", args.year, "--root", str(args.voc_root),
              "--class-names", ",".join(names), "--resize", str(PACK_SIDE)]
    run([py, "tools/prepare_dataset.py", *common, "--set", args.train_set,
         "--target", str(work / "train.lst"), "--summary-json", str(work / "train_summary.json")])
    run([py, "tools/prepare_dataset.py", *common, "--set", args.test_set, "--no-shuffle",
         "--target", str(work / "test.lst"), "--summary-json", str(work / "test_summary.json")])
    num_test = json.loads((work / "test_summary.json").read_text())["num_listed"]
    train_rec = work / "train.rec"
    num_train = json.loads((work / "train_summary.json").read_text())["num_listed"]
    if args.mosaic_copies > 0 and num_train < 4:
        print(f"only {num_train} training photo(s): no mosaics (a mosaic needs 4)", flush=True)
    elif args.mosaic_copies > 0:
        train_rec = work / "train_mosaic.rec"
        run([py, "tools/mosaic.py", str(work / "train.rec"), "--output", str(train_rec),
             "--copies", str(args.mosaic_copies), "--seed", str(args.seed), "--quiet"])
    anchors_file = str(work / "anchors.json")
    run([py, "tools/anchors.py", str(work / "train.rec"), "--network", PHOTO_RECIPE["network"],
         "--data-shape", str(args.data_shape), "--output", anchors_file])

    fitted = json.loads(Path(anchors_file).read_text())
    use_fitted = fitted["coverage_before"] < PHOTO_RECIPE["min_coverage"]
    print(f"anchor coverage of the preset {100 * fitted['coverage_before']:.1f} %, fitted "
          f"{100 * fitted['coverage_after']:.1f} %: training with the "
          f"{'fitted' if use_fitted else 'preset'} anchors", flush=True)
    prefix = work / "model" / "ssd"
    train_started = time.time()
    run([py, "train.py", "--train-path", str(train_rec),
         "--val-path", str(work / "test.rec"),
         *recipe_train_flags(args.end_epoch, args.data_shape,
                             anchors_file if use_fitted else "", args.seed),
         "--num-class", str(len(names)), "--class-names", ",".join(names),
         "--prefix", str(prefix), "--gpus", "", "--log", str(work / "train.log"),
         "--frequent", "20"] + shlex.split(args.train_args))
    train_minutes = (time.time() - train_started) / 60.0

    model_prefix = f"{prefix}_{PHOTO_RECIPE['network']}_{args.data_shape}"
    eval_prefix = model_prefix
    averaged = min(PHOTO_RECIPE["average_epochs"], args.end_epoch)
    if averaged > 1:
        eval_prefix = f"{prefix}_avg_{PHOTO_RECIPE['network']}_{args.data_shape}"
        run([py, "tools/average_checkpoints.py", "--prefix", model_prefix,
             "--epochs", f"{args.end_epoch - averaged + 1}-{args.end_epoch}",
             "--output", eval_prefix])
    anchor_flags = ["--anchors", anchors_file] if use_fitted else []
    eval_out = run([py, "evaluate.py", "--rec-path", str(work / "test.rec"),
                    "--network", PHOTO_RECIPE["network"], "--data-shape", str(args.data_shape),
                    "--num-class", str(len(names)), "--class-names", ",".join(names),
                    "--prefix", eval_prefix, "--epoch", str(args.end_epoch), "--cpu",
                    "--batch-size", str(min(8, num_test)), "--output-dir", str(work / "eval"),
                    *anchor_flags])
    found = re.findall(r"mAP\s*[:=]\s*([0-9.]+)", eval_out)
    map_value = float(found[-1]) if found else float("nan")

    if args.pictures:
        test_ids = (voc_dir / "ImageSets" / "Main" / f"{args.test_set}.txt").read_text().split()
        pictures = [str(p) for i in test_ids[:6] for p in (voc_dir / "JPEGImages").glob(f"{i}.*")]
        run([py, "demo.py", "--network", PHOTO_RECIPE["network"],
             "--data-shape", str(args.data_shape), "--prefix", eval_prefix,
             "--epoch", str(args.end_epoch), "--cpu", "--class-names", ",".join(names),
             "--images", ",".join(pictures), "--thresh", "0.5",
             "--output-dir", str(work / "detections"), *anchor_flags])

    summary = {"voc07_map": map_value, "train_minutes": round(train_minutes, 2),
               "total_minutes": round((time.time() - started) / 60.0, 2),
               "load_average_1min_at_end": round(os.getloadavg()[0], 2),
               "recipe": PHOTO_RECIPE | {"end_epoch": args.end_epoch,
                                          "data_shape": args.data_shape,
                                          "mosaic_copies": args.mosaic_copies,
                                          "seed": args.seed},
               "anchors": "fitted" if use_fitted else "preset",
               "anchor_coverage": {"preset": fitted["coverage_before"],
                                   "fitted": fitted["coverage_after"]},
               "evaluated": f"{eval_prefix}-{args.end_epoch:04d}.params"}
    (work / "photos_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nFinished: VOC07 mAP {map_value:.4f} on the {args.test_set} set, training "
          f"{train_minutes:.1f} min, total {summary['total_minutes']:.1f} min "
          f"(load average {summary['load_average_1min_at_end']}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
