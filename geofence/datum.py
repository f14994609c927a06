"""WGS84 ↔ GCJ-02 ↔ BD-09 conversions, vectorized (degrees in, degrees out).

GCJ-02 ("Mars coordinates") is the obfuscated datum mandated for maps in mainland China;
BD-09 is Baidu's further offset of GCJ-02. The forward formulas are the public
"eviltransform" ones (Krasovsky ellipsoid constants ``a = 6378245 m``, ``ee``). The inverses
have no closed form: ``gcj02_to_wgs84`` and ``bd09_to_wgs84`` iterate the forward transform
(fixed-point on the offset) until the round trip is within 1e-9° (≈ 0.1 mm), far inside the
required 1 cm. Outside the rough China bounding box of eviltransform GCJ-02 equals WGS84
(BD-09 still applies its shift, as Baidu does).
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from geofence.errors import DatumError

FloatArray = npt.NDArray[np.float64]
Datum = Literal["WGS84", "GCJ02", "BD09"]

_A_M: Final = 6_378_245.0
_EE: Final = 0.00669342162296594323
_X_PI: Final = np.pi * 3000.0 / 180.0
_TOL_DEG: Final = 1e-9
_MAX_ITER: Final = 30

_SPELLINGS: Final[dict[str, Datum]] = {
    "wgs84": "WGS84",
    "wgs": "WGS84",
    "epsg4326": "WGS84",
    "gcj02": "GCJ02",
    "gcj": "GCJ02",
    "bd09": "BD09",
    "bd09ll": "BD09",
}


def normalize_datum(name: str) -> Datum:
    """Canonical datum name for spellings such as ``"gcj-02"``, ``"BD09"``, ``"wgs 84"``."""
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    try:
        return _SPELLINGS[key]
    except KeyError:
        raise DatumError(
            f"datum={name!r} is not recognised; expected one of WGS84, GCJ-02, BD-09 "
            "(case and '-' are ignored)"
        ) from None


def _arrays(lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    lat_a, lon_a = np.broadcast_arrays(
        np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    )
    return lat_a.astype(np.float64), lon_a.astype(np.float64)


def out_of_china(lat: npt.ArrayLike, lon: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """eviltransform's bounding box test: True where GCJ-02 equals WGS84."""
    lat_a, lon_a = _arrays(lat, lon)
    return np.asarray((lon_a < 72.004) | (lon_a > 137.8347) | (lat_a < 0.8293) | (lat_a > 55.8271))


def _gcj_delta_deg(lat: FloatArray, lon: FloatArray) -> tuple[FloatArray, FloatArray]:
    x, y = lon - 105.0, lat - 35.0
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    d_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    d_lat += common
    d_lat += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    d_lat += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    d_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    d_lon += common
    d_lon += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    d_lon += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    rad_lat = np.radians(lat)
    magic = 1.0 - _EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A_M * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    d_lon = (d_lon * 180.0) / (_A_M / sqrt_magic * np.cos(rad_lat) * np.pi)
    outside = out_of_china(lat, lon)
    return np.where(outside, 0.0, d_lat), np.where(outside, 0.0, d_lon)


def wgs84_to_gcj02(lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """WGS84 → GCJ-02 (degrees)."""
    lat_a, lon_a = _arrays(lat, lon)
    d_lat, d_lon = _gcj_delta_deg(lat_a, lon_a)
    return lat_a + d_lat, lon_a + d_lon


def gcj02_to_bd09(lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 → BD-09 (degrees), Baidu's public formula."""
    y, x = _arrays(lat, lon)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return z * np.sin(theta) + 0.006, z * np.cos(theta) + 0.0065


def bd09_to_gcj02(lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """BD-09 → GCJ-02 (degrees), the public approximate inverse (error ~1e-6°)."""
    lat_a, lon_a = _arrays(lat, lon)
    x, y = lon_a - 0.0065, lat_a - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.sin(theta), z * np.cos(theta)


def wgs84_to_bd09(lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """WGS84 → BD-09 (degrees)."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lat, lon))


def _invert(
    forward: str, lat: FloatArray, lon: FloatArray, guess: tuple[FloatArray, FloatArray]
) -> tuple[FloatArray, FloatArray]:
    """Fixed-point inversion of ``forward`` (its Jacobian is ≈ identity) to ``_TOL_DEG``."""
    fn = wgs84_to_gcj02 if forward == "gcj" else wgs84_to_bd09
    w_lat, w_lon = guess[0].copy(), guess[1].copy()
    for _ in range(_MAX_ITER):
        f_lat, f_lon = fn(w_lat, w_lon)
        e_lat, e_lon = f_lat - lat, f_lon - lon
        w_lat -= e_lat
        w_lon -= e_lon
        worst = np.nanmax(np.abs(np.concatenate([e_lat.ravel(), e_lon.ravel()])), initial=0.0)
        if worst < _TOL_DEG:
            break
    return w_lat, w_lon


def gcj02_to_wgs84(lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 → WGS84 (degrees) by iteration; round trip error < 1e-9° (≈ 0.1 mm)."""
    lat_a, lon_a = _arrays(lat, lon)
    return _invert("gcj", lat_a, lon_a, (lat_a, lon_a))


def bd09_to_wgs84(lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """BD-09 → WGS84 (degrees) by iteration; round trip error < 1e-9° (≈ 0.1 mm)."""
    lat_a, lon_a = _arrays(lat, lon)
    g_lat, g_lon = bd09_to_gcj02(lat_a, lon_a)
    return _invert("bd", lat_a, lon_a, gcj02_to_wgs84(g_lat, g_lon))


def to_wgs84(
    lat: npt.ArrayLike, lon: npt.ArrayLike, datum: Datum | str
) -> tuple[FloatArray, FloatArray]:
    """Convert ``(lat, lon)`` in ``datum`` (any accepted spelling) to WGS84 degrees."""
    canonical = normalize_datum(datum)
    if canonical == "GCJ02":
        return gcj02_to_wgs84(lat, lon)
    if canonical == "BD09":
        return bd09_to_wgs84(lat, lon)
    return _arrays(lat, lon)


def from_wgs84(
    lat: npt.ArrayLike, lon: npt.ArrayLike, datum: Datum | str
) -> tuple[FloatArray, FloatArray]:
    """Convert WGS84 ``(lat, lon)`` degrees to ``datum`` (any accepted spelling)."""
    canonical = normalize_datum(datum)
    if canonical == "GCJ02":
        return wgs84_to_gcj02(lat, lon)
    if canonical == "BD09":
        return wgs84_to_bd09(lat, lon)
    return _arrays(lat, lon)
