"""DuckLake specifics: locations, constraints, conflicts, several processes, kills, maintenance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.errors import StoreError
from pipelines.ingest.machine import ingest_file
from pipelines.settings import load_settings
from pipelines.store.gateway import Store, Tx
from pipelines.store.location import (
    FileLocation,
    LakeLocation,
    StoreLocationError,
    parse_location,
)
from pipelines.store.schema import without_constraints
from tests.pipelines.builders import make_fixes, write_big_fixes, write_rows

SETTINGS = load_settings()
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data/ft.duckdb", FileLocation(Path("data/ft.duckdb"))),
        (
            "ducklake:postgresql://postgres@127.0.0.1:5433/lake?data=/srv/lake",
            LakeLocation("127.0.0.1", 5433, "lake", "postgres", Path("/srv/lake")),
        ),
        (
            "ducklake:postgres://db.local/ft_lake?data=/mnt/lake/",
            LakeLocation("db.local", 5432, "ft_lake", None, Path("/mnt/lake/")),
        ),
    ],
)
def test_locations_parse(text: str, expected: object) -> None:
    assert parse_location(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ducklake:mysql://h/db?data=/x", "scheme='mysql'"),
        ("ducklake:postgresql://h/?data=/x", "database=''"),
        ("ducklake:postgresql://h/db", "data=<missing>"),
        ("ducklake:postgresql://u:secret@h/db?data=/x", "password"),
        ("ducklake:postgresql://h/db?data=/x&mode=fast", "unknown parameter"),
        ("ducklake:postgresql://h:port/db?data=/x", "port is not a number"),
    ],
)
def test_bad_locations_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(StoreLocationError, match=message):
        parse_location(text)


@pytest.mark.parametrize(
    ("ddl", "expected"),
    [
        ("CREATE TABLE t (a VARCHAR PRIMARY KEY, b INT)", "CREATE TABLE t (a VARCHAR, b INT)"),
        ("CREATE TABLE t (k VARCHAR NOT NULL UNIQUE)", "CREATE TABLE t (k VARCHAR NOT NULL)"),
        (
            "CREATE TABLE t (a INT, b INT, UNIQUE (a, b), CHECK (a = (b + 1)))",
            "CREATE TABLE t (a INT, b INT)",
        ),
        (
            "CREATE TABLE t (v VARCHAR NOT NULL CHECK (v IN ('x', 'y')), n INT DEFAULT 0)",
            "CREATE TABLE t (v VARCHAR NOT NULL , n INT DEFAULT 0)",
        ),
    ],
)
def test_constraints_are_removed_for_the_lake(ddl: str, expected: str) -> None:
    assert without_constraints(ddl) == expected


def test_a_lost_commit_is_retried(lake_url: str) -> None:
    """An insert whose table another process deleted from meanwhile fails; atomic() retries."""
    with Store(lake_url) as mine, Store(lake_url) as theirs:
        theirs.execute("INSERT INTO audit_log VALUES (now(), 'x', 'a', 'o', '0', NULL)")
        attempts: list[int] = []

        def work(tx: Tx) -> None:
            attempts.append(1)
            tx.execute("INSERT INTO audit_log VALUES (now(), 'me', 'a', 'o', '1', NULL)")
            if len(attempts) == 1:  # another writer deletes from the table before our commit
                theirs.execute("DELETE FROM audit_log WHERE actor = 'x'")

        mine.atomic(work)
        assert len(attempts) == 2
        assert mine.query("SELECT actor FROM audit_log")["actor"].to_list() == ["me"]


def test_a_conflict_that_never_clears_is_reported(lake_url: str) -> None:
    with Store(lake_url) as mine, Store(lake_url) as theirs:
        theirs.execute("INSERT INTO audit_log VALUES (now(), 'x', 'a', 'o', '0', NULL)")

        def work(tx: Tx) -> None:
            tx.execute("INSERT INTO audit_log VALUES (now(), 'me', 'a', 'o', '1', NULL)")
            theirs.execute("INSERT INTO audit_log VALUES (now(), 'x', 'a', 'o', '2', NULL)")
            theirs.execute("DELETE FROM audit_log WHERE actor = 'x'")

        with pytest.raises(StoreError, match="commit lost to concurrent writers 2 times"):
            mine.atomic(work, attempts=2)
        assert mine.count("audit_log") == 0


def test_small_commits_are_inlined_not_files(lake_url: str) -> None:
    with Store(lake_url) as store:
        for i in range(20):
            store.execute("INSERT INTO audit_log VALUES (now(), 'u', 'a', 'o', ?, NULL)", [str(i)])
        assert store.count("audit_log") == 20
        assert not list(store.path.rglob("*.parquet"))
        store.maintain(snapshots_before=datetime.now(UTC), files_before=datetime.now(UTC))
        files = store.scalar("SELECT count(*) FROM ducklake_list_files('lake', 'audit_log')")
        assert files == 1  # the 20 inlined commits flushed as one file
        assert store.count("audit_log") == 20


def _fixes_file(path: Path, technician: str, n: int) -> Path:
    return write_rows(path, make_fixes(n, technician_id=technician, step_s=1.0, step_deg=1e-6))


def _cli(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "--store", url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        start_new_session=True,
    )


_READER = """
import sys, time
from pipelines.store.gateway import Store
store = Store(sys.argv[1])
seen = []
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    seen.append(store.count("gps_fixes"))
    store.execute("INSERT INTO audit_log VALUES (now(), 'dash', 'view', 'page', 'dispatch', NULL)")
    if seen[-1] >= int(sys.argv[2]):
        break
