"""Dispatch map and KPI queries. Aggregated server-side so no answer exceeds the point budget."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import polars as pl

from pipelines.store.gateway import Store
from pipelines.views import (
    CLOSED_ALERT_STATUSES,
    MILESTONES_AT_SQL,
    MILESTONES_SQL,
    TECHNICIAN_EVENTS,
    TicketFilter,
    sla_hours_expr,
    ticket_where,
    verdict_sql,
)

MAX_TICKET_POINTS = 4_000
MAX_TECHNICIAN_POINTS = 6_000
MAX_GEOFENCES = 300
MAX_HEXES = 2_000
OFFLINE_AFTER = timedelta(hours=1)
# A technician's latest own event -> what they are doing (anything else: idle).
TECH_ACTIVITY: dict[str, str] = {
    "accepted": "assigned",
    "departed": "en route",
    "arrived": "on site",
    "work_started": "on site",
    "parts_requested": "on site",
}
_TECH_EVENTS = ", ".join("?" for _ in TECHNICIAN_EVENTS)


def _open_tickets_sql(f: TicketFilter, at: datetime) -> tuple[str, list[object]]:
    """Tickets created by ``at`` whose latest event by ``at`` is not 'closed'."""
    where, params = ticket_where(f, at)
    sql = f"""
    SELECT t.ticket_id, t.lat, t.lon, t.tag, t.priority, t.region, t.created_ts, t.h3_r7,
           m.status, m.technician_id
    FROM tickets t JOIN ({MILESTONES_AT_SQL}) m USING (ticket_id)
    WHERE m.status <> 'closed' AND t.lat IS NOT NULL AND t.created_ts <= ? AND {where}
    """
    params = [at, at, *params]
    if f.status:
        sql += " AND m.status = ?"
        params.append(f.status)
    return sql, params


def open_tickets(store: Store, f: TicketFilter, at: datetime) -> pl.DataFrame:
    """Tickets open at ``at`` with their age and SLA ratio at that moment."""
    sql, params = _open_tickets_sql(f, at)
    frame = store.query(sql, params)
    return frame.with_columns(
        ((pl.lit(at) - pl.col("created_ts")).dt.total_seconds() / 3600).alias("age_h"),
        sla_hours_expr().alias("sla_h"),
    ).with_columns((pl.col("age_h") / pl.col("sla_h")).alias("sla_ratio"))


def ticket_points(
    tickets: pl.DataFrame, *, max_points: int = MAX_TICKET_POINTS
) -> tuple[pl.DataFrame, bool]:
    """Tickets as points, or grid bins (count, worst SLA ratio, worst ticket) when too many.

    The bin size grows until the bin count fits ``max_points``; clicking a bin opens its most
    overdue ticket. Pure.
    """
    if tickets.height <= max_points:
        return tickets.with_columns(pl.lit(1).alias("n")), False
    lats, lons = tickets["lat"].cast(pl.Float64), tickets["lon"].cast(pl.Float64)
    lat_span = max(float(lats.max()) - float(lats.min()), 1e-6)  # type: ignore[arg-type]
    lon_span = max(float(lons.max()) - float(lons.min()), 1e-6)  # type: ignore[arg-type]
    step = math.sqrt(lat_span * lon_span / max_points)
    while True:
        binned = (
            tickets.with_columns(
                (pl.col("lat") / step).floor().alias("_gy"),
                (pl.col("lon") / step).floor().alias("_gx"),
            )
            .group_by("_gy", "_gx")
            .agg(
                pl.len().alias("n"),
                pl.col("lat").mean(),
                pl.col("lon").mean(),
                pl.col("sla_ratio").max(),
                pl.col("age_h").max(),
                pl.col("ticket_id").sort_by("sla_ratio").last(),
                pl.col("tag").mode().first(),
                pl.col("status").mode().first(),
            )
            .drop("_gy", "_gx")
        )
        if binned.height <= max_points:
            return binned, True
        step *= 1.5


def technician_positions(store: Store, f: TicketFilter, at: datetime) -> pl.DataFrame:
    """Each technician's latest fix by ``at``, with what their latest own event says they do.

    ``tech_status``: offline (no fix within ``OFFLINE_AFTER``), else ``TECH_ACTIVITY`` of the
    latest technician event by ``at`` (completed or none: idle). ``ticket_id`` is the ticket
    that event belongs to while the technician is busy with it.
    """
    params: list[object] = [at, *TECHNICIAN_EVENTS, at]
    region = ""
    if f.region:
        region = "AND tech.region = ?"
        params.append(f.region)
    frame = store.query(
        f"""
        WITH last AS (
            SELECT technician_id, max(ts) AS ts, arg_max(lat, ts) AS lat, arg_max(lon, ts) AS lon,
                   arg_max(accuracy_m, ts) AS accuracy_m
            FROM gps_fixes WHERE ts <= ? GROUP BY technician_id
        ), cur AS (
            SELECT actor AS technician_id, arg_max(ticket_id, ts) AS ticket_id,
                   arg_max(event_type, ts) AS last_event
            FROM ticket_events
            WHERE event_type IN ({_TECH_EVENTS}) AND ts <= ? AND actor IS NOT NULL
            GROUP BY actor
        )
        SELECT last.*, tech.name, tech.region, cur.ticket_id, cur.last_event
        FROM last LEFT JOIN technicians tech USING (technician_id)
        LEFT JOIN cur USING (technician_id)
        WHERE TRUE {region}
        ORDER BY last.ts DESC LIMIT {MAX_TECHNICIAN_POINTS}
        """,
        params,
    )
    activity = pl.col("last_event").replace_strict(
        TECH_ACTIVITY, default="idle", return_dtype=pl.String
    )
    return (
        frame.with_columns(
            pl.when(pl.col("ts") < at - OFFLINE_AFTER)
            .then(pl.lit("offline"))
            .otherwise(activity.fill_null("idle"))
            .alias("tech_status")
        )
        .with_columns(
            pl.when(pl.col("last_event").is_in(list(TECH_ACTIVITY)))
            .then(pl.col("ticket_id"))
            .alias("ticket_id")
        )
        .drop("last_event")
    )


def geofence_centres(tickets: pl.DataFrame, *, limit: int = MAX_GEOFENCES) -> pl.DataFrame:
    """The customer geofences worth drawing: the most overdue open tickets. Pure."""
    return tickets.sort("sla_ratio", descending=True).head(limit).select("ticket_id", "lat", "lon")


def hex_density(tickets: pl.DataFrame, *, limit: int = MAX_HEXES) -> pl.DataFrame:
    """Open tickets per H3 r7 cell with the cell's most common tag. Pure."""
    if tickets.height == 0 or "h3_r7" not in tickets.columns:
        return pl.DataFrame(schema={"h3_r7": pl.UInt64, "n": pl.UInt32, "tag": pl.String})
    return (
        tickets.drop_nulls("h3_r7")
        .group_by("h3_r7")
        .agg(pl.len().alias("n"), pl.col("tag").mode().first())
        .sort("n", descending=True)
        .head(limit)
    )


