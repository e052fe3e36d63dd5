"""config/mxnet_compat.py: MXNet 1.9.1 on Python 3.11-3.13 with numpy 1.23-1.26.

The rules are checked over every Python file of the repository (tests included): ``mxnet`` is
imported only through the compat module, and nothing else patches numpy. The behaviour is
checked on the Python running the tests; CI runs this file on 3.11, 3.12 and 3.13.
"""
from __future__ import annotations

import ast
import builtins
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from config import mxnet_compat
from config.mxnet_compat import mx

REPO = Path(__file__).resolve().parent.parent
COMPAT = REPO / "config" / "mxnet_compat.py"
SKIP_DIRS = {".venv", ".git", "output", "data", "model", "build", "__pycache__"}


def repo_python_files() -> list[Path]:
    """Every .py file of the project, tests and tools included."""
    return sorted(p for p in REPO.rglob("*.py")
                  if not SKIP_DIRS.intersection(p.relative_to(REPO).parts))


def mxnet_imports(tree: ast.AST) -> tuple[list[int], list[int]]:
    """Line numbers of direct ``mxnet`` imports and of imports of the compat module."""
    direct, compat = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
            if node.module == "config":
                names += [f"config.{alias.name}" for alias in node.names]
        else:
            continue
        if any(n == "mxnet" or n.startswith("mxnet.") for n in names):
            direct.append(node.lineno)
        if "config.mxnet_compat" in names:
            compat.append(node.lineno)
    return direct, compat


def test_the_file_scan_sees_the_project():
    names = {p.relative_to(REPO).as_posix() for p in repo_python_files()}
    assert {"train.py", "config/mxnet_compat.py", "tests/conftest.py", "tools/launch.py"} <= names
    assert not any(n.startswith(".venv/") for n in names)


def test_mxnet_is_imported_only_through_the_compat_module():
    offenders = []
    for path in repo_python_files():
        if path == COMPAT:
            continue
        direct, compat = mxnet_imports(ast.parse(path.read_text()))
        for line in direct:
            # A submodule (``from mxnet.contrib.quantization import ...``) may follow the compat
            # import; a bare ``import mxnet`` never.
            if not compat or line < min(compat):
                offenders.append(f"{path.relative_to(REPO)}:{line}")
    assert offenders == [], "import mxnet through 'from config.mxnet_compat import mx': " \
        + ", ".join(offenders)


def numpy_patches(tree: ast.AST) -> list[int]:
    """Lines that assign an attribute of numpy or call setattr on it."""
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "setattr" and node.args):
            targets = [ast.Attribute(value=node.args[0], attr="?")]
        for target in targets:
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id in ("np", "numpy", "onp")):
                found.append(node.lineno)
    return found


def test_nothing_else_patches_numpy():
    assert numpy_patches(ast.parse(COMPAT.read_text())), "the scan must see the compat module's"
    offenders = [f"{p.relative_to(REPO)}:{line}" for p in repo_python_files() if p != COMPAT
                 for line in numpy_patches(ast.parse(p.read_text()))]
    assert offenders == []


def test_aliases_are_the_builtins_mxnet_meant():
    for name in mxnet_compat.REMOVED_NUMPY_ALIASES:
        with warnings.catch_warnings():     # numpy 1.23: deprecated but still there
            warnings.simplefilter("ignore", DeprecationWarning)
            assert getattr(np, name) is getattr(builtins, name)


def test_numpy_1_23_is_left_as_numpy_defines_it():
    if mxnet_compat.numpy_version() >= mxnet_compat.NUMPY_ALIASES_REMOVED_IN:
        pytest.skip(f"numpy {np.__version__}: the aliases are restored here, see the next test")
    assert mxnet_compat.restore_numpy_aliases() == []
    assert not set(mxnet_compat.REMOVED_NUMPY_ALIASES) & set(np.__dict__)


def test_newer_numpy_gets_the_aliases_back():
    if mxnet_compat.numpy_version() < mxnet_compat.NUMPY_ALIASES_REMOVED_IN:
        pytest.skip(f"numpy {np.__version__} still has the aliases")
    assert np.bool is bool and np.int is int and np.object is object
    assert mxnet_compat.restore_numpy_aliases() == []       # already there: nothing added twice


def test_mxnet_runs_the_paths_that_read_the_aliases():
    # Boolean indexing of mx.np reads np.bool at run time, not only at import.
    x = mx.np.array([1.0, 2.0, 3.0])
    assert x[mx.np.array([True, False, True], dtype=np.bool_)].asnumpy().tolist() == [1.0, 3.0]
    anchors = mx.nd.contrib.MultiBoxPrior(mx.nd.zeros((1, 3, 4, 4)), sizes=[0.5], ratios=[1])
    assert anchors.shape == (1, 16, 4)
    assert mx.__version__ == "1.9.1"


def test_numpy_2_is_refused_with_the_command_that_fixes_it(monkeypatch):
    monkeypatch.setattr(mxnet_compat, "numpy_version", lambda: (2, 1))
    with pytest.raises(ImportError, match=r"MXNet 1\.9\.1 needs numpy 1\.23-1\.26.*requirements"):
        mxnet_compat.check_numpy()


def test_missing_distutils_names_setuptools(monkeypatch):
    monkeypatch.setattr(mxnet_compat.sys, "version_info", (3, 13, 0))

    def no_distutils(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(mxnet_compat.importlib, "import_module", no_distutils)
    with pytest.raises(ImportError, match="Python 3.13 has no distutils.*install setuptools"):
        mxnet_compat.check_distutils()


def test_a_fresh_interpreter_imports_mxnet_through_the_shim():
    code = ("from config.mxnet_compat import mx; import numpy as np; "
            "print(mx.nd.ones((2, 2)).sum().asscalar(), 'bool' in np.__dict__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    assert out[0] == "4.0"
    assert out[1] == str(mxnet_compat.numpy_version() >= mxnet_compat.NUMPY_ALIASES_REMOVED_IN)


IMPORT_ALL = """
import importlib, importlib.util, sys
failed = []
for path in sys.argv[1:]:
    name = path[:-3].replace("/", ".").removesuffix(".__init__")
    if name == "evaluate":                       # evaluate.py beside the evaluate/ package
        spec = importlib.util.spec_from_file_location("evaluate_cli", path)
        try:
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        except Exception as exc:
            failed.append(f"{path}: {exc!r}")
        continue
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{path}: {exc!r}")
print("\\n".join(failed) or "all imported")
"""


def test_every_project_module_imports_on_this_python():
    """Catches what the ast rules cannot: a removed numpy or stdlib name hit at import time."""
    paths = [p.relative_to(REPO).as_posix() for p in repo_python_files()
             if p.parts[len(REPO.parts)] not in ("tests",) and p.name != "setup.py"]
    assert len(paths) > 60
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL, *paths], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "all imported", out.stdout
