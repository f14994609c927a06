"""Ticket detail queries: header, lifecycle, GPS-derived physical events, arrival evidence."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from geofence import stops as geofence_stops
from geofence.distance import local_distance_m
from geofence.verdict_terms import read_verdict
from pipelines.settings import Thresholds
from pipelines.store.gateway import Store
from pipelines.views import TECHNICIAN_EVENTS
from pipelines.views.checklist import ChecklistInputs
from pipelines.views.nearby import (
    AT_CUSTOMER_M,
    covering_outages,
    customer_devices_sql,
    nearest_weather,
    within_sql,
)

MAX_FIXES = 2_000
_TECH_LIST = ", ".join(f"'{e}'" for e in TECHNICIAN_EVENTS)


def ticket(store: Store, ticket_id: str, *, mask_personal: bool) -> dict[str, Any] | None:
    """The ticket row; name and address are masked in SQL when ``mask_personal``."""
    frame = store.query(
        "SELECT ticket_id, tag, tags, category, priority, region, created_ts, lat, lon, "
        "customer_id, channel, reported_ts, "
        "CASE WHEN ? THEN '•••' ELSE customer_name END AS customer_name, "
        "CASE WHEN ? THEN '•••' ELSE address END AS address FROM tickets WHERE ticket_id = ?",
        [mask_personal, mask_personal, ticket_id],
    )
    return frame.row(0, named=True) if frame.height else None


def geofence_events(store: Store, ticket_id: str) -> pl.DataFrame:
    """The live geofence engine's events of a ticket (``live_outputs``), in the physical lane's
    shape: ``event`` ('fence enter', 'fence exit', 'fence dwell', 'arrived (auto)'), ``ts``,
    ``lat``, ``lon`` (null: the event is about the fence, not one fix)."""
    return store.query(
        "SELECT CASE type WHEN 'fieldtrace.geofence.arrived_auto' THEN 'arrived (auto)' "
        "ELSE 'fence ' || regexp_extract(type, '[a-z_]+$') END AS event, ts, "
        "NULL::DOUBLE AS lat, NULL::DOUBLE AS lon FROM live_outputs "
        "WHERE ticket_id = ? AND type LIKE 'fieldtrace.geofence.%' ORDER BY ts",
        [ticket_id],
    )


def events(store: Store, ticket_id: str) -> pl.DataFrame:
    return store.query(
        "SELECT event_type, ts, actor, source, note FROM ticket_events "
        "WHERE ticket_id = ? ORDER BY ts, event_type",
        [ticket_id],
    )


def technician_of(store: Store, ticket_id: str) -> str | None:
    value = store.scalar(
        f"SELECT arg_max(actor, ts) FROM ticket_events WHERE ticket_id = ? "
        f"AND event_type IN ({_TECH_LIST})",
        [ticket_id],
    )
    return None if value is None else str(value)


def fixes(
    store: Store, technician_id: str, start: datetime, end: datetime, *, limit: int = MAX_FIXES
) -> pl.DataFrame:
    frame = store.query(
        "SELECT ts, lat, lon, accuracy_m, speed_mps FROM gps_fixes WHERE technician_id = ? "
        "AND ts BETWEEN ? AND ? ORDER BY ts LIMIT ?",
        [technician_id, start, end, limit],
    )
    return frame


def detect_stops(fx: pl.DataFrame, th: Thresholds) -> pl.DataFrame:
    """One technician's stops (``geofence.stops``, the same detector the verdicts use)."""
    found = geofence_stops.detect_stops(
        fx.with_columns(pl.lit("_").alias("technician_id")),
        max_diameter_m=th.stop_max_diameter_m,
        min_duration=timedelta(seconds=th.stop_min_duration_s),
    )
    return found.select(
        "start_ts",
        "end_ts",
        pl.col("centroid_lat").alias("lat"),
        pl.col("centroid_lon").alias("lon"),
    )


