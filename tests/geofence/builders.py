"""Small builders of geofence test data: fixes, fences, arrivals, stops and UWB frames."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from geofence.distance import radii_of_curvature_m

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LAT0, LON0 = 60.0, 10.0


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    """The point ``east_m``/``north_m`` metres from ``(lat, lon)`` (local flat earth)."""
    m_m, n_m = radii_of_curvature_m(lat + 0.5 * north_m / 111_000.0)
    lat2 = lat + float(np.degrees(north_m / m_m))
    mid = 0.5 * (lat + lat2)
    _, n_mid = radii_of_curvature_m(mid)
    lon2 = lon + float(np.degrees(east_m / (n_mid * np.cos(np.radians(mid)))))
    del n_m
    return lat2, lon2


def make_fixes(
    offsets_m: Sequence[tuple[float, float]],
    *,
    technician_id: str = "tech-1",
    lat: float = LAT0,
    lon: float = LON0,
    step_s: float = 10.0,
    accuracy_m: float | Sequence[float | None] | None = 3.0,
    start: datetime = T0,
    mock_location: Sequence[bool] | None = None,
) -> pl.DataFrame:
    """Fixes at ``(east_m, north_m)`` offsets from ``(lat, lon)``, one every ``step_s``."""
    pts = [offset(lat, lon, e, n) for e, n in offsets_m]
    acc = list(accuracy_m) if isinstance(accuracy_m, Sequence) else [accuracy_m] * len(pts)
    frame = pl.DataFrame(
        {
            "technician_id": [technician_id] * len(pts),
            "ts": [start + timedelta(seconds=i * step_s) for i in range(len(pts))],
            "lat": [p[0] for p in pts],
            "lon": [p[1] for p in pts],
            "accuracy_m": acc,
            "speed_mps": [None] * len(pts),
            "heading_deg": [None] * len(pts),
        },
        schema_overrides={
            "ts": pl.Datetime("us", "UTC"),
            "accuracy_m": pl.Float64,
            "speed_mps": pl.Float64,
            "heading_deg": pl.Float64,
        },
    )
    if mock_location is not None:
        frame = frame.with_columns(pl.Series("mock_location", list(mock_location)))
    return frame


def make_fences(rows: Sequence[dict[str, object]]) -> pl.DataFrame:
    """Fence frame from partial rows (missing fields are null)."""
    full = [
        {
            "fence_id": r["fence_id"],
            "kind": r.get("kind", "circle"),
            "lat": r.get("lat"),
            "lon": r.get("lon"),
            "radius_m": r.get("radius_m"),
            "wkt": r.get("wkt"),
        }
        for r in rows
    ]
    return pl.DataFrame(
        full,
        schema={
            "fence_id": pl.String,
            "kind": pl.String,
            "lat": pl.Float64,
            "lon": pl.Float64,
            "radius_m": pl.Float64,
            "wkt": pl.String,
        },
    )


def square_wkt(lat: float, lon: float, half_m: float, hole_half_m: float | None = None) -> str:
    """WKT of a square of half-side ``half_m`` centred on ``(lat, lon)``, optional hole."""

    def ring(h: float) -> str:
        corners = [(-h, -h), (h, -h), (h, h), (-h, h), (-h, -h)]
        pts = [offset(lat, lon, e, n) for e, n in corners]
        return "(" + ", ".join(f"{p[1]!r} {p[0]!r}" for p in pts) + ")"

    rings = [ring(half_m)] + ([ring(hole_half_m)] if hole_half_m else [])
    return f"POLYGON({', '.join(rings)})"


def make_arrivals(rows: Sequence[dict[str, object]]) -> pl.DataFrame:
    """Arrival events; ``at_s`` is seconds after ``T0``; customer defaults to the origin."""
    full = [
        {
            "ticket_id": r.get("ticket_id", f"T{i}"),
            "event_id": r.get("event_id", f"E{i}"),
            "technician_id": r.get("technician_id", "tech-1"),
            "ts": T0 + timedelta(seconds=float(r.get("at_s", 0.0))),  # type: ignore[arg-type]
            "customer_lat": r.get("customer_lat", LAT0),
            "customer_lon": r.get("customer_lon", LON0),
            "site_id": r.get("site_id"),
        }
        for i, r in enumerate(rows)
    ]
    return pl.DataFrame(
        full,
        schema={
            "ticket_id": pl.String,
            "event_id": pl.String,
            "technician_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "customer_lat": pl.Float64,
            "customer_lon": pl.Float64,
            "site_id": pl.String,
        },
    )


STOP_COLUMNS_SCHEMA = {
    "technician_id": pl.String,
    "stop_id": pl.Int64,
    "start_ts": pl.Datetime("us", "UTC"),
    "end_ts": pl.Datetime("us", "UTC"),
    "n_fixes": pl.Int64,
    "centroid_lat": pl.Float64,
    "centroid_lon": pl.Float64,
    "centroid_se_m": pl.Float64,
    "diameter_m": pl.Float64,
    "duration_s": pl.Float64,
}


def make_stops(rows: Sequence[dict[str, object]] = ()) -> pl.DataFrame:
    """Stops with ``start_s``/``end_s`` after ``T0`` and ``east_m``/``north_m`` centroids."""
    full = []
    for i, r in enumerate(rows):
        lat, lon = offset(LAT0, LON0, float(r.get("east_m", 0.0)), float(r.get("north_m", 0.0)))  # type: ignore[arg-type]
        full.append(
            {
                "technician_id": r.get("technician_id", "tech-1"),
                "stop_id": i,
                "start_ts": T0 + timedelta(seconds=float(r.get("start_s", -300.0))),  # type: ignore[arg-type]
                "end_ts": T0 + timedelta(seconds=float(r.get("end_s", 300.0))),  # type: ignore[arg-type]
                "n_fixes": r.get("n_fixes", 10),
                "centroid_lat": lat,
                "centroid_lon": lon,
                "centroid_se_m": r.get("se_m", 0.5),
                "diameter_m": 5.0,
                "duration_s": 600.0,
            }
        )
    return pl.DataFrame(full, schema=STOP_COLUMNS_SCHEMA)


def make_uwb(rows: Sequence[dict[str, object]] = ()) -> pl.DataFrame:
    """UWB positions (already WGS84) at ``east_m``/``north_m`` from the origin."""
    full = []
    for r in rows:
        lat, lon = offset(LAT0, LON0, float(r.get("east_m", 0.0)), float(r.get("north_m", 0.0)))  # type: ignore[arg-type]
        full.append(
            {
                "technician_id": r.get("technician_id", "tech-1"),
                "site_id": r.get("site_id", "S1"),
                "ts": T0 + timedelta(seconds=float(r.get("at_s", 0.0))),  # type: ignore[arg-type]
                "lat": lat,
                "lon": lon,
                "error_m": r.get("error_m", 0.2),
            }
        )
    return pl.DataFrame(
        full,
        schema={
            "technician_id": pl.String,
            "site_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "lat": pl.Float64,
            "lon": pl.Float64,
            "error_m": pl.Float64,
        },
    )