print(len(seen), seen[-1], int(all(a <= b for a, b in zip(seen, seen[1:]))))
"""


@pytest.mark.slow
def test_two_ingests_and_a_dashboard_worker_at_once(lake_url: str, tmp_path: Path) -> None:
    Store(lake_url).close()
    files = [_fixes_file(tmp_path / f"gps-{i}.csv", f"tech-{i}", 3_000) for i in range(2)]
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, lake_url, "6000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    ingests = [_cli(lake_url, "ingest", "gps", str(f)) for f in files]
    for proc in ingests:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    out, err = reader.communicate(timeout=300)
    assert reader.returncode == 0, err.decode()
    reads, last, monotonic = (int(x) for x in out.split())
    assert (last, monotonic) == (6000, 1)
    with Store(lake_url) as store:
        assert store.count("gps_fixes") == 6000
        assert store.count("ingest_batches") == 2
        assert store.count("audit_log") == reads
        per_tech = store.query(
            "SELECT technician_id, count(*) AS n, count(DISTINCT ts) AS d FROM gps_fixes "
            "GROUP BY ALL ORDER BY 1"
        )
        assert per_tech.rows() == [("tech-0", 3000, 3000), ("tech-1", 3000, 3000)]


@pytest.mark.slow
def test_the_same_file_twice_at_once_is_ingested_once(lake_url: str, tmp_path: Path) -> None:
    """No UNIQUE on the lake: the per-kind writer lock keeps (kind, file_hash) unique."""
    Store(lake_url).close()
    path = _fixes_file(tmp_path / "gps.csv", "tech-1", 2_000)
    procs = [_cli(lake_url, "ingest", "gps", str(path)) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    with Store(lake_url) as store:
        assert store.count("ingest_batches") == 1
        assert store.count("gps_fixes") == 2000


@pytest.mark.slow
def test_kill_9_of_a_writer_leaves_nothing_and_orphans_are_cleaned(
    lake_url: str, tmp_path: Path
) -> None:
    n = 100_000
    path = write_big_fixes(tmp_path / "big.parquet", n, technicians=20)
    Store(lake_url).close()
    proc = _cli(
        lake_url, "ingest", "gps", str(path), env={"FIELDTRACE_FAULT_PAUSE_IN_WRITE_S": "60"}
    )
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        if b"fault-injection: paused inside write transaction" in line:
            break
    assert proc.poll() is None, "ingest ended before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store(lake_url) as store:
        assert store.count("gps_fixes") == 0
        assert store.count("ingest_batches") == 0
        orphans = list(store.path.rglob("*.parquet"))
        assert orphans, "the killed writer should have left its uncommitted file behind"
        now = datetime.now(UTC) + timedelta(seconds=1)
        store.maintain(snapshots_before=now, files_before=now)
        assert not any(p.exists() for p in orphans)
        result = ingest_file(store, "gps", path, SETTINGS)
        assert (result.rows_read, result.rows_accepted) == (n, n)
        assert store.count("gps_fixes") == n


@pytest.mark.slow
def test_maintenance_while_ingest_runs_loses_no_rows(lake_url: str, tmp_path: Path) -> None:
    Store(lake_url).close()
    files = [_fixes_file(tmp_path / f"gps-{i}.csv", f"tech-{i}", 500) for i in range(6)]
    ingest = _cli(lake_url, "ingest", "gps", *map(str, files))
    runs = 0
    while ingest.poll() is None or runs == 0:
        maint = _cli(lake_url, "maintain", "--keep-snapshots-h", "0", "--file-min-age-min", "10")
        _, err = maint.communicate(timeout=300)
        assert maint.returncode == 0, err.decode()
        runs += 1
    _, err = ingest.communicate(timeout=300)
    assert ingest.returncode == 0, err.decode()
    with Store(lake_url) as store:
        assert store.count("gps_fixes") == 3000
        assert store.count("ingest_batches") == 6
        now = datetime.now(UTC)
        store.maintain(snapshots_before=now, files_before=now)
        assert store.count("gps_fixes") == 3000
        assert store.scalar("SELECT count(DISTINCT (technician_id, ts)) FROM gps_fixes") == 3000


def test_maintain_never_runs_twice_at_once(lake_url: str) -> None:
    with Store(lake_url) as store, store.writer_lock("maintain"):
        proc = _cli(lake_url, "maintain")
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75
    assert b"another `fieldtrace maintain` is running" in err


def test_maintain_on_the_embedded_file_says_there_is_nothing_to_do(tmp_path: Path) -> None:
    proc = _cli(str(tmp_path / "ft.duckdb"), "maintain")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert b"nothing to maintain" in err


def test_another_handle_sees_a_commit(lake_url: str) -> None:
    with Store(lake_url) as writer, Store(lake_url, read_only=True) as reader:
        assert reader.count("audit_log") == 0
        writer.execute("INSERT INTO audit_log VALUES (now(), 'u', 'a', 'o', '1', NULL)")
        deadline = time.monotonic() + 30
        while reader.count("audit_log") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.count("audit_log") == 1
