"""Candidate (fix, fence) pairs for ``geofence.fences.stamp_membership``: the prefilter.

Fences are bucketed into a dense lat/lon grid after growing each bounding box by
``grid_reach_m``; the grid has one empty cell of padding all round, so a fix outside it
(or with a NaN position) lands in an empty cell without a branch. A fix looks up its one
cell and is paired with the fences listed there, then kept only where its grown box meets
the fence's box. Fixes whose reach (``near_m + accuracy_k·accuracy_m``) or incoming segment
is longer than ``grid_reach_m`` are rare; they are tested against every fence's bounding
box instead.

Speed: the fixes are walked in chunks of ``_CHUNK`` so that every temporary stays in the
CPU cache; each fix is read once and costs a few arithmetic operations, and only fixes in
an occupied cell go on to the pair stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from geofence.distance import radii_of_curvature_m

if TYPE_CHECKING:
    from geofence.fences import FenceSet

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_MAX_GRID_CELLS: Final = 20_000_000
_SLOW_CHUNK: Final = 1 << 22
_CHUNK: Final = 1 << 17


def deg_per_m(lat: FloatArray | float) -> tuple[FloatArray, FloatArray]:
    """Degrees of latitude and of longitude per metre at ``lat`` (with a 1 % margin)."""
    m_m, n_m = radii_of_curvature_m(lat)
    cos_lat = np.maximum(np.cos(np.radians(lat)), 1e-6)
    return 1.01 * np.degrees(1.0 / m_m), 1.01 * np.degrees(1.0 / (n_m * cos_lat))


@dataclass(frozen=True)
class _Grid:
    lat0: float
    lon0: float
    step_lat: float
    step_lon: float
    ny: int  # cells without the padding
    nx: int
    offsets: IntArray  # CSR over padded cells: fence_idx[offsets[c]:offsets[c+1]]
    fence_idx: IntArray
    occupied: npt.NDArray[np.uint8]  # padded cell has at least one fence

    def cells(self, lat: FloatArray, lon: FloatArray) -> npt.NDArray[np.int32]:
        """Padded cell of each position (NaN and outside: an empty border cell)."""
        y = lat - self.lat0
        y *= 1.0 / self.step_lat
        y += 1.0
        np.fmax(y, 0.0, out=y)  # fmax/fmin also turn NaN into the border
        np.fmin(y, self.ny + 1, out=y)
        x = lon - self.lon0
        x *= 1.0 / self.step_lon
        x += 1.0
        np.fmax(x, 0.0, out=x)
        np.fmin(x, self.nx + 1, out=x)
        cell = y.astype(np.int32)
        cell *= self.nx + 2
        cell += x.astype(np.int32)
        return cell


def _grown_boxes(fences: FenceSet, reach_m: float) -> FloatArray:
    dlat, dlon = deg_per_m(np.maximum(np.abs(fences.min_lat), np.abs(fences.max_lat)))
    return np.column_stack(
        [
            fences.min_lat - reach_m * dlat,
            fences.max_lat + reach_m * dlat,
            fences.min_lon - reach_m * dlon,
            fences.max_lon + reach_m * dlon,
        ]
    )


def _build_grid(fences: FenceSet, reach_m: float, order: IntArray) -> _Grid:
    """The grid; each cell lists its fences in ``order`` (fence indices by rank)."""
    boxes = _grown_boxes(fences, reach_m)
    lat0, lon0 = float(boxes[:, 0].min()), float(boxes[:, 2].min())
    cell_m = max(2.0 * reach_m, 50.0)
    widest_lat = float(np.max(np.abs(boxes[:, :2])))
    dlat, dlon = deg_per_m(min(widest_lat, 89.0))
    step_lat, step_lon = float(cell_m * dlat), float(cell_m * dlon)
    while True:
        ny = int((boxes[:, 1].max() - lat0) // step_lat) + 1
        nx = int((boxes[:, 3].max() - lon0) // step_lon) + 1
        if (ny + 2) * (nx + 2) <= _MAX_GRID_CELLS:
            break
        step_lat, step_lon = 2 * step_lat, 2 * step_lon
    y0 = ((boxes[:, 0] - lat0) // step_lat).astype(np.int64) + 1
    y1 = ((boxes[:, 1] - lat0) // step_lat).astype(np.int64) + 1
    x0 = ((boxes[:, 2] - lon0) // step_lon).astype(np.int64) + 1
    x1 = ((boxes[:, 3] - lon0) // step_lon).astype(np.int64) + 1
    cells, owners = [], []
    for f in order.tolist():  # one small block of cells per fence, in rank order
        yy, xx = np.meshgrid(np.arange(y0[f], y1[f] + 1), np.arange(x0[f], x1[f] + 1))
        cells.append((yy * (nx + 2) + xx).ravel())
        owners.append(np.full(yy.size, f, dtype=np.int64))
    n_cells = (ny + 2) * (nx + 2)
    cell_arr, owner_arr = np.concatenate(cells), np.concatenate(owners)
    by_cell = np.argsort(cell_arr, kind="stable")
    counts = np.bincount(cell_arr, minlength=n_cells)
    offsets = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    occupied = (counts > 0).astype(np.uint8)
    return _Grid(lat0, lon0, step_lat, step_lon, ny, nx, offsets, owner_arr[by_cell], occupied)


def _slow_pairs(
    fences: FenceSet, idx: IntArray, lat: FloatArray, lon: FloatArray,
    prev_lat: FloatArray, prev_lon: FloatArray, reach_m: FloatArray,
) -> tuple[IntArray, IntArray]:  # fmt: skip
    """Pairs for far-reaching fixes or long segments: bbox tests against every fence.

    ``lat``..``reach_m`` are aligned with ``idx`` (the fixes' positions); returns positions.
    """
    out_fix, out_fence = [], []
    dlat_f, dlon_f = deg_per_m(np.maximum(np.abs(fences.min_lat), np.abs(fences.max_lat)))
    chunk = max(1, _SLOW_CHUNK // max(len(fences), 1))
    for s in range(0, len(idx), chunk):
        i = np.arange(s, min(s + chunk, len(idx)))
        r = reach_m[i][:, None]
        la0 = np.fmin(lat[i], prev_lat[i])[:, None] - r * dlat_f
        la1 = np.fmax(lat[i], prev_lat[i])[:, None] + r * dlat_f
        lo0 = np.fmin(lon[i], prev_lon[i])[:, None] - r * dlon_f
        lo1 = np.fmax(lon[i], prev_lon[i])[:, None] + r * dlon_f
        hit = (la0 <= fences.max_lat) & (la1 >= fences.min_lat)
        hit &= (lo0 <= fences.max_lon) & (lo1 >= fences.min_lon)
        rows, cols = np.nonzero(hit)
        out_fix.append(idx[i[rows]])
        out_fence.append(cols.astype(np.int64))
    empty = np.zeros(0, dtype=np.int64)
    return np.concatenate([empty, *out_fix]), np.concatenate([empty, *out_fence])


def candidate_pairs(
    fences: FenceSet, lat: FloatArray, lon: FloatArray, same: BoolArray, acc: FloatArray,
    near_m: float, accuracy_k: float, grid_reach_m: float, rank: IntArray,
) -> tuple[IntArray, IntArray]:  # fmt: skip
    """(fix, fence) pairs worth an exact test, sorted by fix then fence ``rank``.

    ``same``: the fix's technician is the previous fix's (its incoming segment counts);
    ``acc``: accuracy with null as 0; ``rank``: the order of fences within a fix.
    """
    order = np.argsort(rank, kind="stable")
    grid = _build_grid(fences, grid_reach_m, order)
    cell_m = max(2.0 * grid_reach_m, 50.0)
    scale_lat, scale_lon = 1.05 * cell_m / grid.step_lat, 1.05 * cell_m / grid.step_lon
    dlat_f, dlon_f = deg_per_m(np.maximum(np.abs(fences.min_lat), np.abs(fences.max_lat)))
    box = (fences.min_lat, fences.max_lat, fences.min_lon, fences.max_lon)
    out_fix: list[IntArray] = []
    out_fence: list[IntArray] = []
    slow_parts: list[IntArray] = []
    n = len(lat)
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        la, lo = lat[s:e], lon[s:e]
        prev = max(s - 1, 0)
        # segment length bound (m) per axis; no segment at a technician's first fix
        d_lat = np.abs(la - lat[prev : prev + e - s] if s else np.diff(la, prepend=la[:1]))
        d_lon = np.abs(lo - lon[prev : prev + e - s] if s else np.diff(lo, prepend=lo[:1]))
        seg_m = np.where(same[s:e], np.fmax(d_lat * scale_lat, d_lon * scale_lon), 0.0)
        reach = near_m + accuracy_k * acc[s:e]
        fast = (reach <= grid_reach_m) & (1.5 * seg_m <= grid_reach_m)
        slow_parts.append(np.flatnonzero(~fast) + s)
        cell = grid.cells(la, lo)
        hit = np.flatnonzero(grid.occupied[cell].view(bool) & fast)
        if not hit.size:
            continue
        cell = cell[hit]
        start = grid.offsets[cell]
        count = grid.offsets[cell + 1] - start
        pair_fix = np.repeat(hit, count)
        first = np.repeat(np.cumsum(count) - count, count)
        pair_fence = grid.fence_idx[np.repeat(start, count) + np.arange(len(pair_fix)) - first]
        grow = 1.5 * (reach[pair_fix] + seg_m[pair_fix])
        pla, plo = la[pair_fix], lo[pair_fix]
        gd_lat, gd_lon = grow * dlat_f[pair_fence], grow * dlon_f[pair_fence]
        keep = (pla >= box[0][pair_fence] - gd_lat) & (pla <= box[1][pair_fence] + gd_lat)
        keep &= (plo >= box[2][pair_fence] - gd_lon) & (plo <= box[3][pair_fence] + gd_lon)
        out_fix.append(pair_fix[keep] + s)
        out_fence.append(pair_fence[keep])
    slow = np.concatenate([np.zeros(0, dtype=np.int64), *slow_parts])
    if slow.size:
        has_prev = same[slow]
        before = np.maximum(slow - 1, 0)
        s_fix, s_fence = _slow_pairs(
            fences, slow, lat[slow], lon[slow],
            np.where(has_prev, lat[before], lat[slow]), np.where(has_prev, lon[before], lon[slow]),
            near_m + accuracy_k * acc[slow],
        )  # fmt: skip
        out_fix.append(s_fix)
        out_fence.append(s_fence)
    empty = np.zeros(0, dtype=np.int64)
    pair_fix = np.concatenate([empty, *out_fix])
    pair_fence = np.concatenate([empty, *out_fence])
    if slow.size:  # slow pairs were appended last: restore (fix, rank) order
        by = np.lexsort((rank[pair_fence], pair_fix))
        pair_fix, pair_fence = pair_fix[by], pair_fence[by]
    return pair_fix, pair_fence
