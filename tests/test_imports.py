"""The import graph of the project: no circles, and every arrow points down the layers.

Imports are read with ``ast`` from every module outside tests/, including the ones hidden inside
functions, so a circle cannot hide behind a late import. docs/ARCHITECTURE.md draws the same
layers.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "symbol", "dataset", "training", "evaluate", "export", "tools", "benchmarks")

# Lower layers never import higher ones; modules of one layer may import each other. A module
# takes the layer of the longest dotted name here that it starts with (training/ spans three).
LAYERS = {
    "config": 0,
    "symbol": 1, "dataset": 1,
    "training": 2, "training.checkpoint": 2,
    "evaluate": 3, "export": 3,
    "training.detection_module": 4, "training.callbacks": 4,
    "fit": 5, "training.weights": 5,
    "train_net": 6,
    "tools": 7,
    "train": 8, "evaluate.py": 8, "demo": 8, "deploy": 8, "quantization": 8,
    "benchmark_score": 8,
    "benchmarks": 9,
}


def module_name(path: Path) -> str:
    """``evaluate/eval_metric.py`` -> ``evaluate.eval_metric``; ``evaluate.py`` -> ``evaluate.py``."""
    rel = path.relative_to(REPO)
    if len(rel.parts) == 1:
        return rel.stem if rel.stem != "evaluate" else "evaluate.py"
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every project module outside tests/ by dotted name."""
    modules = {}
    for path in sorted(REPO.glob("*.py")):
        if path.name != "setup.py":
            modules[module_name(path)] = path
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            modules[module_name(path)] = path
    return modules


def imported_names(path: Path, name: str) -> set[str]:
    """Dotted names this module imports anywhere in its body (functions included)."""
    package = name.rsplit(".", 1)[0] if "." in name and not name.endswith(".py") else ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                            # relative: from .x import y
                base = ".".join(filter(None, [package, base]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Edges between project modules (``evaluate`` the package never means evaluate.py)."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path, name):
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def layer_key(name: str) -> str | None:
    """The LAYERS entry that places ``name``: itself, or its longest dotted prefix listed."""
    if name.endswith(".py"):
        return name if name in LAYERS else None
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return ".".join(parts[:end])
    return None


def layer(name: str) -> int:
    return LAYERS[layer_key(name)]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules, or None."""
    state: dict[str, int] = {}          # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_every_module_has_a_layer():
    unknown = sorted(name for name in project_modules() if layer_key(name) is None)
    assert not unknown, f"add these to LAYERS (and docs/ARCHITECTURE.md): {unknown}"


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_upward_imports():
    upward = [f"{source} -> {target}" for source, targets in sorted(import_graph().items())
              for target in sorted(targets) if layer(target) > layer(source)]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_library_packages_never_import_clis_fit_or_train_net():
    forbidden = {"train", "evaluate.py", "demo", "deploy", "quantization", "benchmark_score",
                 "fit", "train_net"}
    bad = [f"{source} -> {target}" for source, targets in sorted(import_graph().items())
           if source.split(".")[0] in ("symbol", "dataset", "training", "evaluate", "export", "config")
           and not source.endswith(".py") for target in targets if target in forbidden]
    assert not bad, "\n".join(bad)


def test_the_network_zoo_knows_no_data_format():
    """symbol/ builds networks from the sizes and ratios it is given; fitting them to a data set's
    boxes (which reads records and lists) lives in dataset/anchor_fit.py."""
    bad = [f"{source} -> {target}" for source, targets in sorted(import_graph().items())
           if source.split(".")[0] == "symbol" for target in targets
           if target.split(".")[0] == "dataset"]
    assert not bad, "\n".join(bad)


# What the top level holds: the scripts users run (those the original had there), the two recipe
# files the project is built around, and setup.py. Internals live in packages.
TOP_LEVEL_SCRIPTS = {"train.py", "evaluate.py", "demo.py", "deploy.py", "quantization.py",
                     "benchmark_score.py"}
TOP_LEVEL_RECIPE = {"train_net.py", "fit.py"}


def test_top_level_python_files_are_things_to_run():
    found = {path.name for path in REPO.glob("*.py")}
    assert found == TOP_LEVEL_SCRIPTS | TOP_LEVEL_RECIPE | {"setup.py"}, (
        f"unexpected top-level modules {sorted(found - TOP_LEVEL_SCRIPTS - TOP_LEVEL_RECIPE)}: "
        "internals belong in a package (docs/ARCHITECTURE.md)")
    for name in TOP_LEVEL_SCRIPTS:
        text = (REPO / name).read_text()
        assert 'if __name__ == "__main__":' in text, f"{name} is not a script"


def test_no_package_shadows_a_dependency():
    """A folder named like an installed distribution (onnx, mxnet, cv2...) would hide it."""
    shadowing = {"onnx", "onnxruntime", "mxnet", "numpy", "cv2", "matplotlib"}
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")}
    assert not packages & shadowing


def test_the_checker_sees_function_level_imports_and_circles(tmp_path):
    """The reader must catch the kind of circle issue 15 found (fit <-> evaluate_net)."""
    module = tmp_path / "evaluate_net.py"
    module.write_text("import os\n\ndef f():\n    from fit import load_param_file\n"
                      "    from .eval_metric import MApMetric\n")
    assert imported_names(module, "evaluate.evaluate_net") == {
        "os", "fit", "fit.load_param_file", "evaluate.eval_metric",
        "evaluate.eval_metric.MApMetric"}
    assert find_cycle({"fit": {"evaluate.evaluate_net"}, "evaluate.evaluate_net": {"fit"}}) \
        == ["evaluate.evaluate_net", "fit", "evaluate.evaluate_net"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