def physical_events(
    stops: pl.DataFrame,
    fx: pl.DataFrame,
    customer: tuple[float, float],
) -> pl.DataFrame:
    """departed / arrived / left from stops: the visit is the run of consecutive stops within
    ``AT_CUSTOMER_M`` of the customer that holds the nearest one."""
    schema: dict[str, Any] = {
        "event": pl.String,
        "ts": pl.Datetime("us", "UTC"),
        "lat": pl.Float64,
        "lon": pl.Float64,
    }
    if stops.height == 0:
        return pl.DataFrame(schema=schema)
    dist_m = local_distance_m(
        stops["lat"].to_numpy(), stops["lon"].to_numpy(), customer[0], customer[1]
    )
    near = stops.with_columns(pl.Series("dist_m", dist_m)).with_row_index("_i")
    # A long visit is often several stops (GPS drift breaks the diameter): consecutive stops
    # within AT_CUSTOMER_M form one visit; the visit holding the nearest stop counts.
    near = near.with_columns(
        (pl.col("dist_m") <= AT_CUSTOMER_M).alias("_at"),
    ).with_columns(
        (pl.col("_at") != pl.col("_at").shift(1)).fill_null(True).cum_sum().alias("_run")
    )
    at_customer = near.filter(pl.col("_at")).sort("dist_m")
    if at_customer.height == 0:
        return pl.DataFrame(schema=schema)
    visit = near.filter(pl.col("_run") == at_customer["_run"][0])
    first, last = visit.row(0, named=True), visit.row(-1, named=True)
    rows = [
        ("arrived", first["start_ts"], first["lat"], first["lon"]),
        ("left", last["end_ts"], last["lat"], last["lon"]),
    ]
    before = near.filter(pl.col("_i") < first["_i"])
    if before.height:
        prev = before.row(-1, named=True)
        rows.insert(0, ("departed", prev["end_ts"], prev["lat"], prev["lon"]))
    elif fx.height:
        start = fx.sort("ts").row(0, named=True)
        rows.insert(0, ("departed", start["ts"], start["lat"], start["lon"]))
    return pl.DataFrame(rows, schema=schema, orient="row")


def arrival_check(store: Store, ticket_id: str) -> dict[str, Any] | None:
    """The latest arrival check of the ticket with its evidence JSON decoded."""
    frame = store.query(
        "SELECT * FROM arrival_checks WHERE ticket_id = ? ORDER BY event_ts DESC LIMIT 1",
        [ticket_id],
    ).with_columns(read_verdict(pl.col("verdict")))
    if frame.height == 0:
        return None
    row = frame.row(0, named=True)
    try:
        row["evidence"] = json.loads(row["evidence"])
    except (TypeError, ValueError):
        row["evidence"] = {"raw": row["evidence"]}
    return row


def checklist_inputs(store: Store, t: dict[str, Any], visit_ts: datetime) -> ChecklistInputs:
    """Narrow IoT, outages, weather and earlier tickets to this address and visit time
    (``pipelines.views.nearby`` says what "at the customer" means)."""
    lat, lon = t["lat"], t["lon"]
    week = visit_ts - timedelta(days=7)
    devices, device_params = customer_devices_sql(t["ticket_id"], t["customer_id"], lat, lon, "d")
    iot = store.query(
        "SELECT d.device_id, d.kind, r.ts, r.metric, r.value, r.unit FROM iot_devices d "
        f"JOIN iot_readings r USING (device_id) WHERE {devices} AND r.ts BETWEEN ? AND ? "
        "AND (lower(r.metric) LIKE '%vib%' OR lower(r.metric) LIKE '%rssi%' "
        "OR lower(r.metric) LIKE '%wifi%') ORDER BY r.ts",
        [*device_params, week, visit_ts],
    )
    has_point = lat is not None and lon is not None
    outages = covering_outages(store, lat, lon, visit_ts, visit_ts) if has_point else pl.DataFrame()
    weather = (
        nearest_weather(
            store,
            lat,
            lon,
            visit_ts - timedelta(hours=1),
            visit_ts + timedelta(hours=1),
            variables_like=("precip", "rain"),
        )
        if has_point
        else pl.DataFrame()
    )
    near, near_params = (
        within_sql("t2.lat", "t2.lon", lat, lon, AT_CUSTOMER_M) if has_point else ("FALSE", [])
    )
    earlier = store.query(
        "SELECT e.ticket_id, e.ts, e.note FROM tickets t2 JOIN ticket_events e "
        "USING (ticket_id) WHERE e.event_type = 'parts_requested' AND t2.ticket_id <> ? "
        f"AND t2.created_ts < ? AND (t2.customer_id = ? OR t2.address = ? OR {near}) "
        "ORDER BY e.ts",
        [t["ticket_id"], t["created_ts"], t["customer_id"], t.get("address"), *near_params],
    )
    return ChecklistInputs(
        visit_ts=visit_ts.astimezone(UTC),
        iot=iot,
        outages=outages,
        weather=weather,
        earlier_parts=earlier,
        tags=tuple(t.get("tags") or ()),
    )
