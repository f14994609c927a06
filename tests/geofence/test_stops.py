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


def test_stop_far_from_the_technicians_first_fix() -> None:
    """Metric scales follow the fix's latitude, not the technician's first fix (0° vs 70°)."""
    start = make_fixes(WALK, lat=0.0)
    stay = [(300.0 + 10.0 * (i % 3), 0.0) for i in range(30)]  # 20 m east-west
    far = make_fixes(stay, lat=70.0, start=T0 + timedelta(hours=5))
    out = detect_stops(
        pl.concat([start, far]), max_diameter_m=30.0, min_duration=timedelta(minutes=2)
    )
    assert out.height == 1
    assert out["n_fixes"][0] == 30
    assert out["diameter_m"][0] == pytest.approx(20.0, abs=0.01)


def _fleet(n_tech: int, n_stops: int, seed: int = 5, lat: float = 30.0) -> pl.DataFrame:
    """Technicians alternating noisy stays (3.5 m scatter, extents near 15 m) and drives."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(n_tech):
        path: list[tuple[float, float]] = []
        here = np.zeros(2)
        for _ in range(n_stops):
            stay = here + rng.normal(0.0, 3.5, (int(rng.integers(20, 60)), 2))
            path += [(float(e), float(n)) for e, n in stay]
            heading = rng.uniform(0.0, 2.0 * np.pi)
            for _ in range(int(rng.integers(8, 20))):
                here = here + 60.0 * np.array([np.cos(heading), np.sin(heading)])
                path.append((float(here[0]), float(here[1])))
        parts.append(make_fixes(path, technician_id=f"t{k:02d}", step_s=7.0, lat=lat, lon=120.0))
    return pl.concat(parts)


def _movingpandas_ranges(fx: pl.DataFrame, diameter_m: float, seconds: float) -> list[tuple]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mpd = pytest.importorskip("movingpandas")
        import geopandas as gpd

        pdf = fx.to_pandas()
        gdf = gpd.GeoDataFrame(pdf, geometry=gpd.points_from_xy(pdf.lon, pdf.lat), crs=4326)
        tc = mpd.TrajectoryCollection(gdf, "technician_id", t="ts")
        ranges = mpd.TrajectoryStopDetector(tc).get_stop_time_ranges(
            max_diameter=diameter_m, min_duration=timedelta(seconds=seconds)
        )
    return sorted(
        (str(r.traj_id), r.t_0.to_pydatetime().replace(tzinfo=UTC), r.t_n.to_pydatetime())
        for r in ranges
    )


@pytest.mark.parametrize(
    ("lat", "decimals"), [(30.0, None), (30.0, 5), (64.0, None), (64.0, 5), (-45.0, 6)]
)
def test_noisy_fleet_stops_are_movingpandas_stops(lat: float, decimals: int | None) -> None:
    """Fix for fix the same stops as movingpandas, on noisy stays whose extents sit near the
    threshold: at 30° and 64° (where the two rectangle diagonals differ most in metres and
    movingpandas' bounding-box pre-check decides some windows) and on coordinates rounded
    to a grid (ties between equal rectangles)."""
    fx = _fleet(6, 12, seed=abs(int(lat)) + (decimals or 0), lat=lat)
    if decimals is not None:
        fx = fx.with_columns(pl.col("lat", "lon").round(decimals))
    ours = detect_stops(fx, max_diameter_m=15.0, min_duration=timedelta(minutes=2))
    theirs = _movingpandas_ranges(fx, 15.0, 120.0)
    assert len(theirs) > 30
    got = sorted(
        (t, s.replace(tzinfo=UTC), e.replace(tzinfo=None))
        for t, s, e in ours.select("technician_id", "start_ts", "end_ts").iter_rows()
    )
    assert got == [(t, s, e.replace(tzinfo=None)) for t, s, e in theirs]


def _geos_diagonal_m(lon: np.ndarray, lat: np.ndarray) -> float:
    """movingpandas' ``mrr_diagonal`` (GEOS rectangle, corners 0 and 2) with our distance."""
    import shapely

    if len(lon) == 2:
        return float(local_distance_m(lat[0], lon[0], lat[1], lon[1]))
    rect = shapely.oriented_envelope(shapely.multipoints(np.column_stack([lon, lat])))
    c = shapely.get_coordinates(rect)
    q = c[min(2, len(c) - 1)]
    return float(local_distance_m(c[0, 1], c[0, 0], q[1], q[0]))


def _point_cloud(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    if kind == "round":
        return rng.normal(0.0, 1e-4, (n, 2))
    if kind == "grid":  # few distinct values: equal-area rectangles, collinear runs
        return np.round(rng.normal(0.0, 3e-5, (n, 2)), 5)
    if kind == "thin":
        return rng.normal(0.0, 1e-4, (n, 2)) @ np.array([[1.0, 0.9999], [0.0, 0.01]])
    if kind == "collinear":
        return np.outer(np.arange(n), rng.normal(0.0, 1e-5, 2))
    return np.repeat(rng.normal(0.0, 1e-4, (2, 2)), n, axis=0)[:n]  # repeated fixes


@pytest.mark.parametrize("kind", ["round", "grid", "thin", "collinear", "repeated"])
@pytest.mark.parametrize("lat", [0.0, 30.0, 64.0])
def test_rectangle_diagonal_is_geos_rectangle(kind: str, lat: float) -> None:
    """``geofence.mrr`` builds GEOS's hull ring (same vertices, same order) and GEOS's
    minimum-area rectangle (same corners 0 and 2), so the extent is movingpandas'."""
    import shapely

    from geofence.mrr import convex_ring, local_distance_m, ring_diagonal_m

    def points_diagonal_m(lon: np.ndarray, lat: np.ndarray) -> float:
        """movingpandas' extent (m) of a point set: its ring's rectangle diagonal."""
        n = len(lon)
        if n == 2:
            return float(local_distance_m(lat[0], lon[0], lat[1], lon[1]))
        rx, ry = np.empty(n + 1), np.empty(n + 1)
        m = convex_ring(lon, lat, n, rx, ry, np.empty(3 * n + 1, dtype=np.int64))
        return float(ring_diagonal_m(rx, ry, m))

    rng = np.random.default_rng(int(lat) * 7 + len(kind))
    for _ in range(300):
        n = int(rng.integers(2, 40))
        pts = _point_cloud(rng, kind, n)
        lon, lat_ = 120.0 + pts[:, 0], lat + pts[:, 1]
        assert points_diagonal_m(lon, lat_) == pytest.approx(
            _geos_diagonal_m(lon, lat_), rel=1e-7, abs=1e-7
        )
        rx, ry = np.empty(n + 1), np.empty(n + 1)
        m = convex_ring(lon, lat_, n, rx, ry, np.empty(3 * n + 1, dtype=np.int64))
        if m >= 3:
            hull = shapely.convex_hull(shapely.multipoints(np.column_stack([lon, lat_])))
            assert np.array_equal(shapely.get_coordinates(hull)[:-1], np.column_stack([rx, ry])[:m])


def test_orientation_decides_near_collinear_points_exactly() -> None:
    """Points within rounding of a line: the double-double fallback gives the exact side."""
    from fractions import Fraction

    from geofence.mrr import orientation

    rng = np.random.default_rng(3)
    for _ in range(2000):
        a, b = rng.uniform(100.0, 130.0, 2), rng.uniform(100.0, 130.0, 2)
        t = rng.uniform(0.0, 1.0)
        c = a + t * (b - a) + rng.normal(0.0, 1e-14, 2)
        exact = (Fraction(b[0]) - Fraction(a[0])) * (Fraction(c[1]) - Fraction(a[1])) - (
            Fraction(b[1]) - Fraction(a[1])
        ) * (Fraction(c[0]) - Fraction(a[0]))
        want = (exact > 0) - (exact < 0)
        assert orientation(a[0], a[1], b[0], b[1], c[0], c[1]) == want
