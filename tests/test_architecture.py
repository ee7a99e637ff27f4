"""The package's shape, read from its source with ``ast``: no import cycles between modules, the run object and
the service apart from training, studies and plotting, no private names across modules, one registration idiom,
and a CLI whose every command shows an example and can print JSON."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import siamkit
from siamkit.cli import build_parser, main

SRC = Path(siamkit.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = ("siamkit", *path.relative_to(SRC).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(siamkit modules that module ``name`` imports anywhere, functions too; other top-level packages it imports
    when imported, i.e. at module level)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inner, outer = set(), set()
    tree = ast.parse(path.read_text())
    in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for n in ast.walk(f)}  # fmt: skip
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            if target.split(".")[0] != "siamkit":
                if id(node) not in in_functions:
                    outer.add(target.split(".")[0])
                continue
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target != name:
                inner.add(target)
    return inner, outer


GRAPH = {name: _imports(name) for name in MODULES}


def _closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += GRAPH[m][0]
    return seen


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v][0]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_a_cycle_when_there_is_one(monkeypatch):
    monkeypatch.setitem(GRAPH, "siamkit.errors", ({"siamkit.config"}, set()))  # config imports errors
    assert ["siamkit.config", "siamkit.errors"] in _cycles()


def test_no_import_cycles():
    assert _cycles() == []


def test_the_modules_are_read():
    assert {"siamkit.runs.model", "siamkit.cli.train", "siamkit.training.pipeline"} <= set(MODULES)
    assert (
        "siamkit.runs.artifact" in GRAPH["siamkit.runs.model"][0]
        or "siamkit.runs.embedders" in GRAPH["siamkit.runs.model"][0]
    )


HEAVY = ("siamkit.training", "siamkit.studies", "siamkit.classify", "siamkit.evaluate.plots", "siamkit.index.figures",
         "siamkit.report")  # fmt: skip
HEAVY_PACKAGES = {"matplotlib", "sklearn", "optuna"}


@pytest.mark.parametrize("start", ["siamkit.runs", "siamkit.runs.model", "siamkit.serve.app", "siamkit.index.gallery"])
def test_using_a_model_imports_nothing_of_training_studies_or_plotting(start):
    reach = _closure(start)
    bad = sorted(m for m in reach if m.startswith(HEAVY))
    assert bad == [], f"{start} reaches {bad}"
    third = set().union(*(GRAPH[m][1] for m in reach))
    assert not third & HEAVY_PACKAGES, f"{start} imports {sorted(third & HEAVY_PACKAGES)}"


def test_private_names_do_not_cross_modules():
    crossing = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("siamkit"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        crossing.append(f"{name}: from {node.module} import {a.name}")
                    aliases[a.asname or a.name] = a.name
            elif isinstance(node, ast.Import):
                aliases.update({a.asname or a.name: a.name for a in node.names if a.name.startswith("siamkit")})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):  # fmt: skip
                crossing.append(f"{name}: {node.value.id}.{node.attr}")
    assert crossing == []


def test_registries_find_their_components_without_importing_them_first():
    code = (
        "from siamkit.models.registry import list_backbones\n"
        "from siamkit.losses.base import LOSSES\n"
        "print(sorted(set(list_backbones()) & {'convnet', 'basecnn', 'resnet18'}), 'arcface' in LOSSES)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-800:]
    assert out.stdout.split() == ["['basecnn',", "'convnet',", "'resnet18']", "True"]


def _leaf_commands(parser=None, prefix=()):
    import argparse

    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaf_commands(child, (*prefix, name))


def test_every_command_has_an_example_and_json_output():
    leaves = list(_leaf_commands())
    assert len(leaves) >= 18
    for words, parser in leaves:
        assert "example" in (parser.epilog or "") and "siamkit " + words[0] in parser.epilog, words
        options = {s for a in parser._actions for s in a.option_strings}
        assert {"--format", "--debug", "-q"} <= options, words
        fmt = next(a for a in parser._actions if "--format" in a.option_strings)
        assert set(fmt.choices) == {"table", "json"}, words


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"siamkit {siamkit.__version__}"


# ---- size limits: a function fits on a screen, and its call sites say what they pass --------------------------------
MAX_FUNCTION_LINES = 80
MAX_POSITIONAL = 5


def _functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((name, node))
    return out


def _positional(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    params = [*node.args.posonlyargs, *node.args.args]
    return len(params) - (1 if params and params[0].arg in ("self", "cls") else 0)


def test_no_function_is_longer_than_a_screen():
    long = [f"{m}.{f.name}: {f.end_lineno - f.lineno + 1} lines" for m, f in _functions()
            if (f.end_lineno or f.lineno) - f.lineno + 1 > MAX_FUNCTION_LINES]  # fmt: skip
    assert long == []


def test_no_function_takes_more_than_five_positional_parameters():
    wide = [f"{m}.{f.name}: {_positional(f)}" for m, f in _functions() if _positional(f) > MAX_POSITIONAL]
    assert wide == []


def test_the_limits_see_a_long_wide_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    node = ast.parse(f"def f(self, a, b, c, d, e, g):\n{body}\n").body[0]
    assert isinstance(node, ast.FunctionDef)
    assert _positional(node) == 6 and node.end_lineno is not None and node.end_lineno > MAX_FUNCTION_LINES


# ---- registries: a new entry is exercised (or noticed) by a test without anyone writing one -------------------------
def _registries() -> dict[str, str]:
    """``{variable name: module}`` of every ``Registry(...)`` assigned at a module's top level."""
    found = {}
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Registry":
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if isinstance(target, ast.Name):
                    found[target.id] = name
    return found


LISTINGS = {"BACKBONES": ("list_backbones()",)}
"""Other public spellings of a registry's listing."""


def test_every_registry_is_walked_by_a_test():
    """Each registry's entries are listed by a test — parametrized over (or looped over) ``REGISTRY.list()``, or
    compared with an explicit list — so that a new entry is exercised, or noticed, with no new test."""
    tests = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != Path(__file__).name)
    registries = _registries()
    assert {"LOSSES", "MINERS", "DISTANCES", "BACKBONES", "OPTIMIZERS", "SCHEDULERS"} <= set(registries)
    unwalked = []
    for var in registries:
        spellings = (f"{var}.list()", *LISTINGS.get(var, ()))
        lines = [line for line in tests.splitlines() if any(s in line for s in spellings)]
        if not any("parametrize" in line or line.lstrip().startswith("for ") or " in " in line or "==" in line
                   for line in lines):  # fmt: skip
            unwalked.append(var)
    assert unwalked == []
