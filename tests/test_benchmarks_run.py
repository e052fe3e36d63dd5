"""Every benchmark script runs from benchmarks/README.md as written (issue 37).

The commands are read from the README's table: one row per script of ``benchmarks/``, each flag
of a row's command one that the script's parser takes. The scripts that no other test runs
run here as a subprocess, from the repository root, with the row's command shrunk to a tiny
size (flags replaced or added, nothing else changed), and their printed figures are checked.
The others run at a tiny size in their own test files (the README's last column):
``benchmark.py`` in test_benchmark.py, ``benchmark_pack.py`` in test_benchmark_pack.py,
``vs_original.py`` in test_vs_original.py, ``soak.py --straight`` in test_soak.py.
"""
from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "benchmarks" / "README.md"
FLOAT = r"[0-9]+(?:\.[0-9]+)?(?:e[-+][0-9]+)?"


def readme_commands() -> dict[str, list[list[str]]]:
    """Script file name -> the commands (argv, ``python`` first) of its row of the table."""
    rows: dict[str, list[list[str]]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `(\w+\.py)`", line)
        if match:
            command_cell = line.split(" | ")[2]
            rows[match.group(1)] = [shlex.split(c) for c in
                                    re.findall(r"`(python [^`]+)`", command_cell)]
    return rows


def benchmark_scripts() -> list[str]:
    """File names of the runnable scripts of benchmarks/ (an ``if __name__ == ...`` block)."""
    found = []
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)
               for node in tree.body):
            found.append(path.name)
    return found


def command(script: str, pick: str = "") -> list[str]:
    """The README's command of ``script`` (the one containing ``pick`` when it has several)."""
    commands = [c for c in readme_commands()[script] if not pick or pick in c]
    assert len(commands) == 1, (script, pick, readme_commands()[script])
    return commands[0]


def shrink(argv: list[str], flags: dict[str, str | list[str] | None],
           positional: dict[str, str] | None = None) -> list[str]:
    """``argv`` with every occurrence of each flag of ``flags`` (and its value) removed and the
    flag added with the given value(s) (None: a switch); ``positional`` replaces arguments."""
    out, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token in flags:
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        out.append((positional or {}).get(token, token))
    for flag, value in flags.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            out += [flag] if v is None else [flag, v]
    return out


def run(argv: list[str], timeout: float = 300) -> str:
    """Run a README command (``python`` = this interpreter) from the repository root, one
    OpenMP thread; returns stdout after checking the exit status."""
    assert argv[0] == "python"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable] + argv[1:], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(argv)}: exit {proc.returncode}\n" \
                                 f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


# ---- the table -------------------------------------------------------------------------------
def test_one_row_per_script_and_each_command_runs_its_script():
    rows = readme_commands()
    assert sorted(rows) == benchmark_scripts()
    for script, commands in rows.items():
        assert commands, script
        name = script[:-3]
        for argv in commands:
            assert argv[0] == "python"
            assert argv[1:3] == ["-m", f"benchmarks.{name}"] or \
                argv[1] == f"benchmarks/{script}", argv


def test_every_flag_of_the_readme_is_one_the_script_takes(capsys):
    for script, commands in readme_commands().items():
        module = importlib.import_module(f"benchmarks.{script[:-3]}")
        for argv in commands:
            rest = argv[3:] if argv[1] == "-m" else argv[2:]
            try:
                module.get_parser().parse_args(rest)
            except SystemExit:
                pytest.fail(f"{shlex.join(argv)}: {capsys.readouterr().err.strip()}")


def test_shrink_replaces_flags_and_positionals():
    argv = ["python", "-m", "x", "data/a.rec", "--preset", "a", "--preset", "b", "--zoo", "--n", "5"]
    assert shrink(argv, {"--preset": ["c"], "--n": "1", "--zoo": None, "--new": "2"},
                  {"data/a.rec": "/tmp/b.rec"}) == \
        ["python", "-m", "x", "/tmp/b.rec", "--preset", "c", "--n", "1", "--zoo", "--new", "2"]


