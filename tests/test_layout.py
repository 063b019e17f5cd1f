"""The package's shape: imports form a DAG, every stage has its entry point at `<stage>/stage.py`,
and test doubles live under tests/, not in the package."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from cleanroom.pipeline import STAGES

SRC = Path(__file__).resolve().parents[1] / "src" / "cleanroom"


def module_graph() -> dict[str, set[str]]:
    """cleanroom module -> the cleanroom modules it imports (anywhere in the file, functions included)."""
    files = {}
    for f in SRC.rglob("*.py"):
        parts = ("cleanroom",) + f.relative_to(SRC).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t)
                # a package's own __init__ is where its submodules come from, not a dependency edge
                if r and r != mod and r != "cleanroom" and not mod.startswith(r + "."):
                    graph[mod].add(r)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (iterative DFS, white/grey/black)."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_imports_form_a_dag():
    graph = module_graph()
    assert len(graph) > 40 and graph["cleanroom.cli"], "the graph should see the whole package"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_stage_entry_point_is_named_after_its_stage():
    for name, stage in STAGES.items():
        module, _, fn = stage.func.partition(":")
        package = {"eval": "evals"}.get(name, name)
        assert module == f"cleanroom.{package}.stage" and fn == f"run_{name}", (name, stage.func)
        assert callable(getattr(importlib.import_module(module), fn))


def test_no_test_doubles_in_the_package():
    for f in SRC.rglob("*.py"):
        text = f.read_text()
        assert "tiny_run" not in text and "planted_corpus" not in text, f
