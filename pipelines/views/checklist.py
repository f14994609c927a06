"""Preparation checklist: named, explainable rules. Pure: frames in, items out.

Each rule looks at one kind of evidence about the visit address and, when it fires, returns an
item with the action, a one-line reason and the data that triggered it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

# ISO 10816-3 zone C/D boundary for medium machines (velocity RMS, mm/s).
VIBRATION_BAND_MM_S = 7.1
VIBRATION_BASELINE_FACTOR = 2.0
RSSI_DROP_DB = 15.0
HEAVY_RAIN_MM_H = 7.6  # AMS glossary: heavy rain is more than 7.6 mm per hour
RECENT = timedelta(hours=24)
# Ticket tags that name a discontinued unit whose parts the vans do not stock.
LEGACY_UNIT_TAGS: tuple[str, ...] = ("legacy_unit",)


@dataclass(frozen=True)
class ChecklistItem:
    rule: str
    action: str
    why: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChecklistInputs:
    """Everything the rules may look at, already narrowed to the visit's address and time."""

    visit_ts: datetime
    iot: pl.DataFrame  # device_id, kind, ts, metric, value, unit
    outages: pl.DataFrame  # outage_id, cause, start_ts, end_ts, customers_affected
    weather: pl.DataFrame  # ts, variable, value, unit (nearest grid point, around the visit)
    earlier_parts: pl.DataFrame  # ticket_id, ts, note (parts_requested at the same address)
    tags: tuple[str, ...] = ()  # the ticket's own tags, known when it was created


def _metric(frame: pl.DataFrame, *needles: str) -> pl.DataFrame:
    if frame.height == 0:
        return frame
    lowered = pl.col("metric").str.to_lowercase()
    cond = pl.lit(False)
    for needle in needles:
        cond = cond | lowered.str.contains(needle, literal=True)
    return frame.filter(cond)


def vibration_anomaly(inp: ChecklistInputs) -> ChecklistItem | None:
    """Vibration above the ISO band, or above twice its own earlier median, in the last 24 h."""
    vib = _metric(inp.iot, "vib")
    if vib.height == 0:
        return None
    recent = vib.filter(pl.col("ts") >= inp.visit_ts - RECENT)
    before = vib.filter(pl.col("ts") < inp.visit_ts - RECENT)
    if recent.height == 0:
        return None
    peak = float(recent["value"].max())  # type: ignore[arg-type]
    baseline = float(before["value"].median()) if before.height else None  # type: ignore[arg-type]
    over_band = peak > VIBRATION_BAND_MM_S
    over_base = (
        baseline is not None and baseline > 0 and peak > VIBRATION_BASELINE_FACTOR * baseline
    )
    if not (over_band or over_base):
        return None
    row = recent.sort("value").row(-1, named=True)
    return ChecklistItem(
        "iot_vibration_band",
        "Bring a vibration analyser",
        f"vibration peaked at {peak:.1f} in the last 24 h (band {VIBRATION_BAND_MM_S} mm/s"
        + (f", earlier median {baseline:.1f}" if baseline is not None else "")
        + ")",
        {
            "device": row["device_id"],
            "metric": row["metric"],
            "peak": round(peak, 2),
            "unit": row.get("unit"),
            "at": row["ts"],
            "baseline_median": None if baseline is None else round(baseline, 2),
        },
    )


def rssi_drop(inp: ChecklistInputs) -> ChecklistItem | None:
    """Wi-Fi RSSI in the last 24 h at least ``RSSI_DROP_DB`` below its earlier median."""
    rssi = _metric(inp.iot, "rssi", "wifi")
    recent = rssi.filter(pl.col("ts") >= inp.visit_ts - RECENT) if rssi.height else rssi
    before = rssi.filter(pl.col("ts") < inp.visit_ts - RECENT) if rssi.height else rssi
    if recent.height == 0 or before.height == 0:
        return None
    now_db = float(recent["value"].median())  # type: ignore[arg-type]
    was_db = float(before["value"].median())  # type: ignore[arg-type]
    if was_db - now_db < RSSI_DROP_DB:
        return None
    return ChecklistItem(
        "iot_rssi_drop",
        "Bring a Zigbee debugger",
        f"Wi-Fi RSSI fell from {was_db:.0f} dBm to {now_db:.0f} dBm (≥ {RSSI_DROP_DB:g} dB)",
        {
            "device": recent["device_id"][0],
            "median_before_dbm": round(was_db, 1),
            "median_last_24h_dbm": round(now_db, 1),
        },
    )


def active_outage(inp: ChecklistInputs) -> ChecklistItem | None:
    """An outage polygon covers the address at the visit time."""
    if inp.outages.height == 0:
        return None
    row = inp.outages.row(0, named=True)
    return ChecklistItem(
        "active_outage",
        "Call the customer before departing",
        f"outage {row['outage_id']} covers the address"
        + (f" ({row['cause']})" if row.get("cause") else ""),
        {
            "outage": row["outage_id"],
            "since": row["start_ts"],
            "until": row.get("end_ts"),
            "customers_affected": row.get("customers_affected"),
            "outages": inp.outages.height,
        },
    )


def heavy_rain(inp: ChecklistInputs) -> ChecklistItem | None:
    """Forecast or observed precipitation of at least ``HEAVY_RAIN_MM_H`` around the visit."""
    if inp.weather.height == 0:
        return None
    row = inp.weather.sort("value").row(-1, named=True)
    if row["value"] is None or row["value"] < HEAVY_RAIN_MM_H:
        return None
    return ChecklistItem(
        "heavy_rain",
        "Heavy rain at the visit hour: waterproofs, allow extra travel time",
        f"{row['variable']} {row['value']:.1f} {row.get('unit') or 'mm/h'} at {row['ts']:%H:%M}",
        {
            "variable": row["variable"],
            "value": row["value"],
            "unit": row.get("unit"),
            "at": row["ts"],
        },
    )


def earlier_parts(inp: ChecklistInputs) -> list[ChecklistItem]:
    """Earlier tickets at this address needed a revisit for parts: bring those parts."""
    items = []
    for note, group in inp.earlier_parts.group_by("note", maintain_order=True):
        part = note[0] or "the part requested before"
        tickets = sorted(set(group["ticket_id"].to_list()))
        items.append(
            ChecklistItem(
                "earlier_parts_revisit",
                f"Bring {part}",
                f"{len(tickets)} earlier ticket(s) here needed a revisit for parts",
                {"tickets": ", ".join(tickets), "last_requested": group["ts"].max()},
            )
        )
    return items


def legacy_unit_parts(inp: ChecklistInputs) -> ChecklistItem | None:
    """The ticket is for a discontinued unit: the van will not carry its parts."""
    found = [tag for tag in inp.tags if tag in LEGACY_UNIT_TAGS]
    if not found:
        return None
    return ChecklistItem(
        "legacy_unit_parts",
        "Order the unit's parts before departing",
        f"tagged {found[0]}: a discontinued model whose parts are not stocked on the vans",
        {"tag": found[0]},
    )


SINGLE_RULES: tuple[Callable[[ChecklistInputs], ChecklistItem | None], ...] = (
    vibration_anomaly,
    rssi_drop,
    active_outage,
    heavy_rain,
    legacy_unit_parts,
)


def build_checklist(inp: ChecklistInputs) -> list[ChecklistItem]:
    """All rules in order; an empty list means nothing special to prepare."""
    items = [item for rule in SINGLE_RULES if (item := rule(inp)) is not None]
    return items + earlier_parts(inp)
