"""Benchmark arrival verification: ``python -m bench.bench_arrivals [--quick]``.

Three measurements, each with its naive or peer baseline in the same run (synthetic data is
built with numpy/polars from fixed seeds):

1. ``verify_arrivals``: 200,000 arrivals against 10M fixes of 5,000 technicians (fixes in
   technician/time order, as the runner loads them). Timed: ``verify_arrivals`` alone, end
   to end (nearest fix both ways, window evidence, stops join, verdict); stops are built
   beforehand and not timed. Baseline: a per-event pandas loop (filter the technician's
   fixes in the window, nearest before/after, distance, verdict), timed on a sample and
   extrapolated. Target: <= 1 s and >= 1,000x.
2. ``detect_stops`` against movingpandas ``TrajectoryStopDetector`` (same diameter and
   duration) on GeoLife (shared/realdata/geolife_small) and a 1M-fix synthetic day; the same
   stops (start and end within one fix). movingpandas runs on a subset of the synthetic day
   (whole technicians) and its rate is extrapolated. Target: >= 100x.
3. ``stamp_membership``: 10M fixes against 1,000 fences (10 % polygons). Peer: geopandas
   ``sjoin`` of the fixes (projected, points prebuilt) with the fences grown by ``near_m``,
   on a sample, rate extrapolated. Target: >= 20M fixes/s and >= 20x.

4. ``run_arrivals`` again on an unchanged store (the kept window stops reused) against the
   first run on the same store (every technician's stops detected), on a generated demo world
   (scale 1, seed 7: about 5,600 arrivals over 4.6M fixes), same process, same verdicts.
   Target: the second run <= 0.6x the first.

``--quick`` is a tenth of the size. Prints a table; writes ``bench/results/arrivals.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
from rich.progress import Progress

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import show, write_results  # noqa: E402
from geofence.distance import local_distance_m  # noqa: E402
from geofence.fences import FenceSet, stamp_membership  # noqa: E402
from geofence.stops import compile_kernels, detect_stops  # noqa: E402
from geofence.verdict import ArrivalThresholds, verify_arrivals  # noqa: E402

T = TypeVar("T")
DAY0 = datetime(2026, 3, 2, tzinfo=UTC)
CENTRE = (30.27, 120.15)
REALDATA = Path(os.environ.get("FIELDTRACE_REALDATA", REPO.parent / "shared" / "realdata"))
GEOLIFE = REALDATA / "geolife_small" / "geolife_small.csv"
US = 1_000_000


def _best(fn: Callable[[], T], repeat: int) -> tuple[T, float, list[float]]:
    """Value, median seconds and all timings of ``repeat`` runs."""
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    assert value is not None
    return value, statistics.median(times), times


def _best_cpu(fn: Callable[[], T], repeat: int) -> tuple[T, float, float]:
    """Value, median wall seconds and median CPU seconds (all threads) of ``repeat`` runs.

    On a shared machine the wall clock mostly measures the neighbours; CPU time does not.
    """
    walls, cpus, value = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    assert value is not None
    return value, statistics.median(walls), statistics.median(cpus)


def _tech_ids(n: int) -> np.ndarray[Any, Any]:
    return np.array([f"tech-{i:05d}" for i in range(n)])


# -- 1. arrivals -----------------------------------------------------------------------------
def make_arrival_data(
    n_tech: int, per_tech: int, n_arrivals: int, seed: int = 7
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Fixes (every ~10 s, random walk from home), arrivals near a fix, and a stop each."""
    rng = np.random.default_rng(seed)
    n = n_tech * per_tech
    tech = np.repeat(np.arange(n_tech), per_tech)
    t_us = int(DAY0.timestamp() * US) + np.tile(
        np.arange(per_tech, dtype=np.int64) * 10 * US, n_tech
    )
    t_us += rng.integers(0, 2 * US, n)
    walk = rng.normal(0, 0.00003, (n, 2)).cumsum(axis=0)
    walk -= np.repeat(walk[::per_tech], per_tech, axis=0)
    home = rng.uniform(-0.15, 0.15, (n_tech, 2))[tech]
    lat, lon = CENTRE[0] + home[:, 0] + walk[:, 0], CENTRE[1] + home[:, 1] + walk[:, 1]
    ids = _tech_ids(n_tech)
    fixes = pl.DataFrame(
        {
            "technician_id": ids[tech],
            "ts": t_us,
            "lat": lat,
            "lon": lon,
            "accuracy_m": rng.gamma(2.0, 1.5, n).round(1),
            "mock_location": rng.random(n) < 1e-4,
        }
    ).with_columns(pl.from_epoch("ts", time_unit="us").dt.replace_time_zone("UTC"))
    per_a = n_arrivals // n_tech
    at = np.sort(rng.integers(0, per_tech, (n_tech, per_a)), axis=1)
    ai = (np.arange(n_tech)[:, None] * per_tech + at).ravel()
    off = rng.normal(0, 0.00003, (len(ai), 2))
    a_ts = t_us[ai] + rng.integers(-20 * US, 20 * US, len(ai))
    arrivals = pl.DataFrame(
        {
            "ticket_id": [f"T{i}" for i in range(len(ai))],
            "event_id": [f"E{i}" for i in range(len(ai))],
            "technician_id": ids[tech[ai]],
            "ts": a_ts,
            "customer_lat": lat[ai] + off[:, 0],
            "customer_lon": lon[ai] + off[:, 1],
        }
    ).with_columns(pl.from_epoch("ts", time_unit="us").dt.replace_time_zone("UTC"))
    stops = pl.DataFrame(
        {
            "technician_id": ids[tech[ai]],
            "stop_id": np.arange(len(ai)),
            "start_ts": t_us[ai] - 300 * US,
            "end_ts": t_us[ai] + 60 * US,
            "n_fixes": np.full(len(ai), 10),
            "centroid_lat": lat[ai],
            "centroid_lon": lon[ai],
            "centroid_se_m": rng.uniform(0.5, 3.0, len(ai)),
            "diameter_m": 5.0,
            "duration_s": 360.0,
        }
    ).with_columns(
        pl.from_epoch(c, time_unit="us").dt.replace_time_zone("UTC") for c in ("start_ts", "end_ts")
    )
    return arrivals, fixes, stops


