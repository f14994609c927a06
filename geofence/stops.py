"""Stop detection per technician, with movingpandas ``TrajectoryStopDetector`` semantics.

The rule (movingpandas 0.23, ``_process_traj``), per technician in time order:

1. While moving, the working window is the fixes of the trailing ``min_duration``
   (``ts[j] - ts[i] < min_duration``), but never fewer than the last two fixes, and never
   reaching back before the end of the previous stop.
2. A window is compact when its bounding box's corner-to-corner distance is
   ``< 1.5 · max_diameter_m`` and its extent is ``< max_diameter_m``; the technician is then
   stopped, and the window only grows (no trimming) while it stays compact.
3. When a new fix breaks the window, the stop is the window without that fix; it is kept if
   it lasts ``>= min_duration`` and the next window starts at the breaking fix (a shorter one
   is dropped and trimming resumes). A stop still open at the last fix is kept under the same
   duration rule.

Extent ("diameter", ``diameter_m``) is movingpandas' measure, reproduced exactly by
``geofence.mrr``: the minimum-area rectangle of the window's fixes in lon/lat degrees, as GEOS
builds it, with its corner-0-to-corner-2 diagonal measured on the ellipsoid (m).

Speed: the rule runs as one compiled pass over every fix (``_stop_ranges``, numba). While a
stop grows, the convex hull of its fixes is kept: a fix inside it leaves the rectangle as it
was, so only fixes outside it rebuild the hull (a few vertices) and the rectangle. While
moving, the bounding-box test rejects most windows before any hull is built.

``centroid_se_m`` (m) is the standard error of the centroid, combining two conservative
terms in quadrature: the fix scatter ``sqrt(Σ|p - c|² / (n - 1)) / sqrt(n)`` and the reported
accuracies ``sqrt(mean(accuracy_m²) / n)`` (null accuracies ignored; scatter only if all null).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl
from numba import njit

from geofence.errors import ThresholdError, require_columns
from geofence.mrr import convex_ring, local_distance_m, orientation, ring_diagonal_m
from geofence.stop_schema import STOP_SCHEMA

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# first, last (fix rows), diameter_m, centroid lat, lon, se_m (one per stop), count (per tech)
_Out = tuple[IntArray, IntArray, FloatArray, FloatArray, FloatArray, FloatArray, IntArray]

BBOX_FACTOR: Final = 1.5
"""movingpandas' pre-check: a window whose bounding-box diagonal is ``>= 1.5 · max_diameter``
is not compact, whatever its rectangle."""


@njit(cache=True)
def _inside(rx: FloatArray, ry: FloatArray, m: int, x: float, y: float) -> bool:
    """Whether ``(x, y)`` is inside or on a ``convex_ring`` of ``m`` vertices."""
    if m == 1:
        return x == rx[0] and y == ry[0]
    if m == 2:
        if orientation(rx[0], ry[0], rx[1], ry[1], x, y) != 0:
            return False
        return (min(rx[0], rx[1]) <= x <= max(rx[0], rx[1])) and (
            min(ry[0], ry[1]) <= y <= max(ry[0], ry[1])
        )
    for q in range(m):
        nq = q + 1 if q + 1 < m else 0
        if orientation(rx[q], ry[q], rx[nq], ry[nq], x, y) > 0:  # left of a clockwise edge
            return False
    return True


@njit(cache=True)
def _bbox_ok(rx: FloatArray, ry: FloatArray, m: int, limit_m: float) -> bool:
    """movingpandas' pre-check on the points ``rx/ry[:m]`` (their bounding box's diagonal)."""
    min_x, max_x, min_y, max_y = rx[0], rx[0], ry[0], ry[0]
    for q in range(1, m):
        min_x, max_x = min(min_x, rx[q]), max(max_x, rx[q])
        min_y, max_y = min(min_y, ry[q]), max(max_y, ry[q])
    return local_distance_m(min_y, min_x, max_y, max_x) < limit_m


@njit(cache=True, nogil=True)
def _track_stops(
    lon: FloatArray, lat: FloatArray, t_us: IntArray, a: int, b: int, max_d: float,
    min_us: int, first: IntArray, last: IntArray, diameter: FloatArray, out: int,
) -> int:  # fmt: skip
    """The module docstring's rule over one technician's fixes ``a .. b-1``; writes each
    stop's first and last fix and extent (m) from ``out`` on, returns the number of stops."""
    cap = b - a + 2
    hx, hy = np.empty(cap), np.empty(cap)  # the current window's convex ring
    tx, ty = np.empty(cap), np.empty(cap)  # scratch
    work = np.empty(3 * cap, dtype=np.int64)
    limit = BBOX_FACTOR * max_d
    found = out
    s = a
    was_stopped = False
    m = 0
    d = 0.0
    for j in range(a, b):
        if not was_stopped:
            while j - s + 1 > 2 and t_us[j] - t_us[s] >= min_us:
                s += 1
        stopped = False
        if j > s:
            if was_stopped and _inside(hx, hy, m, lon[j], lat[j]):
                stopped = True  # same hull, same rectangle: still compact
            else:
                if was_stopped:  # the ring so far plus the new fix
                    tx[:m], ty[:m] = hx[:m], hy[:m]
                    tx[m], ty[m] = lon[j], lat[j]
                    n_pts = m + 1
                else:  # a fresh window
                    n_pts = j - s + 1
                    tx[:n_pts], ty[:n_pts] = lon[s : j + 1], lat[s : j + 1]
                if _bbox_ok(tx, ty, n_pts, limit):
                    m_new = convex_ring(tx, ty, n_pts, hx, hy, work)
                    d_new = ring_diagonal_m(hx, hy, m_new)
                    if d_new < max_d:
                        stopped, m, d = True, m_new, d_new
        if not stopped and was_stopped and t_us[j - 1] - t_us[s] >= min_us:
            first[found], last[found], diameter[found] = s, j - 1, d
            found += 1
            s = j
        was_stopped = stopped
    if was_stopped and t_us[b - 1] - t_us[s] >= min_us:
        first[found], last[found], diameter[found] = s, b - 1, d
        found += 1
    return found - out


