"""Small builders of input files for ingest tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

T0 = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)


def make_fixes(
    n: int = 10,
    *,
    technician_id: str = "tech-1",
    lat: float = 30.27,
    lon: float = 120.15,
    step_s: float = 5.0,
    step_deg: float = 0.00005,
    accuracy_m: float | None = 5.0,
    start: datetime = T0,
) -> list[dict[str, Any]]:
    return [
        {
            "technician_id": technician_id,
            "ts": (start + timedelta(seconds=i * step_s)).isoformat(),
            "lat": lat + i * step_deg,
            "lon": lon,
            "accuracy_m": accuracy_m,
        }
        for i in range(n)
    ]


def write_big_fixes(path: Path, n: int, *, technicians: int) -> Path:
    """A Parquet file of ``n`` fixes one second apart, spread over ``technicians`` ids: big
    enough that a writer killed mid-batch is caught inside its transaction."""
    pl.DataFrame(
        {
            "technician_id": [f"t{i % technicians}" for i in range(n)],
            "ts": pl.datetime_range(
                T0, T0 + timedelta(seconds=n - 1), "1s", eager=True, time_zone="UTC"
            ),
            "lat": 30.27,
            "lon": 120.15,
            "accuracy_m": 5.0,
        }
    ).write_parquet(path)
    return path


def make_events(
    ticket_id: str = "T1",
    start: datetime = T0,
    types: Iterable[str] = ("created", "assigned", "accepted", "closed"),
) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{ticket_id}-{i}",
            "ticket_id": ticket_id,
            "event_type": t,
            "ts": (start + timedelta(minutes=10 * i)).isoformat(),
            "actor": "tech-1",
        }
        for i, t in enumerate(types)
    ]


def write_rows(path: Path, rows: list[Mapping[str, Any]]) -> Path:
    """Write rows as the file's extension says: .csv, .jsonl or .parquet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    frame = pl.DataFrame([dict(r) for r in rows], infer_schema_length=None)
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path
