"""imgzoo's modules stand in layers, and every import runs down (or sideways, within a layer).

The layer map below is docs/architecture.md's diagram as data. The import graph is read
from the source with ``ast``, so function-level imports count as much as module-level
ones; only imports under ``if TYPE_CHECKING:`` are exempt, since they never run. The
test needs nothing but the repository and the standard library.

A new module must be placed in ``LAYERS``; until it is, the test says so and where.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "imgzoo"

# Bottom to top: each layer imports only the layers listed before it (and its own modules).
# Names are fnmatch patterns over dotted module names; "imgzoo" is the package's __init__.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("utilities", ("imgzoo._atomic", "imgzoo._version", "imgzoo._device", "imgzoo.errors")),
    ("models", ("imgzoo.models", "imgzoo.models.*")),  # the registry, the families; builders only build
    ("data", ("imgzoo.data", "imgzoo.data.*")),  # files -> datasets -> transforms -> batches
    ("eval", ("imgzoo.eval", "imgzoo.eval.*")),  # evaluate, predict, History, plots; never trains
    ("train", ("imgzoo.train", "imgzoo.train.*")),  # fit and its config, checkpoints, resume; knows no Hub
    ("hub", ("imgzoo.hub", "imgzoo.hub.*")),  # the weights format, cards, save / load / push, shipped weights
    ("study", ("imgzoo.study", "imgzoo.study.*")),  # one run from a data folder; compare several
    ("cli", ("imgzoo", "imgzoo.__main__", "imgzoo.cli", "imgzoo.cli.*")),  # public names and the command
)

Layers = Sequence[tuple[str, Sequence[str]]]


@dataclass(frozen=True)
class Arrow:
    """One import of a package module by another, where it is written."""

    importer: str
    imported: str
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({self.where})"


# ---------------------------------------------------------------------------- the graph


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: those under ``if TYPE_CHECKING:`` are skipped."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _owning_module(dotted: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of ``dotted`` that is a package module; None for outside modules."""
    while dotted and dotted not in modules:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _targets(node: ast.Import | ast.ImportFrom, module: str, path: Path, modules: Mapping[str, Path]) -> list[str]:
    """The package modules one import statement loads, by name as written."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: count packages up from the importing module's own package
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    # `from pkg import name`: a submodule if one is called so, else a name from pkg's __init__.
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def import_graph(package_dir: Path) -> list[Arrow]:
    """Every runtime import of one package module by another, module- and function-level alike."""
    modules = module_files(package_dir)
    arrows = set()
    for module, path in modules.items():
        for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path))):
            for name in _targets(node, module, path, modules):
                imported = _owning_module(name, modules)
                if imported is not None and imported != module:
                    where = f"{path.relative_to(package_dir.parent)}:{node.lineno}"
                    arrows.add(Arrow(module, imported, where))
    return sorted(arrows, key=str)


# ---------------------------------------------------------------------------- the checks


def layer_of(module: str, layers: Layers) -> int | None:
    """The index of the first layer with a pattern matching ``module``; None if none does."""
    for index, (_, patterns) in enumerate(layers):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return index
    return None


def unplaced(modules: Sequence[str], layers: Layers) -> list[str]:
    return [m for m in modules if layer_of(m, layers) is None]


def upward_arrows(arrows: Sequence[Arrow], layers: Layers) -> list[str]:
    """One message per import from a lower layer to a higher one, naming both ends and the line."""
    found = []
    for arrow in arrows:
        low, high = layer_of(arrow.importer, layers), layer_of(arrow.imported, layers)
        if low is not None and high is not None and low < high:
            found.append(
                f"{arrow.importer} (layer {low}, {layers[low][0]}) imports {arrow.imported} "
                f"(layer {high}, {layers[high][0]}) at {arrow.where}"
            )
    return found


def cycles(arrows: Sequence[Arrow]) -> list[list[str]]:
    """One concrete cycle (a path that ends where it starts) per group of mutually importing modules."""
    graph: dict[str, set[str]] = {}
    for arrow in arrows:
        graph.setdefault(arrow.importer, set()).add(arrow.imported)
    reach = {node: _reachable(graph, node) for node in graph}
    found, seen = [], set()
    for start in sorted(graph):
        if start in seen or start not in reach[start]:
            continue
        seen.update(n for n in reach[start] if start in reach.get(n, ()))  # the whole group, reported once
        found.append(_path_back(graph, start))
    return found


def _reachable(graph: Mapping[str, set[str]], start: str) -> set[str]:
    """Every module that ``start`` imports, directly or through others."""
    found, stack = set(), [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in found:
                found.add(nxt)
                stack.append(nxt)
    return found


def _path_back(graph: Mapping[str, set[str]], start: str) -> list[str]:
    """The shortest import path from ``start`` back to itself (breadth-first); ``start`` is on a cycle."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:  # walk the parents back from node to start, then close the loop
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(parents[chain[-1]])
                    return [*reversed(chain), start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")


def _hint(what: str) -> str:
    return f"{what}; see docs/architecture.md for what each layer owns"


# ---------------------------------------------------------------------------- imgzoo itself


def test_every_module_has_a_layer():
    missing = unplaced(sorted(module_files(PACKAGE_DIR)), LAYERS)
    assert not missing, _hint(
        f"modules in no layer: {', '.join(missing)}. Add each to LAYERS in tests/test_layers.py, "
        "in the layer whose job it does"
    )


def test_every_layer_pattern_names_a_module():
    modules = sorted(module_files(PACKAGE_DIR))
    stale = [p for _, patterns in LAYERS for p in patterns if not fnmatch.filter(modules, p)]
    assert not stale, f"LAYERS in tests/test_layers.py names modules that do not exist: {stale}; remove them"


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = upward_arrows(import_graph(PACKAGE_DIR), LAYERS)
    assert not upward, _hint(
        "a layer imports only those below it, function-level imports included:\n  " + "\n  ".join(upward)
    )


def test_no_import_cycle():
    found = cycles(import_graph(PACKAGE_DIR))
    assert not found, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in found)


