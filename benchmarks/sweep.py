"""Experiment driver of the recipes (docs/RECIPE.md): train variants, log mAP by time.

Two tables of variants, one subcommand each:

- ``recipe``: the runs that chose the CPU recipe of the synthetic demo (``tools/run_demo.py``),
  on the demo's ``train.rec`` / ``val.rec``. A variant is a set of ``train.py`` flags
  (``--augment`` included) on top of a common base, plus optional overrides of the ``tiny``
  preset (anchor sizes, backbone depth) for the runs made before the preset took its current
  values. A variant without overrides runs the plain ``train.py`` command. ``--report`` prints
  the markdown table of docs/notes/RECIPE.md from every run folder under ``--out``.
- ``photo``: the runs that chose the real-photo recipe (docs/RECIPE.md, "Real photographs"),
  on any pair of records. On top of the flags, a variant may set what train.py has no flag
  for: ``preset`` (keys of the ``tiny`` / ``tiny_photo`` presets: sizes, ratios, backbone_args),
  ``aug`` (iterator keyword arguments on top of the ``--augment`` level) and ``cosine`` (the
  cosine schedule). Each record also holds the machine's load average at its start and end.

A variant with overrides runs ``train.main`` in a child process that first applies them. The
driver reads the epoch times and ``Validation-mAP`` lines back from the training log and
appends one JSON line per run to ``results.jsonl`` (``--results`` for ``recipe``).

Examples (the demo's records from ``python -m tools.run_demo --workdir output/demo``; photo
records from ``tools/prepare_dataset.py`` in ``output/rac``)::

    python -m benchmarks.sweep recipe --data output/demo --variants recipe,recipe_ssd --epochs 16
    python -m benchmarks.sweep recipe --report --out output/sweep
    python -m benchmarks.sweep photo --train output/rac/trainval.rec --val output/rac/test.rec \\
        --class-names raccoon --variants bn256_cos --epochs 60

(Until issue 37 these were two scripts, ``benchmarks/recipe_sweep.py`` and
``benchmarks/photo_sweep.py``, with the same flags and variants.)
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

if __package__ in (None, ""):  # run by path (python benchmarks/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

REPO = Path(__file__).resolve().parent.parent

# ---- the demo recipe's variants (synthetic data) -------------------------------------------
# Flags shared by every variant (a variant's own flags replace these).
RECIPE_BASE_FLAGS = {
    "--network": "tiny", "--data-shape": "160", "--batch-size": "32", "--lr": "0.01",
    "--warmup-epochs": "1", "--wd": "0.0005", "--momentum": "0.9", "--optimizer": "sgd",
    "--freeze": "", "--pretrained": "", "--lr-factor": "0.1", "--nms": "0.45",
    "--seed": "1",
}

SIZES_3X = [[.12, .17], [.25, .33], [.45, .55], [.65, .75], [.85, .95]]   # the preset's now
# the first tiny preset's sizes (about 1.2-1.5x the anchor step at 160 px)
SIZES_OLD = [[.06, .1], [.15, .22], [.3, .39], [.5, .59], [.7, .84]]

_BS8 = {"--batch-size": "8"}
_SHALLOW = {"stage_depth": [1, 1, 1, 1, 1]}       # the first tiny backbone: 5 convolutions
_OLD = {"sizes": SIZES_OLD, "backbone_args": _SHALLOW}
_DEEP = {"sizes": SIZES_OLD, "backbone_args": {"stage_depth": [1, 1, 2, 2, 2]}}
_DEEPER = {"sizes": SIZES_OLD, "backbone_args": {"stage_depth": [1, 2, 2, 2, 2]}}
_WIDE = {"sizes": SIZES_OLD, "backbone_args": {"stage_filters": [32, 64, 128, 128, 128],
                                               "stage_depth": [1, 1, 2, 2, 1]}}

# name -> (augmentation level, train.py flags, tiny preset overrides or None), in the order run
RECIPE_VARIANTS: dict[str, tuple[str, dict[str, str], dict | None]] = {
    "base": ("ssd", {}, _OLD),                   # the demo's first recipe (lr steps 20,26)
    "lr04": ("ssd", {"--lr": "0.04"}, _OLD),
    "lr04_light": ("light", {"--lr": "0.04"}, _OLD),
    "bs8_light": ("light", {**_BS8, "--lr": "0.01"}, _OLD),
    "bs8_light_deep": ("light", {**_BS8, "--lr": "0.01"}, _DEEP),
    "adam_ssd_deeper": ("ssd", {**_BS8, "--optimizer": "adam", "--lr": "0.002"}, _DEEPER),
    "bs8_ssd_deeper": ("ssd", {**_BS8, "--lr": "0.01"}, _DEEPER),
    "bs8_lr04_ssd": ("ssd", {**_BS8, "--lr": "0.04"}, _OLD),
    "bs8_lr10_ssd": ("ssd", {**_BS8, "--lr": "0.1"}, _OLD),
    "bs8_lr20_ssd": ("ssd", {**_BS8, "--lr": "0.2"}, _OLD),
    "bs8_lr10_light": ("light", {**_BS8, "--lr": "0.1"}, _OLD),
    "bs8_lr10_light_wide": ("light", {**_BS8, "--lr": "0.1"}, _WIDE),
    # anchor sizes ~2.5-3.5x the anchor step of each map at 160 px (SSD300 uses ~3.8x)
    "bs8_lr10_light_sizes": ("light", {**_BS8, "--lr": "0.1"},
                             {"sizes": SIZES_3X, "backbone_args": _SHALLOW}),
    "bs8_lr10_ssd_sizes": ("ssd", {**_BS8, "--lr": "0.1"},
                           {"sizes": SIZES_3X, "backbone_args": _SHALLOW}),
    # the recipe of tools/run_demo.py (the tiny preset has had SIZES_3X since the run above)
    "recipe": ("light", {**_BS8, "--lr": "0.1", "--lr-steps": "12,15"}, None),
    "recipe_ssd": ("ssd", {**_BS8, "--lr": "0.1", "--lr-steps": "12,15"}, None),
    "recipe_none": ("none", {**_BS8, "--lr": "0.1", "--lr-steps": "12,15"},
                    {"backbone_args": _SHALLOW}),
    "recipe_shallow": ("light", {**_BS8, "--lr": "0.1", "--lr-steps": "12,15"},
                       {"backbone_args": _SHALLOW}),
    # tiny with stage depth 1,1,2,2,2 (the preset's since this run) = the recipe
    "recipe_deep": ("light", {**_BS8, "--lr": "0.1", "--lr-steps": "12,15"},
                    {"backbone_args": {"stage_depth": [1, 1, 2, 2, 2]}}),
}

# lr decays at these fractions of the schedule (x0.1 each)
LR_STEP_FRACTIONS = (0.7, 0.9)

# ---- the real-photo recipe's variants ------------------------------------------------------
PHOTO_BASE_FLAGS = {
    "--network": "tiny", "--data-shape": "256", "--batch-size": "8", "--lr": "0.1",
    "--warmup-epochs": "2", "--wd": "0.0005", "--momentum": "0.9", "--optimizer": "sgd",
    "--freeze": "", "--pretrained": "", "--lr-factor": "0.1", "--nms": "0.45", "--seed": "1",
}

# name -> (train.py flags, overrides {"preset": ..., "aug": ..., "cosine": ...})
PHOTO_VARIANTS: dict[str, tuple[dict[str, str], dict]] = {
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


# ---- child process: overrides, then train.main ---------------------------------------------
def override_presets(networks: tuple[str, ...], overrides: dict) -> None:
    """Update every input size of each preset in ``networks`` with ``overrides`` (a sweep child)."""
    from symbol import symbol_factory

    for name in networks:
        for side, preset in symbol_factory.PRESETS[name].items():
            symbol_factory.PRESETS[name][side] = {**preset, **overrides}


def _worker(overrides: dict, train_argv: list[str]) -> int:
    """Child process: apply ``overrides`` (``networks`` + ``preset``, ``aug``), run ``train.main``."""
    import train

    if overrides.get("preset"):
        override_presets(tuple(overrides["networks"]), overrides["preset"])
    aug = overrides.get("aug") or {}
    if aug:
        import train_net
        from config import config

        base = config.train_augmentation

        def patched(name: str = "ssd") -> dict:
            kwargs = base(name)
            kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()})
            return kwargs

        train_net.train_augmentation = patched
    return train.main(train_argv)


def worker_command(overrides: dict, train_argv: list[str]) -> list[str]:
    """The child's command line: this module with ``--worker JSON -- <train.py flags>``."""
    return [sys.executable, "-m", "benchmarks.sweep", "--worker", json.dumps(overrides), "--",
            *train_argv]


