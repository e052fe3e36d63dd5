"""The README's commands still run as written (issue 27).

Every fenced shell block of README.md is read (backslash continuations joined, comments
dropped), and each command that starts one of this project's entry points is checked:
``python X.py``, ``python tools/X.py``, ``python -m tools.X`` / ``-m benchmarks.X`` (any
package of this repository) and ``make TARGET``. The entry point must exist, its ``--help``
must exit 0, and every flag the README passes must be one that ``--help`` lists, so a renamed
or removed flag fails here; a make target must exist (``make -n TARGET``) and a ``NAME=value``
passed to make must be a variable the Makefile reads. The cheap data commands (synthetic VOC,
prepare_dataset) run for real on a handful of images in a temporary folder.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md",)
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
WRAPPERS = {"nice", "timeout", "env", "time", "nohup"}   # may precede python on a line
SEPARATORS = {"&&", "||", ";", "|", "&"}
# entry points that are cheap enough to run for real, and the flags shrunk to a few images
CHEAP = {"tools.make_synthetic_voc", "tools.prepare_dataset"}
SHRINK = {"--num-train": "8", "--num-test": "4"}
HELP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 180


@dataclass
class Invocation:
    """One call of a project entry point found in a document."""

    kind: str                  # 'module', 'script' or 'make'
    target: str                # tools.prepare_dataset, train.py, demo (make target)
    args: list[str]            # everything after the entry point (a nested command removed)
    where: str                 # 'README.md:60' for the messages
    variables: list[str] = field(default_factory=list)   # make NAME=value assignments

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.target


def read_shell_blocks(text: str) -> list[tuple[int, str]]:
    """Return (line number of the first line, body) of every fenced shell block."""
    blocks, body, start, lang = [], [], 0, None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w+-]*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(1).lower(), number + 1, []
        elif fence:
            if lang in SHELL_LANGS:
                blocks.append((start, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def logical_lines(block: str, first_line: int) -> list[tuple[int, str]]:
    """Join backslash continuations; return (line number, joined line) pairs."""
    lines, pending, pending_start = [], "", first_line
    for offset, line in enumerate(block.splitlines()):
        if not pending:
            pending_start = first_line + offset
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append((pending_start, pending + stripped))
        pending = ""
    if pending:
        lines.append((pending_start, pending))
    return lines


def is_python(token: str) -> bool:
    """python, python3, python3.11, .venv/bin/python."""
    return re.fullmatch(r"python(\d+(\.\d+)?)?", os.path.basename(token)) is not None


def is_assignment(token: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token) is not None


def looks_like_command(line: str) -> bool:
    """A line worth tokenizing: it starts with python, make, a wrapper or NAME=value."""
    first = line.lstrip().lstrip("$ ").split(" ", 1)[0]
    return bool(first) and (is_python(first) or first == "make" or first in WRAPPERS
                            or is_assignment(first))


def split_commands(line: str) -> list[list[str]]:
    """Tokenize a shell line (comments dropped) and split it at &&, ||, ;, | and &."""
    lexer = shlex.shlex(line.lstrip().removeprefix("$ "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [command for command in commands if command]


def is_project_module(module: str) -> bool:
    """A module of this repository (tools.launch, benchmarks.soak), not pip or pytest."""
    parts = module.split(".")
    return ((REPO / parts[0] / "__init__.py").is_file() or
            (len(parts) == 1 and (REPO / f"{module}.py").is_file()))


def parse_invocations(tokens: list[str], where: str) -> list[Invocation]:
    """The project entry points a command starts (a launcher's nested command included)."""
    start = next((i for i, token in enumerate(tokens) if is_python(token) or token == "make"),
                 None)
    if start is None or not all(is_assignment(t) or t in WRAPPERS or t.startswith("-")
                                or t.isdigit() for t in tokens[:start]):
        return []
    head, rest = tokens[start], tokens[start + 1:]
    if head == "make":
        variables = [t.split("=", 1)[0] for t in rest if is_assignment(t)]
        targets = [t for t in rest if not is_assignment(t) and not t.startswith("-")]
        return [Invocation("make", target, [], where, variables) for target in targets]
    if not rest:
        return []
    if rest[0] == "-m" and len(rest) > 1 and is_project_module(rest[1]):
        kind, target, args = "module", rest[1], rest[2:]
    elif rest[0].endswith(".py") and not rest[0].startswith(("/", "..")):
        kind, target, args = "script", os.path.normpath(rest[0]), rest[1:]
    else:
        return []                              # python -m pip, python -c, ...
    nested = next((i for i, token in enumerate(args) if is_python(token)), None)
    found = []
    if nested is not None:
        found = parse_invocations(args[nested:], where)
        args = args[:nested]
    return [Invocation(kind, target, args, where)] + found


def document_invocations(path: Path) -> list[Invocation]:
    """Every project entry point called in the shell blocks of a Markdown file."""
    found = []
    for first_line, block in read_shell_blocks(path.read_text(encoding="utf-8")):
        for number, line in logical_lines(block, first_line):
            if not looks_like_command(line):
                continue
            try:
                commands = split_commands(line)
            except ValueError as exc:            # an unclosed quote
                raise ValueError(f"{path.name}:{number}: cannot read {line!r}: {exc}") from None
            for tokens in commands:
                found += parse_invocations(tokens, f"{path.name}:{number}")
    return found


def passed_flags(args: list[str]) -> list[str]:
    """The option names among a command's arguments (--flag, --flag=value, -n)."""
    flags = []
    for arg in args:
        name = arg.split("=", 1)[0]
        if re.fullmatch(r"--[A-Za-z][\w-]*|-[A-Za-z]", name):
            flags.append(name)
    return flags


def flag_listed(flag: str, help_text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def entry_argv(invocation: Invocation) -> list[str]:
    if invocation.kind == "module":
        return [sys.executable, "-m", invocation.target]
    return [sys.executable, invocation.target]


def entry_exists(invocation: Invocation) -> bool:
    if invocation.kind == "script":
        return (REPO / invocation.target).is_file()
    parts = invocation.target.split(".")
    return ((REPO / Path(*parts)).with_suffix(".py").is_file() or
            (REPO / Path(*parts) / "__main__.py").is_file())


def quiet_env() -> dict[str, str]:
    return dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")


def run_help(invocation: Invocation) -> subprocess.CompletedProcess:
    return subprocess.run(entry_argv(invocation) + ["--help"], cwd=REPO, env=quiet_env(),
                          capture_output=True, text=True, timeout=HELP_TIMEOUT_S)


def all_invocations() -> list[Invocation]:
    return [inv for name in DOCUMENTS for inv in document_invocations(REPO / name)]


# --- the parser itself --------------------------------------------------------------------

SAMPLE = """\
Some prose.

```bash
# a comment line
OMP_NUM_THREADS=1 python train.py --network tiny \\
    --data-shape 160 --lr=0.1   # the original's flags
python3 -m venv .venv && .venv/bin/python -m pip install -r requirements.txt
nice -n 15 python -m benchmarks.soak --workdir /tmp/s
python -m tools.launch -n 2 --launcher local python train.py --kv-store dist_sync ...
make photos PHOTOS=../shared/data/raccoon     # comment
```

```text
python not_a_command.py --in-an-output-block
```
"""


def test_parser_reads_commands_the_way_a_shell_does(tmp_path):
    """Continuations joined, comments dropped, && split, wrappers and launchers seen through."""
    path = tmp_path / "SAMPLE.md"
    path.write_text(SAMPLE, encoding="utf-8")
    found = [(inv.kind, inv.target, inv.args, inv.where, inv.variables)
             for inv in document_invocations(path)]
    assert found == [
        ("script", "train.py", ["--network", "tiny", "--data-shape", "160", "--lr=0.1"],
         "SAMPLE.md:5", []),
        ("module", "benchmarks.soak", ["--workdir", "/tmp/s"], "SAMPLE.md:8", []),
        ("module", "tools.launch", ["-n", "2", "--launcher", "local"], "SAMPLE.md:9", []),
        ("script", "train.py", ["--kv-store", "dist_sync", "..."], "SAMPLE.md:9", []),
        ("make", "photos", [], "SAMPLE.md:10", ["PHOTOS"]),
    ]
    assert passed_flags(found[0][2]) == ["--network", "--data-shape", "--lr"]
    assert passed_flags(found[2][2]) == ["-n", "--launcher"]


def test_flag_listed_needs_the_whole_flag():
    help_text = "  --data-shape DATA_SHAPE\n  -n NUM_WORKERS, --num-workers NUM_WORKERS\n"
    assert flag_listed("--data-shape", help_text)
    assert flag_listed("-n", help_text)
    assert not flag_listed("--data", help_text)           # a prefix of a listed flag
    assert not flag_listed("--shape", help_text)          # a suffix of one
    assert not flag_listed("-s", help_text)


def test_data_commands_for_absent_datasets_are_left_out_but_typos_are_not(tmp_path):
    (tmp_path / "data" / "synth" / "VOCdevkit").mkdir(parents=True)
    roots = [Path("data/synth")]

    def prepare(root: str) -> Invocation:
        return Invocation("module", "tools.prepare_dataset", ["--root", root], "R.md:1")

    assert must_run(prepare("data/synth/VOCdevkit"), roots, tmp_path)
    assert must_run(prepare("data/synth/VOCdevkti"), roots, tmp_path)   # a typo must fail
    assert not must_run(prepare("data/VOCdevkit"), roots, tmp_path)     # real VOC, not here
    assert must_run(Invocation("script", "tools/make_synthetic_voc.py", ["--root", "x"], "R.md:2"),
                    roots, tmp_path)
    assert shrunk(["--num-train", "800", "--root", "d", "--num-test", "200"]) == [
        "--num-train", "8", "--root", "d", "--num-test", "4"]


# --- the README ---------------------------------------------------------------------------

def test_readme_entry_points_exist_and_know_every_flag_passed():
    """Each entry point's --help exits 0 and lists every flag the README passes to it."""
    invocations = [inv for inv in all_invocations() if inv.kind != "make"]
    assert invocations, "no project command found in " + ", ".join(DOCUMENTS)
    missing = [f"{inv.where}: {inv.target} does not exist" for inv in invocations
               if not entry_exists(inv)]
    assert not missing, "\n".join(missing)
    distinct = list({inv.key: inv for inv in invocations}.values())
    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = dict(zip((inv.key for inv in distinct), pool.map(run_help, distinct)))
    failures = []
    for key, result in helps.items():
        if result.returncode != 0:
            failures.append(f"{key[1]} --help exited {result.returncode}: "
                            f"{result.stderr.strip()[-500:]}")
    for inv in invocations:
        help_text = helps[inv.key].stdout
        for flag in passed_flags(inv.args):
            if helps[inv.key].returncode == 0 and not flag_listed(flag, help_text):
                failures.append(f"{inv.where}: {inv.target} has no flag {flag} "
                                "(renamed or removed? see its --help)")
    assert not failures, "\n".join(failures)


def test_readme_make_targets_exist():
    """make -n TARGET succeeds for every target, and every NAME= passed is a Makefile variable."""
    invocations = [inv for inv in all_invocations() if inv.kind == "make"]
    if not invocations:
        pytest.skip("the README calls no make target")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    failures = []
    for target in sorted({inv.target for inv in invocations}):
        result = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        if result.returncode != 0:
            failures.append(f"make -n {target}: exit {result.returncode}: {result.stderr.strip()}")
    for inv in invocations:
        failures += [f"{inv.where}: make {inv.target} {name}=...: the Makefile never reads "
                     f"$({name})" for name in inv.variables
                     if f"$({name})" not in makefile and f"${{{name}}}" not in makefile]
    assert not failures, "\n".join(failures)


def shrunk(args: list[str]) -> list[str]:
    """The arguments with the image counts cut to a handful."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg in SHRINK:
            out[i + 1] = SHRINK[arg]
    return out


def runnable_here(inv: Invocation) -> bool:
    """A cheap data command whose paths all stay inside the working folder."""
    return (module_name(inv) in CHEAP and
            not any(arg.startswith(("/", "..", "~")) or "$" in arg for arg in inv.args))


def module_name(inv: Invocation) -> str:
    """The dotted module name of a data command, however it was called."""
    return inv.target.removesuffix(".py").replace("/", ".")


def flag_value(inv: Invocation, flag: str) -> str | None:
    return inv.args[inv.args.index(flag) + 1] if flag in inv.args[:-1] else None


def must_run(inv: Invocation, synthetic_roots: list[Path], workdir: Path) -> bool:
    """Whether a data command reads what an earlier command of the README makes.

    A README may also show the command for a real dataset (VOC, COCO) that is not here: it is
    left out when its input does not exist. An input under a folder that the README's synthetic
    data command fills must exist, so a mistyped path still fails.
    """
    if module_name(inv) != "tools.prepare_dataset":
        return True
    source = flag_value(inv, "--check-rec") or flag_value(inv, "--root")
    if source is None:
        return False
    path = Path(os.path.normpath(source))
    return (workdir / path).exists() or any(root in path.parents for root in synthetic_roots)


@pytest.mark.slow
def test_readme_data_commands_run_on_tiny_data(tmp_path):
    """The README's dataset commands, in order, on 8 + 4 images in a temporary folder."""
    commands = [inv for inv in all_invocations() if runnable_here(inv)]
    if not commands:
        pytest.skip("the README has no synthetic-data or prepare_dataset command")
    env = dict(quiet_env(), PYTHONPATH=str(REPO))
    synthetic_roots = [Path(os.path.normpath(flag_value(inv, "--root"))) for inv in commands
                       if module_name(inv) == "tools.make_synthetic_voc"
                       and flag_value(inv, "--root")]
    ran = []
    for inv in commands:
        if not must_run(inv, synthetic_roots, tmp_path):
            continue
        ran.append(inv.where)
        argv = entry_argv(inv)
        if inv.kind == "script":
            argv = [sys.executable, str(REPO / inv.target)]
        result = subprocess.run(argv + shrunk(inv.args), cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        assert result.returncode == 0, (f"{inv.where}: {inv.target} exited "
                                        f"{result.returncode}:\n{result.stderr[-2000:]}")
        if "--target" in inv.args:
            target = tmp_path / inv.args[inv.args.index("--target") + 1]
            for suffix in (".lst", ".rec", ".idx"):
                packed = target.with_suffix(suffix)
                assert packed.is_file() and packed.stat().st_size > 0, (
                    f"{inv.where}: {packed.name} was not written")
    assert ran, "no README data command could run on the data the README's commands make"
