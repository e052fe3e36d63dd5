"""The CPU recipe (docs/RECIPE.md): its settings fit the preset and the demo's commands parse."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import demo
import train
from symbol.symbol_factory import get_config, list_networks, list_shapes
from benchmarks import sweep
from tools import make_synthetic_voc, plot_log, run_demo
from tools.run_demo import RECIPE


def _load_cli(name: str):
    """Import a top-level CLI file (``evaluate.py`` is shadowed by the ``evaluate/`` package)."""
    path = Path(__file__).resolve().parent.parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"recipe_cli_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _anchors(network: str, side: int) -> np.ndarray:
    """(N, 4) anchors [x1, y1, x2, y2] of a preset, computed by MultiBoxPrior."""
    from config.mxnet_compat import mx

    from symbol import symbol_builder

    _, _, anchors = symbol_builder.build_heads(num_classes=1, **get_config(network, side))
    executor = anchors.simple_bind(mx.cpu(), data=(1, 3, side, side), grad_req="null")
    return executor.forward()[0].asnumpy().reshape(-1, 4)  # (1, N, 4) -> (N, 4)


def _best_iou(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(G,) best IoU of each box with any anchor."""
    from symbol.anchors import box_iou
    return box_iou(boxes, anchors).max(axis=1)


def test_recipe_settings_are_valid_for_the_preset():
    assert RECIPE["network"] in list_networks()
    assert RECIPE["data_shape"] in list_shapes(RECIPE["network"])
    steps = [int(s) for s in RECIPE["lr_steps"].split(",")]
    assert steps == sorted(set(steps))
    assert RECIPE["warmup_epochs"] < steps[0] < steps[-1] < RECIPE["end_epoch"]
    assert 0 < RECIPE["lr_factor"] < 1 and RECIPE["lr"] > 0 and RECIPE["batch_size"] > 0


@pytest.mark.parametrize("min_size,max_size", [(None, None), (0.1, 0.4)])
def test_recipe_anchors_match_objects_anywhere_in_the_image(min_size, max_size):
    """Nearly every object the generator can draw has an anchor with IoU > 0.5 (SSD's positive
    threshold) wherever it lies: anchor sizes must fit the grid step of their map, not only
    the object sizes (the first tiny preset left 13 % of such objects without one at 160 px)."""
    defaults = make_synthetic_voc.get_parser().parse_args(["--root", "x"])
    low, high = min_size or defaults.min_size, max_size or defaults.max_size
    rng = np.random.default_rng(0)
    sides = rng.uniform(low, high, size=(500, 1)) * rng.uniform(0.85, 1.15, size=(500, 2))
    corners = rng.uniform(0, 1, size=(500, 2)) * (1 - sides)
    boxes = np.hstack([corners, corners + sides])            # (G, 4) normalised x1 y1 x2 y2
    best = _best_iou(boxes, _anchors(RECIPE["network"], RECIPE["data_shape"]))
    assert (best > 0.5).mean() >= 0.98, np.percentile(best, [1, 5, 50])
    assert np.median(best) > 0.65


def _demo_commands(tmp_path, monkeypatch) -> list[list[str]]:
    """Commands run_demo.main would run on prepared data (nothing is executed)."""
    work = tmp_path / "demo"
    voc = work / "synthetic" / "VOCdevkit" / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "test.txt").write_text("000001\n000002\n")
    (work / "synthetic" / "class_names.txt").write_text("circle\nsquare\ntriangle\ncross\n")
    (work / "train.rec").write_bytes(b"")
    (work / "val.rec").write_bytes(b"")
    commands = []

    def fake_run(cmd, log_path=None):
        commands.append(list(cmd))
        return "mAP: 0.5\n" if "evaluate.py" in cmd else ""

    monkeypatch.setattr(run_demo, "run", fake_run)
    assert run_demo.main(["--workdir", str(work), "--keep-data"]) == 0
    summary = json.loads((work / "demo_summary.json").read_text())
    assert summary["voc07_map"] == 0.5
    return commands


