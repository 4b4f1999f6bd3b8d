"""The package's layout: no import cycle, no import from a layer above, and the README's
architecture table lists the tree.

The oracle is the source itself, read with :mod:`ast`: every ``import`` of a
``diffqcp_np`` module, at module level or inside a function (a lazy import is still a
dependency), except those under ``if TYPE_CHECKING:``. The layers are the rows of the
README's "Architecture" table, top to bottom.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "diffqcp_np"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The diffqcp_np modules that an import statement loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[:len(base) - node.level + 1]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    out = set()
    for alias in node.names:
        full = f"{name}.{alias.name}"
        out.add(full if full in known else name)
    return {m for m in out if m in known}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (itself excluded)."""
    modules = _modules()
    known = set(modules)
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(n) for node in ast.walk(tree) if _is_type_checking(node)
                   for n in ast.walk(node)}
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets |= _imported(node, module, path.name == "__init__.py", known)
        targets.discard(module)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def readme_rows() -> list[list[str]]:
    """The entries (``batch/``, ``cone_program.py``, ...) of each row of the README's
    architecture table, top row first."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Architecture\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert match, "README.md has no '## Architecture' section"
    rows = []
    for line in match.group(1).splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        rows.append(re.findall(r"`([^`]+)`", first_cell))
    return rows


def _entry(module: str) -> str:
    """The top-level entry of the tree that holds ``module`` (``batch/``, ``utils.py``)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    path = PACKAGE / parts[1]
    return f"{parts[1]}/" if path.is_dir() else f"{parts[1]}.py"


def test_graph_sees_lazy_and_relative_imports():
    """The oracle itself: a function-level relative import is an edge, a TYPE_CHECKING
    import is not."""
    graph = import_graph()
    assert "diffqcp_np.gpu.api" in graph["diffqcp_np.cone_program"]  # inside a function
    assert "diffqcp_np.pipeline" in graph["diffqcp_np.batch.api"]  # `from ..pipeline`
    assert "diffqcp_np.batch.dense" not in graph["diffqcp_np.batch.dense_refinement"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_readme_table_lists_the_tree():
    listed = [entry for row in readme_rows() for entry in row]
    assert len(listed) == len(set(listed)), "an entry appears twice in the table"
    tree = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert set(listed) == tree


def test_no_module_imports_from_a_layer_above():
    layer = {entry: i for i, row in enumerate(readme_rows()) for entry in row}
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            if layer[_entry(target)] < layer[_entry(module)]:
                upward.append(f"{module} -> {target}")
    assert upward == []


@pytest.mark.parametrize("name", ["cone_program", "cones", "utils", "layers", "compat"])
def test_public_module_paths_stay(name):
    """The modules that diffcp users and ``install_as_diffcp`` reach by path."""
    import importlib

    assert importlib.import_module(f"diffqcp_np.{name}").__name__ == f"diffqcp_np.{name}"
