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


# The layers, lowest first (docs/architecture.md#the-layers): a module imports only modules
# of its own layer or of the layers below it. The longest prefix names a module's layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", (NAME, f"{NAME}.clock", f"{NAME}.config", f"{NAME}.logs",
                     f"{NAME}.deadlines")),
    ("translation", (f"{NAME}.sources.drift.translators", f"{NAME}.sources.segment.translators")),
    ("store", (f"{NAME}.store",)),
    ("edges", (f"{NAME}.metrics", f"{NAME}.drift_api", f"{NAME}.routing",
               f"{NAME}.destinations")),
    ("delivery", (f"{NAME}.delivery",)),
    ("doors", (f"{NAME}.sources",)),
    ("page helpers", (f"{NAME}.pages",)),
    ("app mode", (f"{NAME}.app_mode",)),
    ("surfaces", (f"{NAME}.attention", f"{NAME}.landing", f"{NAME}.health", f"{NAME}.status",
                  f"{NAME}.client_script", f"{NAME}.startup", f"{NAME}.app", f"{NAME}.cli",
                  f"{NAME}.gunicorn_conf")),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the layer ``module`` belongs to."""
    found = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS)
             for prefix in prefixes if module == prefix or module.startswith(prefix + ".")]
    assert found, f"{module} belongs to no layer: add it to LAYERS"
    return max(found)[1]


def test_every_module_imports_only_its_own_layer_or_those_below() -> None:
    graph = import_graph()
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
              f"({LAYERS[layer_of(target)][0]})"
              for module, targets in sorted(graph.items()) for target in sorted(targets)
              if layer_of(target) > layer_of(module)]
    assert upward == []


def test_each_source_owns_its_door_and_the_doors_share_one_module() -> None:
    graph = import_graph()
    drift_door, segment_door = f"{NAME}.sources.drift.webhooks", f"{NAME}.sources.segment.webhooks"
    assert f"{NAME}.sources.door" in graph[drift_door] & graph[segment_door]
    assert not {module for module in graph[segment_door] if module.startswith(
        f"{NAME}.sources.drift.") and ".translators" not in module}, "a door of its own"
    assert not {module for module in graph[drift_door] if module.startswith(
        f"{NAME}.sources.segment.")}


def test_one_function_turns_a_drift_event_into_segment_messages() -> None:
    """Delivery, the door (measuring 32 KB) and ``translate`` share to_segment's one path;
    nothing else builds messages from translator calls."""
    graph = import_graph()
    path = f"{NAME}.delivery.to_segment"
    for user in (f"{NAME}.sources.drift.intake", f"{NAME}.cli.payloads"):
        assert path in graph[user], user
    builders = sorted(module_name(file) for file in PACKAGE.rglob("*.py")
                      if ".build(call)" in file.read_text(encoding="utf-8"))
    assert builders == [path]


def test_migrations_never_import_the_application() -> None:
    versions = PACKAGE / "store" / "migrations" / "versions"
    offenders = []
    for path in sorted(versions.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {name}" for name in names if name.startswith(NAME)]
    assert offenders == []


def test_no_module_of_the_package_is_over_400_lines() -> None:
    long = {str(path.relative_to(PACKAGE)): lines for path in sorted(PACKAGE.rglob("*.py"))
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


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
