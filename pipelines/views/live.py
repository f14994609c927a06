"""Live views: the queries the dispatch page polls every tick (cheap by design).

- ``latest_positions`` - each technician's latest fix newer than ``since`` (the page keeps
  the newest time it has seen, so a tick reads only what the writer committed since);
- ``ticker`` - the latest derived facts as they happen: arrival verdicts (``arrival_checks``,
  written by the live processors), geofence events (``live_outputs``), cluster alerts and
  restock orders, newest first.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pipelines.store.gateway import Store

TICKER_SCHEMA = {
    "ts": pl.Datetime("us", "UTC"),
    "kind": pl.String,
    "subject": pl.String,
    "text": pl.String,
}


def latest_positions(store: Store, since: datetime) -> pl.DataFrame:
    """``technician_id, ts, lat, lon, accuracy_m`` of each technician's latest fix after
    ``since`` (event time); technicians without a newer fix are absent."""
    return store.query(
        "SELECT technician_id, max(ts) AS ts, arg_max(lat, ts) AS lat, arg_max(lon, ts) AS lon, "
        "arg_max(accuracy_m, ts) AS accuracy_m FROM gps_fixes WHERE ts > ? "
        "GROUP BY technician_id ORDER BY technician_id",
        (since,),
    )


def latest_fix_time(store: Store) -> datetime | None:
    """The newest fix time in the store (where a live page starts reading)."""
    value = store.scalar("SELECT max(ts) FROM gps_fixes")
    return value if isinstance(value, datetime) else None


def ticker(store: Store, *, limit: int = 12) -> pl.DataFrame:
    """The latest verdicts, alerts and orders, newest first (``TICKER_SCHEMA``); ``ts`` is
    when FieldTrace decided (wall time), so the ticker reads as things happen."""
    return store.query(
        "SELECT * FROM ("
        " SELECT computed_at AS ts, 'verdict' AS kind, ticket_id AS subject,"
        "  verdict || coalesce(' (' || reason || ')', '') || ' · ' || technician_id AS text"
        " FROM arrival_checks ORDER BY computed_at DESC LIMIT ?) "
        "UNION ALL SELECT * FROM ("
        " SELECT last_updated, 'alert', alert_id,"
        "  tag || ' cluster ' || status || ' · ' || trend || ' · ' || member_count || ' tickets'"
        " FROM cluster_alerts ORDER BY last_updated DESC LIMIT ?) "
        "UNION ALL SELECT * FROM ("
        " SELECT created_at, 'order', order_id,"
        "  'restock ' || quantity || ' to ' || warehouse_id || ' · ' || status"
        " FROM restock_orders ORDER BY created_at DESC LIMIT ?) "
        "UNION ALL SELECT * FROM ("
        " SELECT published_at, 'geofence', ticket_id,"
        "  regexp_extract(type, '[a-z_]+$') || ' · ' || coalesce(technician_id, '')"
        " FROM live_outputs ORDER BY published_at DESC LIMIT ?) "
        "ORDER BY ts DESC, subject LIMIT ?",
        (limit, limit, limit, limit, limit),
    ).cast(TICKER_SCHEMA)  # type: ignore[arg-type]
