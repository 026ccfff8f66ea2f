"""The package layout is part of the design (docs/architecture.md#the-layers): the core
(store, delivery, destinations) never imports app mode, and no modules import each other in
a cycle. Read from the source with ast, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "drift_segment_source"
NAME = "drift_segment_source"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that this file imports (at any depth of its code)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            # The longest known module this name refers to (a module, or a name in one).
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != this and target != NAME:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    files = [f for f in files if "migrations" not in f.parts]
    modules = {module_name(f) for f in files}
    graph = {module_name(f): imports_of(f, modules) for f in files}
    # A package's __init__ re-exporting its own modules is not a cycle between modules.
    return {m: {t for t in deps if not m.startswith(t + ".") and not t.startswith(m + ".")}
            for m, deps in graph.items()}


def test_the_graph_sees_known_imports() -> None:
    graph = import_graph()
    assert f"{NAME}.store.store" in graph[f"{NAME}.delivery.loop"]
    assert f"{NAME}.destinations.segment" in graph[f"{NAME}.delivery.loop"]


@pytest.mark.parametrize("core", ["store", "delivery", "destinations"])
def test_the_core_never_imports_app_mode(core: str) -> None:
    graph = import_graph()
    offenders = {m: sorted(t for t in deps if t.startswith(f"{NAME}.app_mode"))
                 for m, deps in graph.items() if m.startswith(f"{NAME}.{core}")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_system_tests_and_their_support_import_nothing_from_the_package() -> None:
    # The system tier checks whatever engine is inside through HTTP and the CLI only.
    tests = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted([*(tests / "system").rglob("*.py"), *(tests / "support").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(tests)}: {name}" for name in names
                          if name == NAME or name.startswith(NAME + ".")]
    assert offenders == []
