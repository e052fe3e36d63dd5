"""Every script runs the way the original's users and MXNet's docs type it.

* by its path from the repository root (``python tools/prepare_dataset.py ...``), as the original
  README types it;
* by its full path from any other working directory;
* as a module (``python -m tools.prepare_dataset``), which the project's own docs use.

The original README's command lines that failed with ``ModuleNotFoundError`` before (issue 14)
run here verbatim, on a synthetic VOC devkit laid out where the original expects it.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.test_distributed import assert_nothing_left

REPO = Path(__file__).resolve().parent.parent
SCRIPT_FOLDERS = (".", "tools", "benchmarks")
VOC_NAMES = {"circle": "aeroplane", "square": "bicycle", "triangle": "bird"}


def _is_script(path: Path) -> bool:
    """True when the file has an ``if __name__ == "__main__":`` block."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            left = node.test.left
            if isinstance(left, ast.Name) and left.id == "__name__":
                return True
    return False


def user_scripts() -> list[str]:
    """Repository-relative paths of every runnable script outside tests/."""
    found = []
    for folder in SCRIPT_FOLDERS:
        for path in sorted((REPO / folder).glob("*.py")):
            if path.name not in ("setup.py", "__init__.py") and _is_script(path):
                found.append(path.relative_to(REPO).as_posix())
    return found


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)          # no help from the test runner's import path
    return env


def _run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _help_failures(commands: list[tuple[list[str], Path]]) -> list[str]:
    """Run each ``(argv, cwd)`` two at a time; describe the ones without a usage line."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: _run(*job), commands))
    failures = []
    for (argv, cwd), result in zip(commands, results):
        if result.returncode != 0 or "usage:" not in result.stdout:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            failures.append(f"{' '.join(argv[1:])} (cwd {cwd}): exit {result.returncode}, "
                            f"{tail[0]}")
    return failures


def test_script_discovery_finds_the_user_tools():
    scripts = user_scripts()
    for expected in ("train.py", "evaluate.py", "demo.py", "deploy.py", "benchmark_score.py",
                     "tools/prepare_dataset.py", "tools/visualize_net.py", "tools/launch.py",
                     "benchmarks/benchmark.py"):
        assert expected in scripts
    assert not any(path.startswith("tests/") for path in scripts)


@pytest.mark.slow
def test_every_script_runs_by_path_from_the_root_and_from_elsewhere(tmp_path):
    scripts = user_scripts()
    commands = [([sys.executable, script, "--help"], REPO) for script in scripts]
    commands += [([sys.executable, str(REPO / script), "--help"], tmp_path)
                 for script in scripts]
    failures = _help_failures(commands)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_tools_and_benchmarks_still_run_as_modules():
    modules = [path[:-3].replace("/", ".") for path in user_scripts() if "/" in path]
    failures = _help_failures([([sys.executable, "-m", name, "--help"], REPO)
                               for name in modules])
    assert not failures, "\n".join(failures)


# ---- the original README's command lines, verbatim ----------------------------------------
@pytest.fixture(scope="module")
def original_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the original's root: ``tools/`` and a VOC 2007 + 2012 devkit.

    Each file of ``tools/`` links to this repository's, so ``python tools/prepare_dataset.py``
    runs the project's script while its defaults (``--root data/VOCdevkit`` beside ``tools/``)
    and the ``--target ./data/...`` of the command line resolve inside the temporary folder.
    """
    from tools.make_synthetic_voc import SynthConfig, generate

    root = tmp_path_factory.mktemp("original_root")
    (root / "tools").mkdir()
    for path in (REPO / "tools").iterdir():
        (root / "tools" / path.name).symlink_to(path)
    devkit = root / "data" / "VOCdevkit"
    for year, seed in (("2007", 1), ("2012", 2)):
        made = tmp_path_factory.mktemp(f"voc{year}")
        generate(SynthConfig(root=str(made), num_train=6, num_test=4, min_image_size=64,
                             max_image_size=96, classes=tuple(VOC_NAMES), seed=seed,
                             progress=False))
        devkit.mkdir(parents=True, exist_ok=True)
        shutil.copytree(made / "VOCdevkit" / "VOC2007", devkit / f"VOC{year}")
        for xml in (devkit / f"VOC{year}" / "Annotations").glob("*.xml"):
            text = xml.read_text()      # the original's default classes are VOC's 20 names
            for shape, voc_name in VOC_NAMES.items():
                text = text.replace(f"<name>{shape}</name>", f"<name>{voc_name}</name>")
            xml.write_text(text)
    return root


