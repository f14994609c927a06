"""What "near the customer" means, once: the radius, the customer's devices, the nearest weather
grid point and the outages covering the address. The ticket page, its checklist and replay all
read through these functions, so they always show the same devices, weather and outages.

Each function returns parameterized SQL run through the ``Store`` gateway.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import polars as pl

from pipelines.store.gateway import Store

AT_CUSTOMER_M: Final = 30.0
"""A device, an earlier ticket or a stop within this distance of the address is at the customer."""
M_PER_DEG: Final = 111_320.0
WEATHER_SEARCH_DEG: Final = 0.5
"""The nearest weather grid point is searched within this many degrees of the address."""


def box(lat: float, lon: float, radius_m: float) -> list[object]:
    """``[lat_min, lat_max, lon_min, lon_max]`` of a square holding the circle (cos-latitude)."""
    dlat = radius_m / M_PER_DEG
    dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
    return [lat - dlat, lat + dlat, lon - dlon, lon + dlon]


def distance_sql(lat_col: str, lon_col: str) -> str:
    """Equirectangular metres from the row's point to a bound point; params: lat, lon, cos(lat).

    Exact to well under a metre at neighbourhood radii. Column names are fixed by the caller."""
    return f"sqrt((({lat_col} - ?) * {M_PER_DEG}) ^ 2 + (({lon_col} - ?) * {M_PER_DEG} * ?) ^ 2)"


def within_sql(
    lat_col: str, lon_col: str, lat: float, lon: float, radius_m: float
) -> tuple[str, list[object]]:
    """``(sql, params)``: the row's point is within ``radius_m`` of (lat, lon).

    A box on the columns (prunes on sort keys), then ``distance_sql``."""
    cos = math.cos(math.radians(lat))
    dist = distance_sql(lat_col, lon_col)
    sql = f"({lat_col} BETWEEN ? AND ? AND {lon_col} BETWEEN ? AND ? AND {dist} <= ?)"
    lat_lo, lat_hi, lon_lo, lon_hi = box(lat, lon, radius_m)
    return sql, [lat_lo, lat_hi, lon_lo, lon_hi, lat, lon, cos, radius_m]


def customer_devices_sql(
    ticket_id: str, customer_id: str | None, lat: float | None, lon: float | None, alias: str = ""
) -> tuple[str, list[object]]:
    """``(sql, params)`` selecting the customer's IoT devices: by ticket, by customer, or within
    ``AT_CUSTOMER_M`` of the address. ``alias`` prefixes the ``iot_devices`` columns."""
    p = f"{alias}." if alias else ""
    near: str = "FALSE"
    near_params: list[object] = []
    if lat is not None and lon is not None:
        near, near_params = within_sql(f"{p}lat", f"{p}lon", lat, lon, AT_CUSTOMER_M)
    sql = f"({p}ticket_id = ? OR {p}customer_id = ? OR {near})"
    return sql, [ticket_id, customer_id, *near_params]


def nearest_weather(
    store: Store,
    lat: float,
    lon: float,
    start: datetime,
    end: datetime,
    *,
    variables_like: Sequence[str] = (),
) -> pl.DataFrame:
    """Observations in ``[start, end]`` at the grid point nearest the address.

    ``variables_like`` keeps only variables whose lower-cased name contains one of the words."""
    d = WEATHER_SEARCH_DEG
    cos = math.cos(math.radians(lat))
    var_sql = ""
    if variables_like:
        var_sql = " AND (" + " OR ".join("lower(o.variable) LIKE ?" for _ in variables_like) + ")"
    return store.query(
        "WITH g AS (SELECT grid_lat, grid_lon FROM weather_obs WHERE grid_lat BETWEEN ? AND ? "
        "AND grid_lon BETWEEN ? AND ? ORDER BY (grid_lat - ?) ^ 2 + ((grid_lon - ?) * ?) ^ 2, "
        "grid_lat, grid_lon LIMIT 1) SELECT o.grid_lat, o.grid_lon, o.ts, o.variable, o.value, "
        "o.unit, o.source FROM weather_obs o JOIN g USING (grid_lat, grid_lon) "
        f"WHERE o.ts BETWEEN ? AND ?{var_sql} ORDER BY o.ts, o.variable",
        [
            lat - d, lat + d, lon - d, lon + d, lat, lon, cos, start, end,
            *(f"%{w.lower()}%" for w in variables_like),
        ],
    )  # fmt: skip


def covering_outages(
    store: Store, lat: float, lon: float, start: datetime, end: datetime
) -> pl.DataFrame:
    """Outages overlapping ``[start, end]`` whose polygon holds the address (bbox, then exact)."""
    return store.query(
        "SELECT outage_id, source, geom_wkt, start_ts, end_ts, customers_affected, cause "
        "FROM outages WHERE (min_lat IS NULL OR (? BETWEEN min_lat AND max_lat "
        "AND ? BETWEEN min_lon AND max_lon)) AND start_ts <= ? "
        "AND (end_ts IS NULL OR end_ts >= ?) "
        "AND ST_Contains(ST_GeomFromText(geom_wkt), ST_Point(?, ?)) ORDER BY start_ts",
        [lat, lon, end, start, lon, lat],
    )
