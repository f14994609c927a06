"""Convention tests that keep the house honest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipelines.kinds import KINDS
from pipelines.schema import TABLES
from pipelines.settings import Settings, Thresholds

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"geofence": 0, "pipelines": 1, "dashboard": 2}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_flow_one_way(package: str) -> None:
    """dashboard → pipelines → geofence, never the reverse."""
    bad = []
    for path in (ROOT / package).rglob("*.py"):
        for mod in _imports(path):
            if mod in LAYERS and LAYERS[mod] > LAYERS[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert bad == []


IO_MODULES = {"duckdb", "httpx", "requests", "socket", "urllib", "sqlite3", "open"}


def test_geofence_does_no_io() -> None:
    bad = []
    for path in (ROOT / "geofence").rglob("*.py"):
        source = path.read_text()
        mods = _imports(path) & IO_MODULES
        if mods or "open(" in source.replace("is_open(", ""):
            bad.append(f"{path.name}: {sorted(mods) or 'open('}")
    assert bad == []


def test_every_setting_is_documented_in_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"`{name}`"
        for name in Settings.model_fields
        if name != "thresholds"
        if f"`{name}`" not in readme
    ]
    missing += [
        f"`thresholds.{name}`"
        for name in Thresholds.model_fields
        if f"`thresholds.{name}`" not in readme
    ]
    assert missing == []


def test_every_kind_has_a_schema_and_a_table() -> None:
    for spec in KINDS.values():
        assert spec.table in TABLES
        assert set(spec.required) <= set(spec.columns)
        assert set(spec.key) <= set(spec.columns)


def test_every_kind_reads_native_formats() -> None:
    from pipelines.sources import formats_for

    for kind in KINDS:
        assert {"csv", "jsonl", "parquet"} <= set(formats_for(kind)), kind


def test_only_the_gateway_runs_sql() -> None:
    """No module outside pipelines/store.py opens DuckDB connections."""
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in LAYERS
        for p in (ROOT / pkg).rglob("*.py")
        if "duckdb.connect" in p.read_text() and p.name != "store.py"
    ]
    assert offenders == []