# ---- running and reading back --------------------------------------------------------------
def parse_train_log(text: str) -> list[dict]:
    """Per epoch: ``epoch``, ``time`` (training seconds) and ``map`` from a train.py log.

    Parameters
    ----------
    text : str
        Content of the ``--log`` file of ``train.py``.

    Returns
    -------
    list of dict
        One entry per epoch that logged a time cost, in order; ``map`` is None when the
        epoch logged no ``Validation-mAP``.
    """
    epochs: dict[int, dict] = {}
    for match in re.finditer(r"Epoch\[(\d+)\] Time cost=([0-9.]+)", text):
        epochs.setdefault(int(match.group(1)), {"map": None})["time"] = float(match.group(2))
    for match in re.finditer(r"Epoch\[(\d+)\] Validation-mAP=([0-9.naN]+)", text):
        epochs.setdefault(int(match.group(1)), {"time": 0.0})["map"] = float(match.group(2))
    return [{"epoch": e, "time": v.get("time", 0.0), "map": v["map"]}
            for e, v in sorted(epochs.items())]


def run_training(cmd: list[str], log_path: Path) -> dict:
    """Run one training command in a child process; its times and mAP read back from its log.

    Returns
    -------
    dict
        ``returncode``, ``train_minutes`` (sum of epoch times), ``wall_minutes``,
        ``final_map``, ``best_map``, ``history`` (per epoch) and, on failure, ``error``.
    """
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ, MPLBACKEND="Agg"))
    wall = time.time() - started
    history = parse_train_log(log_path.read_text()) if log_path.exists() else []
    maps = [h["map"] for h in history if h["map"] is not None]
    record = {"returncode": proc.returncode,
              "train_minutes": round(sum(h["time"] for h in history) / 60.0, 2),
              "wall_minutes": round(wall / 60.0, 2),
              "final_map": maps[-1] if maps else None, "best_map": max(maps) if maps else None,
              "history": history}
    if proc.returncode != 0:
        record["error"] = proc.stderr[-2000:]
    return record