def naive_verify(arrivals: Any, fixes: Any, th: ArrivalThresholds) -> list[tuple[str, str]]:
    """The per-event pandas loop: filter the technician's window, nearest fix, verdict."""
    out = []
    gap = th.max_fix_gap
    for row in arrivals.itertuples(index=False):
        w = fixes[
            (fixes["technician_id"] == row.technician_id)
            & (fixes["ts"] >= row.ts - gap)
            & (fixes["ts"] <= row.ts + gap)
        ]
        before, after = w[w["ts"] <= row.ts].tail(1), w[w["ts"] >= row.ts].head(1)
        best = None
        for cand in (before, after):
            if len(cand) and (
                best is None or abs(cand["ts"].iloc[0] - row.ts) < abs(best["ts"].iloc[0] - row.ts)
            ):
                best = cand
        if best is None:
            out.append((row.event_id, "INCONCLUSIVE"))
            continue
        d = local_distance_m(
            float(best["lat"].iloc[0]), float(best["lon"].iloc[0]),
            row.customer_lat, row.customer_lon,
        )  # fmt: skip
        acc = float(best["accuracy_m"].iloc[0])
        if d + th.accuracy_k * acc <= th.radius_m:
            out.append((row.event_id, "VERIFIED"))
        elif d - th.reject_margin_k * acc > th.radius_m:
            out.append((row.event_id, "REJECTED"))
        else:
            out.append((row.event_id, "INCONCLUSIVE"))
    return out


