"""Convention tests that keep the house honest."""

from __future__ import annotations

import ast
from pathlib import Path

import typer.main as typer_main

from pipelines.ingest.kinds import KINDS
from pipelines.settings import Settings, Thresholds
from pipelines.store.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]
# Top to bottom: a module may import only from its own layer or the layers below it.
LAYERS = {"geofence": 0, "pipelines": 1, "dashboard": 2, "cli": 3}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _project_modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports (lazy imports included, TYPE_CHECKING ones not)."""
    mods = _project_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in node.body
            for n in ast.walk(sub)
        }
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                target = _resolve(name, mods)
                if target and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan)."""
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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_imports_flow_down_the_layers() -> None:
    """cli → dashboard → pipelines → geofence, never the reverse."""
    bad = [
        f"{mod} imports {target}"
        for mod, targets in import_graph().items()
        for target in targets
        if LAYERS[target.split(".")[0]] > LAYERS[mod.split(".")[0]]
    ]
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
    from pipelines.ingest.sources import formats_for

    for kind in KINDS:
        assert {"csv", "jsonl", "parquet"} <= set(formats_for(kind)), kind


def test_only_the_gateway_runs_sql() -> None:
    """No module outside the gateway (pipelines/store/gateway.py) opens DuckDB connections."""
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in LAYERS
        for p in (ROOT / pkg).rglob("*.py")
        if "duckdb.connect" in p.read_text()
        and p.relative_to(ROOT).as_posix() != "pipelines/store/gateway.py"
    ]
    assert offenders == []


def test_every_map_figure_converts_to_the_basemap_datum() -> None:
    """A figure function that lays out a tile map also converts what it draws (to_basemap)."""
    bad = []
    for path in sorted((ROOT / "dashboard").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or node.name == "to_basemap":
                continue
            called = {
                c.func.id if isinstance(c.func, ast.Name) else getattr(c.func, "attr", "")
                for c in ast.walk(node)
                if isinstance(c, ast.Call)
            }
            if "map_layout" in called and "to_basemap" not in called:
                bad.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert bad == []


def test_cli_start_up_skips_heavy_machinery() -> None:
    """Starting the command line imports no command's machinery (a command's module is
    imported when it runs): ``arrivals verify`` does not pay for alert rules (scipy.stats),
    password hashing, the dashboard, the live replay or the generator."""
    import subprocess
    import sys

    heavy = (
        "pipelines.alerts.config",
        "geofence.clusters",
        "scipy",
        "pandas",
        "numba",
        "dash",
        "pipelines.users",
        "pipelines.live.simulate",
        "pipelines.generate.world",
        "pipelines.arrivals.runner",
    )
    code = f"import sys, cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_every_command_resolves() -> None:
    """Each lazily mounted command imports and builds (a typo in the table fails here)."""
    import typer
    from typer.core import TyperGroup

    from cli.main import COMMANDS, app

    group = typer_main.get_command(app)
    assert isinstance(group, TyperGroup)
    ctx = typer.Context(group)
    assert group.list_commands(ctx) == list(COMMANDS)
    for name in COMMANDS:
        command = group.get_command(ctx, name)
        assert command is not None, name
        assert command.name == name, name
        assert command.help, name
