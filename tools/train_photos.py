"""One command from a folder of labelled photos to a trained detector and its mAP, on a CPU.

The folder is read as users have it, as their tool or the set's authors wrote it
(``dataset/photo_folder.py``, docs/DATASETS.md "Folders of labelled photos as they come"); the
layout is detected (in this order) or named by ``--format``:

* ``voc``: a VOC devkit (``VOCdevkit/VOC<year>/``);
* ``labelimg``: photos beside their XML, in ``train/`` + ``test/`` or in one folder;
* ``coco``: ``annotations/instances_<set>.json`` + ``images/<set>/``;
* ``yolo``: ``classes.txt``, ``images/``, ``labels/``, ``train.txt`` + ``test.txt``;
* ``cvat_voc``: CVAT's PASCAL VOC 1.1 export (``ImageSets/Main/default.txt`` ...);
* ``voc_folders``: ``images/`` with VOC XML in ``annotations/`` (``annots/``, ``xml/`` ...),
  matched by file name, with or without ``train/`` / ``test/`` subfolders;
* ``roboflow``: ``train/ valid/ test/`` with COCO JSON, CSV or XML, or a YOLO ``data.yaml``;
* ``tf_csv``: TensorFlow CSVs (``train_labels.csv`` + ``test_labels.csv``, or one);
* ``cvat_yolo``: CVAT's YOLO 1.1 export (``obj.data``, ``obj.names``, ``obj_train_data/``).

The test set is the layout's own (a test folder, list or CSV), else its ``valid`` set, else an
80/20 split in natural order of the file names (every 5th photo; said in one line). Photos
without boxes are kept as backgrounds; what is skipped or repaired is counted in the summary of
each set. The class names come from the data unless ``--class-names`` gives them (written to
``model/class_names.txt`` either way).

Steps (each one the project's real command-line tool, echoed as it runs):

1. ``tools/prepare_dataset.py`` on the training and test sets (images packed with the longest
   side at most ``PACK_SIDE`` px; the summary lists box sizes and any image skipped, and why);
2. ``tools/anchors.py`` on the training record: the anchor coverage of the preset, and anchors
   fitted to the boxes (``anchors.json``), used when the preset leaves more than 5 % of the
   training boxes without an anchor of IoU >= 0.5 (``min_coverage``);
3. ``tools/mosaic.py``: a copy of the training record with four-photo mosaics among its
   photos, as many a photo as ``mosaic_copies`` sizes to the set, each photo shrunk within
   ``mosaic_scale`` (small boxes kept above the finest anchor);
4. ``train.py`` with the real-photo recipe below, from scratch, for ``schedule_epochs`` (sized
   to the set) or, with ``--minutes N``, for as many epochs as the first one's rate fits in N;
5. the epoch to keep: the last, unless validation says the best is better by more than noise
   (``choose_epoch``);
6. ``evaluate.py`` (VOC07 mAP on the test set), each photo's detections averaged with its
   mirror's (``--flip-test``; ``--no-flip-test`` leaves it out);
7. ``tools/photo_report.py``: per-class AP, confused classes, missed boxes by size, a picture
   of the worst test photos beside the best;
8. ``demo.py`` on a few test photos (pictures with the detections), unless ``--no-pictures``.

The recipe and every run that chose it: docs/RECIPE.md, "Real photographs". Examples::

    python tools/train_photos.py --sample raccoon       # a public set, downloaded once
    python tools/train_photos.py path/to/photos --workdir output/photos
    python tools/train_photos.py path/to/photos --minutes 10
"""
from __future__ import annotations

import argparse
import json
import os
import math
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from dataset.imdb import load_class_names  # noqa: E402
from dataset.sample_sets import SAMPLES, SampleError, fetch_sample  # noqa: E402
from dataset.photo_folder import (FORMATS, PhotoLayout, data_class_names,  # noqa: E402
                                  detect_layout)
from tools.run_demo import run  # noqa: E402  (echo a step, stream its output, stop on failure)

