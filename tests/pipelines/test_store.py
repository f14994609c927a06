"""The gateway's guarantees that callers rely on instead of re-checking."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from pipelines.errors import UnknownTableError
from pipelines.store.gateway import Store


def test_timestamps_come_back_in_utc_from_every_cursor(store: Store) -> None:
    shanghai = timezone(timedelta(hours=8))
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO ticket_events (event_id, ticket_id, event_type, ts) VALUES (?, ?, ?, ?)",
            ("e1", "t1", "created", datetime(2026, 10, 5, 10, 0, tzinfo=shanghai)),
        )
    frames: list[pl.DataFrame] = []

    def read() -> None:
        frames.append(store.query("SELECT ts FROM ticket_events"))

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for frame in frames:
        assert frame.schema["ts"] == pl.Datetime("us", "UTC")
        assert frame["ts"][0] == datetime(2026, 10, 5, 2, 0, tzinfo=UTC)


def test_spatial_extension_is_available_to_every_query(store: Store) -> None:
    assert store.scalar("SELECT ST_AsText(ST_Point(120.15, 30.27))") == "POINT (120.15 30.27)"


def test_spatial_is_loaded_by_the_first_statement_that_calls_it(tmp_path: Path) -> None:
    """Opening the store does not pay ~0.2 s for LOAD spatial; an ST_ call loads it."""

    def loaded(store: Store) -> bool:
        return bool(
            store.scalar("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'spatial'")
        )

    with Store(tmp_path / "lazy.duckdb") as store:
        assert not loaded(store)
        with store.transaction() as tx:
            assert tx.scalar("SELECT ST_X(ST_Point(1.5, 2))") == 1.5
        assert loaded(store)


def test_replace_rows_replaces_rows_by_key_and_adds_new_ones(store: Store) -> None:
    def labels(rows: list[tuple[str, float]]) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "event_id": [r[0] for r in rows],
                "true_distance_m": [r[1] for r in rows],
                "source": "test",
                "labelled_at": datetime(2026, 10, 5, tzinfo=UTC),
            }
        )

    store.atomic(
        lambda tx: tx.replace_rows(
            "arrival_labels", labels([("a", 1.0), ("b", 2.0)]), key="event_id"
        )
    )
    store.atomic(
        lambda tx: tx.replace_rows(
            "arrival_labels", labels([("b", 5.0), ("c", 3.0)]), key="event_id"
        )
    )
    got = store.query("SELECT event_id, true_distance_m FROM arrival_labels ORDER BY event_id")
    assert got.rows() == [("a", 1.0), ("b", 5.0), ("c", 3.0)]


def test_table_names_are_allow_listed(store: Store) -> None:
    with pytest.raises(UnknownTableError, match="not in the FieldTrace schema"):
        store.count("tickets; DROP TABLE tickets")


def test_migration_4_keeps_arrival_v1_verdicts_and_checks_the_tiers(tmp_path: Path) -> None:
    """A store verified under arrival-v1 migrates: its rows stay (read as tiers), the status
    CHECK takes the tiers plus legacy VERIFIED and nothing else."""
    import duckdb

    from pipelines.store.schema import MIGRATIONS
    from pipelines.views import verdict_sql

    path = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR, "
        "applied_at TIMESTAMPTZ)"
    )
    for migration in MIGRATIONS[:3]:
        for statement in migration.statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [migration.version, ""])
    at = datetime(2026, 10, 1, tzinfo=UTC)
    con.execute(
        "INSERT INTO arrival_checks VALUES ('E-1', 'T-1', 'tech', ?, 'VERIFIED', NULL, 'stop', "
        "1.0, 3.0, 12, NULL, NULL, '{}', 'arrival-v1', ?)",
        [at, at],
    )
    con.close()
    with Store(path) as store:
        assert store.schema_version() >= 4
        read = store.query(
            f"SELECT {verdict_sql('verdict')} AS tier, rule_version FROM arrival_checks"
        )
        assert read.rows() == [("AT_DOOR", "arrival-v1")]
        row = {"event_id": "E-2", "ticket_id": "T-1", "event_ts": at, "evidence": "{}",
               "rule_version": "arrival-v2", "computed_at": at, "p_within_radius": 0.4,
               "p_on_site": 0.99}  # fmt: skip
        with store.transaction() as tx:
            tx.insert_frame("arrival_checks", pl.DataFrame([{**row, "verdict": "ON_SITE"}]))
        bad = pl.DataFrame([{**row, "event_id": "E-3", "verdict": "MAYBE"}])
        with pytest.raises(duckdb.ConstraintException, match="CHECK"), store.transaction() as tx:
            tx.insert_frame("arrival_checks", bad)
        assert store.count("arrival_checks") == 2
        assert store.count("arrival_labels") == 0