def bench_verify(quick: bool, progress: Progress) -> dict[str, Any]:
    n_tech, per_tech, n_arr = (500, 2000, 20_000) if quick else (5000, 2000, 200_000)
    task = progress.add_task("verify: build data", total=3)
    arrivals, fixes, stops = make_arrival_data(n_tech, per_tech, n_arr)
    th = ArrivalThresholds()
    now = datetime(2027, 1, 1, tzinfo=UTC)
    progress.update(task, advance=1, description="verify: verify_arrivals x3")
    out, sec, times = _best(lambda: verify_arrivals(arrivals, fixes, stops, None, th, now=now), 3)
    progress.update(task, advance=1, description="verify: naive pandas loop (sample)")
    sample_n = 30 if quick else 60
    pdf = fixes.select("technician_id", "ts", "lat", "lon", "accuracy_m").to_pandas()
    sample = arrivals.sample(sample_n, seed=1).to_pandas()
    _, naive_s, _ = _best(lambda: naive_verify(sample, pdf, th), 1)
    naive_total = naive_s / sample_n * arrivals.height
    progress.update(task, advance=1)
    counts = dict(out.group_by("verdict").len().iter_rows())
    return {
        "arrivals": arrivals.height,
        "fixes": fixes.height,
        "technicians": n_tech,
        "timed": "verify_arrivals only (stops precomputed, not timed; no UWB)",
        "verify_s": round(sec, 3),
        "verify_runs_s": [round(t, 3) for t in times],
        "naive_per_event_ms": round(naive_s / sample_n * 1e3, 2),
        "naive_extrapolated_s": round(naive_total, 1),
        "speedup_x": round(naive_total / sec),
        "verdicts": counts,
    }