# The real-photo CPU recipe (chosen by measurement: docs/RECIPE.md, benchmarks/sweep.py photo).
PHOTO_RECIPE = {
    "network": "tiny_photo",  # tiny with BatchNorm in the extra layers: every conv normalised
    "data_shape": 256,      # photos need more pixels than the synthetic shapes' 160
    "batch_size": 8,        # raccoon: 340 updates an epoch (160 photos + 16 mosaics each)
    "lr": 0.1,              # SGD, momentum 0.9, as the synthetic recipe
    "warmup_share": 1 / 6,  # linear warm-up over this share of the epochs (at least one)
    "lr_schedule": "cosine",  # cosine decay to lr / 1000 at the last epoch
    "views_per_photo": 108,  # each training photo is seen about this often, itself and in
                            # mosaics (cards: 9 x 12 epochs, raccoon: 17 x 7): more passes over
                            # the same mosaics overfit them (docs/RECIPE.md)
    "min_updates": 2160,    # and at least this many updates: smaller sets train more epochs
    "max_epochs": 40,
    "wd": 0.0005,
    "augment": "light",     # crops keeping >= 50 % of the side, zoom-out <= 2x, colour, mirror
    "epoch_images": 2720,   # four-photo mosaics a training photo (0.80 against 0.64 without):
    "min_copies": 8,        # as many as fill an epoch to about epoch_images, 8-16; raccoon's
    "max_copies": 16,       # 160 photos get 16 (seen 7 times: 0.815, against 8 seen 12 times:
                            # 0.797, seeds 1-3), cards' 296 get 8
    "neg_ratio": 6,         # hard negatives per matched anchor (the original: 3): trains the
                            # large anchors off whole-photo boxes around medium-sized objects
    "min_coverage": 0.95,   # below this share of training boxes with a positive anchor, the
                            # anchors of tools/anchors.py are used instead of the preset's
    "average_epochs": 1,    # 1: the last epoch's weights (averaging the last 5 scored lower)
    "flip_test": True,      # detect on each test photo and its mirror, averaged in the graph
                            # (evaluate.py / deploy.py --flip-test): cards 0.867 -> 0.891,
                            # raccoon 0.806 -> 0.822, seeds 1-3, the same models
    "seed": 1,
}
MOSAIC_LOW = 0.5            # the mosaics' smallest shrink of a photo (raccoon's measured range)
PACK_SIDE = 320             # longest side of the packed photos (crops then still have detail)
NOISE_SIGMAS = 2            # the best epoch replaces the last when better by more standard errors
BUDGET_RESERVE_S = 45       # --minutes: seconds kept for evaluation, report and pictures


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", nargs="?", default=None,
                   help="folder of labelled photos in any layout of --format: VOC, LabelImg, "
                        "COCO, YOLO, images/ + annotations/, TensorFlow CSV, Roboflow or CVAT "
                        "exports (docs/DATASETS.md)")
    p.add_argument("--voc-root", default=None,
                   help="a VOC devkit (the earlier flag): the same as DATA with --format voc")
    p.add_argument("--sample", default=None, choices=sorted(SAMPLES),
                   help="instead of DATA: download a public sample set once (checked against "
                        "its sha256 manifest, kept in --data-dir) and train on it as it is "
                        "published; `make photos` with no PHOTOS= does this")
    p.add_argument("--sample-url", default=None,
                   help="another address of the sample's archive (a mirror)")
    p.add_argument("--data-dir", default="data",
                   help="where --sample keeps the downloaded set")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS,
                   help="layout of DATA; auto: detected from the folder")
    p.add_argument("--year", default=None, help="VOC<year> folder (voc; default: detected)")
    p.add_argument("--class-names", default=None,
                   help="comma list or file, one name a line (default: from the data, sorted)")
    p.add_argument("--train-set", default=None, help="training set (default: detected)")
    p.add_argument("--test-set", default=None, help="set to measure on (default: detected)")
    p.add_argument("--workdir", default="output/photos",
                   help="folder for records, checkpoints, evaluation and pictures")
    p.add_argument("--end-epoch", type=int, default=0,
                   help="training epochs (0: sized to the set, see schedule_epochs)")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="train the best model this many minutes allow on this machine: the rate "
                        "of the first epoch sizes the schedule (0: no budget)")
    p.add_argument("--data-shape", type=int, default=PHOTO_RECIPE["data_shape"],
                   help="network input side in px")
    p.add_argument("--pack-side", type=int, default=PACK_SIDE,
                   help="longest side in px of the packed photos (and of the mosaics)")
    p.add_argument("--mosaic-copies", type=float, default=None,
                   help="four-photo mosaics per training photo (0: train on the photos alone; "
                        "default: sized to the set, see mosaic_copies)")
    p.add_argument("--mosaic-floor", type=float, default=MOSAIC_LOW,
                   help="the smallest share of the mosaic's side a photo may shrink to (the "
                        "set's box sizes may raise it: mosaic_scale)")
    p.add_argument("--mosaic-min-visible", type=float, default=None,
                   help="a box cut by its mosaic quadrant is kept when this share of its area "
                        "shows, else dropped (default: tools/mosaic.py's --min-visible)")
    p.add_argument("--seed", type=int, default=PHOTO_RECIPE["seed"],
                   help="seed of the mosaics and of training (initialisation, order, augmentation)")
    p.add_argument("--train-args", default="",
                   help="extra flags for train.py, appended after the recipe's")
    p.add_argument("--no-flip-test", dest="flip_test", action="store_false",
                   help="evaluate, report and export without averaging each photo with its "
                        "mirror (evaluate.py --flip-test; half the inference compute)")
    p.add_argument("--no-pictures", dest="pictures", action="store_false",
                   help="skip demo.py's pictures of detections and the report's picture")
    return p