# ---- each script at a tiny size --------------------------------------------------------------
def test_benchmark_metric():
    out = run(shrink(command("benchmark_metric.py"), {"--images": "64", "--dets": "10"}))
    assert out.startswith("64 images x 10 detections, 10 label rows, 20 classes, batch 32")
    rows = re.findall(rf"^(\w+)\s+update ({FLOAT}) s  get ({FLOAT}) s  total ({FLOAT}) s  "
                      rf"CPU ({FLOAT}) s  mAP ({FLOAT})$", out, re.M)
    assert [r[0] for r in rows] == ["MApMetric", "VOC07MApMetric"]
    for row in rows:
        assert float(row[3]) == pytest.approx(float(row[1]) + float(row[2]), abs=2e-3)
        assert 0.0 < float(row[5]) <= 1.0


def test_record_check(synth_data):
    argv = command("record_check.py")
    out = run(shrink(argv, {"--data-shape": "64", "--repeat": "1"},
                     {argv[3]: synth_data.train_rec}))
    assert f"{synth_data.train_rec}: {synth_data.num_train} records" in out and ", 0 bad" in out
    rows = re.findall(rf"^(.+?)\s+({FLOAT}) s\s+({FLOAT}) ms/record\s+({FLOAT}) x MXNet pass$",
                      out, re.M)
    assert [r[0] for r in rows] == ["check with image decode", "check without decode",
                                    "cached check", "MXNet ImageDetRecordIter pass (64 px)"]
    assert float(rows[-1][2]) > 0 and rows[-1][3] == "1.00"


def test_check_presets():
    out = run(shrink(command("check_presets.py"), {"--only": "tiny:64", "--omp-threads": "1"}))
    assert re.search(rf"^tiny 64: {FLOAT} s, exit 0, ok$", out, re.M)
    # tiny at 64 px: maps of 8x8, 4x4, 2x2, 1x1, 1x1 with 4 anchors a place = 86 x 4
    assert re.search(rf"^\| tiny \| 64 \| 344 \| {FLOAT} \| 0 \| yes \|$", out, re.M)


def test_onnx_speed():
    out = run(shrink(command("onnx_speed.py"),
                     {"--networks": "tiny:64", "--batches": "1", "--rounds": "1",
                      "--images": "2"}))
    rows = re.findall(rf"^tiny 64\s+1 (\w+)\s+({FLOAT})\s+({FLOAT})x$", out, re.M)
    assert [r[0] for r in rows] == ["mxnet_fp32", "mxnet_int8", "onnxruntime"]
    assert all(float(r[1]) > 0 for r in rows) and rows[0][2] == "1.00"
    assert "threads 1, 1 interleaved rounds, median" in out


def test_onnx_check_zoo():
    out = run(shrink(command("onnx_check.py", "--zoo"),
                     {"--only": "tiny:64,tiny_photo:64:fitted", "--threads": "1"}))
    rows = re.findall(rf"^(\S+)\s+(\d+)\s+(\d+)\s+({FLOAT})\s+({FLOAT})\s+({FLOAT})\s+({FLOAT})"
                      rf"\s+(\d+) (\w+)$", out, re.M)
    assert [(r[0], r[1]) for r in rows] == [("tiny:64", "344"), ("tiny_photo:64:fitted", "430")]
    for row in rows:     # the heads within 1e-4 of MXNet, batch 1 = row 0 of batch 2
        assert float(row[5]) <= 1e-4 and float(row[6]) <= 1e-4 and row[8] == "same"


