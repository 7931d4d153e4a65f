"""The import layering of docs/ARCHITECTURE.md, checked from the code's own imports (lazy ones included).

A module may import from its own layer or a lower one, never from a higher one, and no two modules import each
other, directly or around a loop. Lower layers know nothing of the ones that build on them, so a new teacher source,
batch source or objective plugs in above without touching what it builds on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a module's layer is that of the longest prefix listed (`distill.losses.signals` → `distill.losses`)
LAYERS: list[tuple[str, ...]] = [
    ("distill", "distill.errors", "distill.atomic", "distill.checksum", "distill.locking", "distill.progress"),
    ("distill.results", "distill.losses", "distill.builtin"),
    ("distill.recipe",),
    ("distill.data", "distill.models"),
    ("distill.teachers", "distill.objectives", "distill.defenses"),
    ("distill.training", "distill.eval", "distill.generation", "distill.forensics", "distill.attacks"),
    ("distill.check", "distill.report", "distill.recipe_docs", "distill.serving"),
    ("distill.demo",),
    ("distill.cli", "distill.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every `distill…` module this file imports, at any depth (function-level imports count). `from distill.x
    import y` counts as importing `distill.x.y` when that is a module; relative imports are refused outright."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            pytest.fail(f"{path}:{node.lineno}: a relative import; write `from distill.… import …`")
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if _is_module(sub):
                    names.append(sub)
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]  # importlib.import_module("distill.…")
        else:
            continue
        found.update(n for n in names if n == "distill" or n.startswith("distill."))
    return found


def _is_module(name: str) -> bool:
    base = SRC.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (SRC / "distill").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # `from distill.x import y` may name a module distill.x.y; the edge is to the module that exists
        graph[name] = {target for target in imports_of(path) if target != name}
    return graph


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    if best is None:
        pytest.fail(f"{module} is in no layer: add it to LAYERS here and to docs/ARCHITECTURE.md")
    return best


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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


def test_no_module_imports_from_a_layer_above_its_own():
    assert layering_violations(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checks_find_what_they_look_for():
    """The two checks above mean something only if they catch a planted violation and a planted cycle."""
    graph = {"distill.losses.signals": {"distill.training.loop"}, "distill.training.loop": {"distill.losses.signals"}}
    assert layering_violations(graph) == [
        "distill.losses.signals (layer 1) imports distill.training.loop (layer 5)"]
    assert cycles(graph) == [["distill.losses.signals", "distill.training.loop"]]
    assert cycles({"distill.a": {"distill.b"}, "distill.b": set()}) == []