def test_demo_commands_parse_with_the_recipe(tmp_path, monkeypatch):
    commands = _demo_commands(tmp_path, monkeypatch)
    by_tool = {cmd[1] if cmd[1] != "-m" else cmd[2]: cmd for cmd in commands}
    assert set(by_tool) == {"train.py", "evaluate.py", "demo.py", "tools.plot_log"}

    train_args = train.get_parser().parse_args(by_tool["train.py"][2:])
    assert train_args.network == RECIPE["network"]
    assert train_args.data_shape == RECIPE["data_shape"]
    assert train_args.batch_size == RECIPE["batch_size"]
    assert train_args.learning_rate == pytest.approx(RECIPE["lr"])
    assert train_args.warmup_epochs == RECIPE["warmup_epochs"]
    assert train_args.end_epoch == RECIPE["end_epoch"]
    assert train_args.lr_refactor_step == RECIPE["lr_steps"]
    assert train_args.pretrained == ""          # from scratch: no VGG weights on a fresh clone
    assert train_args.num_class == 4 and train_args.seed == RECIPE["seed"]
    assert train_args.augment == RECIPE["augment"]

    eval_args = _load_cli("evaluate").get_parser().parse_args(by_tool["evaluate.py"][2:])
    assert eval_args.data_shape == RECIPE["data_shape"]
    assert eval_args.epoch == RECIPE["end_epoch"]
    demo_args = demo.get_parser().parse_args(by_tool["demo.py"][2:])
    assert int(demo_args.data_shape) == RECIPE["data_shape"]   # demo.py takes "S" or "H,W"
    plot_log.get_parser().parse_args(by_tool["tools.plot_log"][3:])


def test_sweep_reads_epoch_times_and_map_from_a_train_log():
    log = ("2026 Node[0] Epoch[0] Time cost=10.5\n"
           "2026 Node[0] Epoch[0] Validation-circle=0.1\n"
           "2026 Node[0] Epoch[0] Validation-mAP=0.25\n"
           "2026 Node[0] Epoch[1] Time cost=9.5\n"
           "2026 Node[0] Epoch[1] Validation-mAP=0.5\n"
           "2026 Node[0] Epoch[2] Time cost=9.0\n")
    history = sweep.parse_train_log(log)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert [h["time"] for h in history] == [10.5, 9.5, 9.0]
    assert [h["map"] for h in history] == [0.25, 0.5, None]


def test_sweep_variants_parse_as_train_flags(tmp_path):
    for name in sweep.RECIPE_VARIANTS:
        augment, argv = sweep.recipe_argv(name, tmp_path, 16, tmp_path, "circle,square")
        assert augment in ("ssd", "light", "none")
        args = train.get_parser().parse_args(argv)
        assert args.end_epoch == 16 and args.num_class == 2
        steps = [int(s) for s in args.lr_refactor_step.split(",")]
        assert steps == sorted(steps) and steps[-1] < 16
    recipe_flags = dict(zip(*[iter(sweep.recipe_argv("recipe", tmp_path, 16, tmp_path,
                                                      "a")[1])] * 2))
    for flag, key in (("--batch-size", "batch_size"), ("--lr", "lr"), ("--lr-steps", "lr_steps"),
                      ("--data-shape", "data_shape"), ("--seed", "seed")):
        assert recipe_flags[flag] == str(RECIPE[key]), flag   # the sweep's recipe is the demo's
    assert sweep.RECIPE_VARIANTS["recipe"][0] == RECIPE["augment"]
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        sweep.recipe_argv("nope", tmp_path, 10, tmp_path, "a")


def test_sweep_children_override_every_size_of_the_named_presets(monkeypatch):
    from symbol import symbol_factory

    presets = {name: dict(sizes) for name, sizes in symbol_factory.PRESETS.items()}
    monkeypatch.setattr(symbol_factory, "PRESETS", presets)
    before = {side: dict(p) for side, p in presets["tiny"].items()}
    untouched = presets["vgg16_reduced"]
    sweep.override_presets(("tiny",), {"normalizations": -1, "new_key": [1, 2]})
    for side, preset in presets["tiny"].items():
        assert preset == {**before[side], "normalizations": -1, "new_key": [1, 2]}
        assert preset is not before[side]
    assert presets["vgg16_reduced"] is untouched