def report_run(name: str, record: dict, results: Path) -> None:
    """Append ``record`` to the ``results`` JSON-lines file and print its summary line."""
    with results.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    load = (f", load {record['load_start']}->{record['load_end']}"
            if "load_start" in record else "")
    print(f"{name}: final mAP {record['final_map']}, best {record['best_map']}, "
          f"train {record['train_minutes']} min, wall {record['wall_minutes']} min{load}, "
          f"rc {record['returncode']}", flush=True)
    if record["returncode"] != 0:
        print(record.get("error", ""), file=sys.stderr)


# ---- recipe ---------------------------------------------------------------------------------
def recipe_argv(name: str, data: Path, epochs: int, out_dir: Path,
                class_names: str) -> tuple[str, list[str]]:
    """Augmentation level and the ``train.py`` flags of recipe variant ``name``."""
    if name not in RECIPE_VARIANTS:
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(sorted(RECIPE_VARIANTS))}")
    augment, flags, _ = RECIPE_VARIANTS[name]
    merged = dict(RECIPE_BASE_FLAGS, **flags)
    steps = sorted({max(1, round(epochs * f)) for f in LR_STEP_FRACTIONS})
    merged.setdefault("--lr-steps", ",".join(str(s) for s in steps))
    merged.update({
        "--train-path": str(data / "train.rec"), "--val-path": str(data / "val.rec"),
        "--end-epoch": str(epochs), "--num-class": str(len(class_names.split(","))),
        "--class-names": class_names, "--prefix": str(out_dir / name / "ssd"),
        "--log": str(out_dir / name / "train.log"), "--gpus": "", "--frequent": "1000",
        "--augment": augment,
    })
    argv = [item for key, value in merged.items() for item in (key, value)]
    return augment, argv