def recipe_train_flags(end_epoch: int, data_shape: int, anchors_file: str = "",
                       seed: int = PHOTO_RECIPE["seed"], warmup_epochs: int = 0) -> list[str]:
    """``train.py`` flags of the real-photo recipe (no data paths, classes, prefix or log);
    ``warmup_epochs`` 0: ``warmup_share`` of ``end_epoch``, at least one."""
    r = PHOTO_RECIPE
    warmup = warmup_epochs or max(1, round(end_epoch * r["warmup_share"]))
    flags = ["--network", r["network"], "--data-shape", str(data_shape),
             "--batch-size", str(r["batch_size"]), "--lr", str(r["lr"]),
             "--warmup-epochs", str(warmup), "--lr-schedule", r["lr_schedule"],
             "--wd", str(r["wd"]), "--freeze", "", "--pretrained", "", "--seed", str(seed),
             "--end-epoch", str(end_epoch), "--augment", r["augment"],
             "--neg-ratio", str(r["neg_ratio"]),
             "--save-period", "1" if r["average_epochs"] > 1 else "10"]
    if anchors_file:
        flags += ["--anchors", anchors_file]
    return flags


def mosaic_copies(num_train: int) -> tuple[float, str]:
    """Mosaics per training photo for a set of ``num_train`` photos, and the one-line reason:
    as many as fill an epoch to about ``epoch_images``, between ``min_copies`` and
    ``max_copies`` (raccoon's 160 photos: 16; cards' 296: 8)."""
    r = PHOTO_RECIPE
    copies = min(r["max_copies"], max(r["min_copies"],
                                      round(r["epoch_images"] / max(1, num_train)) - 1))
    return float(copies), (f"{copies} mosaics a photo: {num_train} photos + mosaics fill an "
                           f"epoch to about {r['epoch_images']} images "
                           f"({r['min_copies']}-{r['max_copies']} a photo)")


