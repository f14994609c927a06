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


def _cloud(rng: np.random.Generator, kind: str, n: int) -> list[tuple[float, float]]:
    if kind == "round":
        pts = rng.normal(0.0, 8.0, (n, 2))
    elif kind == "line":
        pts = np.column_stack([np.arange(n) * 50.0, rng.normal(0.0, 3.0, n)])
    elif kind == "collinear":
        pts = np.outer(np.arange(n), rng.normal(0.0, 10.0, 2))
    elif kind == "blob_and_tail":
        pts = np.vstack([rng.normal(0.0, 5.0, (n, 2)), [[60.0, 20.0], [110.0, 45.0]]])
    else:  # repeated fixes
        pts = np.repeat(rng.normal(0.0, 5.0, (2, 2)), n, axis=0)
    angle = rng.uniform(0.0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [(float(e), float(n_)) for e, n_ in pts @ rot.T]


@pytest.mark.parametrize("kind", ["round", "line", "collinear", "blob_and_tail", "repeated"])
@pytest.mark.parametrize("lat", [0.0, 45.0, 70.0])
def test_extent_bounds_hold_the_exact_rectangle(kind: str, lat: float) -> None:
    """The cheap bounds (which skip the exact test) always enclose movingpandas' extent."""
    from geofence.stops import _mrr_diagonal_m, _Track

    rng = np.random.default_rng(int(lat) * 10 + len(kind))
    for n in (2, 3, 5, 12, 40):
        fx = make_fixes(_cloud(rng, kind, n), lat=lat).with_row_index("_i")
        fx = fx.with_columns(pl.col("_i").cast(pl.Int64))
        track = _Track(fx, timedelta(minutes=1), 30.0)
        span = track.proj.max(axis=0) - track.proj.min(axis=0)
        lower, upper = track._bounds(span[None, :], 0)
        exact = _mrr_diagonal_m(track.lonlat, np.zeros(len(fx), dtype=np.int64))[0]
        assert lower[0] <= exact <= upper[0], (n, lower[0], exact, upper[0])


@pytest.mark.parametrize("shape", ["segment", "square"])
@pytest.mark.parametrize("turn_deg", [0.0, 11.25, 33.75])
def test_extent_bounds_at_worst_angles(shape: str, turn_deg: float) -> None:
    """Shapes turned midway between the sampled directions (in degree space) stay bounded."""
    from geofence.stops import _mrr_diagonal_m, _Track

    base = np.array(
        [[0.0, 0.0], [1.0, 0.0]] if shape == "segment" else [[0, 0], [1, 0], [1, 1], [0, 1]]
    )
    a = np.radians(turn_deg)
    pts = 3e-4 * base @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    fx = pl.DataFrame(
        {
            "technician_id": "t",
            "ts": [T0 + timedelta(seconds=10 * i) for i in range(len(pts))],
            "lat": 10.0 + pts[:, 1],
            "lon": 20.0 + pts[:, 0],
        }
    ).with_row_index("_i")
    track = _Track(fx.with_columns(pl.col("_i").cast(pl.Int64)), timedelta(minutes=1), 30.0)
    span = track.proj.max(axis=0) - track.proj.min(axis=0)
    lower, upper = track._bounds(span[None, :], 0)
    exact = _mrr_diagonal_m(track.lonlat, np.zeros(len(fx), dtype=np.int64))[0]
    assert lower[0] <= exact <= upper[0]


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


def _fleet(n_tech: int, n_stops: int, seed: int = 5) -> pl.DataFrame:
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
        parts.append(make_fixes(path, technician_id=f"t{k:02d}", step_s=7.0, lat=30.0, lon=120.0))
    return pl.concat(parts)


def test_exact_rectangles_are_batched_across_technicians(monkeypatch: pytest.MonkeyPatch) -> None:
    """GEOS is asked for exact rectangles once per step of all technicians, not per stop."""
    import shapely

    calls = 0
    exact = shapely.oriented_envelope

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return exact(*args, **kwargs)

    monkeypatch.setattr(shapely, "oriented_envelope", counted)
    out = detect_stops(_fleet(24, 15), max_diameter_m=15.0, min_duration=timedelta(minutes=2))
    assert out.height > 200
    assert calls * 2 < out.height


@pytest.mark.parametrize("seed", range(6))
def test_point_sets_give_geos_the_same_rectangles_and_hulls(seed: int) -> None:
    """Line strings through each group's points give bit-identical rectangles and hulls to
    multipoints (random clouds with lone points, duplicates and collinear groups)."""
    import shapely

    from geofence.stops import _point_sets

    rng = np.random.default_rng(seed)
    n_groups = 40
    groups = np.sort(np.concatenate([np.arange(n_groups), rng.integers(0, n_groups, 300)]))
    pts = np.array([120.0, 30.0]) + rng.normal(0.0, 1e-4, (len(groups), 2))
    if seed % 2:
        pts = np.round(pts, 5)  # repeated fixes
    if seed % 3 == 0:
        pts[groups % 4 == 0, 1] = 30.0  # collinear groups
    ref = shapely.multipoints(pts, indices=groups)
    fast = _point_sets(pts, groups)
    for op in (shapely.oriented_envelope, shapely.convex_hull):
        a, b = op(ref), op(fast)
        assert np.array_equal(shapely.get_type_id(a), shapely.get_type_id(b))
        ca, ia = shapely.get_coordinates(a, return_index=True)
        cb, ib = shapely.get_coordinates(b, return_index=True)
        assert np.array_equal(ia, ib)
        assert np.array_equal(ca, cb)


def test_no_point_geometry_per_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact rectangles and hulls are built from coordinates, never one GEOS point per fix."""
    import shapely

    def refused(*args: object, **kwargs: object) -> object:
        raise AssertionError("shapely.points called")

    monkeypatch.setattr(shapely, "points", refused)
    monkeypatch.setattr(shapely, "multipoints", refused)
    out = detect_stops(_fleet(4, 8), max_diameter_m=15.0, min_duration=timedelta(minutes=2))
    assert out.height > 20


@pytest.mark.parametrize("seed", range(4))
def test_window_extremes_match_brute_force(seed: int) -> None:
    """The sparse-table window minima/maxima equal a direct min/max of every window."""
    from geofence.stops import _window_extremes

    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 10.0, (300, 3))
    last = np.arange(300)
    first = np.maximum(last - rng.integers(0, 70, 300), 0)
    lo, hi = _window_extremes(values, first)
    for r in range(300):
        assert np.array_equal(lo[r], values[first[r] : r + 1].min(axis=0))
        assert np.array_equal(hi[r], values[first[r] : r + 1].max(axis=0))
