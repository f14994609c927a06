"""The stop detector's output columns (``geofence.stops``), importable without compiling or
loading the detector (numba): the store's kept stops and their readers use them."""

from __future__ import annotations

from typing import Final

import polars as pl

STOP_SCHEMA: Final = pl.Schema(
    {
        "technician_id": pl.String(),
        "stop_id": pl.Int64(),
        "start_ts": pl.Datetime("us", "UTC"),
        "end_ts": pl.Datetime("us", "UTC"),
        "n_fixes": pl.Int64(),
        "centroid_lat": pl.Float64(),
        "centroid_lon": pl.Float64(),
        "centroid_se_m": pl.Float64(),
        "diameter_m": pl.Float64(),
        "duration_s": pl.Float64(),
    }
)