@pytest.mark.slow
def test_onnx_check_deploy(trained, synth_data):
    argv = shrink(command("onnx_check.py", "--deploy"),
                  {"--deploy": trained["deploy"], "--epoch": "10",
                   "--images": os.path.join(synth_data.devkit, "VOC2007", "JPEGImages"),
                   "--list": synth_data.val_lst, "--rec": synth_data.val_rec,
                   "--network": "tiny", "--class-names": ",".join(synth_data.class_names),
                   "--threads": "1"})
    out = run(argv)
    counts = re.search(r"^(\d+) photos, (\d+) rows kept by MXNet: (\d+) at the same place.* "
                       r"0 other MXNet-only, 0 other ONNX-only$", out, re.M)
    assert counts and int(counts.group(1)) == synth_data.num_val and int(counts.group(2)) > 0
    maps = re.search(rf"VOC07 mAP on .*: MXNet ({FLOAT}), ONNX ({FLOAT}), difference", out)
    assert maps and float(maps.group(1)) == pytest.approx(float(maps.group(2)), abs=1e-4)


@pytest.mark.slow
def test_profile_batch(synth_data):
    out = run(shrink(command("profile_batch.py"),
                     {"--preset": ["tiny:64:2"], "--rounds": "1", "--loop-batches": "2",
                      "--rec": synth_data.train_rec}))
    assert re.search(r"^== tiny 64 px, batch 2 \(OMP_NUM_THREADS 1, 344 anchors", out, re.M)
    ops = dict(re.findall(rf"^(\w+)\s+\d+\s+{FLOAT}\s+({FLOAT})%$", out, re.M))
    assert "Convolution" in ops and "_contrib_MultiBoxTarget" in ops
    assert re.search(rf"^loop, guard now\s+({FLOAT}) s", out, re.M)
    assert re.search(rf"MultiBoxTarget fwd, original 350 .*\s({FLOAT}) ms", out)
    # the step table: its parts add up to the loop with real data, and loop / limit is printed
    loop = re.search(rf"^step of the training loop with real data: ({FLOAT}) ms a batch", out, re.M)
    parts = re.findall(rf"^  (data \(decode|forward \(network|MultiBoxTarget|backward|update|"
                       rf"training metric|Python and waits)[^\n]*?\s(-?{FLOAT})\s+(-?{FLOAT})%$",
                       out, re.M)
    assert loop and len(parts) == 7, out
    assert sum(float(ms) for _, ms, _ in parts) == pytest.approx(float(loop.group(1)), rel=0.01)
    assert re.search(rf"^compute limit: the \d+ convolutions, forward \+ backward: in the "
                     rf"graph \(profiled\) {FLOAT} ms; alone, float32 {FLOAT} ms", out, re.M)
    ratio = re.search(rf"^loop / limit ({FLOAT}) \(limit: the fastest of those", out, re.M)
    assert ratio and float(ratio.group(1)) > 0


def test_far_away(synth_data, tmp_path):
    """The copy keeps every photo and box; the boxes are the source's, shrunk and moved."""
    from config.mxnet_compat import mx
    from dataset.recordio_utils import read_labels
    out_rec = tmp_path / "far.rec"
    out = run(shrink(command("far_away.py"), {"--output": str(out_rec), "--seed": "3"},
                     positional={"output/photos/test.rec": synth_data.val_rec}))
    found = re.search(r"^(\d+) photos, (\d+) boxes; side < 0.2 of the photo: (\d+) before .*, "
                      r"(\d+) after", out, re.M)
    assert found and int(found.group(1)) == synth_data.num_val, out
    boxes, before, after = (int(found.group(k)) for k in (2, 3, 4))
    assert after > before and after >= 0.8 * boxes     # shrunk to 0.2-0.3: nearly all small
    source, copy = read_labels(synth_data.val_rec), read_labels(str(out_rec))
    assert len(source) == len(copy)
    for src, far in zip(source, copy):
        src, far = src[src[:, 0] >= 0], far[far[:, 0] >= 0]
        assert np.array_equal(src[:, 0], far[:, 0])          # same objects, same classes
        scale_w = (far[:, 3] - far[:, 1]) / (src[:, 3] - src[:, 1])
        scale_h = (far[:, 4] - far[:, 2]) / (src[:, 4] - src[:, 2])
        assert np.allclose(scale_w, scale_w[0], atol=0.02) and 0.19 <= scale_w[0] <= 0.31
        assert np.allclose(scale_h, scale_w[0], atol=0.03)   # the photo keeps its aspect
        assert far[:, 1:5].min() >= 0 and far[:, 1:5].max() <= 1
    reader = mx.recordio.MXIndexedRecordIO(str(out_rec)[:-4] + ".idx", str(out_rec), "r")
    header, image = mx.recordio.unpack_img(reader.read_idx(reader.keys[0]))
    reader.close()
    assert image.shape[:2] == (synth_data.image_size, synth_data.image_size)


