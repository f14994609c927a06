"""Kept window stops: a technician's stops are detected again only when its fixes changed.

The runner detects stops on each technician's window fixes (its arrivals' merged evidence
windows, ``runner.load_evidence``). Those stops are a function of exactly those fixes and the
stop thresholds, so they are kept: ``window_stops`` holds each technician's last detected
stops and ``window_stop_marks`` what they were detected on:

- ``stop_rule``: the detector and its thresholds (``stop_rule``);
- ``n_fixes`` and ``fixes_digest``: the number of window fixes and an order-free XOR of a
  64-bit hash of each one's ``technician_id, ts, lat, lon, accuracy_m`` (polars ``hash_rows``
  with fixed seeds: stable within a polars version; another version simply detects again).

``kept_window_stops`` digests the fixes just loaded (~0.05 s for 2M), reuses the stops of every
technician whose mark matches, runs the detector on the others only (a new arrival, a late or
corrected fix, a deleted batch, other thresholds, a ``--since`` subset) and replaces their
stops and marks in one transaction. The stops it returns are, row for row, the detector's on
the same fixes: reuse changes no verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from geofence.stop_schema import STOP_SCHEMA as DETECTOR_SCHEMA
from geofence.verdict import ArrivalThresholds
from pipelines.store.gateway import Store, Tx

DETECTOR = "geofence.stops/movingpandas-0.23"
# the detector's columns as the table keeps them (no stop_id: numbered per run)
STOP_SCHEMA = pl.Schema({k: v for k, v in DETECTOR_SCHEMA.items() if k != "stop_id"})
STOP_COLUMNS = tuple(STOP_SCHEMA.names())
_DIGESTED = ("technician_id", "ts", "lat", "lon", "accuracy_m")
_SEED = 0x5EED_F1E1D  # fixed: the same fixes, the same digest


@dataclass(frozen=True)
class StopReuse:
    kept: int  # technicians whose stops came from the store
    detected: int  # technicians whose stops were detected (and kept for next time)
    detected_fixes: int  # the window fixes those detections ran on


def stop_rule(th: ArrivalThresholds) -> str:
    """The detector and its thresholds, as kept beside every technician's stops."""
    return (
        f"{DETECTOR}; max_diameter_m={th.stop_max_diameter_m!r}; "
        f"min_duration_s={th.stop_min_duration.total_seconds()!r}"
    )


def kept_marks(store: Store) -> pl.DataFrame:
    """``technician_id, stop_rule, n_fixes, fixes_digest`` of every technician's kept stops
    (nothing bound: DuckDB binds no Python value, so pandas is not imported for it)."""
    return store.query(
        "SELECT technician_id, stop_rule, n_fixes, fixes_digest FROM window_stop_marks"
    )


def expects_detection(marks: pl.DataFrame, th: ArrivalThresholds) -> bool:
    """Whether no technician's stops were kept under this rule (a first run, other stop
    thresholds): then every technician will be detected, and the detector can be loaded
    while the evidence is read."""
    return stop_rule(th) not in marks["stop_rule"].to_list()


def fix_digests(fixes: pl.DataFrame) -> pl.DataFrame:
    """``technician_id, n_fixes, fixes_digest`` of window fixes, one row per technician."""
    hashed = fixes.select(_DIGESTED).hash_rows(seed=_SEED)
    return (
        fixes.select("technician_id")
        .with_columns(hashed.alias("_h"))
        .group_by("technician_id")
        .agg(
            pl.len().cast(pl.Int64).alias("n_fixes"),
            pl.col("_h").bitwise_xor().alias("fixes_digest"),
        )
    )


def kept_window_stops(
    store: Store,
    fixes: pl.DataFrame,
    th: ArrivalThresholds,
    *,
    marks: pl.DataFrame,
    detect: Callable[[pl.DataFrame, ArrivalThresholds], pl.DataFrame],
) -> tuple[pl.DataFrame, StopReuse]:
    """The window stops of ``fixes`` (``STOP_COLUMNS``, by technician and start): kept ones
    where the technician's fixes and the rule are those they were detected on (``marks``:
    ``kept_marks``), ``detect`` (``runner.window_stops``) for the rest, which are then kept."""
    digests = fix_digests(fixes)
    rule = stop_rule(th)
    same = (
        digests.join(marks, on="technician_id", how="inner", suffix="_kept")
        .filter(
            (pl.col("stop_rule") == rule)
            & (pl.col("n_fixes") == pl.col("n_fixes_kept"))
            & (pl.col("fixes_digest") == pl.col("fixes_digest_kept"))
        )
        .select("technician_id")
    )
    stale = digests.join(same, on="technician_id", how="anti").sort("technician_id")
    kept = pl.DataFrame(schema=STOP_SCHEMA)
    if same.height:
        kept = store.query(f"SELECT {', '.join(STOP_COLUMNS)} FROM window_stops").join(
            same, on="technician_id", how="semi"
        )
    found = pl.DataFrame(schema=STOP_SCHEMA)
    if stale.height:
        mine = (  # every technician stale (a first run): the frame itself, not a copy
            fixes
            if stale.height == digests.height
            else fixes.join(stale.select("technician_id"), on="technician_id", how="semi")
        )
        found = detect(mine, th).select(STOP_COLUMNS)
        store.atomic(lambda tx: _keep(tx, stale, found, rule))
    stops = pl.concat([kept.cast(dict(STOP_SCHEMA)), found]).sort(  # type: ignore[arg-type]
        "technician_id", "start_ts", maintain_order=True
    )
    detected_fixes = int(stale["n_fixes"].sum()) if stale.height else 0
    return stops, StopReuse(same.height, stale.height, detected_fixes)


def _keep(tx: Tx, stale: pl.DataFrame, found: pl.DataFrame, rule: str) -> None:
    """Replace the stale technicians' kept stops and marks (one transaction)."""
    per_tech = found.group_by("technician_id").len("n_stops")
    marks = stale.join(per_tech, on="technician_id", how="left").select(
        "technician_id",
        pl.lit(rule).alias("stop_rule"),
        "n_fixes",
        pl.col("fixes_digest").cast(pl.UInt64),
        pl.col("n_stops").fill_null(0).cast(pl.Int64),
        pl.lit(datetime.now(UTC)).dt.convert_time_zone("UTC").alias("computed_at"),
    )
    tx.execute(
        "DELETE FROM window_stops WHERE technician_id IN (SELECT unnest(?::VARCHAR[]))",
        [stale["technician_id"].to_list()],
    )
    tx.insert_frame("window_stops", found)
    tx.replace_rows("window_stop_marks", marks, key="technician_id")
