"""Geometry of the demo city: a local metric frame, regions and a road grid.

The city is a 20 km × 20 km square centred on (30.27 N, 120.15 E), Hangzhou's centre. All
physical truth is computed in a local frame ``(x_m east, y_m north)`` about that centre with an
equirectangular mapping (metres per degree at 30.27 N); over ±10 km its scale error is below
1e-4, far under any GPS error. GCJ-02 comes from ``geofence.datum`` (re-exported here).
Nothing here does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from geofence.datum import gcj02_to_wgs84 as gcj02_to_wgs84
from geofence.datum import wgs84_to_gcj02 as wgs84_to_gcj02

FloatArray = npt.NDArray[np.float64]

CENTER_LAT: Final = 30.27
CENTER_LON: Final = 120.15
HALF_SIZE_M: Final = 10_000.0
_PHI: Final = math.radians(CENTER_LAT)
M_PER_DEG_LAT: Final = 111_132.92 - 559.82 * math.cos(2 * _PHI) + 1.175 * math.cos(4 * _PHI)
M_PER_DEG_LON: Final = 111_412.84 * math.cos(_PHI) - 93.5 * math.cos(3 * _PHI)

REGIONS: Final = ("north", "south", "east")
EAST_SPLIT_X_M: Final = 3_000.0
ROAD_SPACING_M: Final = 400.0


def to_latlon(x_m: npt.ArrayLike, y_m: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Local metres → WGS84 degrees (vectorized)."""
    x = np.asarray(x_m, dtype=np.float64)
    y = np.asarray(y_m, dtype=np.float64)
    return CENTER_LAT + y / M_PER_DEG_LAT, CENTER_LON + x / M_PER_DEG_LON


def to_xy(lat_deg: npt.ArrayLike, lon_deg: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """WGS84 degrees → local metres (vectorized)."""
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    return (lon - CENTER_LON) * M_PER_DEG_LON, (lat - CENTER_LAT) * M_PER_DEG_LAT


def region_of(x_m: npt.ArrayLike, y_m: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """The service region of each point: east of 3 km is ``east``, else north/south of 0."""
    x = np.asarray(x_m, dtype=np.float64)
    y = np.asarray(y_m, dtype=np.float64)
    return np.where(x >= EAST_SPLIT_X_M, "east", np.where(y >= 0.0, "north", "south"))


def region_box_m(region: str) -> tuple[float, float, float, float]:
    """``(x_min, y_min, x_max, y_max)`` of a region in local metres."""
    h = HALF_SIZE_M
    boxes = {
        "north": (-h, 0.0, EAST_SPLIT_X_M, h),
        "south": (-h, -h, EAST_SPLIT_X_M, 0.0),
        "east": (EAST_SPLIT_X_M, -h, h, h),
    }
    return boxes[region]


def polygon_wkt(xy_m: list[tuple[float, float]]) -> str:
    """A closed WKT polygon (lon lat order) from local-metre vertices."""
    pts = [*xy_m, xy_m[0]]
    lat, lon = to_latlon([p[0] for p in pts], [p[1] for p in pts])
    body = ", ".join(f"{lo:.6f} {la:.6f}" for la, lo in zip(lat, lon, strict=True))
    return f"POLYGON (({body}))"


def region_wkt(region: str, margin_m: float = 2_000.0) -> str:
    """A region's coverage polygon; outer edges are pushed out by ``margin_m``."""
    x0, y0, x1, y1 = region_box_m(region)
    h = HALF_SIZE_M

    def out(v: float, lo: bool) -> float:
        return v - margin_m if lo and v <= -h else v + margin_m if not lo and v >= h else v

    x0, y0, x1, y1 = out(x0, True), out(y0, True), out(x1, False), out(y1, False)
    return polygon_wkt([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


# -- roads -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Route:
    """A drive as knots: times (s from departure) and local positions, stops included."""

    t_s: FloatArray
    x_m: FloatArray
    y_m: FloatArray


def _snap(v: float) -> float:
    s = ROAD_SPACING_M
    return float(np.clip(round(v / s) * s, -HALF_SIZE_M, HALF_SIZE_M))


def _crossings(a: float, b: float) -> list[float]:
    """Road-grid coordinates strictly between ``a`` and ``b``, in travel order."""
    s = ROAD_SPACING_M
    lo, hi = sorted((a, b))
    vals = [k * s for k in range(math.floor(lo / s) + 1, math.ceil(hi / s))]
    vals = [v for v in vals if lo + 1.0 < v < hi - 1.0]
    return vals if b >= a else vals[::-1]


def drive(a_xy: tuple[float, float], b_xy: tuple[float, float], rng: np.random.Generator) -> Route:
    """Drive from ``a`` to ``b`` along the 400 m road grid (an L through the grid).

    Access legs to and from the grid run at 4–6 m/s; grid legs at 8–14 m/s, and each crossed
    intersection is a red light with probability 0.3 (a 15–60 s stop).
    """
    ax, ay = a_xy
    bx, by = b_xy
    ya, xb = _snap(ay), _snap(bx)
    v_access = float(rng.uniform(4.0, 6.0))
    # (x, y, speed to reach it, may stop here)
    pts: list[tuple[float, float, float, bool]] = [(ax, ya, v_access, False)]
    v_h = float(rng.uniform(8.0, 14.0))
    pts += [(x, ya, v_h, True) for x in _crossings(ax, xb)]
    pts.append((xb, ya, v_h, True))
    v_v = float(rng.uniform(8.0, 14.0))
    pts += [(xb, y, v_v, True) for y in _crossings(ya, by)]
    pts.append((xb, by, v_v, False))
    pts.append((bx, by, v_access, False))
    t, xs, ys = [0.0], [ax], [ay]
    for x, y, v, may_stop in pts:
        dist = math.hypot(x - xs[-1], y - ys[-1])
        if dist < 0.5:
            continue
        t.append(t[-1] + dist / v)
        xs.append(x)
        ys.append(y)
        if may_stop and rng.random() < 0.3:
            t.append(t[-1] + float(rng.uniform(15.0, 60.0)))
            xs.append(x)
            ys.append(y)
    if len(t) == 1:  # already there
        t.append(1.0)
        xs.append(ax)
        ys.append(ay)
    return Route(np.asarray(t), np.asarray(xs), np.asarray(ys))