# -- 2. stops -------------------------------------------------------------------------------
def make_stop_day(n_fixes: int, seed: int = 11) -> pl.DataFrame:
    """Technicians alternating stops (3-15 min, 3 m noise) and drives (~10 m/s), 5 s fixes."""
    rng = np.random.default_rng(seed)
    per_tech = 10_000
    n_tech = max(1, n_fixes // per_tech)
    parts = []
    for k in range(n_tech):
        seg = []
        total = 0
        while total < per_tech:
            stop_n = int(rng.integers(36, 180))
            drive_n = int(rng.integers(24, 120))
            seg.append(np.r_[np.zeros(stop_n), np.ones(drive_n)])
            total += stop_n + drive_n
        moving = np.concatenate(seg)[:per_tech]
        heading = np.cumsum(rng.normal(0, 0.3, per_tech))
        step = moving * 50.0  # 10 m/s for 5 s
        east = np.cumsum(step * np.cos(heading)) + rng.normal(0, 3.0, per_tech)
        north = np.cumsum(step * np.sin(heading)) + rng.normal(0, 3.0, per_tech)
        lat = CENTRE[0] + north / 110_900.0
        lon = CENTRE[1] + east / (111_320.0 * np.cos(np.radians(CENTRE[0])))
        t_us = int(DAY0.timestamp() * US) + np.arange(per_tech, dtype=np.int64) * 5 * US
        parts.append(
            pl.DataFrame(
                {
                    "technician_id": f"tech-{k:04d}",
                    "ts": t_us,
                    "lat": lat,
                    "lon": lon,
                    "accuracy_m": rng.gamma(2.0, 2.0, per_tech),
                }
            )
        )
    return pl.concat(parts).with_columns(
        pl.from_epoch("ts", time_unit="us").dt.replace_time_zone("UTC")
    )


def read_geolife(path: Path) -> pl.DataFrame:
    raw = pl.read_csv(path, separator=";")
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


def mpd_stops(
    fx: pl.DataFrame, diameter_m: float, duration: timedelta
) -> list[tuple[str, Any, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import geopandas as gpd
        import movingpandas as mpd

        pdf = fx.select("technician_id", "ts", "lat", "lon").to_pandas()
        gdf = gpd.GeoDataFrame(pdf, geometry=gpd.points_from_xy(pdf.lon, pdf.lat), crs=4326)
        tc = mpd.TrajectoryCollection(gdf, "technician_id", t="ts")
        ranges = mpd.TrajectoryStopDetector(tc).get_stop_time_ranges(
            max_diameter=diameter_m, min_duration=duration
        )
    return sorted((str(r.traj_id), r.t_0, r.t_n) for r in ranges)


def same_stops(fx: pl.DataFrame, ours: pl.DataFrame, theirs: list[tuple[str, Any, Any]]) -> bool:
    """Same count, and each start/end within one fix of movingpandas'."""
    mine = sorted(ours.select("technician_id", "start_ts", "end_ts").iter_rows())
    if len(mine) != len(theirs):
        return False
    by_tech = {
        str(k[0]): g["ts"].dt.epoch("us").to_numpy()
        for k, g in fx.sort("technician_id", "ts").group_by("technician_id", maintain_order=True)
    }
    for (tech, s0, e0), (tech2, s1, e1) in zip(mine, theirs, strict=True):
        if tech != tech2:
            return False
        t = by_tech[tech]
        for a, b in ((s0, s1), (e0, e1)):
            ia = np.searchsorted(t, int(a.timestamp() * US) if a.tzinfo else 0)
            b_us = (
                int(b.tz_localize("UTC").timestamp() * US)
                if b.tzinfo is None
                else int(b.timestamp() * US)
            )
            if abs(int(ia) - int(np.searchsorted(t, b_us))) > 1:
                return False
    return True


def bench_stops(quick: bool, progress: Progress) -> dict[str, Any]:
    task = progress.add_task("stops: geolife", total=4)
    out: dict[str, Any] = {}
    # the compiled kernel loads from numba's cache once per process: timed on its own
    t0 = time.perf_counter()
    compile_kernels()
    out["kernel_load_s"] = round(time.perf_counter() - t0, 3)
    cases = []
    if GEOLIFE.exists():
        cases.append(("geolife_small", read_geolife(GEOLIFE), 100.0, timedelta(minutes=2), None))
    day = make_stop_day(100_000 if quick else 1_000_000)
    n_sub = 2 if quick else 4  # whole technicians for movingpandas
    cases.append(("synthetic_day", day, 30.0, timedelta(minutes=2), n_sub))
    for name, fx, diameter, duration, sub in cases:
        progress.update(task, advance=1, description=f"stops: {name} detect_stops")
        ours, sec, cpu = _best_cpu(
            lambda fx=fx, d=diameter, du=duration: detect_stops(
                fx, max_diameter_m=d, min_duration=du
            ),
            3,
        )
        peer_fx = fx
        if sub is not None:
            keep = fx["technician_id"].unique().sort().head(sub)
            peer_fx = fx.filter(pl.col("technician_id").is_in(keep.implode()))
        progress.update(task, advance=1, description=f"stops: {name} movingpandas")
        theirs, mpd_s, mpd_cpu = _best_cpu(
            lambda p=peer_fx, d=diameter, du=duration: mpd_stops(p, d, du), 1
        )
        ours_sub = detect_stops(peer_fx, max_diameter_m=diameter, min_duration=duration)
        ours_rate, mpd_rate = fx.height / sec, peer_fx.height / mpd_s
        ours_cpu_rate, mpd_cpu_rate = fx.height / cpu, peer_fx.height / mpd_cpu
        out[name] = {
            "fixes": fx.height,
            "max_diameter_m": diameter,
            "min_duration_s": duration.total_seconds(),
            "stops": ours.height,
            "detect_stops_s": round(sec, 3),
            "detect_stops_cpu_s": round(cpu, 3),
            "fixes_per_s": round(ours_rate),
            "movingpandas_fixes": peer_fx.height,
            "movingpandas_s": round(mpd_s, 2),
            "movingpandas_cpu_s": round(mpd_cpu, 2),
            "movingpandas_fixes_per_s": round(mpd_rate),
            "speedup_x": round(ours_rate / mpd_rate, 1),
            "speedup_cpu_x": round(ours_cpu_rate / mpd_cpu_rate, 1),
            "same_stops_as_movingpandas": same_stops(peer_fx, ours_sub, theirs),
        }
    return out


# -- 3. fences ------------------------------------------------------------------------------
def make_fences(n: int, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    lat = CENTRE[0] + rng.uniform(-0.15, 0.15, n)
    lon = CENTRE[1] + rng.uniform(-0.15, 0.15, n)
    r = rng.uniform(20, 150, n)
    rows = []
    for i in range(n):
        if i % 10 == 0:
            dlat, dlon = r[i] / 111_000, r[i] / (111_000 * np.cos(np.radians(lat[i])))
            x0, x1, y0, y1 = lon[i] - dlon, lon[i] + dlon, lat[i] - dlat, lat[i] + dlat
            wkt = f"POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"
            rows.append((f"F{i:04d}", "polygon", None, None, None, wkt))
        else:
            rows.append((f"F{i:04d}", "circle", float(lat[i]), float(lon[i]), float(r[i]), None))
    schema = {
        "fence_id": pl.String,
        "kind": pl.String,
        "lat": pl.Float64,
        "lon": pl.Float64,
        "radius_m": pl.Float64,
        "wkt": pl.String,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def sjoin_peer(
    fixes: pl.DataFrame, fences: pl.DataFrame, near_m: float
) -> tuple[int, float, float]:
    """geopandas sjoin of projected points with the fences grown by ``near_m``: pairs,
    seconds of the sjoin alone and seconds including building and projecting the points."""
    import geopandas as gpd
    import shapely

    utm = 32651  # UTM 51N covers the synthetic city
    geoms = [
        shapely.Point(r["lon"], r["lat"]) if r["kind"] == "circle" else shapely.from_wkt(r["wkt"])
        for r in fences.iter_rows(named=True)
    ]
    fg = gpd.GeoDataFrame({"fence_id": fences["fence_id"].to_list()}, geometry=geoms, crs=4326)
    fg = fg.to_crs(utm)
    grow = np.where(fences["kind"] == "circle", fences["radius_m"].fill_null(0.0), 0.0) + near_m
    fg["geometry"] = fg.buffer(grow)
    t_build = time.perf_counter()
    pts = gpd.GeoDataFrame(
        geometry=gpd.points_from_xy(fixes["lon"].to_numpy(), fixes["lat"].to_numpy()), crs=4326
    ).to_crs(utm)
    t0 = time.perf_counter()
    joined = gpd.sjoin(pts, fg, predicate="within")
    t1 = time.perf_counter()
    return len(joined), t1 - t0, t1 - t_build


def bench_fences(quick: bool, progress: Progress) -> dict[str, Any]:
    task = progress.add_task("fences: build data", total=3)
    n_tech, per_tech = (500, 2000) if quick else (5000, 2000)
    _, fixes, _ = make_arrival_data(n_tech, per_tech, n_tech)
    fixes = fixes.select("technician_id", "ts", "lat", "lon", "accuracy_m")
    frame = make_fences(1000)
    fs = FenceSet.from_frame(frame)
    progress.update(task, advance=1, description="fences: stamp_membership x3")
    out, sec, times = _best(lambda: stamp_membership(fixes, fs, accuracy_k=1.0), 3)
    progress.update(task, advance=1, description="fences: geopandas sjoin (sample)")
    sample = fixes.head(fixes.height // 10)
    pairs, sj_s, sj_total_s = sjoin_peer(sample, frame, 50.0)
    sj_rate = sample.height / sj_s
    sj_total_rate = sample.height / sj_total_s
    progress.update(task, advance=1)
    return {
        "fixes": fixes.height,
        "fences": len(fs),
        "timed": "stamp_membership (sorted input; exact distances, segments, output frame)",
        "stamp_s": round(sec, 3),
        "stamp_runs_s": [round(t, 3) for t in times],
        "fixes_per_s": round(fixes.height / sec),
        "pairs": out.height,
        "sjoin_sample_fixes": sample.height,
        "sjoin_s": round(sj_s, 2),
        "sjoin_pairs": pairs,
        "sjoin_fixes_per_s": round(sj_rate),
        "speedup_x": round(fixes.height / sec / sj_rate, 1),
        "sjoin_with_points_s": round(sj_total_s, 2),
        "sjoin_with_points_fixes_per_s": round(sj_total_rate),
        "speedup_vs_sjoin_with_points_x": round(fixes.height / sec / sj_total_rate, 1),
    }


def bench_reverify(quick: bool, progress: Progress) -> dict[str, Any]:
    """A first verification of a demo world against verifying it again (kept stops)."""
    import tempfile

    from cli.ingest import ingest_world
    from pipelines.arrivals.runner import run_arrivals
    from pipelines.generate import generate_world
    from pipelines.settings import load_settings
    from pipelines.store.gateway import Store

    scale = 0.1 if quick else 1.0
    task = progress.add_task("reverify: generate and ingest the demo world", total=3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = load_settings(
            store_path=root / "fieldtrace.duckdb", data_dir=root, users_file=root / "users.toml"
        )
        generate_world(root / "demo", seed=7, scale=scale)
        ingest_world(root / "demo", settings)
        progress.update(task, advance=1, description="reverify: first run (stops detected)")
        with Store(settings.store_path) as store:
            t0 = time.perf_counter()
            first = run_arrivals(store, settings)
            first_s = time.perf_counter() - t0
            progress.update(task, advance=1, description="reverify: again (stops kept)")
            t0 = time.perf_counter()
            again = run_arrivals(store, settings)
            again_s = time.perf_counter() - t0
            fixes = store.count("gps_fixes")
        progress.update(task, advance=1)
    assert first.stops is not None
    assert again.stops is not None
    return {
        "scale": scale,
        "arrivals": first.checks.height,
        "fixes": fixes,
        "first_s": round(first_s, 3),
        "again_s": round(again_s, 3),
        "again_vs_first": round(again_s / first_s, 3),
        "first_stages": {k: round(v, 3) for k, v in first.stages.items()},
        "again_stages": {k: round(v, 3) for k, v in again.stages.items()},
        "technicians_kept": again.stops.kept,
        "technicians_detected_again": again.stops.detected,
        "same_verdicts": first.checks.equals(again.checks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size")
    args = parser.parse_args()
    with Progress() as progress:
        verify = bench_verify(args.quick, progress)
        stops = bench_stops(args.quick, progress)
        fences = bench_fences(args.quick, progress)
        reverify = bench_reverify(args.quick, progress)
    rows = [
        (
            "verify_arrivals",
            f"{verify['verify_s']:.3f} s",
            f"{verify['arrivals']:,} arr / {verify['fixes']:,} fixes; <= 1 s",
        ),
        (
            "naive pandas loop",
            f"{verify['naive_extrapolated_s']:,.0f} s",
            f"{verify['naive_per_event_ms']} ms/event, extrapolated",
        ),
        ("verify speedup", f"{verify['speedup_x']:,}x", ">= 1,000x"),
    ]
    rows.append(("stop kernel load", f"{stops['kernel_load_s']:.2f} s", "numba cache, once"))
    for name, s in stops.items():
        if not isinstance(s, dict):  # kernel_load_s
            continue
        rows += [
            (
                f"detect_stops {name}",
                f"{s['fixes_per_s']:,}/s",
                f"{s['fixes']:,} fixes, {s['stops']} stops",
            ),
            (
                f"movingpandas {name}",
                f"{s['movingpandas_fixes_per_s']:,}/s",
                f"on {s['movingpandas_fixes']:,} fixes",
            ),
            (
                f"stops speedup {name}",
                f"{s['speedup_x']}x wall, {s['speedup_cpu_x']}x CPU",
                f">= 100x; same stops: {s['same_stops_as_movingpandas']}",
            ),
        ]
    rows += [
        (
            "stamp_membership",
            f"{fences['fixes_per_s'] / 1e6:.1f}M fixes/s",
            f"{fences['fixes']:,} x {fences['fences']} fences; >= 20M/s",
        ),
        (
            "geopandas sjoin",
            f"{fences['sjoin_fixes_per_s'] / 1e6:.2f}M fixes/s",
            f"on {fences['sjoin_sample_fixes']:,} fixes",
        ),
        ("fences speedup", f"{fences['speedup_x']}x", ">= 20x (vs the sjoin alone)"),
        (
            "sjoin + points + to_crs",
            f"{fences['sjoin_with_points_fixes_per_s'] / 1e6:.2f}M fixes/s",
            f"speedup {fences['speedup_vs_sjoin_with_points_x']}x",
        ),
    ]
    rows += [
        (
            "run_arrivals, first",
            f"{reverify['first_s']:.2f} s",
            f"{reverify['arrivals']:,} arrivals / {reverify['fixes']:,} fixes",
        ),
        (
            "run_arrivals, again",
            f"{reverify['again_s']:.2f} s",
            f"{reverify['again_vs_first']}x the first; <= 0.6x; "
            f"same verdicts: {reverify['same_verdicts']}",
        ),
    ]
    show("Arrival verification benchmark" + (" (quick)" if args.quick else ""), rows)
    path = write_results(
        "arrivals",
        {
            "quick": args.quick,
            "verify": verify,
            "stops": stops,
            "fences": fences,
            "reverify": reverify,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
