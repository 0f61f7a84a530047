"""The package's import graph, read from the source (no module is imported): no cycle among nnunet_mvext's modules,
function-level imports included.

Every ``import``/``from ... import`` anywhere in a module (top level, functions, ``if TYPE_CHECKING`` blocks) that names
``nnunet_mvext`` is an edge; relative imports are resolved against the importing module's package, and ``from pkg
import name`` points at the submodule ``pkg.name`` when there is one, else at ``pkg``.
"""

from __future__ import annotations

import ast
import os
from typing import Optional

import nnunet_mvext

PACKAGE = "nnunet_mvext"
PACKAGE_DIR = os.path.dirname(os.path.abspath(nnunet_mvext.__file__))


def package_modules(package_dir: str = PACKAGE_DIR) -> dict[str, str]:
    """Dotted module name -> source file, for every ``.py`` file of the package (a package is its ``__init__``)."""
    modules = {}
    root = os.path.dirname(package_dir)
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = os.path.join(folder, name)
    return modules


def _target(name: str, modules: dict) -> Optional[str]:
    """The module of the package that importing ``name`` (a dotted name) loads last: its longest known prefix."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imported_modules(module: str, source_file: str, modules: dict) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    with open(source_file, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=source_file)
    is_package = os.path.basename(source_file) == "__init__.py"
    edges = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names = [f"{origin}.{alias.name}" for alias in node.names if alias.name != "*"] or [origin]
            names = [n if n in modules else origin for n in names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _target(name, modules)
                if target is not None and target != module:
                    edges.add(target)
                elif target == module:
                    edges.add(module)  # a module importing itself is a cycle of one
    return edges


def import_graph(package_dir: str = PACKAGE_DIR) -> dict[str, set[str]]:
    modules = package_modules(package_dir)
    return {module: imported_modules(module, path, modules) for module, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one (Tarjan's algorithm)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A closed path through the component's first module (breadth-first, so the shortest one)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "nnunet_mvext.planning.plan_command" in graph
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_function_level_and_relative_imports_are_edges(tmp_path):
    """The parser on a made-up package: a cycle closed only by a function-level relative import, and ``from pkg import
    module``, are found; a package without a cycle has none."""
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from nnunet_mvext.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import f\n")
    (package / "c.py").write_text("import os\n")
    graph = import_graph(str(package))
    assert graph["nnunet_mvext.a"] == {"nnunet_mvext.sub.b"}
    assert graph["nnunet_mvext.sub.b"] == {"nnunet_mvext.a"}
    assert find_cycles(graph) == [["nnunet_mvext.a", "nnunet_mvext.sub.b", "nnunet_mvext.a"]]
    (package / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    graph = import_graph(str(package))
    assert graph["nnunet_mvext.sub.b"] == {"nnunet_mvext.c"}
    assert find_cycles(graph) == []

