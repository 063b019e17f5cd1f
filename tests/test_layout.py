"""The package's shape: imports form a DAG, every stage has its entry point at `<stage>/stage.py`,
and test doubles live under tests/, not in the package."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from cleanroom.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "cleanroom"
STAGE_PACKAGES = {s.func.split(":")[0].split(".")[1] for s in STAGES.values() if s.func}


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
                # `from pkg import submodule` depends on the submodule, not on everything pkg/__init__ names
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
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


def test_packages_form_a_dag():
    """Collapsed to top-level packages (cleanroom.report, cleanroom.audit, ...) the graph is still a DAG: two
    packages never reach into each other (as report.figures and audit.report once did)."""
    packages: dict[str, set[str]] = {}
    for mod, targets in module_graph().items():
        top = ".".join(mod.split(".")[:2])
        packages.setdefault(top, set()).update(t2 for t in targets if (t2 := ".".join(t.split(".")[:2])) != top)
    cycle = find_cycle(packages)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


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


def stage_imports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imported module (relative to cleanroom, e.g. `world.schema`) -> the other stage packages importing it."""
    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        src = mod.split(".")
        for dep in deps:
            dst = dep.split(".")
            if len(src) > 1 and len(dst) > 1 and {src[1], dst[1]} <= STAGE_PACKAGES and src[1] != dst[1]:
                out.setdefault(".".join(dst[1:]), set()).add(src[1])
    return out


def documented_stage_imports() -> dict[str, set[str]]:
    """The list under "Stage-to-stage imports" in docs/architecture.md: "- `module` ← `stage`, `stage`: why"."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("### Stage-to-stage imports", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.match(r"- `([\w.]+)` ← ((?:`\w+`(?:, )?)+)", line)
        if m:
            out[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2)))
    return out


def test_stage_to_stage_imports_are_the_documented_ones():
    documented = documented_stage_imports()
    assert documented, "docs/architecture.md lists the stage-to-stage imports"
    assert stage_imports(module_graph()) == documented


def test_stages_read_earlier_stages_through_the_shared_modules():
    for mod, deps in module_graph().items():
        if not mod.startswith("cleanroom.generate"):
            assert not any(d.startswith("cleanroom.generate") for d in deps), mod
        if not mod.startswith("cleanroom.world"):
            assert "cleanroom.world.stage" not in deps, mod
