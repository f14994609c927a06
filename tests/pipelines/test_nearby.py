"""One meaning of "near the customer": the ticket page's checklist and replay see the same
devices, weather grid point and outages for the same visit."""

from __future__ import annotations

import pytest

from pipelines.store.gateway import Store
from pipelines.views.nearby import AT_CUSTOMER_M
from pipelines.views.replay import replay_bundle
from pipelines.views.ticket import checklist_inputs, ticket
from tests.pipelines.test_replay import (
    CUSTOMER,
    at,
    make_events,
    make_outage,
    make_ticket,
    offset,
    square_wkt,
    write,
)

# (device, metres north, metres east): inside and outside the radius, along both axes.
DEVICES = [
    ("D-N29", 29.0, 0.0),
    ("D-E29", 0.0, 29.5),  # a degree box without cos(latitude) left this one out
    ("D-E31", 0.0, 31.0),
    ("D-N31", 31.0, 0.0),
]
# Grid points 0.30° east and 0.28° north: east is nearer in metres (cos 30° = 0.87).
GRID_EAST = (CUSTOMER[0], round(CUSTOMER[1] + 0.30, 4))
GRID_NORTH = (round(CUSTOMER[0] + 0.28, 4), CUSTOMER[1])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    tables = {
        "tickets": [make_ticket("T-N", CUSTOMER, customer="cust-n")],
        "ticket_events": make_events("T-N", [("created", 0, "dispatch"), ("arrived", 30, "t")]),
        "iot_devices": [
            {"device_id": d, "customer_id": "other", "kind": "meter",
             "lat": offset(n, e)[0], "lon": offset(n, e)[1]}
            for d, n, e in DEVICES
        ],
        "iot_readings": [
            {"device_id": d, "ts": at(m), "metric": "vibration_rms", "value": 1.0,
             "unit": "mm/s"}
            for d, _, _ in DEVICES
            for m in (-60, 10, 25)
        ],
        "weather_obs": [
            {"grid_lat": g[0], "grid_lon": g[1], "ts": at(h), "variable": "precipitation",
             "value": v, "unit": "mm"}
            for g, v in ((GRID_EAST, 1.0), (GRID_NORTH, 9.0))
            for h in (0, 30, 60)
        ],
        "outages": [make_outage("OUT-N", square_wkt(CUSTOMER, 100), at(-60), None)],
    }  # fmt: skip
    path = write(tmp_path_factory.mktemp("nearby") / "ft.duckdb", tables)
    return Store(path, read_only=True)


def test_devices_within_the_radius_in_metres_on_both_pages(store: Store) -> None:
    t = ticket(store, "T-N", mask_personal=False)
    assert t is not None
    inputs = checklist_inputs(store, t, at(30))
    bundle = replay_bundle(store, "T-N", at(30))
    expected = {d for d, n, e in DEVICES if (n * n + e * e) ** 0.5 <= AT_CUSTOMER_M}
    assert set(inputs.iot["device_id"]) == expected == {"D-N29", "D-E29"}
    assert set(bundle.devices["device_id"]) == expected


def test_the_same_nearest_weather_grid_point_on_both_pages(store: Store) -> None:
    t = ticket(store, "T-N", mask_personal=False)
    assert t is not None
    inputs = checklist_inputs(store, t, at(30))
    bundle = replay_bundle(store, "T-N", at(30))
    assert set(inputs.weather["value"]) == {1.0}
    assert set(zip(bundle.weather["grid_lat"], bundle.weather["grid_lon"], strict=True)) == {
        GRID_EAST
    }


def test_the_same_covering_outage_on_both_pages(store: Store) -> None:
    t = ticket(store, "T-N", mask_personal=False)
    assert t is not None
    inputs = checklist_inputs(store, t, at(30))
    bundle = replay_bundle(store, "T-N", at(30))
    assert list(inputs.outages["outage_id"]) == list(bundle.outages["outage_id"]) == ["OUT-N"]
