"""Write a batch of edge/hub CloudEvents into a store, idempotently, in one transaction.

The same writer serves the edge's own small store and the hub's store. Replays and duplicates
add nothing: readings are keyed by (device, metric, event time), fixes by (technician, event
time), tickets and ticket events by their ids. Event time is what is stored; arrival time is
only ``received_at``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast

import h3
import polars as pl
from cloudevents.core.v1.event import CloudEvent

from pipelines.edge.events import TYPE_DISPATCH, TYPE_TICKET, event_frames, parse_ts
from pipelines.store.gateway import Store, Tx

H3_RESOLUTION: Final = 9


@dataclass
class WriteCounts:
    readings: int = 0
    fixes: int = 0
    tickets: int = 0
    dispatch: int = 0
    fixes_frame: pl.DataFrame = field(default_factory=pl.DataFrame)
    last_event_ts: datetime | None = None


def _insert_new(tx: Tx, table: str, frame: pl.DataFrame, keys: Sequence[str]) -> int:
    """Insert the rows of ``frame`` whose ``keys`` are not in ``table`` yet; returns how many."""
    frame = frame.unique(list(keys), keep="first", maintain_order=True)
    if frame.height == 0:
        return 0
    view = f"_edge_new_{table}"
    tx.register(view, frame.with_row_index("_ft_ord"))
    try:
        on = " AND ".join(f't."{k}" = n."{k}"' for k in keys)
        # the join does not keep row order: restore the frame's (event-time) order
        fresh = tx.query(
            f"SELECT n.* EXCLUDE (_ft_ord) FROM {view} n ANTI JOIN {table} t ON {on} "
            "ORDER BY n._ft_ord"
        )
    finally:
        tx.unregister(view)
    return tx.insert_frame(table, fresh)


def _ticket_rows(events: list[CloudEvent], received_at: datetime) -> dict[str, pl.DataFrame]:
    tickets, created, origins, devices, series = [], [], [], [], []
    for event in events:
        data = cast(dict[str, Any], event.get_data())
        t = data["ticket"]
        ts = parse_ts(t["created_ts"], f"event {event.get_id()}")
        lat, lon = t.get("lat"), t.get("lon")
        cells = (
            (
                h3.str_to_int(h3.latlng_to_cell(lat, lon, 7)),
                h3.str_to_int(h3.latlng_to_cell(lat, lon, 9)),
            )
            if lat is not None and lon is not None
            else (None, None)
        )
        tickets.append(
            {
                "ticket_id": t["ticket_id"],
                "source": event.get_source(),
                "external_id": event.get_id(),
                "customer_id": t.get("customer_id"),
                "lat": lat,
                "lon": lon,
                "datum_in": "WGS84",
                "lat_in": lat,
                "lon_in": lon,
                "tags": [t["tag"]],
                "tag": t["tag"],
                "category": t["category"],
                "priority": t["priority"],
                "site_id": t["site_id"],
                "created_ts": ts,
                "h3_r7": cells[0],
                "h3_r9": cells[1],
            }
        )
        created.append(
            {
                "event_id": event.get_id(),
                "ticket_id": t["ticket_id"],
                "event_type": "created",
                "ts": ts,
                "actor": data["origin"]["source"],
                "source": event.get_source(),
                "note": f"{data['rule']}@{data['rule_version']} crossed {data['band']}",
            }
        )
        vib = data["vibration"]
        origins.append(
            {
                "ticket_id": t["ticket_id"],
                "site": data["origin"]["site"],
                "origin": data["origin"]["source"],
                "device_id": data["device_id"],
                "band": data["band"],
                "rule": data["rule"],
                "rule_version": data["rule_version"],
                "band_values": json.dumps(data["band_values"]),
                "evidence": json.dumps(data["evidence"]),
                "series_id": vib["series_id"],
                "event_ts": ts,
                "received_at": received_at,
            }
        )
        devices.append(
            {
                "device_id": data["device_id"],
                "kind": "vibration",
                "customer_id": t.get("customer_id"),
                "ticket_id": t["ticket_id"],
                "lat": lat,
                "lon": lon,
                "description": f"bearing sensor at site {t['site_id']}",
            }
        )
        series.append(
            {
                "series_id": vib["series_id"],
                "device_id": vib["device_id"],
                "start_ts": parse_ts(vib["start_ts"], f"event {event.get_id()}"),
                "sample_rate_hz": float(vib["sample_rate_hz"]),
                "rpm": float(vib["rpm"]),
                "channel": "DE",
                "samples": vib["samples"],
            }
        )
    return {
        "tickets": pl.DataFrame(tickets, schema_overrides={"h3_r7": pl.UInt64, "h3_r9": pl.UInt64}),
        "ticket_events": pl.DataFrame(created),
        "edge_tickets": pl.DataFrame(origins),
        "iot_devices": pl.DataFrame(devices),
        "vibration_series": pl.DataFrame(series, schema_overrides={"samples": pl.List(pl.Float64)}),
    }


def _dispatch_rows(events: list[CloudEvent]) -> pl.DataFrame:
    rows = []
    for event in events:
        data = cast(dict[str, Any], event.get_data())
        rows.append(
            {
                "event_id": event.get_id(),
                "ticket_id": data["ticket_id"],
                "event_type": event.get_type().rsplit(".", 1)[-1],
                "ts": event.get_time(),
                "actor": data["technician_id"],
                "source": event.get_source(),
                "note": f"dispatch decision for site {data['site']}",
            }
        )
    return pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us", "UTC")})


_TICKET_KEYS: Final = {
    "tickets": ("ticket_id",),
    "ticket_events": ("event_id",),
    "edge_tickets": ("ticket_id",),
    "iot_devices": ("device_id",),
    "vibration_series": ("series_id",),
}


def write_events(store: Store, events: list[CloudEvent], *, received_at: datetime) -> WriteCounts:
    """Apply one batch in one transaction; returns what was new (the fixes, for re-checks)."""
    frames = event_frames(events)
    readings = frames["readings"].sort("device_id", "ts")
    fixes = frames["fixes"].sort("technician_id", "ts")
    ticket_events = [e for e in events if e.get_type() == TYPE_TICKET]
    dispatch = [e for e in events if e.get_type().startswith(f"{TYPE_DISPATCH}.")]
    counts = WriteCounts()
    times = [e.get_time() for e in events if e.get_time() is not None]
    counts.last_event_ts = max(times) if times else None  # type: ignore[type-var]
    with store.transaction() as tx:
        counts.readings = _insert_new(tx, "iot_readings", readings, ("device_id", "metric", "ts"))
        fixes_out = fixes.with_columns(
            datum_in=pl.lit("WGS84"),
            h3=pl.struct("lat", "lon").map_elements(
                lambda r: h3.str_to_int(h3.latlng_to_cell(r["lat"], r["lon"], H3_RESOLUTION)),
                return_dtype=pl.UInt64,
            )
            if fixes.height
            else pl.lit(None, pl.UInt64),
            source=pl.lit("edge"),
        )
        counts.fixes = _insert_new(tx, "gps_fixes", fixes_out, ("technician_id", "ts"))
        counts.fixes_frame = fixes
        if ticket_events:
            rows = _ticket_rows(ticket_events, received_at)
            counts.tickets = _insert_new(tx, "tickets", rows["tickets"], ("ticket_id",))
            for table, frame in rows.items():
                if table != "tickets":
                    _insert_new(tx, table, frame, _TICKET_KEYS[table])
        if dispatch:
            counts.dispatch = _insert_new(
                tx, "ticket_events", _dispatch_rows(dispatch), ("event_id",)
            )
    return counts
