"""Batch pipelines: Dask partitions give the single-process results, midnight included."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines.alerts.config import load_config
from pipelines.alerts.runner import read_tickets
from pipelines.arrivals.runner import load_arrivals, load_evidence, thresholds_from, verify
from pipelines.batch.arrivals import partition_arrivals, verify_period
from pipelines.batch.clusters import cluster_history, eval_times, firing_at
from pipelines.batch.engine import BatchEngineError, Runner, runner
from pipelines.batch.ingest import ingest_many
from pipelines.ingest.contract import IngestOptions
from pipelines.settings import load_settings
from pipelines.store.gateway import Store
from tests.pipelines.builders import make_fixes, write_rows

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _arrival(event_id: str, tech: str, ts: datetime) -> dict[str, Any]:
    return {"event_id": event_id, "technician_id": tech, "ts": ts, "ticket_id": event_id}


def test_partitions_carry_the_neighbouring_days_as_a_halo() -> None:
    day = datetime(2026, 10, 6, tzinfo=UTC)
    arrivals = pl.DataFrame(
        [
            _arrival("late", "a", day - timedelta(minutes=2)),
            _arrival("early", "a", day + timedelta(minutes=3)),
            _arrival("far", "a", day + timedelta(days=3)),
            _arrival("other", "b", day + timedelta(minutes=1)),
        ]
    )
    parts = partition_arrivals(arrivals, shards=1)
    owned = sorted(i for p in parts for i in p.own_event_ids)
    assert owned == ["early", "far", "late", "other"]  # each arrival owned exactly once
    early = next(p for p in parts if "early" in p.own_event_ids)
    assert sorted(early.arrivals["event_id"]) == ["early", "late", "other"]  # halo: 'late'
    far = next(p for p in parts if "far" in p.own_event_ids)
    assert far.arrivals["event_id"].to_list() == ["far"]


@pytest.fixture(scope="module")
def dask_runner() -> Iterator[Runner]:
    with runner("dask") as run:
        yield run


def _single_process(store: Store, settings: Any) -> pl.DataFrame:
    th = thresholds_from(settings.thresholds)
    arrivals = load_arrivals(store)
    return verify(arrivals, *load_evidence(store, arrivals, th), th, now=NOW).sort(
        "technician_id", "ts", "event_id"
    )


@pytest.mark.slow
def test_dask_arrivals_equal_single_process(
    demo_world: tuple[Any, Any], dask_runner: Runner
) -> None:
    settings, _ = demo_world
    with Store(settings.store_path) as store:
        expected = _single_process(store, settings)
        got = verify_period(store, settings, dask_runner, now=NOW, write=False).checks
    # Row for row; floats to 1e-9 relative (summation order differs with partition size).
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    assert got["verdict"].to_list() == expected["verdict"].to_list()


def _midnight_world(store: Store) -> None:
    """Technicians arriving a few minutes either side of midnight UTC, tracked across it.

    Each walks in from 400 m away over 10 minutes, then stands at the customer; fixes every
    10 s from 20 minutes before to 10 minutes after the "arrived" event.
    """
    tickets, events, fixes = [], [], []
    for d in range(3):
        midnight = datetime(2026, 10, 6 + d, tzinfo=UTC)
        for k, offset_min in enumerate((-4, -1, 2, 4, 720)):
            tech = f"tech-{k}"
            ticket = f"T-{d}-{k}"
            lat, lon = 30.27 + 0.01 * k, 120.15 + 0.01 * d
            arrived = midnight + timedelta(minutes=offset_min, seconds=7 * k)
            tickets.append(
                {
                    "ticket_id": ticket,
                    "source": "test",
                    "datum_in": "WGS84",
                    "lat": lat,
                    "lon": lon,
                    "created_ts": arrived - timedelta(hours=2),
                }
            )
            events.append(
                {
                    "event_id": f"{ticket}-arr",
                    "ticket_id": ticket,
                    "event_type": "arrived",
                    "ts": arrived,
                    "actor": tech,
                }
            )
            for i in range(-120, 61):
                ts = arrived + timedelta(seconds=10 * i)
                away = max(0.0, min(1.0, (-i - 30) / 60))  # walking until 5 min before
                fixes.append({"technician_id": tech, "ts": ts, "lat": lat + 0.0036 * away,
                              "lon": lon + 0.00001 * (i % 3), "accuracy_m": 4.0 + (i % 5),
                              "datum_in": "WGS84", "h3": 0})  # fmt: skip
    with store.transaction() as tx:
        tx.insert_frame("tickets", pl.DataFrame(tickets))
        tx.insert_frame("ticket_events", pl.DataFrame(events))
        tx.insert_frame("gps_fixes", pl.DataFrame(fixes).unique(["technician_id", "ts"]))


@pytest.mark.slow
def test_dask_equals_single_process_across_midnight(store: Store, dask_runner: Runner) -> None:
    """On both backends; on DuckLake the tasks read their evidence from the lake themselves."""
    _midnight_world(store)
    settings = load_settings()
    expected = _single_process(store, settings)
    minute = pl.col("ts").dt.hour().cast(pl.Int32) * 60 + pl.col("ts").dt.minute()
    arrivals = load_arrivals(store)
    assert arrivals.filter((minute < 5) | (minute >= 24 * 60 - 5)).height == 12
    assert expected.height == arrivals.height == 15
    got = verify_period(store, settings, dask_runner, now=NOW).checks
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    stored = store.query("SELECT event_id, verdict FROM arrival_checks ORDER BY event_id")
    assert stored.rows() == expected.select("event_id", "verdict").sort("event_id").rows()


@pytest.mark.slow
def test_dask_cluster_history_equals_single_process(
    demo_world: tuple[Any, Any], dask_runner: Runner
) -> None:
    settings, _ = demo_world
    config = load_config(None)
    with Store(settings.store_path) as store:
        first, last = store.query(
            "SELECT min(created_ts) AS a, max(created_ts) AS b FROM tickets"
        ).row(0)
        times = eval_times(first + timedelta(days=3), last, timedelta(hours=12))
        expected = pl.concat(
            [firing_at(read_tickets(store, config, at, None)[0], config, at) for at in times]
        ).sort("eval_ts", "tag", "rule_version", "cell")
        got = cluster_history(store, config, dask_runner, times=times, chunk_size=5).firing
    assert expected.height > 0
    assert_frame_equal(got, expected)


@pytest.mark.slow
def test_dask_bulk_ingest_into_the_lake(lake_url: str, tmp_path: Path, dask_runner: Runner) -> None:
    files = [
        write_rows(tmp_path / f"gps-{i}.csv", make_fixes(300, technician_id=f"t{i}", step_s=1))
        for i in range(4)
    ]
    settings = load_settings()
    with Store(lake_url) as store:
        results = ingest_many(store, "gps", files, settings, IngestOptions(), dask_runner)
        assert [r.rows_accepted for r in results] == [300] * 4
        assert store.count("gps_fixes") == 1200
        assert store.count("ingest_batches") == 4


def test_dask_ingest_refuses_the_embedded_file(tmp_path: Path) -> None:
    with Store(tmp_path / "ft.duckdb") as store, pytest.raises(BatchEngineError, match="ducklake"):
        ingest_many(store, "gps", [], load_settings(), IngestOptions(), Runner(client=object()))
