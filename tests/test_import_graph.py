"""The import graph of the product: no cycles, and the layers the architecture names.

Every ``import`` in every first-party module counts, also those inside functions:
a cycle hidden by a function-local import is still two modules that each need the
other. ``vsearch/`` is the library (it imports neither Airflow nor Flask), ``service/``
the Flask app, ``plugins/`` the Airflow extensions, ``dags/`` the DAG files.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where each top-level package lives (plugins/ and dags/ are on Airflow's sys.path).
PACKAGES = {
    "vsearch": ROOT / "vsearch",
    "service": ROOT / "service",
    "vsearch_airflow": ROOT / "plugins" / "vsearch_airflow",
    "vsearch_plugin": ROOT / "plugins" / "vsearch_plugin.py",
    "vsearch_dags": ROOT / "dags" / "vsearch_dags",
    "vsearch_build_index": ROOT / "dags" / "vsearch_build_index.py",
    "vsearch_compact": ROOT / "dags" / "vsearch_compact.py",
}


def module_files() -> dict[str, Path]:
    found = {}
    for name, path in PACKAGES.items():
        if path.suffix == ".py":
            found[name] = path
            continue
        for file in path.rglob("*.py"):
            parts = list(file.relative_to(path).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([name, *parts])] = file
    return found


def imports_of(name: str, file: Path, modules: set[str]) -> set[str]:
    """First-party modules ``name`` imports (``from a.b import c`` is a.b.c if that is a
    module, else a.b)."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, file, set(files)) for name, file in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the walk found the product's modules
    assert cycles(graph) == []


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers() -> None:
    """vsearch/ imports no service, plugin or DAG code; service/ no Airflow code; plugins/
    no DAG code."""
    graph = import_graph()
    for name, targets in graph.items():
        top = {t.split(".")[0] for t in targets}
        if name.startswith("vsearch."):
            assert top <= {"vsearch"}, (name, targets)
        elif name.startswith("service"):
            assert top <= {"vsearch", "service"}, (name, targets)
        elif name.startswith(("vsearch_airflow", "vsearch_plugin")):
            assert top <= {"vsearch", "vsearch_airflow"}, (name, targets)


def test_the_library_imports_neither_airflow_nor_flask() -> None:
    for file in (ROOT / "vsearch").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in ("airflow", "flask", "fastapi"), (file, n)


# The library's layers, lowest first: a package may import its own layer and those below.
VSEARCH_LAYERS = [
    {"vsearch", "vsearch.canonical_json", "vsearch.strict_json", "vsearch.config", "vsearch.ids",
     "vsearch.imaging"},
    {"vsearch.storage", "vsearch.manifest"},
    {"vsearch.catalog", "vsearch.encoders", "vsearch.sources", "vsearch.delta",
     "vsearch.airflow_setup", "vsearch.serving"},
    {"vsearch.embedding"},
    {"vsearch.index"},
    {"vsearch.search"},
    {"vsearch.stages"},
    {"vsearch.cli"},
]  # fmt: skip
# The service's parts, lowest first (the hot-swap subsystem knows nothing of HTTP).
SERVICE_LAYERS = [
    {"service", "service.snapshots"},
    {"service.errors", "service.metrics", "service.access_log"},
    {"service.queries"},
    {"service.state"},
    {"service.api"},
    {"service.app", "service.server"},
]


def part_of(module: str) -> str:
    """The layer unit of a module: ``vsearch.index.train`` -> ``vsearch.index``."""
    return ".".join(module.split(".")[:2])


def rank(layers: list[set[str]], unit: str) -> int:
    for i, layer in enumerate(layers):
        if unit in layer:
            return i
    raise AssertionError(f"{unit} is in no layer: add it to the layers in this test")


def upward_imports(graph: dict[str, set[str]], layers: list[set[str]], top: str) -> list[str]:
    found = []
    for name, targets in graph.items():
        if name.split(".")[0] != top:
            continue
        for target in targets:
            if target.split(".")[0] != top:
                continue
            a, b = part_of(name), part_of(target)
            if a != b and rank(layers, b) > rank(layers, a):
                found.append(f"{name} -> {target}")
    return sorted(found)


def test_no_upward_import() -> None:
    """A lower layer never imports a higher one: the library's subpackages in pipeline order
    (storage below sources below embedding below index ... below the CLI), and the service's
    parts (snapshots below errors and metrics below queries below state below the API)."""
    graph = import_graph()
    assert upward_imports(graph, VSEARCH_LAYERS, "vsearch") == []
    assert upward_imports(graph, SERVICE_LAYERS, "service") == []


def test_the_layer_check_finds_an_upward_import() -> None:
    graph = {"vsearch.storage.local": {"vsearch.stages.sequence"}, "vsearch.stages.x": set()}
    assert upward_imports(graph, VSEARCH_LAYERS, "vsearch") == [
        "vsearch.storage.local -> vsearch.stages.sequence"
    ]


def test_no_blueprint_imports_another() -> None:
    """Each blueprint module stands alone; what two share lives beside them (auth, parsing)."""
    graph, files = import_graph(), module_files()
    blueprints = {n for n, f in files.items() if n.startswith("service.")
                  and "Blueprint(" in f.read_text()}  # fmt: skip
    assert len(blueprints) >= 5
    assert {n: graph[n] & blueprints for n in blueprints if graph[n] & blueprints} == {}


def test_no_file_name_used_twice() -> None:
    """Module and package names are unique across the product: one name, one place to look."""
    seen: dict[str, list[str]] = {}
    for name, file in module_files().items():
        stem = name.rpartition(".")[2] if file.name == "__init__.py" else file.stem
        seen.setdefault(stem, []).append(str(file.relative_to(ROOT)))
    assert {stem: paths for stem, paths in seen.items() if len(paths) > 1} == {}


def test_the_library_root_holds_only_what_every_layer_uses() -> None:
    root = sorted(p.name for p in (ROOT / "vsearch").glob("*.py"))
    assert len(root) <= 8, root


def test_modules_are_short_or_say_why() -> None:
    """Modules stay under 300 lines; a longer one says why at its top."""
    long = []
    for file in module_files().values():
        lines = file.read_text().splitlines()
        if len(lines) > 300 and not any("longer than 300 lines" in x.lower() for x in lines[:30]):
            long.append(f"{file.relative_to(ROOT)}: {len(lines)}")
    assert long == []
