"""The ingest machinery: formats, named rules, reconciled counts, idempotence, atomicity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import IngestOptions
from pipelines.ingest.machine import ingest_file
from pipelines.settings import load_settings
from pipelines.store.gateway import Store
from tests.pipelines.builders import T0, make_events, make_fixes, write_rows

SETTINGS = load_settings()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ft.duckdb")


def _quarantine(store: Store) -> list[tuple[str, str, int]]:
    return [
        tuple(r)
        for r in store.query(  # type: ignore[misc]
            "SELECT rule, field, row_number FROM quarantine ORDER BY row_number"
        ).iter_rows()
    ]


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_each_native_format_round_trips(store: Store, tmp_path: Path, ext: str) -> None:
    path = write_rows(tmp_path / f"gps{ext}", make_fixes(20))
    result = ingest_file(store, "gps", path, SETTINGS)
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (20, 20, 0)
    got = store.query("SELECT min(ts) AS t, count(*) AS n, any_value(h3) AS h3 FROM gps_fixes")
    assert got["n"][0] == 20
    assert got["t"][0] == T0
    assert got["h3"][0] is not None


# (kind, bad row overrides, expected rule, expected field)
RULE_CASES = [
    ("gps", {"lat": 123.4}, "lat_lon_range", "lat"),
    ("gps", {"lon": -181.0}, "lat_lon_range", "lon"),
    ("gps", {"lat": 3_650_000.0, "lon": 1_200_000.0}, "projected_coordinates", "lat,lon"),
    ("gps", {"ts": "1901-12-13T20:45:52Z"}, "time_range", "ts"),
    ("gps", {"ts": "2099-01-01T00:00:00Z"}, "time_range", "ts"),
    ("gps", {"accuracy_m": None}, "missing_accuracy", "accuracy_m"),
    ("gps", {"lat": "abc"}, "type", "lat"),
    ("gps", {"ts": "yesterday"}, "type", "ts"),
    ("gps", {"technician_id": None}, "missing_required", "technician_id"),
    ("gps", {"lat": 30.9}, "speed_jump", "lat,lon"),
]


@pytest.mark.parametrize(("kind", "override", "rule", "field"), RULE_CASES)
def test_named_rule_quarantines_with_reason(
    store: Store, tmp_path: Path, kind: str, override: dict[str, object], rule: str, field: str
) -> None:
    rows = make_fixes(10)
    rows[4] = {**rows[4], **override}
    path = write_rows(tmp_path / "in.jsonl", rows)
    result = ingest_file(store, kind, path, SETTINGS)
    assert result.rows_read == result.rows_accepted + result.rows_quarantined == 10
    assert _quarantine(store) == [(rule, field, 5)]
    reason = store.scalar("SELECT reason FROM quarantine")
    assert reason
    assert field.split(",")[0] in reason


def test_duplicate_fix_in_file_and_in_store(store: Store, tmp_path: Path) -> None:
    rows = make_fixes(5)
    ingest_file(store, "gps", write_rows(tmp_path / "a.csv", rows), SETTINGS)
    again = write_rows(tmp_path / "b.csv", [*rows[:2], rows[0] | {"accuracy_m": 7.0}])
    result = ingest_file(store, "gps", again, SETTINGS)
    assert (result.rows_accepted, result.rows_quarantined) == (0, 3)
    assert {r[0] for r in _quarantine(store)} == {"duplicate"}
    assert store.count("gps_fixes") == 5


def test_events_rules(store: Store, tmp_path: Path) -> None:
    events = make_events("T1")
    events.append(
        {
            "event_id": "T1-x",
            "ticket_id": "T1",
            "event_type": "closed",
            "ts": "2026-10-04T00:00:00Z",
            "actor": "x",
        }
    )
    events.append(
        {
            "event_id": "T1-y",
            "ticket_id": "T1",
            "event_type": "teleported",
            "ts": "2026-10-05T05:00:00Z",
            "actor": "x",
        }
    )
    events.append(dict(events[1]))
    result = ingest_file(store, "events", write_rows(tmp_path / "ev.jsonl", events), SETTINGS)
    assert result.rows_read == 7
    assert result.reasons == {"closed_before_created": 1, "unknown_event_type": 1, "duplicate": 1}


def test_naive_times_use_declared_zone(store: Store, tmp_path: Path) -> None:
    rows = make_fixes(1)
    rows[0]["ts"] = "2026-10-05 10:00:00"
    path = write_rows(tmp_path / "naive.csv", rows)
    ingest_file(store, "gps", path, SETTINGS, IngestOptions(tz="Asia/Shanghai"))
    assert store.scalar("SELECT ts FROM gps_fixes") == T0


def test_reingest_same_file_adds_nothing(store: Store, tmp_path: Path) -> None:
    path = write_rows(tmp_path / "gps.parquet", make_fixes(50))
    first = ingest_file(store, "gps", path, SETTINGS)
    second = ingest_file(store, "gps", path, SETTINGS)
    assert not first.skipped
    assert second.skipped
    assert second.rows_accepted == 0
    assert store.count("gps_fixes") == 50
    assert store.count("ingest_batches") == 1


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.parquet", b"PAR1 this is not parquet", "cannot be parsed as Parquet"),
        ("empty.csv", b"", "the file is empty"),
        ("wrong.csv", b"a,b\n1,2\n", "missing required column(s) technician_id, ts, lat, lon"),
        ("junk.jsonl", b"not json\nstill not\n", "expected JSON Lines"),
    ],
)
def test_unparseable_file_fails_and_writes_nothing(
    store: Store, tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceFormatError) as info:
        ingest_file(store, "gps", path, SETTINGS)
    assert str(path) in str(info.value)
    assert expected in str(info.value)
    assert store.count("ingest_batches") == 0
    assert store.count("quarantine") == 0


def test_cli_exits_nonzero_on_unparseable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"nope")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "--store",
            str(tmp_path / "s.duckdb"),
            "ingest",
            "gps",
            str(bad),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "bad.parquet" in proc.stderr
    assert "Parquet" in proc.stderr


def test_kill_9_mid_batch_leaves_nothing_half_written(tmp_path: Path) -> None:
    """Kill an ingest inside its write transaction; nothing is half-written and a re-run is exact.

    ``FIELDTRACE_FAULT_PAUSE_IN_WRITE_S`` makes the ingest pause after it has inserted the batch's
    rows but before COMMIT, and say so on stderr, so the kill lands mid-batch every time.
    """
    import polars as pl

    n = 200_000
    path = tmp_path / "big.parquet"
    pl.DataFrame(
        {
            "technician_id": [f"t{i % 50}" for i in range(n)],
            "ts": pl.datetime_range(
                T0, T0 + timedelta(seconds=n - 1), "1s", eager=True, time_zone="UTC"
            ),
            "lat": 30.27,
            "lon": 120.15,
            "accuracy_m": 5.0,
        }
    ).write_parquet(path)
    store_path = tmp_path / "ft.duckdb"
    Store(store_path).close()
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "--store",
        str(store_path),
        "ingest",
        "gps",
        str(path),
    ]
    env = {**os.environ, "FIELDTRACE_FAULT_PAUSE_IN_WRITE_S": "60"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        if b"fault-injection: paused inside write transaction" in line:
            break
    assert proc.poll() is None, "ingest ended before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store(store_path) as store:
        assert store.count("gps_fixes") == 0
        assert store.count("ingest_batches") == 0
        assert store.count("quarantine") == 0
        result = ingest_file(store, "gps", path, SETTINGS)
        assert (result.rows_read, result.rows_accepted) == (n, n)
        assert store.count("gps_fixes") == n
