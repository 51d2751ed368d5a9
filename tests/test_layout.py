"""The import direction flows -> tasks -> promptintern, never back; the library knows no Prefect,
has no import cycles between its modules, and no flow or task imports a benchmark script."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_top_modules(package: str) -> dict[str, set[str]]:
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize("package, forbidden", [
    ("promptintern", {"prefect", "prefect_dask", "tasks", "flows"}),
    ("tasks", {"flows", "benchmarks"}),
    ("flows", {"benchmarks"}),
])
def test_import_direction(package, forbidden):
    offenders = {path: names & forbidden for path, names in imported_top_modules(package).items() if names & forbidden}
    assert not offenders, f"{package} must not import {forbidden}: {offenders}"


def library_import_graph() -> dict[str, set[str]]:
    """promptintern module -> the promptintern modules it imports (at the top or inside a function).
    A package counts as its ``__init__``; ``from promptintern.x import y`` counts ``promptintern.x.y``
    when that is a module of its own."""
    modules = {}
    for path in (ROOT / "promptintern").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_the_library_has_no_import_cycles():
    """Module A importing B importing A works in Python only while every such import stays inside
    a function; it also means neither can be read or tested alone. None are left."""
    graph = library_import_graph()
    assert "promptintern.compress_common" in graph["promptintern.compress_llmlingua2"]  # the walk sees edges
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_shipped_presets_validate():
    from promptintern.config import PRESETS, preset

    for name in PRESETS:
        cfg = preset(name)
        assert cfg.schedule.stages()[-1].k == 0