# ---------------------------------------------------------------------------- the checks catch what they should


@pytest.fixture
def fake_package(tmp_path):
    """A four-module package with one upward import hidden inside a function."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg.high import build\n",
        "low.py": "def helper():\n    from pkg import high  # upward, and only at call time\n    return high\n",
        "high.py": (
            "from typing import TYPE_CHECKING\n\nfrom .low import helper\n\n"
            "if TYPE_CHECKING:\n    from pkg import build  # never runs: exempt\n\n"
            "def build():\n    return helper()\n"
        ),
        "sub/__init__.py": "",
        "sub/leaf.py": "import os\nfrom .. import low\nfrom pkg import build\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    return root


FAKE_LAYERS = (("low", ("pkg.low",)), ("high", ("pkg.high",)), ("face", ("pkg",)))


def test_the_graph_reads_function_level_relative_and_from_package_imports(fake_package):
    edges = {(a.importer, a.imported) for a in import_graph(fake_package)}
    assert edges == {
        ("pkg", "pkg.high"),
        ("pkg.low", "pkg.high"),  # inside a function
        ("pkg.high", "pkg.low"),  # relative; its TYPE_CHECKING import of pkg is not an arrow
        ("pkg.sub.leaf", "pkg.low"),  # `from .. import low`
        ("pkg.sub.leaf", "pkg"),  # `from pkg import build`: a name from the package's face
    }


def test_the_layer_check_names_an_upward_arrow_and_its_line(fake_package):
    upward = upward_arrows(import_graph(fake_package), FAKE_LAYERS)
    assert upward == ["pkg.low (layer 0, low) imports pkg.high (layer 1, high) at pkg/low.py:2"]


def test_the_placement_check_names_a_module_no_layer_claims(fake_package):
    assert unplaced(sorted(module_files(fake_package)), FAKE_LAYERS) == ["pkg.sub", "pkg.sub.leaf"]
    assert layer_of("pkg.sub.leaf", (*FAKE_LAYERS, ("extra", ("pkg.sub", "pkg.sub.*")))) == 3


def test_the_cycle_check_returns_a_path_that_closes(fake_package):
    found = cycles(import_graph(fake_package))
    assert found == [["pkg.high", "pkg.low", "pkg.high"]]
    arrows = [Arrow("a", "b", "a:1"), Arrow("b", "c", "b:1"), Arrow("c", "a", "c:1"), Arrow("c", "d", "c:2")]
    assert cycles(arrows) == [["a", "b", "c", "a"]]  # one group, reported once
    assert cycles([*arrows, Arrow("d", "e", "d:1"), Arrow("e", "d", "e:1")]) == [["a", "b", "c", "a"], ["d", "e", "d"]]
    assert cycles(arrows[:2]) == []
