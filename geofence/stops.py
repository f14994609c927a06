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

Speed: cheap bounds of the extent for every trailing window come from the min/max of the
fixes projected on eight directions over that window (a numpy sparse table over all
technicians at once, ``_window_extremes``); the bounds use the rectangle's minimum area
(``_Track._bounds``), and only windows whose bounds straddle ``max_diameter_m`` get the
exact rectangle (GEOS, given each window as one line string). The rule then runs as a step
machine over all technicians at once (``_Rounds``): each step moves every technician on
(searching for its next compact window, or growing its stop by up to ``_STEP`` fixes) with
numpy operations over all of them, and sends that step's exact rectangles to GEOS in one
batch. A growing stop keeps the convex hull of its fixes so far; a later fix inside it cannot
change the rectangle, so only fixes outside it are checked. The Python loop runs once per
step of the busiest technician, never once per stop or per fix.

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
BoolArray = npt.NDArray[np.bool_]
GeomArray = npt.NDArray[np.object_]

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
_BATCH_SPAN: Final = 64  # columns after a stop's first doubtful window checked per step
_NO_POINTS: Final = np.zeros((0, 2))
_ROLL_ROWS: Final = 250_000  # fixes per chunk of the trailing-window pass (memory bound)
_OUTSIDE: Final = 8  # fixes outside a stop's kept hull checked per step
_STEP: Final = 96  # fixes a growing stop takes per step
_SEARCH: Final = 32  # candidate windows a search takes per pass


_ANGLES_RAD: Final = np.radians([0.0, 22.5, 45.0, 67.5])
_COS_HALF: Final = float(np.cos(np.radians(11.25)))
_SIN_HALF: Final = float(np.sin(np.radians(11.25)))
_MARGIN: Final = 1e-7  # relative slack of the bounds against rounding


def _spread(first: IntArray, sizes: IntArray) -> IntArray:
    """Positions ``first[k] + 0..sizes[k]-1`` for every ``k``, concatenated."""
    return np.repeat(first - (np.cumsum(sizes) - sizes), sizes) + np.arange(
        int(sizes.sum()), dtype=np.int64
    )


def _point_sets(lonlat: FloatArray, groups: IntArray) -> GeomArray:
    """One geometry per group holding the group's points (``groups``: sorted, none empty).

    A line string through the points, not a multipoint: GEOS's convex hull and minimum
    rectangle read only the coordinates (the same ones, in the same order), and a line string
    is built from them directly, without one point geometry per fix (most of the cost).
    A lone point is repeated, as a line string needs two.
    """
    count = np.bincount(groups)
    lone = np.flatnonzero(count == 1)
    if lone.size:
        at = (np.cumsum(count) - count)[lone]
        idx = np.insert(np.arange(len(lonlat)), at, at)
        lonlat, groups = lonlat[idx], np.insert(groups, at, lone)
    return np.asarray(shapely.linestrings(lonlat, indices=groups))


def _mrr_diagonal_m(lonlat: FloatArray, groups: IntArray) -> FloatArray:
    """movingpandas' extent (m) of each group of points, one float per group.

    The minimum rotated rectangle is taken in raw lon/lat degrees (as movingpandas does; the
    rectangle is numerically sensitive, so the raw coordinates are kept to match it) and its
    diagonal (corners 0 and 2; a segment's ends) is measured with ``local_distance_m``.
    """
    geoms = shapely.oriented_envelope(_point_sets(lonlat, groups))
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    count = np.bincount(owner, minlength=len(geoms))
    first = np.cumsum(count) - count
    other = first + np.minimum(2, count - 1)  # rectangle: vertex 2; segment: its end
    p, q = coords[first], coords[other]
    return local_distance_m(p[:, 1], p[:, 0], q[:, 1], q[:, 0])


