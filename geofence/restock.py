"""Turn a ticket cluster into a restock order: how much of which SKU, from which warehouse.

``choose_warehouse`` prefers the warehouse whose coverage polygon (WKT, lon/lat) contains the
cluster centroid - the nearest of them if several do - and otherwise falls back to the
nearest warehouse by great-circle distance (metres, mean Earth radius).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl
import shapely

from geofence.errors import GeofenceError

EARTH_RADIUS_M: Final = 6_371_008.8
WAREHOUSE_COLUMNS: Final = ("warehouse_id", "lat", "lon", "coverage_wkt")


class RestockRuleError(GeofenceError, ValueError):
    """A restock rule has an impossible value."""


class WarehouseError(GeofenceError, ValueError):
    """The warehouse table or the centroid cannot be used to choose a warehouse."""


@dataclass(frozen=True, slots=True)
class RestockRule:
    """``usage_per_ticket`` units of ``sku`` are used per ticket tagged ``tag``.

    ``pack_size`` (same unit), when given, rounds the order up to whole packs.
    """

    tag: str
    sku: str
    usage_per_ticket: float
    unit: str
    pack_size: float | None = None

    def __post_init__(self) -> None:
        where = f"restock rule tag={self.tag!r} sku={self.sku!r}"
        if not self.tag or not self.sku or not self.unit:
            raise RestockRuleError(f"{where}: tag, sku and unit must be non-empty")
        if not math.isfinite(self.usage_per_ticket) or self.usage_per_ticket <= 0:
            raise RestockRuleError(
                f"{where}: usage_per_ticket={self.usage_per_ticket} {self.unit} is not > 0"
            )
        if self.pack_size is not None and not (
            math.isfinite(self.pack_size) and self.pack_size > 0
        ):
            raise RestockRuleError(f"{where}: pack_size={self.pack_size} {self.unit} is not > 0")


def order_quantity(member_count: int, rule: RestockRule) -> float:
    """``member_count * usage_per_ticket`` in ``rule.unit``, rounded up to whole packs."""
    if member_count < 0:
        raise RestockRuleError(f"member_count={member_count} is negative (sku={rule.sku!r})")
    quantity = member_count * rule.usage_per_ticket
    if rule.pack_size is None:
        return quantity
    # tolerate float noise such as 3 * 0.1 = 0.30000000000000004 before rounding up
    packs = math.ceil(round(quantity / rule.pack_size, 9))
    return packs * rule.pack_size


class WarehouseChoice(NamedTuple):
    warehouse_id: str
    how: Literal["coverage", "nearest"]
    distance_m: float


def haversine_m(
    lat: float, lon: float, lats: npt.NDArray[np.float64], lons: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Great-circle distance in metres from one point to many."""
    phi1, phi2 = np.radians(lat), np.radians(lats)
    d_phi, d_lambda = phi2 - phi1, np.radians(lons - lon)
    a = np.sin(d_phi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(d_lambda / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1))))


def choose_warehouse(
    cluster_centroid_lat: float, cluster_centroid_lon: float, warehouses: pl.DataFrame
) -> WarehouseChoice:
    """The covering warehouse (nearest among several), else the nearest one.

    ``warehouses`` has ``warehouse_id, lat, lon, coverage_wkt`` (coverage may be null).
    ``distance_m`` is always centroid -> warehouse location.
    """
    missing = [c for c in WAREHOUSE_COLUMNS if c not in warehouses.columns]
    if missing:
        raise WarehouseError(f"warehouses: missing column(s) {missing}; got {warehouses.columns}")
    if warehouses.height == 0:
        raise WarehouseError("warehouses: the table is empty; cannot route a restock order")
    if not (-90 <= cluster_centroid_lat <= 90 and -180 <= cluster_centroid_lon <= 180):
        raise WarehouseError(
            f"centroid lat={cluster_centroid_lat}, lon={cluster_centroid_lon} is outside "
            "[-90, 90] x [-180, 180]"
        )
    bad = warehouses.filter(pl.col("lat").is_null() | pl.col("lon").is_null())
    if bad.height:
        raise WarehouseError(
            f"warehouses: {bad['warehouse_id'].to_list()} have no lat/lon; expected both"
        )
    try:
        coverage = shapely.from_wkt(warehouses["coverage_wkt"].to_numpy())
    except shapely.errors.ShapelyError as exc:
        raise WarehouseError(f"warehouses: coverage_wkt does not parse: {exc}") from exc
    covers = np.asarray(
        shapely.contains_xy(coverage, cluster_centroid_lon, cluster_centroid_lat), dtype=bool
    )
    distance = haversine_m(
        cluster_centroid_lat,
        cluster_centroid_lon,
        warehouses["lat"].to_numpy().astype(np.float64),
        warehouses["lon"].to_numpy().astype(np.float64),
    )
    how: Literal["coverage", "nearest"] = "coverage" if covers.any() else "nearest"
    candidates = np.where(covers if covers.any() else np.ones_like(covers), distance, np.inf)
    best = int(np.argmin(candidates))
    return WarehouseChoice(str(warehouses["warehouse_id"][best]), how, float(distance[best]))
