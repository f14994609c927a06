"""The ingest machinery: formats, named rules, reconciled counts, idempotence, atomicity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import OptionError, SourceFormatError
from pipelines.ingest.contract import IngestOptions
from pipelines.ingest.machine import ingest_file
from pipelines.settings import load_settings
from pipelines.store.gateway import Store
from tests.pipelines.builders import T0, make_events, make_fixes, write_big_fixes, write_rows

SETTINGS = load_settings()


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

    n = 200_000
    path = write_big_fixes(tmp_path / "big.parquet", n, technicians=50)
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


# -- the boundary: options are range-checked before anything is read -------------------------
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"datum": "XYZ"}, "--datum 'XYZ'"),
        ({"tz": "Mars/Olympus"}, "--tz 'Mars/Olympus'"),
        ({"tz": "../../etc/passwd"}, "--tz"),
        ({"assume_accuracy_m": -5.0}, "--assume-accuracy-m -5.0"),
        ({"assume_accuracy_m": 0.0}, "--assume-accuracy-m 0.0"),
        ({"assume_accuracy_m": float("nan")}, "--assume-accuracy-m nan"),
        ({"assume_accuracy_m": float("inf")}, "--assume-accuracy-m inf"),
        ({"encoding": "klingon"}, "--encoding 'klingon'"),
        ({"extra": {"radius_m": -1.0}}, "--radius-m -1.0"),
        ({"extra": {"delimiter": ";;"}}, "--delimiter ';;'"),
    ],
)
def test_bad_option_is_refused_naming_it(options: dict[str, object], named: str) -> None:
    with pytest.raises(OptionError) as info:
        IngestOptions(**options)  # type: ignore[arg-type]
    assert named in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("reported", [-3.0, 0.0, float("inf")])
def test_assumed_accuracy_never_overrides_a_reported_one(
    store: Store, tmp_path: Path, reported: float
) -> None:
    rows = make_fixes(6)
    rows[2]["accuracy_m"] = None  # missing: the assumption fills it
    rows[4]["accuracy_m"] = reported  # reported, but unusable: still quarantined
    path = write_rows(tmp_path / "acc.jsonl", rows)
    result = ingest_file(store, "gps", path, SETTINGS, IngestOptions(assume_accuracy_m=10.0))
    assert (result.rows_accepted, result.rows_quarantined) == (5, 1)
    assert store.query("SELECT row_number, field FROM quarantine").rows() == [(5, "accuracy_m")]
    got = store.query(
        "SELECT accuracy_m, accuracy_source FROM gps_fixes ORDER BY ts LIMIT 1 OFFSET 2"
    )
    assert got.rows() == [(10.0, "assumed")]
    assert store.scalar("SELECT min(accuracy_m) FROM gps_fixes") > 0


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_infinite_coordinate_is_not_finite_not_projected(
    store: Store, tmp_path: Path, value: str
) -> None:
    rows = make_fixes(3)
    rows[1]["lon"] = value
    path = write_rows(tmp_path / "inf.csv", rows)
    ingest_file(store, "gps", path, SETTINGS)
    rule, field, reason = store.query("SELECT rule, field, reason FROM quarantine").row(0)
    assert (rule, field) == ("not_finite", "lon")
    assert "not a finite number" in reason


# -- ingesting again ---------------------------------------------------------------------------
def _batches(store: Store) -> list[tuple[str, int, int]]:
    return store.query(
        "SELECT batch_id, rows_accepted, rows_quarantined FROM ingest_batches ORDER BY started_at"
    ).rows()


def test_geolife_quarantined_for_accuracy_then_replaced_with_assumed_accuracy(
    store: Store, tmp_path: Path
) -> None:
    """The advice in the quarantine reason works: --assume-accuracy-m with --replace."""
    path = tmp_path / "geolife.csv"
    path.write_text(
        "X;Y;tracker;t\n"
        + "".join(f"116.3{i};39.9{i};u1;2008-10-23 02:5{i}:04+00\n" for i in range(5))
    )
    geolife = IngestOptions(fmt="geolife")
    first = ingest_file(store, "gps", path, SETTINGS, geolife)
    assert (first.rows_accepted, first.rows_quarantined) == (0, 5)
    assert "--assume-accuracy-m" in store.scalar("SELECT any_value(reason) FROM quarantine")

    assumed = IngestOptions(fmt="geolife", assume_accuracy_m=15.0)
    again = ingest_file(store, "gps", path, SETTINGS, assumed, replace=True)
    assert not again.skipped
    assert (again.rows_accepted, again.rows_quarantined) == (5, 0)
    assert again.replaced == [first.batch_id]
    assert _batches(store) == [(again.batch_id, 5, 0)]
    assert store.count("quarantine") == 0
    assert store.count("gps_fixes") == 5


def test_ingest_key_covers_options(store: Store, tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "gps.jsonl", [*make_fixes(4), {**make_fixes(1)[0], "accuracy_m": None}]
    )
    first = ingest_file(store, "gps", path, SETTINGS)
    same = ingest_file(store, "gps", path, SETTINGS, IngestOptions())
    other = ingest_file(store, "gps", path, SETTINGS, IngestOptions(assume_accuracy_m=10.0))
    assert (first.skipped, same.skipped, other.skipped) == (False, True, False)
    # Without --replace the earlier batch is kept; its rows are already in the store.
    assert other.rows_accepted == 0
    assert other.reasons == {"duplicate": 5}
    assert any("--replace" in note for note in other.notes)
    zone = ingest_file(store, "gps", path, SETTINGS.model_copy(update={"timezone": "UTC"}))
    assert not zone.skipped  # the effective zone changes how naive times read


def test_replace_swaps_rows_and_quarantine_in_one_transaction(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "fix.csv"
    rows = make_fixes(6)
    rows[3]["lat"] = 123.0
    write_rows(path, rows)
    first = ingest_file(store, "gps", path, SETTINGS)
    assert (first.rows_accepted, first.rows_quarantined) == (5, 1)
    rows[3]["lat"] = 30.27015  # the corrected file, same path
    write_rows(path, rows)
    second = ingest_file(store, "gps", path, SETTINGS, replace=True)
    assert second.replaced == [first.batch_id]
    assert (second.rows_accepted, second.rows_quarantined) == (6, 0)
    assert _batches(store) == [(second.batch_id, 6, 0)]
    assert store.count("quarantine") == 0
    assert store.scalar("SELECT count(DISTINCT batch_id) FROM gps_fixes") == 1


def test_replace_that_fails_keeps_the_earlier_batch(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.ingest import machine

    path = write_rows(tmp_path / "gps.jsonl", make_fixes(5))
    first = ingest_file(store, "gps", path, SETTINGS)

    def boom() -> None:
        raise RuntimeError("killed inside the write transaction")

    monkeypatch.setattr(machine, "_fault_pause_in_write", boom)
    with pytest.raises(RuntimeError):
        ingest_file(store, "gps", path, SETTINGS, IngestOptions(tz="UTC"), replace=True)
    assert _batches(store) == [(first.batch_id, 5, 0)]
    assert store.count("gps_fixes") == 5


def test_delete_batch_removes_rows_and_quarantine(store: Store, tmp_path: Path) -> None:
    from pipelines.errors import NotFoundError
    from pipelines.ingest.batches import delete_batch, list_batches

    rows = make_fixes(4)
    rows[1]["lat"] = 99.0
    kept = ingest_file(
        store, "gps", write_rows(tmp_path / "a.jsonl", make_fixes(3, technician_id="t9")), SETTINGS
    )
    gone = ingest_file(store, "gps", write_rows(tmp_path / "b.jsonl", rows), SETTINGS)
    assert list_batches(store)["batch_id"].sort().to_list() == sorted(
        [kept.batch_id, gone.batch_id]
    )
    assert delete_batch(store, gone.batch_id) == {"rows": 3, "quarantined": 1}
    assert _batches(store) == [(kept.batch_id, 3, 0)]
    assert store.count("gps_fixes") == 3
    assert store.count("quarantine") == 0
    with pytest.raises(NotFoundError, match="nope"):
        delete_batch(store, "nope")


def test_store_from_before_ingest_keys_still_skips_a_seen_file(tmp_path: Path) -> None:
    """Migration 9 keys old batches by their file hash; the same file is still a no-op."""
    import duckdb

    from pipelines.ingest.machine import file_hash
    from pipelines.store.schema import MIGRATIONS

    db = tmp_path / "old.duckdb"
    path = write_rows(tmp_path / "gps.jsonl", make_fixes(3))
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                "description VARCHAR, applied_at TIMESTAMPTZ)")  # fmt: skip
    for m in MIGRATIONS[:3]:
        for statement in m.statements:
            con.execute(statement)
        con.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, now())", [m.version, m.description]
        )
    con.execute(
        "INSERT INTO ingest_batches VALUES ('gps-old', 'gps', 'jsonl', ?, ?, 3, 3, 0, now(), "
        "now(), 0, 0, 0, '{}')",
        [str(path), file_hash(path)],
    )
    con.close()
    with Store(db) as store:
        assert store.schema_version() >= 4
        again = ingest_file(store, "gps", path, SETTINGS)
        assert again.skipped
        assert again.batch_id == "gps-old"


# -- one machine, stages visited once ------------------------------------------------------------
def test_stages_run_once_each_in_order(store: Store, tmp_path: Path) -> None:
    from pipelines.ingest.machine import STAGES

    seen: list[str] = []
    path = write_rows(tmp_path / "gps.csv", make_fixes(5))
    ingest_file(store, "gps", path, SETTINGS, progress=seen.append)
    names = [name for name, _ in STAGES]
    assert names == ["fingerprint", "parse", "coerce", "normalize", "validate", "write"]
    assert seen == names
    seen.clear()
    ingest_file(store, "gps", path, SETTINGS, progress=seen.append)
    assert seen == ["fingerprint"]  # a key seen before ends the run there


def test_kill_9_inside_a_replace_keeps_the_earlier_batch(tmp_path: Path) -> None:
    """--replace deletes the earlier batch and writes the new one in one transaction: a kill
    between the two leaves the earlier batch whole."""
    path = write_rows(tmp_path / "gps.jsonl", make_fixes(20))
    store_path = tmp_path / "ft.duckdb"
    with Store(store_path) as store:
        first = ingest_file(store, "gps", path, SETTINGS)
    cmd = [sys.executable, "-m", "cli", "--store", str(store_path), "ingest", "gps", str(path),
           "--tz", "UTC", "--replace"]  # fmt: skip
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
        assert _batches(store) == [(first.batch_id, 20, 0)]
        assert (
            store.scalar("SELECT count(*) FROM gps_fixes WHERE batch_id = ?", [first.batch_id])
            == 20
        )
        again = ingest_file(store, "gps", path, SETTINGS, IngestOptions(tz="UTC"), replace=True)
        assert _batches(store) == [(again.batch_id, 20, 0)]
