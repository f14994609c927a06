"""WGS84 ↔ GCJ-02 ↔ BD-09: round trips, spellings, and the arrival a naive check would miss."""

from __future__ import annotations

import numpy as np
import pytest

from geofence.datum import (
    bd09_to_wgs84,
    from_wgs84,
    gcj02_to_wgs84,
    normalize_datum,
    to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from geofence.distance import local_distance_m
from geofence.errors import DatumError, GeofenceError

HANGZHOU = (30.27, 120.15)


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("wgs84", "WGS84"),
        ("WGS-84", "WGS84"),
        ("gcj-02", "GCJ02"),
        ("GCJ02", "GCJ02"),
        ("bd-09", "BD09"),
        ("BD09", "BD09"),
    ],
)
def test_datum_spellings(spelling: str, expected: str) -> None:
    assert normalize_datum(spelling) == expected


@pytest.mark.parametrize("bad", ["", "utm", "gcj-03", "EPSG:3857"])
def test_unknown_datum_raises_a_value_error(bad: str) -> None:
    with pytest.raises(DatumError, match="expected one of WGS84") as err:
        to_wgs84(30.0, 120.0, bad)
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, GeofenceError)


def test_hangzhou_gcj_offset_is_hundreds_of_metres() -> None:
    g_lat, g_lon = wgs84_to_gcj02(*HANGZHOU)
    assert 300.0 < local_distance_m(HANGZHOU[0], HANGZHOU[1], float(g_lat), float(g_lon)) < 600.0


def test_round_trips_are_below_one_centimetre_across_china() -> None:
    rng = np.random.default_rng(3)
    lat = rng.uniform(18.0, 53.0, 20_000)
    lon = rng.uniform(74.0, 134.0, 20_000)
    for forward, back in ((wgs84_to_gcj02, gcj02_to_wgs84), (wgs84_to_bd09, bd09_to_wgs84)):
        f_lat, f_lon = forward(lat, lon)
        b_lat, b_lon = back(f_lat, f_lon)
        assert np.max(local_distance_m(lat, lon, b_lat, b_lon)) < 0.01


@pytest.mark.parametrize("datum", ["GCJ02", "BD09", "WGS84"])
def test_to_wgs84_inverts_from_wgs84(datum: str) -> None:
    lat, lon = from_wgs84(np.array([HANGZHOU[0]]), np.array([HANGZHOU[1]]), datum)
    back = to_wgs84(lat, lon, datum)
    assert local_distance_m(HANGZHOU[0], HANGZHOU[1], back[0], back[1])[0] < 0.01


def test_outside_china_gcj_equals_wgs() -> None:
    lat, lon = wgs84_to_gcj02(np.array([60.39, 48.85]), np.array([5.32, 2.35]))
    np.testing.assert_array_equal(lat, [60.39, 48.85])
    np.testing.assert_array_equal(lon, [5.32, 2.35])


def test_gcj_address_vs_wgs_fix_naive_rejects_a_correct_arrival() -> None:
    """The customer address came from a Chinese map (GCJ-02); the phone fix is WGS84."""
    true_lat, true_lon = HANGZHOU  # the technician really is at the door (WGS84 fix)
    addr_lat, addr_lon = wgs84_to_gcj02(true_lat, true_lon)  # what the map geocoder stored
    naive = local_distance_m(float(addr_lat), float(addr_lon), true_lat, true_lon)
    assert naive > 300.0  # naive comparison: "hundreds of metres away", rejected
    w_lat, w_lon = to_wgs84(addr_lat, addr_lon, "gcj-02")
    assert local_distance_m(float(w_lat), float(w_lon), true_lat, true_lon) < 0.01