@pytest.fixture(scope="module")
def demo_folder(synth_data, tmp_path_factory) -> Path:
    """A folder laid out as tools.run_demo's work folder (records + synthetic/class_names.txt)."""
    folder = tmp_path_factory.mktemp("demo")
    for name, rec in (("train", synth_data.train_rec), ("val", synth_data.val_rec)):
        (folder / f"{name}.rec").symlink_to(rec)
        (folder / f"{name}.idx").symlink_to(os.path.splitext(rec)[0] + ".idx")
    (folder / "synthetic").mkdir()
    (folder / "synthetic" / "class_names.txt").write_text("\n".join(synth_data.class_names))
    return folder


def _summary(out: str, variant: str) -> re.Match:
    match = re.search(rf"^{variant}: final mAP ({FLOAT}), best ({FLOAT}), train ({FLOAT}) min, "
                      rf"wall ({FLOAT}) min(, load {FLOAT}->{FLOAT})?, rc 0$", out, re.M)
    assert match, out
    return match


def test_sweep_recipe_and_its_report(demo_folder, tmp_path):
    argv = shrink(command("sweep.py", "recipe"),
                  {"--data": str(demo_folder), "--variants": "recipe_shallow", "--epochs": "1",
                   "--out": str(tmp_path)})
    _summary(run(argv), "recipe_shallow")        # a child applies the preset override
    record = json.loads((tmp_path / "results.jsonl").read_text())
    assert record["preset"] == {"backbone_args": {"stage_depth": [1, 1, 1, 1, 1]}}
    assert [h["epoch"] for h in record["history"]] == [0] and record["history"][0]["map"] >= 0
    report = run(argv[:4] + ["--report", "--out", str(tmp_path)])
    assert re.search(r"^\| recipe_shallow \| demo\d* \| light \| .*stage_depth 1,1,1,1,1 \| 1 \|",
                     report, re.M)


def test_sweep_photo(synth_data, tmp_path):
    argv = shrink(command("sweep.py", "photo"),
                  {"--train": synth_data.train_rec, "--val": synth_data.val_rec,
                   "--class-names": ",".join(synth_data.class_names), "--variants": "light160",
                   "--epochs": "2", "--out": str(tmp_path)})
    assert _summary(run(argv), "light160").group(5)        # the load average is printed
    record = json.loads((tmp_path / "results.jsonl").read_text())
    assert record["epochs"] == 2 and [h["epoch"] for h in record["history"]] == [0, 1]
    assert all(h["map"] is not None for h in record["history"])
    # --save-period 1: a checkpoint of each epoch
    assert len(list((tmp_path / "light160").glob("*-000[12].params"))) == 2


@pytest.mark.slow
def test_soak_interrupted_and_resumed(tmp_path):
    """The README's soak (test_soak.py runs --straight). Its SIGINT comes 0.3 s into training:
    the default moment (0.35 x the baseline's training) can land, in so short a run, while the
    process exits after its last epoch (exit -2, docs/notes/RELIABILITY.md)."""
    out = run(shrink(command("soak.py"),
                     {"--workdir": str(tmp_path), "--epochs": "4", "--interrupts": "1",
                      "--num-train": "16", "--num-val": "8", "--data-shape": "64",
                      "--interrupt-every": "0.3"}))
    assert re.search(r"^segment 0: exit 130, .* SIGINT at", out, re.M)
    assert re.search(r"^segment 1: exit 0,", out, re.M)
    summary = json.loads((tmp_path / "soak.json").read_text())
    assert summary["interrupts_done"] == 1 and summary["passed"] is True
    assert summary["baseline_map"] is not None and summary["interrupted_map"] is not None
