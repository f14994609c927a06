"""Deliberately bad rows, so that a generated world exercises the ingest's named rules.

Each function appends or alters a few rows and records ``{file, row, rule}`` for each in
``bad`` (1-based data row numbers, as the ingest's ``_row``); ``manifest.expected`` is derived
from these records.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

TIMEZONE = "Asia/Shanghai"
BadRows = dict[str, list[dict[str, Any]]]


def plant_bad_tickets(frame: pl.DataFrame, bad: BadRows) -> pl.DataFrame:
    """Two tickets whose coordinates were exported in projected metres (UTM 51N-like)."""
    extra = frame.head(2).with_columns(
        pl.Series("ticket_id", ["TKT-900001", "TKT-900002"]),
        pl.Series("lat", [3_350_412.5, 3_351_020.0]),
        pl.Series("lon", [219_880.25, 221_004.75]),
        pl.lit("WGS84").alias("datum"),
    )
    for i in range(2):
        bad.setdefault("tickets", []).append(
            {"file": "tickets.csv", "row": frame.height + i + 1, "rule": "projected_coordinates"}
        )
    return pl.concat([frame, extra])


def plant_bad_events(frame: pl.DataFrame, rng: np.random.Generator, bad: BadRows) -> pl.DataFrame:
    accepted = frame.filter(pl.col("event_type") == "accepted")
    dups = accepted[np.sort(rng.choice(accepted.height, 2, replace=False)).tolist()]
    created = frame.filter(pl.col("event_type") == "created")
    victims = created[np.sort(rng.choice(created.height, 2, replace=False)).tolist()]
    early = (
        pl.Series([victims["ts"][0]])
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%:z")
        .dt.offset_by("-2h")
        .dt.convert_time_zone(TIMEZONE)
        .dt.strftime("%Y-%m-%dT%H:%M:%S%:z")
    )
    extra = pl.DataFrame(
        {
            "event_id": [f"{victims['ticket_id'][0]}-99", f"{victims['ticket_id'][1]}-98"],
            "ticket_id": victims["ticket_id"].to_list(),
            "event_type": ["closed", "customer_chased"],
            "ts": [early[0], "yesterday 3pm"],
            "actor": ["dispatcher", "legacy-import"],
            "source": ["demo", "demo"],
            "note": ["back-filled by legacy import", None],
        }
    )
    out = pl.concat([frame, dups, extra])
    rules = ["duplicate", "duplicate", "closed_before_created", "type"]
    for i, rule in enumerate(rules):
        bad.setdefault("events", []).append(
            {"file": "events.csv", "row": frame.height + i + 1, "rule": rule}
        )
    return out


def plant_bad_fixes(frame: pl.DataFrame, name: str, bad: BadRows) -> pl.DataFrame:
    """5 lat out of range, 3 single-fix spikes of ~3 km, 2 fixes without accuracy."""
    tech = frame["technician_id"].to_numpy()
    ts = frame["ts"].to_physical().to_numpy() / 1000.0
    ok = np.zeros(frame.height, dtype=bool)
    ok[1:-1] = (tech[:-2] == tech[1:-1]) & (tech[2:] == tech[1:-1])
    ok[1:-1] &= (np.diff(ts)[:-1] <= 10.5) & (np.diff(ts)[1:] <= 10.5)
    cand = np.flatnonzero(ok)
    picks = cand[np.linspace(0, len(cand) - 1, 12).astype(int)[1:-1]]
    lat = frame["lat"].to_numpy().copy()
    acc = frame["accuracy_m"].to_numpy().copy()
    lat[picks[:5]] += 90.0
    lat[picks[5:8]] += 0.027
    acc[picks[8:]] = np.nan
    rules = ["lat_lon_range"] * 5 + ["speed_jump"] * 3 + ["missing_accuracy"] * 2
    for p, rule in zip(picks, rules, strict=True):
        bad.setdefault("gps", []).append({"file": name, "row": int(p) + 1, "rule": rule})
    return frame.with_columns(pl.Series("lat", lat), pl.Series("accuracy_m", acc).fill_nan(None))
