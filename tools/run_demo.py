"""The demo: synthetic VOC data -> .rec -> train a small SSD on CPU -> mAP -> pictures.

Every step runs the project's real command-line tools as a user would, so the demo is also
the end-to-end check of the whole path. Run it with ``make demo`` (which first creates the
environment) or directly::

    python -m tools.run_demo --workdir output/demo

The training settings are the recommended CPU recipe (README, "The CPU recipe").
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path (python tools/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

REPO = Path(__file__).resolve().parent.parent

# The recommended CPU recipe (chosen by measurement: docs/RECIPE.md, benchmarks/sweep.py recipe).
RECIPE = {
    "network": "tiny",      # BatchNorm backbone; anchor sizes ~3x the anchor step of each map
    "data_shape": 160,      # images are packed at this side (prepare_dataset --resize)
    "batch_size": 8,        # 150 updates per epoch of 1200 images: 4x more than batch 32
    "lr": 0.1,              # SGD, momentum 0.9; BatchNorm lets a from-scratch net take it
    "warmup_epochs": 1,     # linear warm-up over the first epoch
    "end_epoch": 16,
    "lr_steps": "12,15",    # x0.1 after 3/4 and 15/16 of the schedule
    "lr_factor": 0.1,
    "wd": 0.0005,
    "freeze": "",           # from scratch: nothing frozen
    "augment": "light",     # crops keep >= 50 % of the side, zoom-out <= 2x ("ssd": up to 4x)
    "seed": 1,              # train.py --seed: initialisation and data order
}

# Synthetic dataset drawn for the demo (the generator's defaults unless named here).
DATASET = {"num_train": 1200, "num_test": 300, "seed": 0}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workdir", default="output/demo",
                        help="folder for the data, records, checkpoints and pictures")
    parser.add_argument("--num-train", type=int, default=DATASET["num_train"],
                        help="synthetic training images")
    parser.add_argument("--num-test", type=int, default=DATASET["num_test"],
                        help="synthetic held-back test images")
    parser.add_argument("--seed", type=int, default=DATASET["seed"],
                        help="seed of the synthetic dataset")
    parser.add_argument("--generator-args", default="",
                        help="extra flags for tools/make_synthetic_voc.py, e.g. '--max-objects 8'")
    parser.add_argument("--end-epoch", type=int, default=RECIPE["end_epoch"],
                        help="training epochs")
    parser.add_argument("--train-args", default="",
                        help="extra flags for train.py, appended after the recipe's")
    parser.add_argument("--keep-data", action="store_true",
                        help="reuse data and records already in --workdir")
    return parser


def recipe_train_flags(end_epoch: int) -> list[str]:
    """``train.py`` flags of the recipe (model, optimisation, schedule, augmentation).

    Parameters
    ----------
    end_epoch : int
        Epochs to train (``RECIPE['end_epoch']`` unless ``--end-epoch`` says otherwise).

    Returns
    -------
    list of str
        Flags and values, without the data paths, classes, prefix and log.
    """
    flags = ["--network", RECIPE["network"], "--data-shape", str(RECIPE["data_shape"]),
             "--batch-size", str(RECIPE["batch_size"]), "--lr", str(RECIPE["lr"]),
             "--warmup-epochs", str(RECIPE["warmup_epochs"]), "--lr-steps", RECIPE["lr_steps"],
             "--lr-factor", str(RECIPE["lr_factor"]), "--wd", str(RECIPE["wd"]),
             "--freeze", RECIPE["freeze"], "--pretrained", "", "--seed", str(RECIPE["seed"]),
             "--end-epoch", str(end_epoch), "--augment", RECIPE["augment"]]
    return flags


def run(cmd: list[str], log_path: Path | None = None) -> str:
    """Run one step, echo it, stream its output, and return the output."""
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    proc.wait()
    output = "".join(lines)
    if log_path is not None:
        log_path.write_text(output)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed with exit code {proc.returncode}: {' '.join(cmd)}")
    return output


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    work = (REPO / args.workdir).resolve() if not os.path.isabs(args.workdir) else Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    voc_root = work / "synthetic"
    devkit = voc_root / "VOCdevkit"
    names = voc_root / "class_names.txt"
    train_lst, val_lst = work / "train.lst", work / "val.lst"
    started = time.time()

    if not (args.keep_data and (work / "train.rec").exists() and (work / "val.rec").exists()):
        run([py, "-m", "tools.make_synthetic_voc", "--root", str(voc_root),
             "--num-train", str(args.num_train), "--num-test", str(args.num_test),
             "--seed", str(args.seed)] + shlex.split(args.generator_args))
        common = ["--dataset", "pascal", "--year", "2007", "--root", str(devkit),
                  "--class-names", str(names), "--resize", str(RECIPE["data_shape"])]
        run([py, "-m", "tools.prepare_dataset", *common, "--set", "trainval",
             "--target", str(train_lst)])
        run([py, "-m", "tools.prepare_dataset", *common, "--set", "test",
             "--target", str(val_lst), "--no-shuffle"])

    class_names = ",".join(n.strip() for n in names.read_text().splitlines() if n.strip())
    num_class = len(class_names.split(","))
    shape = str(RECIPE["data_shape"])
    prefix = work / "model" / "ssd"
    prefix.parent.mkdir(exist_ok=True)
    log = work / "train.log"
    train_started = time.time()
    run([py, "train.py", "--train-path", str(work / "train.rec"),
         "--val-path", str(work / "val.rec"), *recipe_train_flags(args.end_epoch),
         "--num-class", str(num_class), "--class-names", class_names, "--prefix", str(prefix),
         "--gpus", "", "--log", str(log), "--frequent", "10"] + shlex.split(args.train_args))
    train_minutes = (time.time() - train_started) / 60.0

    model_prefix = f"{prefix}_{RECIPE['network']}_{shape}"
    eval_out = run([py, "evaluate.py", "--rec-path", str(work / "val.rec"),
                    "--network", RECIPE["network"], "--data-shape", shape,
                    "--num-class", str(num_class), "--class-names", class_names,
                    "--prefix", model_prefix, "--epoch", str(args.end_epoch), "--cpu",
                    "--output-dir", str(work / "eval")])
    match = re.findall(r"mAP\s*[:=]\s*([0-9.]+)", eval_out)
    map_value = float(match[-1]) if match else float("nan")

    test_images = sorted((devkit / "VOC2007" / "JPEGImages").glob("*.jpg"))
    test_ids = (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text().split()
    pictures = [str(devkit / "VOC2007" / "JPEGImages" / f"{i}.jpg") for i in test_ids[:6]]
    if not pictures:
        pictures = [str(p) for p in test_images[:6]]
    run([py, "demo.py", "--network", RECIPE["network"], "--data-shape", shape,
         "--prefix", model_prefix, "--epoch", str(args.end_epoch), "--cpu",
         "--class-names", class_names, "--images", ",".join(pictures),
         "--thresh", "0.5", "--output-dir", str(work / "detections")])
    run([py, "-m", "tools.plot_log", str(log), "--output", str(work / "learning_curve.png")])

    summary = {
        "voc07_map": map_value,
        "train_minutes": round(train_minutes, 2),
        "total_minutes": round((time.time() - started) / 60.0, 2),
        "recipe": RECIPE | {"end_epoch": args.end_epoch},
        "outputs": {"detections": str(work / "detections"), "eval": str(work / "eval"),
                    "learning_curve": str(work / "learning_curve.png")},
    }
    (work / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nDemo finished: VOC07 mAP {map_value:.4f} on {args.num_test} held-back images, "
          f"training {train_minutes:.1f} min, total {summary['total_minutes']:.1f} min.")
    print(f"Pictures of detections: {work / 'detections'}; learning curve: "
          f"{work / 'learning_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
