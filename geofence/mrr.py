"""Minimum-area rectangle of a point set, as GEOS builds it, compiled (numba).

movingpandas measures a stop's extent as the diagonal of ``shapely.oriented_envelope`` (GEOS
``MinimumAreaRectangle``, 3.12+) taken in raw lon/lat degrees, from corner 0 to corner 2,
measured on the ellipsoid. Degree space is not isotropic, so the two diagonals of one
rectangle have different lengths in metres: matching movingpandas means building the
rectangle exactly as GEOS does, corner order included. This module does, without a geometry
object per window:

- ``orientation``: GEOS ``Orientation::index`` (a floating-point filter, then double-double
  arithmetic when the filter cannot decide).
- ``convex_ring``: the strict convex hull as GEOS ``ConvexHull`` returns it (clockwise,
  starting at the lowest point, the leftmost of those; collinear points dropped).
- ``diagonal_m``: GEOS ``MinimumAreaRectangle::computeConvexRing`` (rotating calipers with
  GEOS's start indices and tie rules, the first minimal area wins), then
  ``Rectangle::createFromSidePts``'s corners 0 and 2, measured with ``local_distance_m``'s
  formula. Two-point hulls measure the segment (``computeMaximumLine``), one point is 0 m.

Every function is ``numba.njit(cache=True)``: compiled once per machine (``make install``
warms the cache) and called from the stop detector's per-fix loop.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_A_M = 6_378_137.0  # WGS84, as geofence.distance
_E2 = (1.0 / 298.257223563) * (2.0 - 1.0 / 298.257223563)
_DP_SAFE_EPSILON = 1e-15  # GEOS CGAlgorithmsDD
_SPLIT = 134217729.0  # 2**27 + 1, Dekker's split


@njit(cache=True)
def local_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """``geofence.distance.local_distance_m`` for one pair (m), degrees in."""
    lat_mid = 0.5 * (lat1 + lat2)
    s = math.sin(math.radians(lat_mid))
    w2 = 1.0 - _E2 * s * s
    n_m = _A_M / math.sqrt(w2)
    m_m = _A_M * (1.0 - _E2) / (w2 * math.sqrt(w2))
    d_lon = (lon2 - lon1 + 180.0) % 360.0 - 180.0
    east = n_m * math.cos(math.radians(lat_mid)) * math.radians(d_lon)
    north = m_m * math.radians(lat2 - lat1)
    return math.sqrt(east * east + north * north)


# -- orientation (GEOS Orientation::index) ----------------------------------------------------
@njit(cache=True)
def _two_sum(a: float, b: float) -> tuple[float, float]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(cache=True)
def _two_prod(a: float, b: float) -> tuple[float, float]:
    p = a * b
    t = _SPLIT * a
    a_hi = t - (t - a)
    a_lo = a - a_hi
    t = _SPLIT * b
    b_hi = t - (t - b)
    b_lo = b - b_hi
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


@njit(cache=True)
def _det_sign_dd(x1: float, y1: float, x2: float, y2: float, x3: float, y3: float) -> int:
    """Sign of ``(p2 - p1) × (p3 - p1)`` with the differences exact and ~106-bit products."""
    dx1, ex1 = _two_sum(x2, -x1)
    dy1, ey1 = _two_sum(y2, -y1)
    dx2, ex2 = _two_sum(x3, -x1)
    dy2, ey2 = _two_sum(y3, -y1)
    a, ae = _two_prod(dx1, dy2)
    b, be = _two_prod(dy1, dx2)
    hi, lo = _two_sum(a, -b)
    lo += ae - be + (dx1 * ey2 + ex1 * dy2 + ex1 * ey2) - (dy1 * ex2 + ey1 * dx2 + ey1 * ex2)
    total = hi + lo
    return 1 if total > 0.0 else (-1 if total < 0.0 else 0)


@njit(cache=True)
def orientation(x1: float, y1: float, x2: float, y2: float, x3: float, y3: float) -> int:
    """1 if ``p3`` is left of ``p1 → p2`` (counter-clockwise), -1 if right, 0 if collinear."""
    detleft = (x1 - x3) * (y2 - y3)
    detright = (y1 - y3) * (x2 - x3)
    det = detleft - detright
    if detleft > 0.0:
        if detright <= 0.0:
            return 1 if det > 0.0 else (-1 if det < 0.0 else 0)
        detsum = detleft + detright
    elif detleft < 0.0:
        if detright >= 0.0:
            return 1 if det > 0.0 else (-1 if det < 0.0 else 0)
        detsum = -detleft - detright
    else:
        return 1 if det > 0.0 else (-1 if det < 0.0 else 0)
    bound = _DP_SAFE_EPSILON * detsum
    if det >= bound or -det >= bound:
        return 1 if det > 0.0 else -1
    return _det_sign_dd(x1, y1, x2, y2, x3, y3)


# -- convex hull (GEOS ConvexHull's ring) -----------------------------------------------------
@njit(cache=True)
def _sorted_xy(xs: FloatArray, ys: FloatArray, n: int, order: IntArray) -> None:
    """``order[:n]``: the points by x, then y (insertion sort: windows are small)."""
    if n > 48:
        by_y = np.argsort(ys[:n], kind="mergesort")
        order[:n] = by_y[np.argsort(xs[:n][by_y], kind="mergesort")]
        return
    for i in range(n):
        x, y = xs[i], ys[i]
        j = i - 1
        while j >= 0 and (xs[order[j]] > x or (xs[order[j]] == x and ys[order[j]] > y)):
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = i


@njit(cache=True)
def _chain_push(xs: FloatArray, ys: FloatArray, hull: IntArray, k: int, floor: int, i: int) -> int:
    """Add point ``i`` to the chain ``hull[:k]``, first dropping the points it makes a right
    turn or a straight line from (down to ``floor`` points); returns the chain's new length."""
    x, y = xs[i], ys[i]
    if k > 0 and xs[hull[k - 1]] == x and ys[hull[k - 1]] == y:
        return k  # a repeated point
    while k >= floor:
        p, q = hull[k - 2], hull[k - 1]
        if orientation(xs[p], ys[p], xs[q], ys[q], x, y) > 0:
            break
        k -= 1
    hull[k] = i
    return k + 1


