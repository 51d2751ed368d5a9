"""The import direction flows -> tasks -> promptintern, never back; the library knows no Prefect."""

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
    ("tasks", {"flows"}),
])
def test_import_direction(package, forbidden):
    offenders = {path: names & forbidden for path, names in imported_top_modules(package).items() if names & forbidden}
    assert not offenders, f"{package} must not import {forbidden}: {offenders}"


def test_shipped_presets_validate():
    from promptintern.config import PRESETS, preset

    for name in PRESETS:
        cfg = preset(name)
        assert cfg.schedule.stages()[-1].k == 0
