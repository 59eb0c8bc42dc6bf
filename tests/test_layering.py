"""The shape of ``study/``'s import graph: stage packages in one order, no import up the order, no
cycles. Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import
is still a dependency, it only hides it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Lowest first: a unit may import itself and the units before it, never one after it.
LAYERS = ("errors", "testing", "cluster", "train", "tracking", "teachers", "distill", "analysis", "search", "run")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Every ``study`` module ``path`` imports, relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from study import run`
    modules = {module_name(p, root) for p in (root / "study").rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def unit(module: str) -> str:
    """``study.train.data`` -> ``train``; ``study.errors`` -> ``errors``."""
    return module.split(".")[1] if module.count(".") else module


def import_graph(root: Path) -> dict[str, set[str]]:
    return {module_name(p, root): imports_of(p, root) for p in sorted((root / "study").rglob("*.py"))}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    return [f"{src} imports {dst}" for src, targets in graph.items() for dst in sorted(targets)
            if src != "study" and dst != "study" and rank[unit(dst)] > rank[unit(src)]]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (depth-first search)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_unit_of_study_has_a_layer():
    units = {unit(m) for m in import_graph(ROOT) if m != "study"}
    assert units == set(LAYERS), f"give these a place in LAYERS: {sorted(units - set(LAYERS))}"


def test_no_import_runs_up_the_layers():
    assert upward_imports(import_graph(ROOT)) == []


def test_no_import_cycles():
    assert cycles(import_graph(ROOT)) == []


def test_the_check_sees_an_upward_import_a_lazy_one_and_a_cycle(tmp_path):
    """The checks on a made-up tree: they would fail on the faults they look for."""
    files = {
        "study/__init__.py": "",
        "study/errors.py": "",
        "study/train/__init__.py": "",
        "study/train/trainer.py": "from .graphs import Step\n",
        "study/train/graphs.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from study.train.trainer import T\n",
        "study/teachers/__init__.py": "",
        "study/teachers/bank.py": "def f():\n    from study.search import space\n",
        "study/search/__init__.py": "",
        "study/search/space.py": "from ..teachers.bank import f\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["study.search.space"] == {"study.teachers.bank"}  # relative import resolved
    assert upward_imports(graph) == ["study.teachers.bank imports study.search",  # the package, then its module
                                     "study.teachers.bank imports study.search.space"]
    assert ["study.train.graphs", "study.train.trainer", "study.train.graphs"] in cycles(graph) or \
        ["study.train.trainer", "study.train.graphs", "study.train.trainer"] in cycles(graph)


@pytest.mark.parametrize("package", ["cluster", "train", "tracking", "teachers", "distill", "analysis", "search"])
def test_each_stage_package_says_what_it_owns(package):
    doc = ast.get_docstring(ast.parse((ROOT / "study" / package / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 10
