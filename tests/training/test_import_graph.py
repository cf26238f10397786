"""The modules of `dc_ae_hf.training` import each other without a cycle, function-local imports included (an import
inside a function can hide a loop that a top-level import would show)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "dc_ae_hf" / "training"


def _module_name(path: Path) -> str:
    return "dc_ae_hf.training" if path.name == "__init__.py" else f"dc_ae_hf.training.{path.stem}"


def training_import_graph() -> dict[str, set[str]]:
    """Module -> the `dc_ae_hf.training` modules it imports anywhere in its source (at the top or in a function).
    Only these edges can close a loop: no module outside `dc_ae_hf.training` imports it (tests/test_package.py)."""
    modules = {_module_name(path): path for path in sorted(PACKAGE.glob("*.py"))}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package dc_ae_hf.training
                    base = "dc_ae_hf.training" + (f".{node.module}" if node.module else "")
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            found.update(target for target in targets if target in modules and target != name)
        graph[name] = found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_training_modules_import_each_other_without_a_cycle():
    graph = training_import_graph()
    assert {"dc_ae_hf.training.autoencoder", "dc_ae_hf.training.export", "dc_ae_hf.training.run"} <= set(graph)
    assert "dc_ae_hf.training.run" in graph["dc_ae_hf.training.export"]  # the edges are seen
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_find_cycle_finds_a_loop_hidden_anywhere():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