@njit(cache=True)
def convex_ring(
    xs: FloatArray, ys: FloatArray, n: int, out_x: FloatArray, out_y: FloatArray, work: IntArray
) -> int:
    """Strict convex hull of ``xs[:n], ys[:n]`` into ``out_x/out_y``; returns its size ``m``.

    ``m >= 3``: a clockwise ring (not closed) starting at the lowest, then leftmost, point,
    as GEOS ``ConvexHull`` returns it. ``m == 2``: the two ends of a segment; ``m == 1``: a
    point. ``out_*`` need room for ``n + 1`` points and ``work`` for ``3 * n + 1`` integers.
    """
    if n == 0:
        return 0
    order = work[:n]
    _sorted_xy(xs, ys, n, order)
    # Andrew's monotone chain (counter-clockwise, collinear points dropped), as indices:
    # the lower chain left to right, then the upper chain back
    hull = work[n:]
    k = 0
    for idx in range(n):
        k = _chain_push(xs, ys, hull, k, 2, order[idx])
    lower = k + 1
    for idx in range(n - 2, -1, -1):
        k = _chain_push(xs, ys, hull, k, lower, order[idx])
    m = k - 1 if k > 1 else k  # the chain ends where it began
    if m <= 2:
        for q in range(m):
            out_x[q], out_y[q] = xs[hull[q]], ys[hull[q]]
        return m
    # clockwise from the lowest-then-leftmost vertex
    start = 0
    for q in range(1, m):
        a, b = hull[q], hull[start]
        if ys[a] < ys[b] or (ys[a] == ys[b] and xs[a] < xs[b]):
            start = q
    for q in range(m):
        src = hull[(start - q) % m]
        out_x[q], out_y[q] = xs[src], ys[src]
    return m


# -- minimum-area rectangle (GEOS MinimumAreaRectangle::computeConvexRing) --------------------
@njit(cache=True)
def _oriented_distance(
    ax: float, ay: float, bx: float, by: float, len2: float, root: float, px: float, py: float,
    orient: int,
) -> float:  # fmt: skip
    """GEOS ``LineSegment::distancePerpendicularOriented`` from ``a → b`` (``abs`` when
    ``orient == 0``); ``len2`` and ``root`` are the segment's squared length and length,
    computed once per segment (the same operations GEOS runs per call, so the same bits)."""
    if len2 == 0.0:
        return math.sqrt((ax - px) * (ax - px) + (ay - py) * (ay - py))
    s = ((ay - py) * (bx - ax) - (ax - px) * (by - ay)) / len2
    d = abs(s) * root
    if orient != 0 and orientation(ax, ay, bx, by, px, py) < 0:
        d = -d
    return d


