"""Stop detection per technician, with movingpandas ``TrajectoryStopDetector`` semantics.

The rule (movingpandas 0.23, ``_process_traj``), per technician in time order:

1. While moving, the working window is the fixes of the trailing ``min_duration``
   (``ts[i] - ts[j] < min_duration``), but never fewer than the last two fixes, and never
   reaching back before the end of the previous stop.
2. When that window's spatial extent is ``< max_diameter_m`` the technician is stopped; the
   window then only grows (no trimming) while its extent stays ``< max_diameter_m``.
3. When a new fix breaks the extent, the stop is the window without that fix; it is kept if
   it lasts ``>= min_duration`` and the next window starts at the breaking fix. A stop still
   open at the last fix is kept under the same duration rule.

Extent ("diameter", ``diameter_m``) is movingpandas' measure, reproduced exactly: the
minimum rotated rectangle of the window's fixes is found in lon/lat degree space and its
diagonal is measured on the ellipsoid (m). It is roughly between the true diameter and √2
times it.

Speed: cheap bounds of the extent for every trailing window come from polars' rolling
min/max of the fixes projected on eight directions (one pass over all technicians); the
bounds use the rectangle's minimum area (``_Track._bounds``), and only windows whose bounds
straddle ``max_diameter_m`` get the exact rectangle (shapely, batched).
The Python loop runs once per candidate stop; each step works on numpy slices of that stop.

``centroid_se_m`` (m) is the standard error of the centroid, combining two conservative
terms in quadrature: the fix scatter ``sqrt(Σ|p - c|² / (n - 1)) / sqrt(n)`` and the reported
accuracies ``sqrt(mean(accuracy_m²) / n)`` (null accuracies ignored; scatter only if all null).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl
import shapely

from geofence.distance import enu_offsets_m, local_distance_m, radii_of_curvature_m
from geofence.errors import ThresholdError, require_columns

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

STOP_SCHEMA: Final = pl.Schema(
    {
        "technician_id": pl.String(),
        "stop_id": pl.Int64(),
        "start_ts": pl.Datetime("us", "UTC"),
        "end_ts": pl.Datetime("us", "UTC"),
        "n_fixes": pl.Int64(),
        "centroid_lat": pl.Float64(),
        "centroid_lon": pl.Float64(),
        "centroid_se_m": pl.Float64(),
        "diameter_m": pl.Float64(),
        "duration_s": pl.Float64(),
    }
)
_FIRST_CHUNK: Final = 256
_DOUBT_BATCH: Final = 16
_MAX_CHUNK: Final = 4096
_BATCH_SPAN: Final = 64


_ANGLES_RAD: Final = np.radians([0.0, 22.5, 45.0, 67.5])
_COS_HALF: Final = float(np.cos(np.radians(11.25)))
_SIN_HALF: Final = float(np.sin(np.radians(11.25)))
_MARGIN: Final = 1e-7  # relative slack of the bounds against rounding


def _mrr_diagonal_m(lonlat: FloatArray, groups: IntArray) -> FloatArray:
    """movingpandas' extent (m) of each group of points, one float per group.

    The minimum rotated rectangle is taken in raw lon/lat degrees (as movingpandas does; the
    rectangle is numerically sensitive, so the raw coordinates are kept to match it) and its
    diagonal (corners 0 and 2; a segment's ends) is measured with ``local_distance_m``.
    """
    geoms = shapely.oriented_envelope(shapely.multipoints(lonlat, indices=groups))
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    count = np.bincount(owner, minlength=len(geoms))
    first = np.cumsum(count) - count
    other = first + np.minimum(2, count - 1)  # rectangle: vertex 2; segment: its end
    p, q = coords[first], coords[other]
    return local_distance_m(p[:, 1], p[:, 0], q[:, 1], q[:, 0])


def _hull_vertices(lonlat: FloatArray) -> FloatArray:
    """Vertices of the convex hull of the points (all of them when degenerate)."""
    if len(lonlat) < 3:
        return lonlat
    hull = shapely.convex_hull(shapely.multipoints(lonlat))
    return np.asarray(shapely.get_coordinates(hull), dtype=np.float64)  # closed ring if polygon


class _Track:
    """Technician-sorted fixes in local metres, with their trailing-window extents.

    Extent bounds come from bounding boxes in four orientations (0°, 22.5°, 45°, 67.5°) in
    the scaled degree space of ``_mrr_diagonal_m`` (spans in 8 directions 22.5° apart; see
    ``_bounds``), times the smallest (``lower``) or largest (``upper``) metric scale. A
    window is compact when ``upper < max_d``; when ``lower < max_d <= upper`` the exact
    rectangle decides.
    """

    def __init__(self, fx: pl.DataFrame, min_duration: timedelta, max_diameter_m: float):
        self.t_us = fx["ts"].dt.epoch("us").to_numpy().astype(np.int64)
        self.max_d = max_diameter_m
        tech_change = (fx["technician_id"] != fx["technician_id"].shift(1)).fill_null(True)
        starts = np.flatnonzero(tech_change.to_numpy())
        self.tech_bounds = np.append(starts, len(fx)).astype(np.int64)
        lo = np.repeat(starts, np.diff(self.tech_bounds))
        lat, lon = fx["lat"].to_numpy(), fx["lon"].to_numpy()
        self.lat0, self.lon0 = lat[lo], lon[lo]
        m0, _ = radii_of_curvature_m(self.lat0)
        # metres per scaled unit at each fix's own latitude (a window is small where it
        # matters, so its first fix's latitude stands for all of it)
        m_i, n_i = radii_of_curvature_m(lat)
        east_scale = n_i * np.cos(np.radians(lat)) / m0
        north_scale = m_i / m0
        self.scale_lo = np.minimum(east_scale, north_scale) * 0.999
        self.scale_hi = np.maximum(east_scale, north_scale) * 1.001
        self.lonlat = np.column_stack([lon, lat]).astype(np.float64)
        self.xy = np.column_stack([np.radians(lon - self.lon0), np.radians(lat - self.lat0)])
        self.xy *= m0[:, None]  # isotropic scaling of degree space: same rectangles, metres
        cos, sin = np.cos(_ANGLES_RAD), np.sin(_ANGLES_RAD)
        self.proj = np.hstack([self.xy @ np.vstack([cos, sin]), self.xy @ np.vstack([-sin, cos])])
        cols = [f"p{k}" for k in range(self.proj.shape[1])]
        by = "technician_id"
        w = (
            fx.select("ts", by, "_i")
            .with_columns(pl.DataFrame(self.proj, schema=cols, orient="row"))
            .select(
                pl.col("_i").rolling_min_by("ts", min_duration).over(by).alias("start"),
                *(
                    pl.col(c).rolling_min_by("ts", min_duration).over(by).alias(c + "lo")
                    for c in cols
                ),
                *(
                    pl.col(c).rolling_max_by("ts", min_duration).over(by).alias(c + "hi")
                    for c in cols
                ),
            )
        )
        i = np.arange(len(fx), dtype=np.int64)
        start = w["start"].to_numpy().astype(np.int64)
        lone = (start == i) & (i > lo)  # one fix in the window: movingpandas keeps two
        self.s_unc = np.where(lone, i - 1, start)
        p_lo = w.select([c + "lo" for c in cols]).to_numpy()
        p_hi = w.select([c + "hi" for c in cols]).to_numpy()
        prev = self.proj[np.maximum(i - 1, 0)]
        p_lo = np.where(lone[:, None], np.minimum(prev, self.proj), p_lo)
        p_hi = np.where(lone[:, None], np.maximum(prev, self.proj), p_hi)
        lower, upper = self._bounds(p_hi - p_lo, self.s_unc)
        valid = i > lo
        self.sure = (upper < self.max_d) & valid
        self.maybe = np.flatnonzero(valid & (lower < self.max_d))  # sure or doubtful windows

    def first_trailing_compact(self, begin: int, end: int) -> int:
        """First ``i`` in ``[begin, end)`` whose trailing window is compact, else -1.

        Doubtful windows are resolved lazily (exact rectangle, in small batches), so windows
        inside a stop, which the caller skips, never pay for the exact test.
        """
        k = int(np.searchsorted(self.maybe, begin, side="left"))
        while k < len(self.maybe) and self.maybe[k] < end:
            batch = self.maybe[k : k + _DOUBT_BATCH]
            batch = batch[batch < end]
            ok = self.sure[batch]
            doubt = np.flatnonzero(~ok)
            if doubt.size:
                first, last = self.s_unc[batch[doubt]], batch[doubt]
                ok[doubt] = self._exact_many(first, last)
            hit = np.flatnonzero(ok)
            if hit.size:
                return int(batch[hit[0]])
            k += len(batch)
        return -1

    def _exact_many(self, first: IntArray, last: IntArray) -> npt.NDArray[np.bool_]:
        sizes = last - first + 1
        members = (
            np.repeat(first, sizes)
            + np.arange(sizes.sum())
            - np.repeat(np.cumsum(sizes) - sizes, sizes)
        )
        groups = np.repeat(np.arange(len(first)), sizes)
        return np.asarray(_mrr_diagonal_m(self.lonlat[members], groups) < self.max_d)

    def _bounds(self, span: FloatArray, first: IntArray | int) -> tuple[FloatArray, FloatArray]:
        """Lower and upper bounds (m) of the rectangle diagonal from the 8 direction spans.

        Columns ``k`` and ``k + 4`` are perpendicular and the 8 directions are 22.5° apart,
        so every direction is within 11.25° of a column. The rectangle is the bounding box
        at some angle θ, so its diagonal² is ``span(θ)² + span(θ + 90°)²``; within 11.25° of
        column ``k``, ``span ≥ s_k·cos - s_{k+4}·sin``. The diameter is at most
        ``max(s) / cos`` and bounds each side; the area is at most ``min(s_k·s_{k+4})``.
        """
        k = len(_ANGLES_RAD)
        sa, sb = span[:, :k], span[:, k:]
        na = np.maximum(sa * _COS_HALF - sb * _SIN_HALF, 0.0)
        nb = np.maximum(sb * _COS_HALF - sa * _SIN_HALF, 0.0)
        widest2 = span.max(axis=1) ** 2
        min_diag2 = np.maximum((na * na + nb * nb).min(axis=1), widest2)
        lower = np.sqrt(min_diag2) * (self.scale_lo[first] * (1.0 - _MARGIN))
        d_up2 = widest2 * (1.0 / _COS_HALF**2)
        area = np.minimum((sa * sb).min(axis=1) * (1.0 + _MARGIN), d_up2)
        # sides w, h <= d_up with w·h <= area: w² + h² <= d_up² + (area / d_up)²
        upper2 = d_up2 + area * area / np.maximum(d_up2, 1e-300)
        upper = np.sqrt(upper2) * (self.scale_hi[first] * (1.0 + _MARGIN))
        return lower, upper

    def _compact(self, span: FloatArray, first: IntArray, last: IntArray) -> npt.NDArray[np.bool_]:
        """Windows ``[first..last]`` with extent ``< max_d`` (exact MRR in the doubtful band)."""
        lower, upper = self._bounds(span, first)
        ok = upper < self.max_d
        doubt = np.flatnonzero(~ok & (lower < self.max_d))
        if doubt.size:
            ok[doubt] = self._exact_many(first[doubt], last[doubt])
        return np.asarray(ok)

    def spans_from(
        self, s: int, a: int, b: int, carry: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Box spans of windows ``[s..j]`` for ``j`` in ``[a, b)``; ``carry``: box of s..a-1."""
        k2 = self.proj.shape[1]
        lo = np.minimum.accumulate(np.vstack([carry[:k2], self.proj[a:b]]), axis=0)[1:]
        hi = np.maximum.accumulate(np.vstack([carry[k2:], self.proj[a:b]]), axis=0)[1:]
        return hi - lo, np.concatenate([lo[-1], hi[-1]])

    def first_compact_from(self, r: int, a: int, z: int) -> int:
        """First ``j`` in ``[a, z)`` whose window ``[r..j]`` is compact, else -1."""
        if a >= z:
            return -1
        carry = np.concatenate([self.proj[r], self.proj[r]])
        span, _ = self.spans_from(r, r + 1, z, carry)
        j = np.arange(r + 1, z)
        ok = np.flatnonzero(self._compact(span, np.full(len(j), r), j)[a - r - 1 :])
        return a + int(ok[0]) if ok.size else -1

    def first_break(self, s: int, a: int, end: int) -> int:
        """First ``j`` in ``[a, end)`` whose window ``[s..j]`` is not compact, else ``end``.

        Doubtful windows are checked in order with the exact rectangle. The rectangle only
        depends on the convex hull, so each check uses the hull vertices of the fixes before
        the batch plus the batch's own fixes (a few dozen points, not the whole stop).
        """
        carry = np.concatenate([self.proj[s:a].min(axis=0), self.proj[s:a].max(axis=0)])
        hull_pts, hull_end = self.lonlat[s:a], a  # points whose hull is the window's s..a-1
        chunk = _FIRST_CHUNK
        while a < end:
            b = min(end, a + chunk)
            span, carry = self.spans_from(s, a, b, carry)
            lower, upper = self._bounds(span, s)
            sure = np.flatnonzero(lower >= self.max_d)
            stop = a + int(sure[0]) if sure.size else b
            doubt = a + np.flatnonzero(upper[: stop - a] >= self.max_d)
            k = 0
            while k < doubt.size:
                batch = doubt[k : k + _DOUBT_BATCH]
                batch = batch[batch - batch[0] < _BATCH_SPAN]
                k += batch.size
                hull_pts = _hull_vertices(np.vstack([hull_pts, self.lonlat[hull_end : batch[0]]]))
                hull_end = int(batch[0])
                if len(hull_pts) >= 4:  # a fix inside the hull so far leaves the rectangle as is
                    inside = shapely.contains_xy(shapely.polygons(hull_pts), *self.lonlat[batch].T)
                    batch = batch[~inside]
                    if batch.size == 0:
                        continue
                tail = batch - hull_end + 1  # fixes hull_end..j for each j
                sets = [np.vstack([hull_pts, self.lonlat[hull_end : hull_end + t]]) for t in tail]
                groups = np.repeat(np.arange(len(sets)), [len(x) for x in sets])
                wide = np.flatnonzero(_mrr_diagonal_m(np.vstack(sets), groups) >= self.max_d)
                if wide.size:
                    return int(batch[wide[0]])
            if stop < b:
                return stop
            a, chunk = b, min(chunk * 2, _MAX_CHUNK)
        return end


def _find_ranges(track: _Track, min_us: int) -> list[tuple[int, int]]:
    """Index ranges ``[first, last]`` of the stops, following the module docstring's rule."""
    found: list[tuple[int, int]] = []
    bounds = track.tech_bounds
    for t0, t_end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        r, cursor = t0, t0 + 1
        while cursor < t_end:
            # windows clipped at the reset point r: [r..i] for i < z
            z = r + int(np.searchsorted(track.s_unc[r:t_end], r, side="left"))
            z = max(z, r + 1)
            i_star, s = -1, r
            if cursor < z:
                i_star = track.first_compact_from(r, cursor, z)
            if i_star < 0:
                i_star = track.first_trailing_compact(max(cursor, z), t_end)
                if i_star < 0:
                    break
                s = int(track.s_unc[i_star])
            e = track.first_break(s, i_star + 1, t_end)
            last = e - 1
            if track.t_us[last] - track.t_us[s] >= min_us:
                found.append((s, last))
                r = e
            cursor = e + 1
    return found


def _summarise(fx: pl.DataFrame, track: _Track, ranges: list[tuple[int, int]]) -> pl.DataFrame:
    first = np.array([a for a, _ in ranges], dtype=np.int64)
    last = np.array([b for _, b in ranges], dtype=np.int64)
    sizes = last - first + 1
    members = (
        np.repeat(first, sizes)
        + np.arange(sizes.sum())
        - np.repeat(np.cumsum(sizes) - sizes, sizes)
    )
    part = fx[members.tolist()].with_columns(
        pl.Series("stop_id", np.repeat(np.arange(len(ranges)), sizes))
    )
    g = part.group_by("stop_id", maintain_order=True).agg(
        pl.col("technician_id").first(),
        pl.col("ts").first().alias("start_ts"),
        pl.col("ts").last().alias("end_ts"),
        pl.len().cast(pl.Int64).alias("n_fixes"),
        pl.col("lat").mean().alias("centroid_lat"),
        pl.col("lon").mean().alias("centroid_lon"),
        (pl.col("accuracy_m") ** 2).mean().alias("_acc2"),
    )
    cen = g.select("stop_id", "centroid_lat", "centroid_lon")
    e_m, n_m = enu_offsets_m(
        part["lat"].to_numpy(),
        part["lon"].to_numpy(),
        *(np.repeat(cen[c].to_numpy(), sizes) for c in ("centroid_lat", "centroid_lon")),
    )
    scatter = part.select("stop_id").with_columns(pl.Series("_r2", e_m * e_m + n_m * n_m))
    scatter = scatter.group_by("stop_id", maintain_order=True).agg(pl.col("_r2").sum())
    g = g.join(scatter, on="stop_id")
    n = pl.col("n_fixes").cast(pl.Float64)
    se_scatter2 = pl.when(n > 1).then(pl.col("_r2") / (n - 1) / n).otherwise(0.0)
    se_acc2 = (pl.col("_acc2") / n).fill_null(0.0)
    groups = np.repeat(np.arange(len(ranges)), sizes)
    diam = _mrr_diagonal_m(track.lonlat[members], groups)
    return g.with_columns(
        (se_scatter2 + se_acc2).sqrt().alias("centroid_se_m"),
        pl.Series("diameter_m", diam),
        (pl.col("end_ts") - pl.col("start_ts"))
        .dt.total_microseconds()
        .truediv(1e6)
        .alias("duration_s"),
        pl.col("stop_id").cast(pl.Int64),
    ).select(STOP_SCHEMA.names())


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
    fx = (
        fixes.select(
            "technician_id",
            ts,
            pl.col("lat").cast(pl.Float64),
            pl.col("lon").cast(pl.Float64),
            acc.cast(pl.Float64).alias("accuracy_m"),
        )
        .drop_nulls(["technician_id", "ts", "lat", "lon"])
        .sort("technician_id", "ts", maintain_order=True)
        .with_row_index("_i")
        .with_columns(pl.col("_i").cast(pl.Int64))
    )
    if fx.height < 2:
        return pl.DataFrame(schema=STOP_SCHEMA)
    track = _Track(fx, min_duration, max_diameter_m)
    ranges = _find_ranges(track, min_duration // timedelta(microseconds=1))
    if not ranges:
        return pl.DataFrame(schema=STOP_SCHEMA)
    return _summarise(fx, track, ranges)
