"""Experiment driver that chose the real-photo recipe (docs/RECIPE.md, "Real photographs").

Each variant is a set of ``train.py`` flags on top of a common base, plus optional in-process
overrides that train.py has no flag for: ``preset`` (keys of the ``tiny`` preset: sizes, ratios,
backbone_args) and ``aug`` (iterator keyword arguments on top of the ``--augment`` level). A
child process applies them and runs ``train.main``; the driver reads the epoch times and
``Validation-mAP`` lines back from the log and appends one JSON line per run to
``<out>/results.jsonl`` with the machine's load average at the start and the end.

Example (records from ``tools/prepare_dataset.py`` in ``output/rac``)::

    python benchmarks/photo_sweep.py --train output/rac/trainval.rec --val output/rac/test.rec \\
        --class-names raccoon --variants base256 --out output/photo_sweep
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):       # run by path: make the repository root importable
    sys.path.insert(0, str(REPO))

from benchmarks.recipe_sweep import override_presets, report_run, run_training  # noqa: E402

BASE_FLAGS = {
    "--network": "tiny", "--data-shape": "256", "--batch-size": "8", "--lr": "0.1",
    "--warmup-epochs": "2", "--wd": "0.0005", "--momentum": "0.9", "--optimizer": "sgd",
    "--freeze": "", "--pretrained": "", "--lr-factor": "0.1", "--nms": "0.45", "--seed": "1",
}

# name -> (train.py flags, overrides {"preset": ..., "aug": ...})
VARIANTS: dict[str, tuple[dict[str, str], dict]] = {
    "light160": ({"--data-shape": "160", "--augment": "light"}, {}),
    "light256": ({"--augment": "light"}, {}),
    "ssd256": ({"--augment": "ssd"}, {}),
    "photo256": ({"--augment": "photo"}, {}),
    "photo256_cos": ({"--augment": "photo"}, {"cosine": True}),
    "light256_cos": ({"--augment": "light"}, {"cosine": True}),
    # ratios of tools/anchors.py on raccoon trainval at 256 (sizes: the preset's, coverage 100 %)
    "light256_cos_kmeans": ({"--augment": "light"},
                            {"cosine": True, "preset": {"ratios": [[0.811, 0.566, 1.146]] * 5}}),
    # BatchNorm in the extra layers too (the tiny_photo preset)
    "bn256_cos": ({"--network": "tiny_photo", "--augment": "light"}, {"cosine": True}),
    "bn256_cos_wd1e3": ({"--network": "tiny_photo", "--augment": "light", "--wd": "0.001"},
                        {"cosine": True}),
    "bn288_cos": ({"--network": "tiny_photo", "--augment": "light", "--data-shape": "288"},
                  {"cosine": True}),
    "bn256_cos_lr05": ({"--network": "tiny_photo", "--augment": "light", "--lr": "0.05"},
                       {"cosine": True}),
    # wider stages (1.5x filters) and a second convolution in stage 2
    "light256_cos_wide": ({"--augment": "light"},
                          {"cosine": True, "preset": {"backbone_args": {
                              "stage_filters": [24, 48, 96, 192, 192],
                              "stage_depth": [1, 2, 2, 2, 2]}}}),
}


def _worker(overrides: dict, train_argv: list[str]) -> int:
    """Child process: apply the overrides, then run ``train.main``."""
    import train
    import train_net
    from config import config

    if overrides.get("preset"):
        override_presets(("tiny", "tiny_photo"), overrides["preset"])
    aug = overrides.get("aug") or {}
    if aug:
        base = config.train_augmentation

        def patched(name: str = "ssd") -> dict:
            kwargs = base(name)
            kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()})
            return kwargs

        train_net.train_augmentation = patched
    return train.main(train_argv)


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """Train one variant in a child process and return its record."""
    flags, overrides = VARIANTS[name]
    out_dir = Path(args.out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = dict(BASE_FLAGS, **flags)
    if overrides.get("cosine"):     # runs made before train.py had --lr-schedule patched fit.py
        merged["--lr-schedule"] = "cosine"
    merged.setdefault("--augment", "light")
    epochs = int(merged.pop("--end-epoch", args.epochs))
    if "--lr-steps" not in merged:
        merged["--lr-steps"] = f"{round(epochs * 0.7)},{round(epochs * 0.9)}"
    merged.update({"--train-path": args.train, "--val-path": args.val,
                   "--end-epoch": str(epochs), "--num-class": str(len(args.class_names.split(","))),
                   "--class-names": args.class_names, "--prefix": str(out_dir / "ssd"),
                   "--log": str(out_dir / "train.log"), "--gpus": "", "--frequent": "1000",
                   "--save-period": "1"})
    argv = [item for key, value in merged.items() for item in (key, value)]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker",
           "--worker-overrides", json.dumps(overrides), "--", *argv]
    load_start = os.getloadavg()[0]
    run = run_training(cmd, out_dir / "train.log")
    return {"variant": name, "flags": flags, "overrides": overrides, "epochs": epochs,
            "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2), **run}


def get_parser() -> argparse.ArgumentParser:
    """Command-line parser of the sweep."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default="output/rac/trainval.rec", help="training .rec")
    p.add_argument("--val", default="output/rac/test.rec", help="validation .rec")
    p.add_argument("--class-names", default="raccoon", help="comma list of class names")
    p.add_argument("--variants", default="light256", help=f"comma list of: {', '.join(VARIANTS)}")
    p.add_argument("--epochs", type=int, default=30, help="epochs per run (unless the variant sets them)")
    p.add_argument("--out", default="output/photo_sweep", help="folder of the runs and results.jsonl")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-overrides", default="{}", help=argparse.SUPPRESS)
    p.add_argument("train_argv", nargs="*", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = get_parser().parse_args(argv)
    if args.worker:
        return _worker(json.loads(args.worker_overrides), args.train_argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        print(f"error: --variants {','.join(unknown)}: unknown; valid: {', '.join(VARIANTS)}",
              file=sys.stderr)
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in names:
        report_run(name, run_variant(name, args), Path(args.out) / "results.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