def active_alerts(store: Store, f: TicketFilter, at: datetime) -> pl.DataFrame:
    """Cluster alerts active at ``at`` (optionally one tag), with their member cells.

    Active: first seen by ``at`` and, for a closed alert, not closed before ``at`` (its
    ``closed_at`` ends it). An open alert stays active.
    """
    marks = ", ".join("?" for _ in CLOSED_ALERT_STATUSES)
    params: list[object] = [at, *CLOSED_ALERT_STATUSES, at]
    tag = ""
    if f.tag:
        tag = "AND tag = ?"
        params.append(f.tag)
    return store.query(
        f"SELECT alert_id, tag, status, trend, member_count, member_cells, explanation "
        f"FROM cluster_alerts WHERE first_seen <= ? "
        f"AND (status NOT IN ({marks}) OR closed_at >= ?) {tag} "
        f"ORDER BY member_count DESC LIMIT 200",
        params,
    )


def kpis(store: Store, f: TicketFilter, now: datetime) -> dict[str, float | None]:
    """Journey KPIs over the filtered tickets (medians in minutes, rates in 0..1)."""
    where, params = ticket_where(f, now)
    row = store.query(
        f"""
        WITH m AS ({MILESTONES_SQL})
        SELECT
          median(epoch(m.accepted_ts - t.created_ts)) / 60 AS first_response_min,
          median(epoch(m.departed_ts - m.accepted_ts)) / 60 AS idle_min,
          median(epoch(m.arrived_ts - m.departed_ts)) / 60 AS travel_min,
          median(epoch(m.completed_ts - m.arrived_ts)) / 60 AS onsite_min,
          avg(CASE WHEN m.n_parts > 0 AND m.n_arrived >= 2 THEN 1.0 ELSE 0.0 END)
            FILTER (WHERE m.n_arrived >= 1) AS revisit_rate,
          avg(CASE WHEN m.n_chased = 0 THEN 1.0 ELSE 0.0 END)
            FILTER (WHERE m.closed_ts IS NOT NULL) AS unnoticed_rate,
          count(*) AS tickets
        FROM tickets t JOIN m USING (ticket_id) WHERE {where}
        """,
        params,
    ).row(0, named=True)
    tier = verdict_sql()
    checks = store.query(
        f"""
        SELECT count(*) AS n,
          avg(CASE WHEN {tier} = 'AT_DOOR' THEN 1.0 ELSE 0.0 END) AS at_door,
          avg(CASE WHEN {tier} = 'ON_SITE' THEN 1.0 ELSE 0.0 END) AS on_site,
          avg(CASE WHEN {tier} = 'INCONCLUSIVE' THEN 1.0 ELSE 0.0 END) AS inconclusive,
          avg(CASE WHEN {tier} = 'REJECTED' THEN 1.0 ELSE 0.0 END) AS rejected
        FROM arrival_checks a JOIN tickets t USING (ticket_id) WHERE {where}
        """,
        params,
    ).row(0, named=True)
    for name in ("at_door", "on_site", "inconclusive", "rejected"):
        row[f"{name}_rate"] = checks[name] if checks["n"] else None
    row["arrival_checks"] = checks["n"]
    return row
