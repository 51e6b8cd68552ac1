"""The modules of `jmlr.synth` import each other at module top level, without a cycle.

The import graph is read from the source with `ast` (no module is imported for it): an
edge a -> b for each ``from .b import ...``, ``from . import b``, ``from jmlr.synth.b
import ...``, ``from jmlr.synth import b`` or ``import jmlr.synth.b`` in a's module body
(``if TYPE_CHECKING:`` blocks excepted). Imports of sibling modules inside functions are
only allowed where they keep ``jmlr --help`` light (`jmlr.synth.cli`), so that a cycle
cannot come back hidden in a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import jmlr.synth

PACKAGE = "jmlr.synth"
SYNTH_DIR = Path(jmlr.synth.__file__).parent
# Modules that may import sibling modules inside functions (they are not cycles: see there).
DEFERRED_IMPORTS_ALLOWED = {"cli"}


def synth_modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(SYNTH_DIR.glob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """Sibling modules of `jmlr.synth` that an import statement imports."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[:2] == ["jmlr", "synth"] and len(parts) > 2:
                found.add(parts[2])
        return found & modules
    if node.level == 1:
        base = node.module
    elif node.level == 0 and node.module is not None and node.module.split(".")[:2] == ["jmlr", "synth"]:
        base = ".".join(node.module.split(".")[2:]) or None
    else:
        return found
    if base:
        found.add(base.split(".")[0])
    else:  # from . import a, b
        found.update(alias.name for alias in node.names)
    return found & modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt]):
    """Import statements run when the module is imported (not in functions or classes)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level_imports(block)
        elif isinstance(node, ast.With):
            yield from _module_level_imports(node.body)


def top_level_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    modules = set(trees)
    return {
        name: {t for node in _module_level_imports(tree.body) for t in _targets(node, modules)} - {name}
        for name, tree in trees.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"b"}}) == ["b", "b"]


def test_import_parser_sees_every_form():
    tree = ast.parse(
        "from .heads import HeadConfig\nfrom . import hair, clothing\nfrom jmlr.synth.scene import X\n"
        "from jmlr.synth import stream\nimport jmlr.synth.render\nfrom jmlr.geometry import camera\n"
        "from .world.sub import y\nif TYPE_CHECKING:\n    from .preview import z\n"
        "try:\n    from .layout import w\nexcept ImportError:\n    pass\n"
        "def f():\n    from .dataset import v\n"
    )
    modules = {"heads", "hair", "clothing", "scene", "stream", "render", "camera", "world", "preview", "layout",
               "dataset"}
    graph = top_level_graph({"m": tree, **{m: ast.parse("") for m in modules}})
    assert graph["m"] == {"heads", "hair", "clothing", "scene", "stream", "render", "world", "layout"}


def test_synth_top_level_imports_have_no_cycle():
    graph = top_level_graph(synth_modules())
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle among jmlr.synth modules: " + " -> ".join(cycle or [])
    # The graph is the package's: known edges are there (the parser is not blind).
    assert {"appearance", "heads", "backgrounds", "environment", "render_gl"} <= graph["scene"]
    assert {"regions", "heads", "face_detail"} <= graph["appearance"]
    assert {"clothing", "face_detail", "hair"} <= graph["heads"]
    assert graph["regions"] == set()  # the leaf every head module can import


def test_synth_modules_import_siblings_at_top_level():
    """No sibling import hides in a function (that is how cycles are dodged)."""
    trees = synth_modules()
    modules = set(trees)
    deferred = []
    for name, tree in trees.items():
        if name in DEFERRED_IMPORTS_ALLOWED:
            continue
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _targets(node, modules):
                    deferred.append(f"jmlr/synth/{name}.py:{node.lineno}")
    assert not deferred, f"imports of jmlr.synth modules inside functions: {sorted(set(deferred))}"


@pytest.mark.parametrize("module", ["jmlr.synth.scene"])
def test_synth_module_imports_in_a_fresh_interpreter(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