def _window_extremes(values: FloatArray, first: IntArray) -> tuple[FloatArray, FloatArray]:
    """Column minima and maxima of ``values[first[r] .. r]`` for every row ``r``.

    A sparse table: level ``k`` holds the extremes of the ``2**k`` rows from each row, and a
    window of length ``L`` is the union of two overlapping runs of ``2**floor(log2 L)``.
    """
    last = np.arange(len(values), dtype=np.int64)
    length = last - first + 1
    level = np.zeros(len(values), dtype=np.int64)
    while (grow := (2 << level) <= length).any():
        level[grow] += 1
    lo, hi = np.empty_like(values), np.empty_like(values)
    t_lo, t_hi = values, values
    for k in range(int(level.max(initial=0)) + 1):
        width = 1 << k
        if k:
            half = width >> 1
            t_lo = np.minimum(t_lo[:-half], t_lo[half:])
            t_hi = np.maximum(t_hi[:-half], t_hi[half:])
        rows = np.flatnonzero(level == k)
        a, b = first[rows], last[rows] - width + 1
        lo[rows] = np.minimum(t_lo[a], t_lo[b])
        hi[rows] = np.maximum(t_hi[a], t_hi[b])
    return lo, hi


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
        lat0, lon0 = lat[lo], lon[lo]
        m0, _ = radii_of_curvature_m(lat0)
        # metres per scaled unit at each fix's own latitude (a window is small where it
        # matters, so its first fix's latitude stands for all of it)
        m_i, n_i = radii_of_curvature_m(lat)
        east_scale = n_i * np.cos(np.radians(lat)) / m0
        north_scale = m_i / m0
        self.scale_lo = np.minimum(east_scale, north_scale) * 0.999
        self.scale_hi = np.maximum(east_scale, north_scale) * 1.001
        self.lonlat = np.column_stack([lon, lat]).astype(np.float64)
        # isotropic scaling of degree space (same rectangles) to metres
        x = (np.radians(lon - lon0) * m0)[:, None]
        y = (np.radians(lat - lat0) * m0)[:, None]
        cos, sin = np.cos(_ANGLES_RAD), np.sin(_ANGLES_RAD)
        # broadcast, not a BLAS matmul (slow on a busy machine)
        self.proj = np.hstack([x * cos + y * sin, y * cos - x * sin])
        self.s_unc = np.zeros(len(fx), dtype=np.int64)
        self.sure = np.zeros(len(fx), dtype=bool)
        maybe = np.zeros(len(fx), dtype=bool)
        # whole technicians per chunk, so the rolling frame stays small
        cuts = self.tech_bounds[:: max(1, len(self.tech_bounds) * _ROLL_ROWS // max(len(fx), 1))]
        cuts = np.unique(np.append(cuts, [0, len(fx)]))
        for c0, c1 in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            self._trailing(fx.slice(c0, c1 - c0), lo[c0:c1], min_duration, maybe)
        self.maybe = np.flatnonzero(maybe)  # sure or doubtful windows

    def _trailing(
        self, fx: pl.DataFrame, lo: IntArray, min_duration: timedelta, maybe: BoolArray
    ) -> None:
        """Trailing-window starts and extent bounds of a slice of whole technicians."""
        i = fx["_i"].to_numpy().astype(np.int64)
        # one time axis for the whole slice: each technician's times shifted to begin more
        # than a window after the previous technician's end, so no window spans two of them
        w_us = min_duration // timedelta(microseconds=1)
        t = self.t_us[i]
        first = np.flatnonzero(lo == i)
        n_of = np.diff(np.append(first, len(i)))
        span = t[np.append(first[1:], len(i)) - 1] - t[first]
        offset = np.cumsum(span + w_us + 1) - (span + w_us + 1) - t[first]
        key = t + np.repeat(offset, n_of)
        start = i[0] + np.searchsorted(key, key - w_us, side="right")
        lone = (start == i) & (i > lo)  # one fix in the window: movingpandas keeps two
        s_unc = np.where(lone, i - 1, start)
        p_lo, p_hi = _window_extremes(self.proj[i], s_unc - i[0])
        lower, upper = self._bounds(p_hi - p_lo, s_unc)
        valid = i > lo
        self.s_unc[i] = s_unc
        self.sure[i] = (upper < self.max_d) & valid
        maybe[i] = valid & (lower < self.max_d)

    def _exact_many(self, first: IntArray, last: IntArray) -> BoolArray:
        sizes = last - first + 1
        groups = np.repeat(np.arange(len(first)), sizes)
        return np.asarray(_mrr_diagonal_m(self.lonlat[_spread(first, sizes)], groups) < self.max_d)

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


# -- all technicians at once -------------------------------------------------------------------
def _first_true(mask: BoolArray) -> IntArray:
    """Column of the first True per row; the row length where there is none."""
    width = mask.shape[1]
    return np.where(mask.any(axis=1), mask.argmax(axis=1), width).astype(np.int64)


def _gather(track: _Track, a: IntArray, width: int, end: IntArray) -> tuple[IntArray, BoolArray]:
    """Positions ``a + 0..width-1`` per row (clipped) and which of them are before ``end``."""
    j = a[:, None] + np.arange(width, dtype=np.int64)[None, :]
    valid = j < end[:, None]
    return np.minimum(j, len(track.t_us) - 1), valid


class _Rounds:
    """The rule of ``_find_ranges`` for all technicians at once, as a step machine.

    Each technician is either searching (the first compact window at or after its cursor)
    or growing a stop (``_STEP`` fixes per step, until the window breaks). One step moves
    every technician on by numpy operations over all of them, and exact rectangles go to
    GEOS in one batch per step, so the Python loop runs once per step of the busiest
    technician, not once per stop or per fix.
    """

    def __init__(self, track: _Track, min_us: int):
        self.tr, self.min_us = track, min_us
        bounds = track.tech_bounds
        n_tech = len(bounds) - 1
        self.end = bounds[1:].copy()
        self.r = bounds[:-1].copy()
        self.cursor = self.r + 1
        self.k2 = track.proj.shape[1]
        self.maybe_padded = np.append(track.maybe, np.iinfo(np.int64).max)
        self.s = np.zeros(n_tech, dtype=np.int64)
        self.a = np.zeros(n_tech, dtype=np.int64)
        self.box = np.zeros((n_tech, 2 * self.k2))
        # convex hull of [hull_s..hull_end-1] per technician (its current stop's prefix)
        self.hull_s = np.full(n_tech, -1, dtype=np.int64)
        self.hull_end = np.zeros(n_tech, dtype=np.int64)
        self.hull_pts: list[FloatArray] = [_NO_POINTS] * n_tech

    def run(self) -> list[tuple[int, int]]:
        found_s: list[IntArray] = []
        found_e: list[IntArray] = []
        search = np.flatnonzero(self.cursor < self.end)
        growing = np.zeros(0, dtype=np.int64)
        while search.size or growing.size:
            if search.size:
                i_star, s = self._candidates(search)
                hit = i_star >= 0
                search, i_star, s = search[hit], i_star[hit], s[hit]
                self.s[search], self.a[search] = s, i_star + 1
                self.box[search] = self._box(s, i_star)
                growing = np.concatenate([growing, search])
            if not growing.size:
                break
            e = self._grow(growing)
            done = e >= 0
            fin, e = growing[done], e[done]
            growing = growing[~done]
            s = self.s[fin]
            t = self.tr.t_us
            keep = t[e - 1] - t[s] >= self.min_us
            found_s.append(s[keep])
            found_e.append(e[keep] - 1)
            self.r[fin[keep]] = e[keep]
            self.cursor[fin] = e + 1
            search = fin[self.cursor[fin] < self.end[fin]]
        if not found_s:
            return []
        first, last = np.concatenate(found_s), np.concatenate(found_e)
        order = np.argsort(first, kind="stable")
        return list(zip(first[order].tolist(), last[order].tolist(), strict=True))

    # step 1: the first compact window at or after the cursor --------------------------------
    def _candidates(self, act: IntArray) -> tuple[IntArray, IntArray]:
        tr = self.tr
        r, cur, end = self.r[act], self.cursor[act], self.end[act]
        z = np.maximum(np.searchsorted(tr.s_unc, r, side="left"), r + 1)
        z = np.minimum(z, end)
        i_star = np.full(act.size, -1, dtype=np.int64)
        s = r.copy()
        clip = np.flatnonzero(cur < z)
        if clip.size:
            i_star[clip] = self._first_clipped(r[clip], cur[clip], z[clip])
        rest = np.flatnonzero(i_star < 0)
        if rest.size:
            i = self._first_trailing(np.maximum(cur[rest], z[rest]), end[rest])
            i_star[rest] = i
            s[rest] = np.where(i >= 0, tr.s_unc[np.maximum(i, 0)], -1)
        return i_star, s

    def _first_clipped(self, r: IntArray, cur: IntArray, z: IntArray) -> IntArray:
        """First ``j`` in ``[cur, z)`` whose window ``[r..j]`` is compact, else -1."""
        tr = self.tr
        width = int((z - r).max())
        j, valid = _gather(tr, r, width, z)
        p = tr.proj[j]
        lo = np.minimum.accumulate(p, axis=1)
        hi = np.maximum.accumulate(p, axis=1)
        span = (hi - lo).reshape(-1, self.k2)
        first = np.repeat(r, width)
        lower, upper = tr._bounds(span, first)
        shape = (len(r), width)
        lower, upper = lower.reshape(shape), upper.reshape(shape)
        valid &= j >= cur[:, None]
        sure = valid & (upper < tr.max_d)
        col_sure = _first_true(sure)
        doubt = valid & ~sure & (lower < tr.max_d)
        doubt &= np.arange(width)[None, :] < col_sure[:, None]
        ok = sure.copy()
        rows, cols = np.nonzero(doubt)
        if rows.size:
            ok[rows, cols] = tr._exact_many(r[rows], j[rows, cols])
        col = _first_true(ok)
        return np.where(col < width, r + col, -1)

    def _first_trailing(self, begin: IntArray, end: IntArray) -> IntArray:
        """First ``i`` in ``[begin, end)`` whose trailing window is compact, else -1."""
        tr = self.tr
        maybe = tr.maybe
        k = np.searchsorted(maybe, begin, side="left")
        out = np.full(len(begin), -1, dtype=np.int64)
        todo = np.arange(len(begin))
        width = _SEARCH
        padded = self.maybe_padded
        while todo.size:
            kk = k[todo, None] + np.arange(width)[None, :]
            pos = padded[np.minimum(kk, len(maybe))]
            valid = pos < end[todo, None]
            p = np.where(valid, pos, 0)
            sure = valid & tr.sure[p]
            col_sure = _first_true(sure)
            doubt = valid & ~sure & (np.arange(width)[None, :] < col_sure[:, None])
            ok = sure.copy()
            rows, cols = np.nonzero(doubt)
            if rows.size:
                last = p[rows, cols]
                ok[rows, cols] = tr._exact_many(tr.s_unc[last], last)
            col = _first_true(ok)
            hit = col < width
            out[todo[hit]] = p[hit, col[hit]]
            more = ~hit & valid[:, -1]
            k[todo] += width
            todo = todo[more]
        return out

    # step 2: one step of growing each stop until its window breaks --------------------------
    def _box(self, s: IntArray, last: IntArray) -> FloatArray:
        """Box (8 minima, 8 maxima) of each window ``[s..last]`` (a compact one: short)."""
        j, valid = _gather(self.tr, s, int((last - s).max(initial=0)) + 1, last + 1)
        p = self.tr.proj[j]
        return np.hstack(
            [
                np.where(valid[:, :, None], p, np.inf).min(axis=1),
                np.where(valid[:, :, None], p, -np.inf).max(axis=1),
            ]
        )

    def _grow(self, techs: IntArray) -> IntArray:
        """Break of each technician's stop (first ``j`` whose ``[s..j]`` is not compact, or
        the track end) where this step finds it, else -1 (``a`` and ``box`` move on)."""
        tr, k2, width = self.tr, self.k2, _STEP
        s, a, end = self.s[techs], self.a[techs], self.end[techs]
        e = np.where(a >= end, end, -1)
        rows = np.flatnonzero(a < end)
        if not rows.size:
            return e
        s, a, end, box = s[rows], a[rows], end[rows], self.box[techs[rows]]
        j, valid = _gather(tr, a, width, end)
        p = tr.proj[j]
        lo = np.minimum(np.minimum.accumulate(p, axis=1), box[:, None, :k2])
        hi = np.maximum(np.maximum.accumulate(p, axis=1), box[:, None, k2:])
        lower, upper = tr._bounds((hi - lo).reshape(-1, k2), np.repeat(s, width))
        lower, upper = lower.reshape(j.shape), upper.reshape(j.shape)
        col_wide = _first_true(valid & (lower >= tr.max_d))
        before = np.arange(width)[None, :] < col_wide[:, None]
        doubt = valid & before & (upper >= tr.max_d)
        col_exact = self._exact_breaks(
            techs[rows], s, a, j, valid & before, doubt, _first_true(doubt)
        )
        resume = col_exact < 0  # doubts left unchecked: go on from the first of them
        col = np.where(resume, width, np.minimum(col_exact, col_wide))
        done = col < width
        at_end = ~done & ~resume & ~valid[:, -1]
        e[rows[done]] = a[done] + col[done]
        e[rows[at_end]] = end[at_end]
        go = np.flatnonzero(~done & ~at_end)
        last = np.where(resume, -col_exact - 1, width)[go] - 1  # last column known compact
        t_go = techs[rows[go]]
        self.box[t_go, :k2] = lo[go, last]
        self.box[t_go, k2:] = hi[go, last]
        self.a[t_go] = a[go] + last + 1
        return e

    def _prefix_hulls(self, techs: IntArray, s: IntArray, stop: IntArray) -> GeomArray:
        """Convex hull of each window ``[s..stop-1]``, from the hull kept for the technician's
        current stop plus the fixes added since (so a long stop is not re-read each step)."""
        reuse = (self.hull_s[techs] == s) & (self.hull_end[techs] <= stop)
        start = np.where(reuse, self.hull_end[techs], s)
        kept = [
            self.hull_pts[t] if ok else _NO_POINTS
            for t, ok in zip(techs.tolist(), reuse.tolist(), strict=True)
        ]
        sizes = stop - start
        fresh = self.tr.lonlat[_spread(start, sizes)]
        n_kept = np.array([len(k) for k in kept], dtype=np.int64)
        owner = np.concatenate(
            [np.repeat(np.arange(len(s)), n_kept), np.repeat(np.arange(len(s)), sizes)]
        )
        order = np.argsort(owner, kind="stable")
        pts = np.vstack([*kept, fresh])[order]
        hull = shapely.convex_hull(_point_sets(pts, owner[order]))
        coords, h_owner = shapely.get_coordinates(hull, return_index=True)
        cuts = np.searchsorted(h_owner, np.arange(1, len(s)))
        for t, first, end, part in zip(
            techs.tolist(), s.tolist(), stop.tolist(), np.split(coords, cuts), strict=True
        ):
            self.hull_s[t], self.hull_end[t], self.hull_pts[t] = first, end, part
        return np.asarray(hull)

    def _exact_breaks(
        self, techs: IntArray, s: IntArray, a: IntArray, j: IntArray, inside: BoolArray,
        doubt: BoolArray, col_doubt: IntArray,
    ) -> IntArray:  # fmt: skip
        """Per row, the first doubtful column whose window ``[s..j]`` is not compact.

        The windows up to the first doubt are compact; their convex hull stands for them (the
        rectangle depends on the hull only). A later fix inside that hull changes nothing, so
        only fixes outside it are added, and only windows ending at one are checked. Returns
        the column, ``width`` when every doubt was cleared, or ``-c - 1`` when the check
        stopped early at column ``c`` (the caller resumes there).
        """
        tr = self.tr
        width = j.shape[1]
        out = np.full(len(s), width, dtype=np.int64)
        rows = np.flatnonzero(col_doubt < width)
        if not rows.size:
            return out
        c0 = col_doubt[rows]
        hull = self._prefix_hulls(techs[rows], s[rows], a[rows] + c0)
        cols = np.arange(width)[None, :]
        cand = inside[rows] & (cols >= c0[:, None]) & (cols < c0[:, None] + _BATCH_SPAN)
        rr, cc = np.nonzero(cand)
        pts = tr.lonlat[j[rows[rr], cc]]
        out_of_hull = ~shapely.contains_xy(hull[rr], pts[:, 0], pts[:, 1])
        # a degenerate hull (point or segment) contains nothing: every fix counts as outside
        rr, cc, pts = rr[out_of_hull], cc[out_of_hull], pts[out_of_hull]
        check = doubt[rows[rr], cc]
        # at most _OUTSIDE fixes outside the hull per row (each check's set holds the ones
        # before it); the rest resumes next step from a new hull
        first_of_row = np.searchsorted(rr, np.arange(len(rows)), side="left")
        rank = np.arange(len(rr)) - first_of_row[rr]
        limit = check & (rank < _OUTSIDE)
        cut = np.full(len(rows), width, dtype=np.int64)
        over = rank == _OUTSIDE
        cut[rr[over]] = cc[over]
        # doubts past the span are checked next step (they all lie before a sure break)
        beyond = (doubt[rows] & (cols >= c0[:, None] + _BATCH_SPAN)).any(axis=1)
        cut[beyond] = np.minimum(cut[beyond], (c0 + _BATCH_SPAN)[beyond])
        hv, h_owner = shapely.get_coordinates(hull, return_index=True)
        n_hull = np.bincount(h_owner, minlength=len(rows))
        q = np.flatnonzero(limit)
        wide = np.zeros(len(q), dtype=bool)
        if len(q):
            # check q's set: its row's hull vertices, then its row's outside fixes up to it
            row_q = rr[q]
            first_out = np.searchsorted(rr, row_q, side="left")
            sizes_q = n_hull[row_q] + q - first_out + 1
            owner = np.repeat(np.arange(len(q)), sizes_q)
            offs = np.arange(int(sizes_q.sum())) - np.repeat(np.cumsum(sizes_q) - sizes_q, sizes_q)
            n_h = n_hull[row_q][owner]
            h_first = (np.cumsum(n_hull) - n_hull)[row_q][owner]
            from_hull = offs < n_h
            src = np.where(from_hull, h_first + offs, first_out[owner] + offs - n_h)
            chosen = np.where(
                from_hull[:, None],
                hv[np.where(from_hull, src, 0)],
                pts[np.where(from_hull, 0, src)],
            )
            wide = _mrr_diagonal_m(chosen, owner) >= tr.max_d
        hit_cols = np.full(len(rows), width, dtype=np.int64)
        qw = q[wide]
        np.minimum.at(hit_cols, rr[qw], cc[qw])
        res = np.where(hit_cols < cut, hit_cols, np.where(cut < width, -cut - 1, width))
        out[rows] = res
        return out


def _find_ranges(track: _Track, min_us: int) -> list[tuple[int, int]]:
    """Index ranges ``[first, last]`` of the stops, following the module docstring's rule."""
    return _Rounds(track, min_us).run()


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