def run_recipe_variant(name: str, data: Path, epochs: int, out_dir: Path,
                       class_names: str) -> dict:
    """Train one recipe variant in a child process and return its record (also its per-epoch mAP)."""
    augment, argv = recipe_argv(name, data, epochs, out_dir, class_names)
    (out_dir / name).mkdir(parents=True, exist_ok=True)
    overrides = RECIPE_VARIANTS[name][2]
    if overrides:   # train.py has no flags for these: a child applies them, then runs train.main
        cmd = worker_command({"networks": ["tiny"], "preset": overrides}, argv)
    else:           # the preset as shipped: the plain train.py command
        cmd = [sys.executable, "train.py", *argv]
    return {"variant": name, "augment": augment, "flags": RECIPE_VARIANTS[name][1],
            "epochs": epochs, "preset": overrides, "data": str(data),
            **run_training(cmd, out_dir / name / "train.log")}


def collect_runs(out_dir: Path) -> list[dict]:
    """Records of every run folder under ``out_dir`` from its train.log (finished or stopped)."""
    records = []
    for log_path in sorted(out_dir.glob("*/train.log"), key=lambda p: p.stat().st_mtime):
        name = log_path.parent.name
        text = log_path.read_text()
        history = parse_train_log(text)
        maps = [h["map"] for h in history if h["map"] is not None]
        augment, flags, overrides = RECIPE_VARIANTS.get(name, ("?", {}, None))
        train_path = re.search(r"'train_path': '([^']*)'", text)
        records.append({
            "variant": name, "augment": augment, "flags": flags, "epochs": len(history),
            "preset": overrides,
            "data": str(Path(train_path.group(1)).parent) if train_path else "?",
            "train_minutes": round(sum(h["time"] for h in history) / 60.0, 2),
            "wall_minutes": None, "final_map": maps[-1] if maps else None,
            "best_map": max(maps) if maps else None, "history": history})
    return records


