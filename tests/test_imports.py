"""The package's imports point one way: cli -> driver -> worker -> data -> shared, with no cycles.

Every import is counted, at module level or inside a function alike: an import moved into a function
hides a cycle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parent.parent / "rtune"
LAYERS = {"cli": 4, "driver": 3, "worker": 2, "data": 1, "shared": 0}  # a module may import its layer or lower


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if module in ("rtune.cli", "rtune.__main__"):
        return "cli"
    if len(parts) > 2 and parts[1] in ("driver", "worker", "data"):
        return parts[1]
    return "shared"


def import_graph(package: Path = PACKAGE) -> Dict[str, Set[str]]:
    """module -> the rtune modules it imports (anywhere in its text)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for module, path in files.items():
        targets: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from rtune.driver import local_ray` names a module; `from rtune.config import X` a name in one
                names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in files else node.module
                         for alias in node.names]
            else:
                continue
            targets |= {name for name in names if name in files and name != module}
        graph[module] = targets
    return graph


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    return sorted(f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})" for a, targets in graph.items()
                  for b in targets if LAYERS[layer_of(b)] > LAYERS[layer_of(a)])


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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


def test_imports_point_down_the_layers():
    graph = import_graph()
    assert "rtune.worker.loop" in graph and graph["rtune.worker.loop"], "the walk found no imports"
    assert upward_imports(graph) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checker_sees_an_upward_import_and_a_cycle_hidden_in_a_function(tmp_path):
    """The checks' teeth: a data module that imports the worker inside a function, and back."""
    package = tmp_path / "rtune"
    (package / "data").mkdir(parents=True)
    (package / "worker").mkdir()
    for init in (package / "__init__.py", package / "data" / "__init__.py", package / "worker" / "__init__.py"):
        init.write_text("")
    (package / "data" / "a.py").write_text("def f():\n    from rtune.worker.b import g\n    return g\n")
    (package / "worker" / "b.py").write_text("from rtune.data import a\n\ndef g():\n    return a\n")
    graph = import_graph(package)
    assert upward_imports(graph) == ["rtune.data.a (data) imports rtune.worker.b (worker)"]
    assert cycles(graph) == [["rtune.data.a", "rtune.worker.b"]]
