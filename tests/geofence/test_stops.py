"""Stop detection: builder tables, real traces (Bergen bike, GeoLife), movingpandas parity."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from geofence.distance import local_distance_m
from geofence.errors import ThresholdError
from geofence.stops import STOP_SCHEMA, detect_stops
from tests.geofence.builders import T0, make_fixes

WALK = [(float(i * 15), 0.0) for i in range(1, 11)]  # 1.5 m/s at 10 s steps
STAY = [(300.0 + (i % 3), float(i % 2)) for i in range(30)]  # 5 min within ~2 m


def _stops(
    path: list[tuple[float, float]],
    *,
    diameter_m: float = 15.0,
    minutes: float = 2.0,
    step_s: float = 10.0,
    accuracy_m: float | None = 4.0,
) -> pl.DataFrame:
    fx = make_fixes(path, step_s=step_s, accuracy_m=accuracy_m)
    return detect_stops(fx, max_diameter_m=diameter_m, min_duration=timedelta(minutes=minutes))


@pytest.mark.parametrize(
    ("path", "n_stops", "first_fix", "last_fix"),
    [
        (WALK + STAY + [(400.0 + 15 * i, 0.0) for i in range(10)], 1, 10, 39),
        (WALK, 0, None, None),
        (STAY[:10], 0, None, None),  # 90 s < 2 min
        (WALK + STAY, 1, 10, 39),  # still stopped at the last fix
        (STAY + WALK[:3] + [(0.0, float(i % 2)) for i in range(20)], 2, 0, 29),
    ],
)
def test_stop_table(
    path: list[tuple[float, float]], n_stops: int, first_fix: int | None, last_fix: int | None
) -> None:
    out = _stops(path)
    assert out.height == n_stops
    if n_stops:
        ts = [T0 + timedelta(seconds=10 * i) for i in (first_fix, last_fix)]  # type: ignore[operator]
        assert (out["start_ts"][0], out["end_ts"][0]) == tuple(ts)


def test_stop_columns_and_units() -> None:
    out = _stops(WALK + STAY + WALK)
    assert out.schema == STOP_SCHEMA
    row = out.row(0, named=True)
    assert row["n_fixes"] == 30
    assert row["duration_s"] == 290.0
    assert row["diameter_m"] == pytest.approx(np.hypot(2.0, 1.0), abs=0.01)
    # centroid_se_m = sqrt(scatter²/(n-1)/n + mean(acc²)/n) with acc = 4 m, n = 30
    assert 4.0 / np.sqrt(30) < row["centroid_se_m"] < 4.0 / np.sqrt(30) + 0.3


def test_null_accuracy_uses_scatter_only() -> None:
    row = _stops(WALK + STAY, accuracy_m=None).row(0, named=True)
    assert 0.0 < row["centroid_se_m"] < 0.3


def test_technicians_are_independent() -> None:
    a = make_fixes(WALK + STAY, technician_id="a")
    b = make_fixes(STAY + WALK, technician_id="b", start=T0 + timedelta(seconds=3))
    out = detect_stops(pl.concat([b, a]), max_diameter_m=15.0, min_duration=timedelta(minutes=2))
    assert out["technician_id"].to_list() == ["a", "b"]
    assert out["stop_id"].n_unique() == 2


@pytest.mark.parametrize(("diameter", "minutes"), [(0.0, 2.0), (10.0, 0.0), (-1.0, 1.0)])
def test_bad_thresholds_raise(diameter: float, minutes: float) -> None:
    with pytest.raises(ThresholdError, match="expected both > 0"):
        _stops(STAY, diameter_m=diameter, minutes=minutes)


def test_empty_and_single_fix() -> None:
    assert _stops([]).height == 0
    assert _stops([(0.0, 0.0)]).height == 0


# -- real traces ----------------------------------------------------------------------------
def _bergen(path: Path) -> pl.DataFrame:
    """GPSLogger CSV: a row-count line, then the header; times are UTC 'Z'."""
    raw = pl.read_csv(path, skip_rows=1)
    return raw.select(
        pl.lit(path.stem).alias("technician_id"),
        pl.col("time")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC")
        .dt.cast_time_unit("us")
        .alias("ts"),
        "lat",
        "lon",
        pl.col("accuracy").alias("accuracy_m"),
    )


def _geolife(realdata: Path) -> pl.DataFrame:
    raw = pl.read_csv(realdata / "geolife_small" / "geolife_small.csv", separator=";")
    return raw.select(
        pl.col("trajectory_id").cast(pl.String).alias("technician_id"),
        pl.col("t")
        .str.replace(r"\+00$", "+00:00")
        .str.to_datetime("%Y-%m-%d %H:%M:%S%:z")
        .dt.convert_time_zone("UTC")
        .dt.cast_time_unit("us")
        .alias("ts"),
        pl.col("Y").alias("lat"),
        pl.col("X").alias("lon"),
    )


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _assert_has_stop(
    out: pl.DataFrame,
    tech: str,
    start: str,
    end: str,
    lat: float,
    lon: float,
    tol_s: float,
    tol_m: float,
) -> None:
    rows = out.filter(pl.col("technician_id") == tech).iter_rows(named=True)
    best = min(rows, key=lambda r: abs((r["start_ts"] - _utc(start)).total_seconds()))
    assert abs((best["start_ts"] - _utc(start)).total_seconds()) <= tol_s
    assert abs((best["end_ts"] - _utc(end)).total_seconds()) <= tol_s
    assert local_distance_m(best["centroid_lat"], best["centroid_lon"], lat, lon) <= tol_m


@pytest.mark.realdata
def test_bergen_bike_stops(realdata: Path) -> None:
    """long.csv (13 Aug 2017): a ~3 min halt near Nesttun 09:16-09:19, and one 10:25-10:30."""
    fx = _bergen(realdata / "bergen_gpslogger_bike" / "long.csv")
    assert fx.height == 111
    out = detect_stops(fx, max_diameter_m=60.0, min_duration=timedelta(minutes=2))
    _assert_has_stop(
        out,
        "long",
        "2017-08-13 09:16:19",
        "2017-08-13 09:19:06",
        60.38453,
        5.30420,
        tol_s=60,
        tol_m=30,
    )
    _assert_has_stop(
        out,
        "long",
        "2017-08-13 10:25:39",
        "2017-08-13 10:29:51",
        60.39252,
        5.34716,
        tol_s=60,
        tol_m=30,
    )
    assert out["n_fixes"].min() >= 2
    # the rides themselves (medium.csv, 35 min of riding) have no stop at all
    medium = _bergen(realdata / "bergen_gpslogger_bike" / "medium.csv")
    assert detect_stops(medium, max_diameter_m=60.0, min_duration=timedelta(minutes=2)).height == 0


@pytest.mark.realdata
def test_geolife_long_stays(realdata: Path) -> None:
    """Stays a person sees on the map: GeoLife trajectories 2, 3 and 5 (Beijing)."""
    out = detect_stops(_geolife(realdata), max_diameter_m=100.0, min_duration=timedelta(minutes=5))
    assert out.height == 4
    _assert_has_stop(
        out,
        "2",
        "2009-06-29 07:17:05",
        "2009-06-29 07:30:45",
        40.07954,
        116.58698,
        tol_s=60,
        tol_m=50,
    )
    _assert_has_stop(
        out,
        "2",
        "2009-06-29 08:20:15",
        "2009-06-29 10:57:52",
        40.00768,
        116.31969,
        tol_s=60,
        tol_m=50,
    )
    # trajectory 3's 5.5 h recording gap happens in one place: it reads as one long stop
    _assert_has_stop(
        out,
        "3",
        "2009-02-04 04:35:03",
        "2009-02-04 10:04:35",
        39.90039,
        116.38580,
        tol_s=60,
        tol_m=50,
    )
    _assert_has_stop(
        out,
        "5",
        "2009-02-25 10:54:47",
        "2009-02-25 13:30:48",
        40.05185,
        116.29558,
        tol_s=60,
        tol_m=50,
    )


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize(("diameter_m", "seconds"), [(100.0, 120.0), (30.0, 60.0), (100.0, 60.0)])
def test_same_stops_as_movingpandas(realdata: Path, diameter_m: float, seconds: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mpd = pytest.importorskip("movingpandas")
        import geopandas as gpd

    fx = _geolife(realdata)
    mine = detect_stops(fx, max_diameter_m=diameter_m, min_duration=timedelta(seconds=seconds))
    pdf = fx.to_pandas()
    gdf = gpd.GeoDataFrame(pdf, geometry=gpd.points_from_xy(pdf.lon, pdf.lat), crs=4326)
    tc = mpd.TrajectoryCollection(gdf, "technician_id", t="ts")
    ranges = mpd.TrajectoryStopDetector(tc).get_stop_time_ranges(
        max_diameter=diameter_m, min_duration=timedelta(seconds=seconds)
    )
    theirs = sorted((str(r.traj_id), r.t_0.to_pydatetime(), r.t_n.to_pydatetime()) for r in ranges)
    ours = sorted(mine.select("technician_id", "start_ts", "end_ts").iter_rows())
    assert len(ours) == len(theirs)
    ts = fx.sort("technician_id", "ts")
    for (tech, s0, e0), (tech2, s1, e1) in zip(ours, theirs, strict=True):
        assert tech == tech2
        times = ts.filter(pl.col("technician_id") == tech)["ts"]
        pos = times.search_sorted  # start/end within one fix of each other
        assert abs(int(pos(s0)) - int(pos(s1.replace(tzinfo=UTC)))) <= 1
        assert abs(int(pos(e0)) - int(pos(e1.replace(tzinfo=UTC)))) <= 1