def format_table(records: list[dict]) -> str:
    """Markdown table of the recipe runs: variant, augmentation, flags, epochs, minutes, mAP."""
    lines = ["| run | data | augment | flags | epochs | train min | wall min | final mAP | best mAP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        flags = " ".join(f"{k} {v}" for k, v in r["flags"].items()) or "(base)"
        preset = dict(r.get("preset") or {})
        sizes = preset.pop("sizes", SIZES_3X)
        flags += ", old anchors" if sizes == SIZES_OLD else ", 3x anchors"
        for key, value in preset.get("backbone_args", {}).items():
            flags += f", {key} {','.join(str(v) for v in value)}"
        fmt = (lambda v: "n/a" if v is None else f"{v:.3f}")
        wall = "-" if r["wall_minutes"] is None else f"{r['wall_minutes']:.1f}"
        lines.append(f"| {r['variant']} | {Path(r['data']).name} | {r['augment']} | {flags} | "
                     f"{r['epochs']} | {r['train_minutes']:.1f} | {wall} | "
                     f"{fmt(r['final_map'])} | {fmt(r['best_map'])} |")
    return "\n".join(lines)


def parse_variants(value: str, known: dict) -> list[str] | None:
    """The names of a comma list, or None after an ``error:`` line naming the unknown ones."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in names if v not in known]
    if unknown:
        print(f"error: --variants {','.join(unknown)}: unknown; valid: {', '.join(known)}",
              file=sys.stderr)
        return None
    return names


def main_recipe(args: argparse.Namespace) -> int:
    """``sweep recipe``: run the variants on the demo's records, or print the report."""
    out_dir = Path(args.out).resolve()
    results = Path(args.results) if args.results else out_dir / "results.jsonl"
    if args.report and not args.results:
        print(format_table(collect_runs(out_dir)))
        return 0
    if args.report:
        if not results.exists():
            print(f"error: --results {results} not found", file=sys.stderr)
            return 2
        records = [json.loads(line) for line in results.read_text().splitlines() if line]
        print(format_table(records))
        return 0
    data = Path(args.data).resolve()
    names_file = data / "synthetic" / "class_names.txt"
    for path in (data / "train.rec", data / "val.rec", names_file):
        if not path.exists():
            print(f"error: --data {data}: {path.name} not found (run tools.run_demo first)",
                  file=sys.stderr)
            return 2
    class_names = ",".join(n.strip() for n in names_file.read_text().splitlines() if n.strip())
    variants = parse_variants(args.variants, RECIPE_VARIANTS)
    if variants is None:
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in variants:
        report_run(name, run_recipe_variant(name, data, args.epochs, out_dir, class_names),
                   results)
    return 0


# ---- photo ----------------------------------------------------------------------------------
def photo_argv(name: str, args: argparse.Namespace) -> tuple[int, list[str]]:
    """Epochs and the ``train.py`` flags of photo variant ``name`` (``args``: the subcommand's)."""
    flags, overrides = PHOTO_VARIANTS[name]
    out_dir = Path(args.out) / name
    merged = dict(PHOTO_BASE_FLAGS, **flags)
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
    return epochs, [item for key, value in merged.items() for item in (key, value)]


def run_photo_variant(name: str, args: argparse.Namespace) -> dict:
    """Train one photo variant in a child process and return its record."""
    flags, overrides = PHOTO_VARIANTS[name]
    out_dir = Path(args.out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs, argv = photo_argv(name, args)
    cmd = worker_command({"networks": ["tiny", "tiny_photo"], **overrides}, argv)
    load_start = os.getloadavg()[0]
    run = run_training(cmd, out_dir / "train.log")
    return {"variant": name, "flags": flags, "overrides": overrides, "epochs": epochs,
            "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2), **run}


def main_photo(args: argparse.Namespace) -> int:
    """``sweep photo``: run the variants on the given records."""
    names = parse_variants(args.variants, PHOTO_VARIANTS)
    if names is None:
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in names:
        report_run(name, run_photo_variant(name, args), Path(args.out) / "results.jsonl")
    return 0


# ---- command line ---------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    """Parser of ``python -m benchmarks.sweep {recipe,photo} ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="table", required=True, metavar="{recipe,photo}")
    recipe = sub.add_parser("recipe", help="the demo recipe's variants (synthetic data)",
                            description="Variants of the demo recipe on tools.run_demo's records.")
    recipe.add_argument("--data", default="output/demo",
                        help="folder with train.rec, val.rec and synthetic/class_names.txt")
    recipe.add_argument("--variants", default="base",
                        help=f"comma list of variants; valid: {', '.join(RECIPE_VARIANTS)}")
    recipe.add_argument("--epochs", type=int, default=12, help="training epochs per run")
    recipe.add_argument("--out", default="output/sweep", help="folder for runs and results")
    recipe.add_argument("--results", default="",
                        help="JSON-lines file of results (default: <out>/results.jsonl)")
    recipe.add_argument("--report", action="store_true",
                        help="only print the table of --results, or without it of every run "
                             "folder under --out (stopped runs included, from their logs)")
    photo = sub.add_parser("photo", help="the real-photo recipe's variants",
                           description="Variants of the real-photo recipe on two records.")
    photo.add_argument("--train", default="output/rac/trainval.rec", help="training .rec")
    photo.add_argument("--val", default="output/rac/test.rec", help="validation .rec")
    photo.add_argument("--class-names", default="raccoon", help="comma list of class names")
    photo.add_argument("--variants", default="light256",
                       help=f"comma list of: {', '.join(PHOTO_VARIANTS)}")
    photo.add_argument("--epochs", type=int, default=30,
                       help="epochs per run (unless the variant sets them)")
    photo.add_argument("--out", default="output/photo_sweep",
                       help="folder of the runs and results.jsonl")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:        # a child of the sweep: --worker JSON -- <train.py flags>
        rest = argv[2:]
        return _worker(json.loads(argv[1]), rest[1:] if rest[:1] == ["--"] else rest)
    args = get_parser().parse_args(argv)
    return main_recipe(args) if args.table == "recipe" else main_photo(args)


if __name__ == "__main__":
    sys.exit(main())
