"""Restock quantities and warehouse routing."""

from __future__ import annotations

import polars as pl
import pytest

from geofence.errors import GeofenceError
from geofence.restock import (
    RestockRule,
    RestockRuleError,
    WarehouseChoice,
    WarehouseError,
    choose_warehouse,
    haversine_m,
    order_quantity,
)

QUEENS_BOX = "POLYGON ((-73.96 40.54, -73.70 40.54, -73.70 40.80, -73.96 40.80, -73.96 40.54))"
BRONX_BOX = "POLYGON ((-73.93 40.79, -73.75 40.79, -73.75 40.92, -73.93 40.92, -73.93 40.79))"


def make_rule(**overrides: object) -> RestockRule:
    values: dict[str, object] = {
        "tag": "refrigerant_leak",
        "sku": "R410A-25LB",
        "usage_per_ticket": 1.5,
        "unit": "kg",
    }
    values.update(overrides)
    return RestockRule(**values)  # type: ignore[arg-type]


def make_warehouses(*rows: tuple[str, float, float, str | None]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "warehouse_id": pl.String,
            "lat": pl.Float64,
            "lon": pl.Float64,
            "coverage_wkt": pl.String,
        },
        orient="row",
    )


@pytest.mark.parametrize(
    ("member_count", "overrides", "quantity"),
    [
        (0, {}, 0.0),
        (20, {}, 30.0),
        (25, {"usage_per_ticket": 0.1}, 2.5),
        (3, {"usage_per_ticket": 0.1, "pack_size": 0.3}, 0.3),  # float noise is not a new pack
        (25, {"pack_size": 10.0}, 40.0),
        (20, {"usage_per_ticket": 1.0, "unit": "each", "pack_size": 6.0}, 24.0),
    ],
)
def test_order_quantity(member_count: int, overrides: dict[str, object], quantity: float) -> None:
    assert order_quantity(member_count, make_rule(**overrides)) == pytest.approx(quantity)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"usage_per_ticket": 0.0}, "usage_per_ticket=0.0 kg is not > 0"),
        ({"usage_per_ticket": float("nan")}, "usage_per_ticket=nan"),
        ({"pack_size": -1.0}, "pack_size=-1.0 kg"),
        ({"sku": ""}, "must be non-empty"),
    ],
)
def test_restock_rule_rejects(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(RestockRuleError) as info:
        make_rule(**overrides)
    assert fragment in str(info.value)
    assert isinstance(info.value, GeofenceError)
    assert isinstance(info.value, ValueError)


def test_order_quantity_rejects_negative_count() -> None:
    with pytest.raises(RestockRuleError, match="member_count=-1"):
        order_quantity(-1, make_rule())


WAREHOUSES = make_warehouses(
    ("WH-QNS", 40.72, -73.84, QUEENS_BOX),
    ("WH-BRX", 40.85, -73.86, BRONX_BOX),
    ("WH-NJ", 40.73, -74.17, None),
)


@pytest.mark.parametrize(
    ("lat", "lon", "warehouse_id", "how"),
    [
        (40.70, -73.80, "WH-QNS", "coverage"),
        (40.88, -73.90, "WH-BRX", "coverage"),
        (40.795, -73.86, "WH-BRX", "coverage"),  # both cover: the nearer one wins
        (40.72, -74.10, "WH-NJ", "nearest"),  # no coverage: nearest by metres
        (41.20, -73.80, "WH-BRX", "nearest"),
    ],
)
def test_choose_warehouse(lat: float, lon: float, warehouse_id: str, how: str) -> None:
    choice = choose_warehouse(lat, lon, WAREHOUSES)
    assert isinstance(choice, WarehouseChoice)
    assert (choice.warehouse_id, choice.how) == (warehouse_id, how)
    row = WAREHOUSES.filter(pl.col("warehouse_id") == warehouse_id).row(0, named=True)
    assert choice.distance_m == pytest.approx(
        float(
            haversine_m(
                lat, lon, pl.Series([row["lat"]]).to_numpy(), pl.Series([row["lon"]]).to_numpy()
            )[0]
        )
    )


def test_haversine_one_degree_of_latitude_is_about_111_km() -> None:
    d = haversine_m(0.0, 0.0, pl.Series([1.0]).to_numpy(), pl.Series([0.0]).to_numpy())
    assert d[0] == pytest.approx(111_195, rel=1e-3)


@pytest.mark.parametrize(
    ("warehouses", "lat", "fragment"),
    [
        (WAREHOUSES.head(0), 40.7, "the table is empty"),
        (WAREHOUSES.drop("coverage_wkt"), 40.7, "missing column(s) ['coverage_wkt']"),
        (WAREHOUSES, 95.0, "lat=95.0"),
        (make_warehouses(("WH-X", 40.7, -73.9, "POLYGON ((nonsense")), 40.7, "does not parse"),
        (make_warehouses(("WH-X", None, -73.9, None)), 40.7, "['WH-X'] have no lat/lon"),  # type: ignore[arg-type]
    ],
)
def test_choose_warehouse_rejects(warehouses: pl.DataFrame, lat: float, fragment: str) -> None:
    with pytest.raises(WarehouseError) as info:
        choose_warehouse(lat, -73.9, warehouses)
    assert fragment in str(info.value)
