"""The command line's boundary: every command, driven with bad values, exits 2 with a message
naming what was wrong, and never shows a traceback (a convention test: a new command must
add its bad values here). A store held by another process is named, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app
from tests.pipelines.builders import make_fixes, write_rows

# command path -> bad invocations (argv after the command path, phrase the message must hold).
# "{gps}" is a valid GPS file, so only the bad value can be what fails.
BAD: dict[tuple[str, ...], list[tuple[list[str], str]]] = {
    ("ingest",): [
        (["gps", "{gps}", "--datum", "XYZ"], "--datum 'XYZ'"),
        (["gps", "{gps}", "--tz", "Mars/Olympus"], "--tz 'Mars/Olympus'"),
        (["gps", "{gps}", "--assume-accuracy-m", "-5"], "--assume-accuracy-m -5"),
        (["gps", "{gps}", "--assume-accuracy-m", "nan"], "--assume-accuracy-m nan"),
        (["gps", "{gps}", "--assume-accuracy-m", "inf"], "--assume-accuracy-m inf"),
        (["gps", "{gps}", "--assume-accuracy-m", "0"], "--assume-accuracy-m 0"),
        (["gps", "{gps}", "--encoding", "klingon"], "--encoding 'klingon'"),
        (["outages", "{gps}", "--radius-m", "0"], "--radius-m 0"),
        (["vibration", "{gps}", "--sample-rate-hz", "-1"], "--sample-rate-hz -1"),
        (["gps", "{gps}", "--delimiter", ";;"], "--delimiter ';;'"),
        (["gps", "{gps}", "--format", "xml"], "'xml' is not a format of kind gps"),
        (["gpz", "{gps}"], "'gpz' is not a kind"),
        (["gps", "{missing}"], "does not exist"),
        (["gps", "{gps}", "--columns", "lat"], "is not canon=source"),
    ],
    ("ingest-world",): [(["{missing}"], "does not exist")],
    ("generate",): [(["--scale", "0"], "--scale"), (["--days", "0"], "--days")],
    ("edge",): [
        (["--site", "Bad Site!", "--hub", "nats-leaf://127.0.0.1:7422"], "Bad Site!"),
        (
            ["--site", "t7", "--hub", "nats-leaf://127.0.0.1:7422", "--nats-port", "0"],
            "--nats-port",
        ),
    ],
    ("hub",): [(["--nats-port", "0"], "--nats-port"), (["--leaf-port", "70000"], "--leaf-port")],
    ("simulate",): [
        (["--start", "yesterday"], "yesterday"),
        (["--hours", "0"], "--hours"),
        (["--speed", "-1"], "--speed"),
        (["{missing}"], "not a generated world"),
    ],
    ("status",): [(["--bogus"], "No such option")],
    ("serve",): [(["--port", "0"], "--port"), (["--workers", "0"], "--workers")],
    ("demo",): [
        (["--scale", "-1", "--no-serve"], "--scale"),
        (["--port", "70000"], "--port"),
        (["--speed", "-1", "--no-serve"], "--speed"),
        (["--replay-hours", "0", "--no-serve"], "--replay-hours"),
    ],
    ("fetch", "weather"): [
        (["--lat", "91", "--lon", "0", "--from", "2026-01-01", "--to", "2026-01-02"], "--lat"),
        (["--lat", "0", "--lon", "0", "--from", "2026-01-02", "--to", "2026-01-01"], "before"),
        (["--lat", "0", "--lon", "0", "--from", "yesterday", "--to", "2026-01-01"], "--from"),
    ],
    ("fetch", "outages"): [
        (["--url", "http://127.0.0.1:9/x", "--tz", "Mars/Olympus"], "Mars/Olympus"),
        (["--url", "http://127.0.0.1:9/x", "--polls", "0"], "--polls"),
    ],
    ("users", "add"): [(["bob", "--role", "emperor"], "emperor")],
    ("users", "list"): [(["--bogus"], "No such option")],
    ("users", "demo"): [(["--bogus"], "No such option")],
    ("alerts", "run"): [
        (["--step-h", "0"], "--step-h"),
        (["--at", "yesterday"], "yesterday"),
        (["--rules", "{missing}"], "does not exist"),
    ],
    ("alerts", "deliver"): [(["--rules", "{missing}"], "does not exist")],
    ("alerts", "list"): [(["--status", "bogus"], "bogus")],
    ("alerts", "export"): [(["--out", "{missing}/x.csv"], "existing folder")],
    ("alerts", "dead-letters"): [(["--bogus"], "No such option")],
    ("alerts", "redrive"): [(["NOPE"], "NOPE")],
    ("alerts", "ack"): [(["NOPE", "--actor", "me"], "NOPE")],
    ("alerts", "fulfil"): [(["NOPE", "--actor", "me"], "NOPE")],
    ("alerts", "cancel"): [(["NOPE", "--actor", "me", "--reason", "r"], "NOPE")],
    ("arrivals", "verify"): [
        (["--since", "yesterday"], "yesterday"),
        (["--until", "tomorrow"], "tomorrow"),
        (["--engine", "spark"], "--engine 'spark'"),
    ],
    ("alerts", "history"): [
        (["--since", "yesterday"], "yesterday"),
        (["--since", "latest", "--step-h", "0"], "--step-h"),
        (["--since", "latest", "--engine", "spark"], "--engine 'spark'"),
    ],
    ("maintain",): [
        (["--keep-snapshots-h", "-1"], "--keep-snapshots-h"),
        (["--file-min-age-min", "-5"], "--file-min-age-min"),
    ],
    ("batches", "list"): [(["--kind", "gpz"], "gpz"), (["--limit", "0"], "--limit")],
    ("batches", "delete"): [(["no-such-batch"], "no-such-batch")],
}


def _leaves(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable command path (groups mount their commands lazily: ask them)."""
    if not hasattr(command, "list_commands"):
        yield prefix
        return
    ctx = typer.Context(command)
    for name in command.list_commands(ctx):
        yield from _leaves(command.get_command(ctx, name), (*prefix, name))