def _assert_packed(data: Path) -> tuple[list[str], list[str]]:
    """Both .lst/.rec/.idx triples exist and are not empty; returns the two lists' lines."""
    for name in ("train", "val"):
        for ext in ("lst", "rec", "idx"):
            assert (data / f"{name}.{ext}").stat().st_size > 0
    return ((data / "train.lst").read_text().splitlines(),
            (data / "val.lst").read_text().splitlines())


@pytest.mark.slow
def test_original_prepare_pascal_script(original_layout):
    result = _run(["bash", "tools/prepare_pascal.sh", "--num-thread", "1"], original_layout,
                  timeout=300)
    assert result.returncode == 0, result.stderr
    train_lines, val_lines = _assert_packed(original_layout / "data")
    assert (len(train_lines), len(val_lines)) == (12, 4)


@pytest.mark.slow
def test_original_prepare_dataset_command_lines(original_layout):
    train = _run([sys.executable, "tools/prepare_dataset.py", "--dataset", "pascal", "--year",
                  "2007,2012", "--set", "trainval", "--target", "./data/train.lst"],
                 original_layout, timeout=300)
    assert train.returncode == 0, train.stderr
    val = _run([sys.executable, "tools/prepare_dataset.py", "--dataset", "pascal", "--year",
                "2007", "--set", "test", "--target", "./data/val.lst", "--no-shuffle"],
               original_layout, timeout=300)
    assert val.returncode == 0, val.stderr
    train_lines, val_lines = _assert_packed(original_layout / "data")
    assert len(train_lines) == 12           # 6 trainval images of each year
    assert len(val_lines) == 4
    # --no-shuffle keeps the test set's order: its .lst indices count up from 0
    assert [int(line.split("\t")[0]) for line in val_lines] == list(range(4))
    assert "Traceback" not in train.stderr + val.stderr


@pytest.mark.slow
def test_original_visualize_net_command_line():
    result = _run([sys.executable, "tools/visualize_net.py", "--network", "vgg16_reduced",
                   "--data-shape", "300"], REPO)
    assert result.returncode == 0, result.stderr
    assert "total anchors: 8,732" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_launch_by_path_as_mxnet_documents_it():
    """``python tools/launch.py -n 2 --launcher local python ...`` (MXNet's documented form)."""
    tag = uuid.uuid4().hex
    argv = [sys.executable, "tools/launch.py", "-n", "2", "--launcher", "local", "--timeout",
            "50", "--env", f"DIST_TEST_TAG={tag}", sys.executable, "-m",
            "tests.dist_worker_toy", "--kv-store", "dist_sync", "--batch-size", "8"]
    env = dict(_env(), DIST_TEST_TAG=tag)
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=90, start_new_session=True)
    assert_nothing_left(tag)
    assert result.returncode == 0, result.stderr
    assert "rank 0 of 2" in result.stdout and "rank 1 of 2" in result.stdout


def test_original_benchmark_score_deploy_names_the_original_checkpoint(tmp_path):
    """``python benchmark_score.py --deploy --prefix=./model/ssd_`` looks where the original did."""
    result = _run([sys.executable, str(REPO / "benchmark_score.py"), "--deploy",
                   "--prefix=./model/ssd_"], tmp_path)
    assert result.returncode == 2
    assert "./model/ssd_vgg16_reduced_300-symbol.json not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_original_demo_without_its_downloaded_picture_says_why(tmp_path):
    result = _run([sys.executable, str(REPO / "demo.py"), "--gpu", "0"], tmp_path)
    assert result.returncode == 2
    assert "download_demo_images.py, which is not shipped" in result.stderr
    assert "--images" in result.stderr and "Traceback" not in result.stderr