@njit(cache=True, nogil=True)
def _stop_stats(
    lat: FloatArray, lon: FloatArray, acc: FloatArray, a: int, b: int
) -> tuple[float, float, float]:
    """Centroid (degrees) and ``centroid_se_m`` of the fixes ``a .. b-1`` (module docstring);
    ``acc`` is NaN where the accuracy is null."""
    n = b - a
    s_lat = s_lon = s_acc2 = 0.0
    n_acc = 0
    for i in range(a, b):
        s_lat += lat[i]
        s_lon += lon[i]
        if not np.isnan(acc[i]):
            s_acc2 += acc[i] * acc[i]
            n_acc += 1
    c_lat, c_lon = s_lat / n, s_lon / n
    r2 = 0.0
    for i in range(a, b):  # geofence.distance.enu_offsets_m from the centroid
        d = local_distance_m(c_lat, c_lon, lat[i], lon[i])
        r2 += d * d
    se2 = r2 / (n - 1) / n if n > 1 else 0.0
    if n_acc:
        se2 += s_acc2 / n_acc / n
    return c_lat, c_lon, math.sqrt(se2)


@njit(cache=True, nogil=True)
def _stops_of(
    lon: FloatArray, lat: FloatArray, acc: FloatArray, t_us: IntArray, bounds: IntArray,
    k0: int, k1: int, max_d: float, min_us: int, out: _Out,
) -> None:  # fmt: skip
    """Stops of technicians ``k0 .. k1-1`` (``bounds``: where each begins) with their
    summaries. Technician ``k``'s stops go from row ``bounds[k] + k`` of ``out`` on (it has
    room for them); ``count[k]`` says how many. Releases the GIL: halves run on threads."""
    first, last, diameter, c_lat, c_lon, se, count = out
    for k in range(k0, k1):
        start = bounds[k] + k
        count[k] = _track_stops(
            lon, lat, t_us, bounds[k], bounds[k + 1], max_d, min_us, first, last, diameter,
            start,
        )  # fmt: skip
        for r in range(start, start + count[k]):
            c_lat[r], c_lon[r], se[r] = _stop_stats(lat, lon, acc, first[r], last[r] + 1)


def _cores() -> int:
    """Processors this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the stop kernel; ``make install`` runs this."""
    one = np.zeros(3)
    _run_kernel(one, one, one, np.arange(3, dtype=np.int64), np.array([0, 3]), 1.0, 1)


