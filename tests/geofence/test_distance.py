"""Local flat-earth distance vs the exact geodesic, and why haversine is not enough at 5 m."""

from __future__ import annotations

import numpy as np
import pytest

from geofence.distance import (
    enu_offsets_m,
    geodesic_distance_m,
    haversine_m,
    local_distance_m,
)


def _random_pairs(lat0: float, n: int, max_m: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    lat1 = lat0 + rng.uniform(-0.5, 0.5, n)
    lon1 = rng.uniform(-179.0, 179.0, n)
    dist = rng.uniform(0.0, max_m, n)
    az = rng.uniform(0.0, 360.0, n)
    from pyproj import Geod

    lon2, lat2, _ = Geod(ellps="WGS84").fwd(lon1, lat1, az, dist)
    return lat1, lon1, np.asarray(lat2), np.asarray(lon2), dist


@pytest.mark.parametrize("lat0", [-66.0, -33.0, 0.0, 30.27, 51.5, 60.4, 70.0])
def test_local_distance_matches_geodesic_below_1_mm(lat0: float) -> None:
    lat1, lon1, lat2, lon2, dist = _random_pairs(lat0, 15_000, 50.0, seed=int(lat0 * 10) + 1000)
    exact = geodesic_distance_m(lat1, lon1, lat2, lon2)
    np.testing.assert_allclose(exact, dist, atol=1e-6)
    assert np.max(np.abs(local_distance_m(lat1, lon1, lat2, lon2) - exact)) < 1e-3


def test_haversine_puts_pairs_on_the_wrong_side_of_5_m_but_local_does_not() -> None:
    lat1, lon1, lat2, lon2, _ = _random_pairs(45.0, 100_000, 6.0, seed=7)
    lat1 = np.concatenate([lat1, lat1 + 15.0])  # also high latitudes
    lat2 = np.concatenate([lat2, lat2 + 15.0])
    lon1, lon2 = np.tile(lon1, 2), np.tile(lon2, 2)
    exact = geodesic_distance_m(lat1, lon1, lat2, lon2)
    band = (exact > 4.0) & (exact < 6.0)
    truth = exact[band] <= 5.0
    hav_wrong = int(np.sum((haversine_m(lat1, lon1, lat2, lon2)[band] <= 5.0) != truth))
    local_wrong = int(np.sum((local_distance_m(lat1, lon1, lat2, lon2)[band] <= 5.0) != truth))
    assert local_wrong == 0
    assert hav_wrong > 0  # haversine's sphere is off by up to ~0.5 %


@pytest.mark.parametrize(
    ("lat", "lon", "lat0", "lon0", "east", "north"),
    [
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        (0.0, 0.001, 0.0, 0.0, 111.3195, 0.0),
        (0.001, 0.0, 0.0, 0.0, 0.0, 110.5743),
        (0.0, -179.9995, 0.0, 179.9995, 111.3195, 0.0),  # across the antimeridian
    ],
)
def test_enu_offsets_table(
    lat: float, lon: float, lat0: float, lon0: float, east: float, north: float
) -> None:
    e, n = enu_offsets_m(lat, lon, lat0, lon0)
    assert float(e) == pytest.approx(east, abs=1e-3)
    assert float(n) == pytest.approx(north, abs=1e-3)


def test_scalars_in_floats_out() -> None:
    d = local_distance_m(60.0, 10.0, 60.0, 10.0001)
    assert isinstance(d, float)
    assert isinstance(haversine_m(60.0, 10.0, 60.0, 10.0001), float)
    assert d == pytest.approx(float(geodesic_distance_m(60.0, 10.0, 60.0, 10.0001)), abs=1e-6)


def test_nan_propagates() -> None:
    out = local_distance_m(np.array([np.nan, 1.0]), 0.0, 1.0, 0.0)
    assert np.isnan(out[0])
    assert out[1] == 0.0