def schedule_epochs(num_train: int, copies: float,
                    batch_size: int = PHOTO_RECIPE["batch_size"]) -> tuple[int, str]:
    """Epochs for a set of ``num_train`` photos with ``copies`` mosaics each, and the reason.

    Each photo is seen about ``views_per_photo`` times (itself and in its mosaics: cards' 8
    mosaics a photo, 12 epochs; raccoon's 16, 7 epochs), with at least ``min_updates`` updates
    (a smaller set trains more epochs instead of fewer updates) and at most ``max_epochs``.
    Measured on raccoon and cards, seeds 1-3: docs/notes/RECIPE.md.
    """
    r = PHOTO_RECIPE
    copies = copies if num_train >= 4 else 0
    images = num_train * (1 + copies)
    per_epoch = max(1, int(images) // batch_size)
    epochs = max(math.ceil(r["views_per_photo"] / (1 + copies)),
                 math.ceil(r["min_updates"] / per_epoch))
    epochs = min(epochs, r["max_epochs"])
    return epochs, (f"{num_train} photos + mosaics = {int(images)} images, {per_epoch} updates "
                    f"an epoch: {epochs} epochs (each photo seen about "
                    f"{r['views_per_photo']} times, at least {r['min_updates']} updates, "
                    f"at most {r['max_epochs']})")


def box_side_quantile(histogram: dict[str, int], q: float) -> float:
    """The ``q`` quantile of the box sides in a ``prepare_dataset`` histogram (bins ``"lo-hi"``
    of sqrt(box area) / image side), linear inside its bin; 1.0 for an empty histogram."""
    bins = sorted(((float(k.split("-")[0]), float(k.split("-")[1]), n)
                   for k, n in histogram.items()), key=lambda b: b[0])
    total = sum(n for _, _, n in bins)
    if total == 0:
        return 1.0
    want, seen = q * total, 0
    for lo, hi, n in bins:
        if n and seen + n >= want:
            return lo + (hi - lo) * (want - seen) / n
        seen += n
    return bins[-1][1]


def mosaic_scale(histogram: dict[str, int], finest_anchor: float,
                 floor: float = MOSAIC_LOW) -> tuple[float, str]:
    """The smallest shrink of a photo in a mosaic, for a set's box sizes, and the reason.

    A photo's longest side takes ``low``-1.0 of the mosaic's side, so its boxes shrink by as
    much. The finest anchor (side ``a``, a share of the input side) still matches a square box
    of side ``s`` <= ``a`` at IoU (s/a)^2 >= 0.5 when ``s >= a / sqrt(2)``: the smallest tenth of
    the training boxes is kept at least that large (``low = s_min / q10``), between
    ``floor`` (``MOSAIC_LOW``: raccoon's and cards' boxes unchanged) and 1.0. Boxes already below the
    finest anchor in the photos are left to the fitted anchors (``min_coverage``).
    """
    s_min = finest_anchor / math.sqrt(2.0)
    q10 = box_side_quantile(histogram, 0.1)
    if not 0 < floor <= 1:
        raise ValueError(f"--mosaic-floor {floor:g}: need a share in (0, 1]")
    low = min(1.0, max(floor, s_min / max(q10, 1e-6)))
    low = round(low, 2)
    head = (f"mosaic scale {low:g}-1: the smallest tenth of the training boxes (side <= "
            f"{q10:.3f} of the photo)")
    if low > floor:
        return low, (f"{head} would shrink below {s_min:.3f} of the input at {floor:g}, "
                     f"the smallest box the finest anchor ({finest_anchor:g}) matches at IoU 0.5")
    return low, (f"{head} stays above {s_min:.3f} of the input, the smallest box the finest "
                 f"anchor ({finest_anchor:g}) matches at IoU 0.5")


def budget_epochs(minutes: float, spent_s: float, first_epoch_s: float,
                  reserve_s: float) -> int:
    """Epochs that fit ``minutes`` when the first took ``first_epoch_s`` (at least 2).

    ``spent_s`` were used before training began; ``reserve_s`` are kept for evaluation.
    """
    left = minutes * 60.0 - spent_s - reserve_s - first_epoch_s
    return max(2, 1 + int(left // max(first_epoch_s, 1e-3)))


def validation_curve(log_text: str) -> dict[int, float]:
    """Validation mAP per epoch (1-based, as the checkpoints) from a ``train.py`` log."""
    found = re.findall(r"Epoch\[(\d+)\] Validation-mAP=([0-9.eE+-]+|nan)", log_text)
    return {int(e) + 1: float(v) for e, v in found}


def map_noise(map_value: float, num_boxes: int) -> float:
    """Standard error of an mAP measured on ``num_boxes`` test boxes (binomial)."""
    m = min(max(map_value, 0.0), 1.0)
    return math.sqrt(m * (1.0 - m) / max(1, num_boxes))


def choose_epoch(curve: dict[int, float], last: int, num_boxes: int) -> tuple[int, str]:
    """The epoch to keep: the last, unless the best beats it by more than noise.

    Noise is ``NOISE_SIGMAS`` standard errors of the last epoch's mAP on ``num_boxes`` boxes.
    """
    if last not in curve or not curve:
        return last, "kept the last epoch (no validation mAP in the log)"
    best = max(curve, key=lambda e: (curve[e], e))
    margin = NOISE_SIGMAS * map_noise(curve[last], num_boxes)
    gain = curve[best] - curve[last]
    if best != last and gain > margin:
        return best, (f"kept epoch {best}: validation mAP {curve[best]:.3f} beats the last "
                      f"epoch's {curve[last]:.3f} by {gain:.3f}, more than the noise of "
                      f"{margin:.3f} ({NOISE_SIGMAS} standard errors on {num_boxes} boxes)")
    return last, (f"kept the last epoch {last} (validation mAP {curve[last]:.3f}); the best, "
                  f"epoch {best} ({curve[best]:.3f}), is within the noise of {margin:.3f} "
                  f"({NOISE_SIGMAS} standard errors on {num_boxes} boxes)")


def still_rising(curve: dict[int, float], num_boxes: int) -> bool:
    """True when the mean mAP of the last 3 epochs beats the 3 before by more than 1 s.e."""
    values = [curve[e] for e in sorted(curve)]
    if len(values) < 6:
        return False
    recent, before = sum(values[-3:]) / 3, sum(values[-6:-3]) / 3
    return recent - before > map_noise(recent, num_boxes)


def resolve_layout(args: argparse.Namespace) -> PhotoLayout:
    """The data layout from DATA / --voc-root / --format and the set overrides."""
    if (bool(args.data) + bool(args.voc_root) + bool(args.sample)) != 1:
        raise ValueError("give the labelled photos once: DATA (a folder, any layout), "
                         "--voc-root (a VOC devkit) or --sample NAME (a public sample set)")
    if args.sample:
        args.data = str(fetch_sample(args.sample, args.data_dir, args.sample_url))
    layout = detect_layout(os.path.abspath(args.data or args.voc_root),
                           "voc" if args.voc_root else args.format)
    if args.year:
        layout.year = args.year
    layout.train_set = args.train_set or layout.train_set
    layout.test_set = args.test_set or layout.test_set
    return layout


def resolve_class_names(args: argparse.Namespace, layout: PhotoLayout) -> list[str]:
    """``--class-names``, or the names written in the data (printed)."""
    if args.class_names:
        return load_class_names(args.class_names)
    names = data_class_names(layout)
    print(f"classes from the data ({len(names)}): {', '.join(names)}", flush=True)
    return names


def write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (temporary name, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def keep_checkpoint(prefix: str, best_epoch: int, kept_prefix: str) -> None:
    """Copy ``{prefix}-best.params`` to ``{kept_prefix}-{best_epoch:04d}.params`` atomically."""
    target = f"{kept_prefix}-{best_epoch:04d}.params"
    shutil.copyfile(f"{prefix}-best.params", target + ".tmp")
    os.replace(target + ".tmp", target)


def _pack(py: str, layout: PhotoLayout, names: list[str], work: Path,
          pack_side: int = PACK_SIDE) -> tuple[dict, dict]:
    """Steps 1: the training and test records; returns their summaries."""
    common = ["--class-names", ",".join(names), "--resize", str(pack_side)]
    for part, image_set in (("train", layout.train_set), ("test", layout.test_set)):
        run([py, "tools/prepare_dataset.py", *layout.prepare_dataset_args(image_set), *common,
             *(["--no-shuffle"] if part == "test" else []), "--target", str(work / f"{part}.lst"),
             "--summary-json", str(work / f"{part}_summary.json")])
    return tuple(json.loads((work / f"{p}_summary.json").read_text()) for p in ("train", "test"))


def _train(py: str, args: argparse.Namespace, work: Path, train_rec: Path, names: list[str],
           anchors_file: str, num_train: int, copies: float, started: float) -> int:
    """Step 4: train.py from scratch (in two calls under --minutes); returns the epochs."""
    prefix = work / "model" / "ssd"

    def train(end_epoch: int, resume: list[str], warmup: int = 0) -> None:
        run([py, "train.py", "--train-path", str(train_rec), "--val-path", str(work / "test.rec"),
             *recipe_train_flags(end_epoch, args.data_shape, anchors_file, args.seed, warmup),
             "--num-class", str(len(names)), "--class-names", ",".join(names),
             "--prefix", str(prefix), "--gpus", "", "--log", str(work / "train.log"),
             "--frequent", "20", *resume] + shlex.split(args.train_args))

    if args.end_epoch > 0:
        epochs, why = args.end_epoch, "--end-epoch"
    else:
        epochs, why = schedule_epochs(num_train, copies)
    if args.minutes <= 0:
        print(f"schedule: {why}", flush=True)
        train(epochs, [])
        return epochs
    begin = time.time()
    train(1, [], warmup=1)      # the warm-up is the first epoch: its rate is the schedule's
    first_s = time.time() - begin
    epochs = budget_epochs(args.minutes, begin - started, first_s, BUDGET_RESERVE_S)
    print(f"--minutes {args.minutes:g}: the first epoch took {first_s:.0f} s, {epochs} epochs "
          f"fill the budget (training from epoch 2 on)", flush=True)
    if epochs > 1:
        train(epochs, ["--resume", "1"], warmup=1)
    return epochs


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        if not 0 < args.mosaic_floor <= 1:
            raise ValueError(f"--mosaic-floor {args.mosaic_floor:g}: need a share in (0, 1]")
        layout = resolve_layout(args)
        names = resolve_class_names(args, layout)
    except (ValueError, FileNotFoundError, SampleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"data: {layout.description}", flush=True)
    work = Path(args.workdir).resolve()
    (work / "model").mkdir(parents=True, exist_ok=True)
    write_text(work / "model" / "class_names.txt", "\n".join(names) + "\n")
    py = sys.executable
    started = time.time()
    train_summary, test_summary = _pack(py, layout, names, work, args.pack_side)
    num_train, num_test = train_summary["num_listed"], test_summary["num_listed"]
    anchors_file = str(work / "anchors.json")
    run([py, "tools/anchors.py", str(work / "train.rec"), "--network", PHOTO_RECIPE["network"],
         "--data-shape", str(args.data_shape), "--output", anchors_file])
    fitted = json.loads(Path(anchors_file).read_text())
    use_fitted = fitted["coverage_before"] < PHOTO_RECIPE["min_coverage"]
    print(f"anchor coverage of the preset {100 * fitted['coverage_before']:.1f} %, fitted "
          f"{100 * fitted['coverage_after']:.1f} %: training with the "
          f"{'fitted' if use_fitted else 'preset'} anchors", flush=True)
    train_rec = work / "train.rec"
    copies = args.mosaic_copies
    if copies is None:
        copies, why = mosaic_copies(num_train)
        print(why, flush=True)
    if copies > 0 and num_train < 4:
        print(f"only {num_train} training photo(s): no mosaics (a mosaic needs 4)", flush=True)
        copies = 0.0
    elif copies > 0:
        if use_fitted:
            finest = min(fitted["sizes"][0])
        else:
            from symbol.symbol_factory import get_config   # imports MXNet: only here
            finest = min(get_config(PHOTO_RECIPE["network"], args.data_shape)["sizes"][0])
        low, why = mosaic_scale(train_summary.get("box_size_histogram", {}), finest,
                                args.mosaic_floor)
        print(why, flush=True)
        train_rec = work / "train_mosaic.rec"
        run([py, "tools/mosaic.py", str(work / "train.rec"), "--output", str(train_rec),
             "--copies", f"{copies:g}", "--seed", str(args.seed),
             "--scale", str(low), "1.0", "--quiet",
             *([] if args.mosaic_min_visible is None
               else ["--min-visible", f"{args.mosaic_min_visible:g}"])])

    train_started = time.time()
    epochs = _train(py, args, work, train_rec, names, anchors_file if use_fitted else "",
                    num_train, copies, started)
    train_minutes = (time.time() - train_started) / 60.0

    model_prefix = f"{work / 'model' / 'ssd'}_{PHOTO_RECIPE['network']}_{args.data_shape}"
    curve = validation_curve((work / "train.log").read_text())
    kept, kept_why = choose_epoch(curve, epochs, test_summary["objects"])
    print(kept_why, flush=True)
    eval_prefix = model_prefix
    if kept != epochs:
        eval_prefix = f"{work / 'model' / 'ssd_kept'}_{PHOTO_RECIPE['network']}_{args.data_shape}"
        keep_checkpoint(model_prefix, kept, eval_prefix)
    model_flags = ["--network", PHOTO_RECIPE["network"], "--data-shape", str(args.data_shape),
                   "--prefix", eval_prefix, "--epoch", str(kept), "--cpu",
                   "--class-names", ",".join(names)]
    graph_flags = ["--anchors", anchors_file] if use_fitted else []
    graph_flags += ["--flip-test"] if args.flip_test else []     # the graph: anchors, mirror averaging
    eval_out = run([py, "evaluate.py", "--rec-path", str(work / "test.rec"),
                    *model_flags,
                    "--num-class", str(len(names)), "--batch-size", str(min(8, num_test)),
                    "--output-dir", str(work / "eval"), *graph_flags])
    found = re.findall(r"mAP\s*[:=]\s*([0-9.]+)", eval_out)
    map_value = float(found[-1]) if found else float("nan")
    run([py, "tools/photo_report.py", "--rec-path", str(work / "test.rec"), *model_flags,
         "--output-dir", str(work / "report"), *graph_flags,
         *([] if args.pictures else ["--no-pictures"])])
    if args.pictures:
        pictures = [str(Path(layout.root) / ln.rstrip("\n").split("\t")[-1])
                    for ln in (work / "test.lst").read_text().splitlines()[:6]]
        run([py, "demo.py", *model_flags, "--images", ",".join(pictures), "--thresh", "0.5",
             "--output-dir", str(work / "detections"), *graph_flags])

    rising = still_rising(curve, test_summary["objects"])
    summary = {"voc07_map": map_value, "train_minutes": round(train_minutes, 2),
               "total_minutes": round((time.time() - started) / 60.0, 2),
               "load_average_1min_at_end": round(os.getloadavg()[0], 2),
               "data": {"format": layout.format, "root": layout.root,
                        "train_set": layout.train_set, "test_set": layout.test_set,
                        "classes": names, "train_photos": num_train, "test_photos": num_test},
               "recipe": PHOTO_RECIPE | {"end_epoch": epochs, "data_shape": args.data_shape,
                                          "mosaic_copies": copies, "flip_test": args.flip_test,
                                          "seed": args.seed, "minutes": args.minutes},
               "anchors": "fitted" if use_fitted else "preset",
               "anchor_coverage": {"preset": fitted["coverage_before"],
                                   "fitted": fitted["coverage_after"]},
               "validation_curve": {str(e): v for e, v in sorted(curve.items())},
               "kept_epoch": kept, "kept_why": kept_why, "still_rising": rising,
               "evaluated": f"{eval_prefix}-{kept:04d}.params"}
    write_text(work / "photos_summary.json", json.dumps(summary, indent=2))
    print(f"\nFinished: VOC07 mAP {map_value:.4f} on the {layout.test_set} set, {epochs} epochs, "
          f"training {train_minutes:.1f} min, total {summary['total_minutes']:.1f} min "
          f"(load average {summary['load_average_1min_at_end']}).")
    print("Export it for onnxruntime (docs/ONNX.md):\n    " + shlex.join(
        ["python", "deploy.py", *model_flags[:8], "--num-class", str(len(names)),
         "--class-names", ",".join(names), *graph_flags, "--onnx"]))
    if rising:
        print("The validation mAP was still rising at the end: train longer with\n    "
              + train_longer_command(argv if argv is not None else sys.argv[1:], args, epochs))
    return 0


def train_longer_command(argv: list[str], args: argparse.Namespace, epochs: int) -> str:
    """The same command with twice the epochs (or twice the minutes)."""
    kept = strip_flag(strip_flag(argv, "--end-epoch"), "--minutes")
    more = (["--minutes", f"{2 * args.minutes:g}"] if args.minutes > 0
            else ["--end-epoch", str(2 * epochs)])
    return shlex.join(["python", "tools/train_photos.py", *kept, *more])


def strip_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