def _run_kernel(
    lon: FloatArray, lat: FloatArray, acc: FloatArray, t_us: IntArray, bounds: IntArray,
    max_d: float, min_us: int,
) -> _Out:  # fmt: skip
    """``_stops_of`` over every technician, split in contiguous halves (by fixes) across the
    machine's cores; returns the found rows of ``first, last, diameter, centroid lat, lon, se``
    (the last item, ``count``, per technician)."""
    n_tech = len(bounds) - 1
    room = len(lon) + n_tech
    out: _Out = (
        np.empty(room, dtype=np.int64),
        np.empty(room, dtype=np.int64),
        *(np.empty(room) for _ in range(4)),
        np.zeros(n_tech, dtype=np.int64),
    )  # type: ignore[assignment]
    # writable contiguous arrays of one type each: one compiled signature
    lon, lat, acc = (np.array(v, dtype=np.float64, order="C") for v in (lon, lat, acc))
    t_us, bounds = (np.array(v, dtype=np.int64, order="C") for v in (t_us, bounds))
    workers = max(1, min(_cores(), n_tech))
    cuts = np.searchsorted(bounds, np.linspace(0, len(lon), workers + 1)[1:-1])
    parts = list(zip(np.r_[0, cuts].tolist(), np.r_[cuts, n_tech].tolist(), strict=True))

    def run(part: tuple[int, int]) -> None:
        k0, k1 = part
        _stops_of(lon, lat, acc, t_us, bounds, k0, k1, float(max_d), int(min_us), out)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, parts))
    count = out[-1]
    starts = bounds[:-1] + np.arange(n_tech)
    keep = np.repeat(starts - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
    return (*(column[keep] for column in out[:-1]), count)  # type: ignore[return-value]


def _in_track_order(fx: pl.DataFrame) -> bool:
    """Whether ``fx`` is already sorted by technician, then time (as the runner loads it)."""
    tech, prev = pl.col("technician_id"), pl.col("technician_id").shift(1)
    ordered = (tech > prev) | ((tech == prev) & (pl.col("ts") >= pl.col("ts").shift(1)))
    return bool(fx.select(ordered.fill_null(True).all()).item())


def _summarise(fx: pl.DataFrame, found: _Out) -> pl.DataFrame:
    """The ``STOP_SCHEMA`` rows of the kernel's stops over ``fx``."""
    first, last, diameter, c_lat, c_lon, se, _ = found
    ends = fx.select(pl.col("technician_id").gather(first), pl.col("ts").gather(first))
    return (
        pl.DataFrame(
            {
                "technician_id": ends["technician_id"],
                "stop_id": np.arange(len(first), dtype=np.int64),
                "start_ts": ends["ts"],
                "end_ts": fx["ts"].gather(last),
                "n_fixes": last - first + 1,
                "centroid_lat": c_lat,
                "centroid_lon": c_lon,
                "centroid_se_m": se,
                "diameter_m": diameter,
            }
        )
        .with_columns(
            (pl.col("end_ts") - pl.col("start_ts"))
            .dt.total_microseconds()
            .truediv(1e6)
            .alias("duration_s")
        )
        .select(STOP_SCHEMA.names())
    )


def detect_stops(
    fixes: pl.DataFrame, *, max_diameter_m: float, min_duration: timedelta
) -> pl.DataFrame:
    """Stops per technician: runs of fixes within ``max_diameter_m`` lasting ``min_duration``.

    ``fixes`` needs ``technician_id, ts, lat, lon``; ``accuracy_m`` is optional. Rows with a
    null ``ts``/``lat``/``lon`` are ignored. Output (``STOP_SCHEMA``, sorted by technician
    and start): ``technician_id, stop_id, start_ts, end_ts, n_fixes, centroid_lat,
    centroid_lon, centroid_se_m, diameter_m, duration_s`` (m, s, WGS84 degrees).
    """
    if not max_diameter_m > 0 or min_duration <= timedelta(0):
        raise ThresholdError(
            f"detect_stops: max_diameter_m={max_diameter_m}, min_duration={min_duration}; "
            "expected both > 0"
        )
    require_columns(fixes.columns, ("technician_id", "ts", "lat", "lon"), "fixes")
    acc = pl.col("accuracy_m") if "accuracy_m" in fixes.columns else pl.lit(None)
    ts_type = fixes.schema["ts"]
    ts = pl.col("ts")
    if isinstance(ts_type, pl.Datetime):
        ts = ts.dt.replace_time_zone("UTC") if ts_type.time_zone is None else ts
        ts = ts.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    fx = fixes.select(
        "technician_id",
        ts,
        pl.col("lat").cast(pl.Float64),
        pl.col("lon").cast(pl.Float64),
        acc.cast(pl.Float64).alias("accuracy_m"),
    ).drop_nulls(["technician_id", "ts", "lat", "lon"])
    if not _in_track_order(fx):
        fx = fx.sort("technician_id", "ts", maintain_order=True)
    if fx.height < 2:
        return pl.DataFrame(schema=STOP_SCHEMA)
    tech_change = (fx["technician_id"] != fx["technician_id"].shift(1)).fill_null(True)
    bounds = np.append(np.flatnonzero(tech_change.to_numpy()), fx.height).astype(np.int64)
    found = _run_kernel(
        fx["lon"].to_numpy(),
        fx["lat"].to_numpy(),
        fx["accuracy_m"].fill_null(np.nan).to_numpy(),
        fx["ts"].dt.epoch("us").to_numpy(),
        bounds,
        max_diameter_m,
        min_duration // timedelta(microseconds=1),
    )
    if not len(found[0]):
        return pl.DataFrame(schema=STOP_SCHEMA)
    return _summarise(fx, found)
