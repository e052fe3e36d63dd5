"""The import graph of the project: no circles, and every arrow points down the layers.

Imports are read with ``ast`` from every module outside tests/, including the ones hidden inside
functions, so a circle cannot hide behind a late import. docs/ARCHITECTURE.md draws the same
layers.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "symbol", "dataset", "evaluate", "tools", "benchmarks")

# Lower layers never import higher ones; modules of one layer may import each other.
LAYERS = {
    "config": 0,
    "symbol": 1, "dataset": 1,
    "checkpoint": 2,
    "evaluate": 3,
    "detection_module": 4, "callbacks": 4,
    "fit": 5, "weights": 5,
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


def layer(name: str) -> int:
    top = name if name.endswith(".py") else name.split(".")[0]
    return LAYERS[top]


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
    unknown = sorted(name for name in project_modules()
                     if (name if name.endswith(".py") else name.split(".")[0]) not in LAYERS)
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
           if source.split(".")[0] in ("symbol", "dataset", "evaluate", "config")
           and not source.endswith(".py") for target in targets if target in forbidden]
    assert not bad, "\n".join(bad)


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
