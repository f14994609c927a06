"""The gateway's guarantees that callers rely on instead of re-checking."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from pipelines.errors import UnknownTableError
from pipelines.store.gateway import Store


def test_timestamps_come_back_in_utc_from_every_cursor(tmp_path: Path) -> None:
    store = Store(tmp_path / "ft.duckdb")
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


def test_spatial_extension_is_available_to_every_query(tmp_path: Path) -> None:
    store = Store(tmp_path / "ft.duckdb")
    assert store.scalar("SELECT ST_AsText(ST_Point(120.15, 30.27))") == "POINT (120.15 30.27)"


def test_table_names_are_allow_listed(tmp_path: Path) -> None:
    store = Store(tmp_path / "ft.duckdb")
    with pytest.raises(UnknownTableError, match="not in the FieldTrace schema"):
        store.count("tickets; DROP TABLE tickets")
