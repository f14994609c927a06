"""Kept window stops: detected again exactly when a technician's window fixes or the stop
thresholds changed, and never a different stop from the detector's on the same fixes."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import geofence.stops
from geofence.verdict import ArrivalThresholds
from pipelines.arrivals.kept_stops import (
    STOP_COLUMNS,
    StopReuse,
    fix_digests,
    kept_marks,
    kept_window_stops,
)
from pipelines.arrivals.runner import (
    load_arrivals,
    load_evidence,
    run_arrivals,
    thresholds_from,
    window_stops,
)
from pipelines.settings import Settings
from pipelines.store.gateway import Store

T0 = datetime(2026, 10, 5, 8, 0, tzinfo=UTC)


def _fixes(tech: str, *, lat: float, n: int = 60, start: datetime = T0) -> pl.DataFrame:
    """A technician standing still for ``n`` fixes 10 s apart (one stop), then driving off."""
    rows = [
        {
            "technician_id": tech,
            "ts": start + timedelta(seconds=10 * i),
            "lat": lat + (0.0 if i < n else 0.002 * (i - n + 1)),
            "lon": 120.15 + 0.000_01 * (i % 3),
            "accuracy_m": 4.0,
        }
        for i in range(n + 10)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def _kept(
    store: Store, fixes: pl.DataFrame, th: ArrivalThresholds
) -> tuple[pl.DataFrame, StopReuse]:
    return kept_window_stops(store, fixes, th, marks=kept_marks(store), detect=window_stops)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[pl.DataFrame]:
    """The fixes each call of the stop detector was given."""
    given: list[pl.DataFrame] = []
    real = geofence.stops.detect_stops

    def recording(fixes: pl.DataFrame, **kwargs: Any) -> pl.DataFrame:
        given.append(fixes)
        return real(fixes, **kwargs)

    monkeypatch.setattr(geofence.stops, "detect_stops", recording)
    return given


def test_kept_stops_are_reused_until_a_fix_changes(
    store: Store, recorded: list[pl.DataFrame]
) -> None:
    th = thresholds_from(Settings().thresholds)
    fixes = pl.concat([_fixes("tech-a", lat=30.27), _fixes("tech-b", lat=30.28)])
    first, reuse = _kept(store, fixes, th)
    assert (reuse.kept, reuse.detected, reuse.detected_fixes) == (0, 2, fixes.height)
    assert first.height == 2  # one stop each
    assert first.equals(window_stops(fixes, th).select(STOP_COLUMNS))

    recorded.clear()
    again, reuse = _kept(store, fixes, th)
    assert recorded == []
    assert (reuse.kept, reuse.detected) == (2, 0)
    assert again.equals(first)

    # one of tech-b's fixes moves a metre: tech-b alone is detected again, on its fixes only
    moved = fixes.with_columns(
        pl.when((pl.col("technician_id") == "tech-b") & (pl.col("ts") == T0))
        .then(pl.col("lat") + 1e-5)
        .otherwise(pl.col("lat"))
        .alias("lat")
    )
    recorded.clear()
    third, reuse = _kept(store, moved, th)
    assert (reuse.kept, reuse.detected) == (1, 1)
    assert [set(f["technician_id"]) for f in recorded] == [{"tech-b"}]
    assert third.equals(window_stops(moved, th).select(STOP_COLUMNS))
    assert store.count("window_stop_marks") == 2  # replaced, not added


def test_other_stop_thresholds_detect_everyone_again(
    store: Store, recorded: list[pl.DataFrame]
) -> None:
    settings = Settings()
    fixes = pl.concat([_fixes("tech-a", lat=30.27), _fixes("tech-b", lat=30.28)])
    _kept(store, fixes, thresholds_from(settings.thresholds))
    wider = settings.thresholds.model_copy(update={"stop_max_diameter_m": 40.0})
    recorded.clear()
    _, reuse = _kept(store, fixes, thresholds_from(wider))
    assert reuse.detected == 2
    assert len(recorded) == 1


def test_fix_digest_sees_every_detector_input_and_not_row_order() -> None:
    fixes = _fixes("tech-a", lat=30.27)
    base = fix_digests(fixes)
    assert base.equals(fix_digests(fixes.reverse()))
    for column, change in (
        ("lat", pl.col("lat") + 1e-9),
        ("lon", pl.col("lon") - 1e-9),
        ("accuracy_m", pl.lit(None, pl.Float64)),
        ("ts", pl.col("ts") + timedelta(microseconds=1)),
    ):
        seventh = pl.int_range(pl.len()) == 7
        changed = fixes.with_columns(
            pl.when(seventh).then(change).otherwise(pl.col(column)).alias(column)
        )
        assert fix_digests(changed)["fixes_digest"][0] != base["fixes_digest"][0], column
    assert fix_digests(fixes.head(-1))["n_fixes"][0] == fixes.height - 1


@pytest.fixture
def demo_copy(demo_world: tuple[Any, Any], tmp_path: Path) -> Settings:
    """The demo store, copied: these tests change it."""
    settings: Settings = demo_world[0]
    copy = tmp_path / "fieldtrace.duckdb"
    shutil.copy(settings.store_path, copy)
    return settings.model_copy(update={"store_path": copy})


def test_verify_reuses_the_demo_stops_and_gives_the_same_verdicts(
    demo_copy: Settings, recorded: list[pl.DataFrame]
) -> None:
    """The demo world's store was verified once; verifying again runs no detection, and
    forgetting every kept stop (so all are detected again) gives the same verdicts."""
    with Store(demo_copy.store_path) as store:
        reused = run_arrivals(store, demo_copy)
        assert recorded == []
        assert reused.stops is not None
        assert reused.stops.detected == 0
        assert reused.stops.kept == reused.checks["technician_id"].n_unique()
        store.execute("DELETE FROM window_stop_marks")
        fresh = run_arrivals(store, demo_copy)
    assert len(recorded) == 1
    assert fresh.stops is not None
    assert fresh.stops.kept == 0
    assert fresh.checks.equals(reused.checks)


def test_a_new_arrival_detects_its_technician_again(
    demo_copy: Settings, recorded: list[pl.DataFrame]
) -> None:
    """A late "arrived" event widens its technician's windows: that technician's stops are
    detected again, on its window fixes only; the others' are reused."""
    th = thresholds_from(demo_copy.thresholds)
    with Store(demo_copy.store_path) as store:
        arrivals = load_arrivals(store)
        # a fix of some technician two hours or more from every arrival of theirs
        fixes = store.query("SELECT technician_id, ts FROM gps_fixes ORDER BY technician_id, ts")
        far = (
            fixes.gather_every(97)
            .join(
                arrivals.select("technician_id", "ticket_id", pl.col("ts").alias("a")),
                on="technician_id",
            )
            .group_by("technician_id", "ts")
            .agg(pl.col("ticket_id").first(), (pl.col("ts") - pl.col("a")).abs().min().alias("d"))
            .sort("d", "technician_id", "ts")
        )
        tech, at, ticket, d = far.select("technician_id", "ts", "ticket_id", "d").row(-1)
        assert d > timedelta(hours=2)
        store.execute(
            "INSERT INTO ticket_events (event_id, ticket_id, event_type, ts, actor) "
            "VALUES (?, ?, 'arrived', ?, ?)",
            ["late-arrival", ticket, at, tech],
        )
        run = run_arrivals(store, demo_copy)
        fixes, _ = load_evidence(store, load_arrivals(store), th)
    assert run.stops is not None
    assert run.stops.detected == 1
    (given,) = recorded
    assert set(given["technician_id"]) == {tech}
    assert given.height == fixes.filter(pl.col("technician_id") == tech).height