def test_every_command_has_bad_value_cases() -> None:
    commands = set(_leaves(typer.main.get_command(app)))
    assert commands == set(BAD), (
        f"missing: {sorted(commands - set(BAD))}, stale: {sorted(set(BAD) - commands)}"
    )


@pytest.fixture(autouse=True)
def _global_options_restored() -> Iterator[None]:
    """``--store``/``--config`` live in ``cli.common.State``; leave it as found for other
    tests that drive a sub-app without the main callback."""
    from cli.common import State

    saved = (State.store_override, State.config)
    yield
    State.store_override, State.config = saved


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "FIELDTRACE_DATA_DIR": str(tmp_path / "data"),
        "FIELDTRACE_USERS_FILE": str(tmp_path / "data" / "users.toml"),
        "COLUMNS": "300",
    }


CASES = [(path, argv, phrase) for path, cases in BAD.items() for argv, phrase in cases]


@pytest.mark.parametrize(
    ("path", "argv", "phrase"), CASES, ids=[" ".join((*p, *a)) for p, a, _ in CASES]
)
def test_bad_value_exits_2_naming_it(
    tmp_path: Path, env: dict[str, str], path: tuple[str, ...], argv: list[str], phrase: str
) -> None:
    gps = write_rows(tmp_path / "gps.csv", make_fixes(3))
    args = [a.format(gps=gps, missing=tmp_path / "missing") for a in argv]
    store = tmp_path / "ft.duckdb"
    result = CliRunner().invoke(app, ["--store", str(store), *path, *args], env=env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert phrase in " ".join(result.output.split()), result.output
    assert not store.exists() or "ingest" not in path or _nothing_ingested(store)


def _nothing_ingested(store: Path) -> bool:
    from pipelines.store.gateway import Store

    with Store(store, read_only=True) as s:
        return s.count("ingest_batches") == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FIELDTRACE_TIMEZONE", "Mars/Olympus"),
        ("FIELDTRACE_THRESHOLDS__ARRIVAL_RADIUS_M", "-5"),
        ("FIELDTRACE_THRESHOLDS__ARRIVAL_RADIUS_M", "inf"),
        ("FIELDTRACE_THRESHOLDS__MAX_ACCURACY_M", "0"),
    ],
)
def test_bad_setting_exits_2_naming_it(
    tmp_path: Path, env: dict[str, str], variable: str, value: str
) -> None:
    result = CliRunner().invoke(
        app, ["--store", str(tmp_path / "ft.duckdb"), "status"], env={**env, variable: value}
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert value in result.output
    assert variable.split("__")[0] in result.output


@pytest.fixture
def held_store(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A store another process holds open read-write (as `fieldtrace serve` does)."""
    from pipelines.store.gateway import Store

    path = tmp_path / "held.duckdb"
    Store(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', "
            "flush=True); time.sleep(120)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        yield path, holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=30)


@pytest.mark.parametrize(
    "argv", [["status"], ["alerts", "list"], ["arrivals", "verify"], ["batches", "list"]]
)
def test_busy_store_names_its_holder(
    held_store: tuple[Path, int], env: dict[str, str], argv: list[str]
) -> None:
    path, pid = held_store
    result = CliRunner().invoke(app, ["--store", str(path), *argv], env=env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"in use by process {pid}" in " ".join(result.output.split())
