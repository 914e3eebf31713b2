"""No import cycles in ``edge_asr``: every module's imports (at its top, inside functions and
under ``TYPE_CHECKING`` alike) form a graph whose layers point one way, so a module can be read,
tested and replaced without the ones that use it. ``from package import name`` counts as an
import of the submodule ``package.name`` where there is one, as linters count it."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import edge_asr

PACKAGE = Path(edge_asr.__file__).parent


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` (a folder) -> the modules of the same package it imports."""
    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in files.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                imported |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[module] = (imported & files.keys()) - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_edge_asr_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 80 and "edge_asr.lifecycle" in graph["edge_asr.server.current"]  # the walk sees imports
    assert cycles(graph) == []


def test_the_check_finds_a_cycle_that_is_added(tmp_path):
    """The lifecycle reaching up into the server (a lazy import inside a function, as a hurried fix
    would write it) closes a loop through three modules."""
    copy = tmp_path / "edge_asr"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "web"))
    policy = copy / "lifecycle" / "policy.py"
    policy.write_text(policy.read_text() + "\n\ndef _hurried():\n    from edge_asr.server.current import config\n")
    found = cycles(import_graph(copy))
    assert len(found) == 1 and {"edge_asr.lifecycle.policy", "edge_asr.server.current"} <= set(found[0])
