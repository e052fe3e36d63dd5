"""Experiment driver that chose the CPU recipe (docs/RECIPE.md): train variants, log mAP by time.

Each variant is a set of ``train.py`` flags (``--augment`` included) on top of a common base,
plus optional overrides of the ``tiny`` preset (anchor sizes, backbone depth) for the runs made
before the preset took its current values. A variant without overrides runs the plain
``train.py`` command; one with overrides runs ``train.main`` in a child process that first
patches the preset. The driver reads the epoch times and ``Validation-mAP`` lines back from the
training log and appends one JSON line per run to ``--results``; ``--report`` prints the
markdown table of docs/RECIPE.md from every run folder under ``--out``.

Example (data from ``python -m tools.run_demo --workdir output/demo``, which packs
``train.rec`` / ``val.rec`` in its work folder)::

    python -m benchmarks.recipe_sweep --data output/demo --variants recipe,recipe_ssd --epochs 16
    python -m benchmarks.recipe_sweep --report --out output/sweep
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

# Flags shared by every variant (a variant's own flags replace these).
BASE_FLAGS = {
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
VARIANTS: dict[str, tuple[str, dict[str, str], dict | None]] = {
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


def override_presets(networks: tuple[str, ...], overrides: dict) -> None:
    """Update every input size of each preset in ``networks`` with ``overrides`` (a sweep child)."""
    from symbol import symbol_factory

    for name in networks:
        for side, preset in symbol_factory.PRESETS[name].items():
            symbol_factory.PRESETS[name][side] = {**preset, **overrides}


def _worker(overrides: str, train_argv: list[str]) -> int:
    """Child process: apply the tiny preset overrides, then run ``train.main``."""
    import train

    if overrides:
        override_presets(("tiny",), json.loads(overrides))
    return train.main(train_argv)


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


def variant_argv(name: str, data: Path, epochs: int, out_dir: Path,
                 class_names: str) -> tuple[str, list[str]]:
    """Augmentation level and the ``train.py`` flags of variant ``name``."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(sorted(VARIANTS))}")
    augment, flags, _ = VARIANTS[name]
    merged = dict(BASE_FLAGS, **flags)
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


def run_variant(name: str, data: Path, epochs: int, out_dir: Path, class_names: str) -> dict:
    """Train one variant in a child process and return its record (also its per-epoch mAP)."""
    augment, argv = variant_argv(name, data, epochs, out_dir, class_names)
    (out_dir / name).mkdir(parents=True, exist_ok=True)
    overrides = VARIANTS[name][2]
    if overrides:   # train.py has no flags for these: a child applies them, then runs train.main
        cmd = [sys.executable, "-m", "benchmarks.recipe_sweep", "--worker",
               "--worker-preset", json.dumps(overrides), "--", *argv]
    else:           # the preset as shipped: the plain train.py command
        cmd = [sys.executable, "train.py", *argv]
    return {"variant": name, "augment": augment, "flags": VARIANTS[name][1], "epochs": epochs,
            "preset": overrides, "data": str(data),
            **run_training(cmd, out_dir / name / "train.log")}


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


def collect_runs(out_dir: Path) -> list[dict]:
    """Records of every run folder under ``out_dir`` from its train.log (finished or stopped)."""
    records = []
    for log_path in sorted(out_dir.glob("*/train.log"), key=lambda p: p.stat().st_mtime):
        name = log_path.parent.name
        text = log_path.read_text()
        history = parse_train_log(text)
        maps = [h["map"] for h in history if h["map"] is not None]
        augment, flags, overrides = VARIANTS.get(name, ("?", {}, None))
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
    """Markdown table of the runs: variant, augmentation, flags, epochs, minutes, mAP."""
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


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="output/demo",
                        help="folder with train.rec, val.rec and synthetic/class_names.txt")
    parser.add_argument("--variants", default="base",
                        help=f"comma list of variants; valid: {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs per run")
    parser.add_argument("--out", default="output/sweep", help="folder for runs and results")
    parser.add_argument("--results", default="",
                        help="JSON-lines file of results (default: <out>/results.jsonl)")
    parser.add_argument("--report", action="store_true",
                        help="only print the table of --results, or without it of every run "
                             "folder under --out (stopped runs included, from their logs)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-preset", default="", help=argparse.SUPPRESS)
    parser.add_argument("train_argv", nargs="*", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker_preset, args.train_argv)
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
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"error: --variants {','.join(unknown)}: unknown; valid: "
              f"{', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in variants:
        report_run(name, run_variant(name, data, args.epochs, out_dir, class_names), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