@njit(cache=True)
def _further_or_equal(d1: float, d2: float, orient: int) -> bool:
    if orient == 0:
        return abs(d1) >= abs(d2)
    if orient == 1:
        return d1 >= d2
    return d1 <= d2


@njit(cache=True)
def _furthest(
    rx: FloatArray, ry: FloatArray, m: int, ax: float, ay: float, bx: float, by: float,
    start: int, orient: int,
) -> int:  # fmt: skip
    """GEOS ``findFurthestVertex`` on the closed ring of ``m`` vertices (``m + 1`` points)."""
    len2 = (bx - ax) * (bx - ax) + (by - ay) * (by - ay)
    root = math.sqrt(len2)
    best = _oriented_distance(ax, ay, bx, by, len2, root, rx[start], ry[start], orient)
    nxt_d = best
    best_i = start
    nxt = best_i
    while _further_or_equal(nxt_d, best, orient):
        best = nxt_d
        best_i = nxt
        nxt = best_i + 1
        if nxt >= m:
            nxt = 0
        if nxt == start:
            break
        nxt_d = _oriented_distance(ax, ay, bx, by, len2, root, rx[nxt], ry[nxt], orient)
    return best_i


@njit(cache=True)
def ring_diagonal_m(rx: FloatArray, ry: FloatArray, m: int) -> float:
    """movingpandas' extent (m) of a ``convex_ring`` of ``m`` vertices (lon = x, lat = y);
    ``rx/ry`` need room for ``m + 1`` points (the ring is closed in place)."""
    if m <= 1:
        return 0.0
    if m == 2:
        return local_distance_m(ry[0], rx[0], ry[1], rx[1])
    rx[m], ry[m] = rx[0], ry[0]  # close the ring
    best_area = np.inf
    b_i = d_i = l_i = r_i = -1
    diam, left, right = 1, 1, -1
    for i in range(m):
        ax, ay, bx, by = rx[i], ry[i], rx[i + 1], ry[i + 1]
        diam = _furthest(rx, ry, m, ax, ay, bx, by, diam, 0)
        px, py = rx[diam], ry[diam]
        if (px == ax and py == ay) or (px == bx and py == by):
            qx, qy = px, py
        else:  # LineSegment::project
            dx, dy = bx - ax, by - ay
            r = ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)
            qx, qy = ax + r * dx, ay + r * dy
        left = _furthest(rx, ry, m, qx, qy, px, py, left, 1)
        if i == 0:
            right = diam
        right = _furthest(rx, ry, m, qx, qy, px, py, right, -1)
        len2 = (px - qx) * (px - qx) + (py - qy) * (py - qy)
        root = math.sqrt(len2)
        width = _oriented_distance(
            qx, qy, px, py, len2, root, rx[left], ry[left], 0
        ) + _oriented_distance(qx, qy, px, py, len2, root, rx[right], ry[right], 0)
        area = root * width
        if area < best_area:
            best_area, b_i, d_i, l_i, r_i = area, i, diam, left, right
    # Rectangle::createFromSidePts: corner 0 = base ∩ right side, corner 2 = opposite ∩ left
    ax, ay = rx[b_i], ry[b_i]
    dx, dy = rx[b_i + 1] - ax, ry[b_i + 1] - ay
    norm = math.sqrt(dx * dx + dy * dy)
    ux, uy = dx / norm, dy / norm
    t0 = (rx[r_i] - ax) * ux + (ry[r_i] - ay) * uy
    c0x, c0y = ax + t0 * ux, ay + t0 * uy
    ox, oy = rx[d_i], ry[d_i]
    t2 = (rx[l_i] - ox) * ux + (ry[l_i] - oy) * uy
    c2x, c2y = ox + t2 * ux, oy + t2 * uy
    return local_distance_m(c0y, c0x, c2y, c2x)
