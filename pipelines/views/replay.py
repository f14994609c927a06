"""Reverse-tracing replay: every data stream around one moment of a ticket's lifecycle.

``lifecycle`` lists a ticket's nodes; ``replay_bundle`` reads, for a window around ``at``, every
stream the replay page shows (GPS of each technician on the ticket, UWB at its site, weather at
the nearest grid point, outages covering the address, IoT of the customer's devices, nearby open
tickets and cluster alerts containing the address). Every read is parameterized SQL through the
``Store`` gateway, and each one is a window read on a table's physical sort key so it prunes row
groups. Sparse streams also get a *seed*: the latest sample per key shortly before the window,
so seeking to the window's start still shows "the latest message at or before T".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import h3
import polars as pl

from geofence.verdict_terms import read_verdict
from pipelines.errors import FieldTraceError
from pipelines.store.gateway import Store
from pipelines.views import CLOSED_ALERT_STATUSES, TECHNICIAN_EVENTS
from pipelines.views.nearby import box as _box
from pipelines.views.nearby import (
    covering_outages,
    customer_devices_sql,
    nearest_weather,
)
from pipelines.views.nearby import distance_sql as _dist_sql

NEARBY_RADIUS_M: Final = 500.0
# Per stream: key columns (one latest sample per key, for ``geofence.replay_state``), the age
# above which a sample is stale, and how far before the window its latest sample still counts.
STREAM_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "gps": ("technician_id",), "uwb": ("tag_id",), "weather": ("variable",),
    "iot": ("device_id", "metric"),
}  # fmt: skip
STREAM_MAX_STALENESS: Final = {
    "gps": timedelta(minutes=2), "uwb": timedelta(seconds=10), "weather": timedelta(hours=2),
    "iot": timedelta(hours=2),
}  # fmt: skip
SEED_LOOKBACK: Final = {
    "gps": timedelta(minutes=15), "uwb": timedelta(minutes=10), "weather": timedelta(hours=6),
    "iot": timedelta(hours=24),
}  # fmt: skip
UWB_SCHEMA: Final[dict[str, pl.DataType]] = {
    "site_id": pl.String(), "tag_id": pl.String(), "ts": pl.Datetime("us", "UTC"),
    **dict.fromkeys(("x_m", "y_m", "lat", "lon", "error_m"), pl.Float64()),
}  # fmt: skip
_NODE_COLS: Final = [
    "event_id", "event_type", "ts", "actor", "source", "note", "verdict", "verdict_reason",
    "verdict_distance_m",
]  # fmt: skip
_CHECK_COLS: Final = [
    "technician_id", "event_ts", "verdict", "reason", "decided_by", "distance_m", "accuracy_m",
    "n_fixes", "physical_arrival_ts", "status_lag_s", "evidence", "rule_version",
]  # fmt: skip
_VIB_COLS: Final = [
    "series_id", "device_id", "start_ts", "sample_rate_hz", "rpm", "channel", "n_samples",
]  # fmt: skip
_POOL: ThreadPoolExecutor | None = None


class ReplayError(FieldTraceError, LookupError):
    """The ticket or node asked for does not exist in the store."""


@dataclass(frozen=True)
class ReplayBundle:
    """Everything the replay page shows for ``[start, end]`` around ``at`` (times in UTC)."""

    ticket: dict[str, Any]
    at: datetime
    start: datetime
    end: datetime
    lifecycle: pl.DataFrame
    checks: pl.DataFrame
    gps: pl.DataFrame
    uwb_site: dict[str, Any] | None
    uwb: pl.DataFrame
    weather: pl.DataFrame
    outages: pl.DataFrame
    devices: pl.DataFrame
    iot: pl.DataFrame
    vibration: pl.DataFrame
    nearby: pl.DataFrame
    alerts: pl.DataFrame
    technicians: tuple[str, ...] = field(default=())

    def streams(self) -> dict[str, pl.DataFrame]:
        """The time-series streams that were read, ready for ``replay_state.state_at``."""
        every = {"gps": self.gps, "uwb": self.uwb, "weather": self.weather, "iot": self.iot}
        return {k: v for k, v in every.items() if "ts" in v.columns}


def _q(store: Store, sql: str, params: list[object]) -> pl.DataFrame:
    return store.query(sql, params)


def _marks(n: int) -> str:
    """``?, ?, ?`` for an IN list of ``n`` bound values (never values themselves)."""
    return ", ".join("?" * max(n, 1)) if n else "NULL"


def ticket_row(store: Store, ticket_id: str) -> dict[str, Any]:
    frame = _q(
        store,
        "SELECT ticket_id, customer_id, customer_name, address, lat, lon, site_id, region, "
        "tag, priority, created_ts FROM tickets WHERE ticket_id = ?",
        [ticket_id],
    )
    if frame.is_empty():
        raise ReplayError(f"tickets: no ticket_id={ticket_id!r}")
    return frame.row(0, named=True)


def _nodes_with_checks(store: Store, ticket_id: str) -> pl.DataFrame:
    """Every event with its arrival check as ``c_*`` columns (null unless an arrival)."""
    checks = ", ".join(f"c.{c} AS c_{c}" for c in _CHECK_COLS)  # fixed names, not input
    return _q(
        store,
        f"SELECT e.event_id, e.event_type, e.ts, e.actor, e.source, e.note, {checks} "
        "FROM ticket_events e LEFT JOIN arrival_checks c "
        "ON c.event_id = e.event_id AND e.event_type = 'arrived' "
        "WHERE e.ticket_id = ? ORDER BY e.ts, e.event_id",
        [ticket_id],
    )


def _split_checks(joined: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(lifecycle nodes with their verdict, the arrival checks)."""
    joined = joined.with_columns(read_verdict(pl.col("c_verdict")))
    checks = joined.filter(pl.col("c_verdict").is_not_null()).select(
        "event_id", *(pl.col(f"c_{c}").alias(c) for c in _CHECK_COLS)
    )
    verdict = {"c_verdict": "verdict", "c_reason": "verdict_reason"}
    nodes = joined.rename(verdict | {"c_distance_m": "verdict_distance_m"}).select(_NODE_COLS)
    return nodes, checks


def lifecycle(store: Store, ticket_id: str) -> pl.DataFrame:
    """Every node of the ticket, in time order, with the arrival verdict on ``arrived`` nodes."""
    return _split_checks(_nodes_with_checks(store, ticket_id))[0]


def _window_rows(
    store: Store, stream: str, cols: str, where_key: str, key_params: list[object],
    start: datetime, end: datetime,
) -> pl.DataFrame:  # fmt: skip
    """Rows in ``[start, end]`` plus the latest row per key in the stream's lookback (seed).

    One range read on the (key, ts) sort order; the seed is picked in polars."""
    rows = _q(
        store,
        f"SELECT {cols} WHERE {where_key} AND ts BETWEEN ? AND ? ORDER BY ts",
        [*key_params, start - SEED_LOOKBACK[stream], end],
    )
    early = pl.col("ts") < start
    keys = list(STREAM_KEYS[stream])
    seed = rows.filter(early).unique(subset=keys, keep="last", maintain_order=True)
    return pl.concat([seed, rows.filter(~early)]).sort("ts", maintain_order=True)


def _gps(store: Store, techs: list[str], start: datetime, end: datetime) -> pl.DataFrame:
    cols = "technician_id, ts, lat, lon, accuracy_m, speed_mps, mock_location FROM gps_fixes"
    where = f"technician_id IN ({_marks(len(techs))})"
    return _window_rows(store, "gps", cols, where, list(techs), start, end)


def _uwb(
    store: Store, site_id: str | None, start: datetime, end: datetime
) -> tuple[dict[str, Any] | None, pl.DataFrame]:
    cols = "site_id, tag_id, ts, x_m, y_m, lat, lon, error_m FROM uwb_positions"
    rows = _window_rows(store, "uwb", cols, "site_id = ?", [site_id], start, end)
    site = _q(
        store,
        "SELECT site_id, name, origin_lat, origin_lon, rotation_deg, anchors, "
        "targets FROM uwb_sites WHERE site_id = ?",
        [site_id],
    )
    return (site.row(0, named=True) if site.height else None), rows


def _weather(store: Store, lat: float, lon: float, start: datetime, end: datetime) -> pl.DataFrame:
    """Observations at the grid point nearest the address, seeded with the latest per variable."""
    rows = nearest_weather(store, lat, lon, start - SEED_LOOKBACK["weather"], end)
    early = pl.col("ts") < start
    seed = rows.filter(early).unique(subset="variable", keep="last", maintain_order=True)
    return pl.concat([seed, rows.filter(~early)]).sort("ts", maintain_order=True)


def _devices(store: Store, ticket: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The customer's devices (``nearby.customer_devices_sql``) and their vibration series
    (metadata only: ``n_samples``, not the samples)."""
    where, params = customer_devices_sql(
        ticket["ticket_id"], ticket["customer_id"], ticket["lat"], ticket["lon"]
    )
    rows = _q(
        store,
        "WITH d AS (SELECT device_id, kind, customer_id, ticket_id, lat, lon, description "
        f"FROM iot_devices WHERE {where}) "
        "SELECT d.*, v.series_id, v.start_ts, v.sample_rate_hz, v.rpm, v.channel, "
        "len(v.samples) AS n_samples FROM d LEFT JOIN vibration_series v USING (device_id) "
        "ORDER BY d.device_id, v.start_ts, v.series_id",
        params,
    )
    devices = rows.drop(c for c in _VIB_COLS if c != "device_id")
    devices = devices.unique("device_id", maintain_order=True)
    return devices, rows.filter(pl.col("series_id").is_not_null()).select(_VIB_COLS)


def _iot(store: Store, device_ids: list[str], start: datetime, end: datetime) -> pl.DataFrame:
    cols = "device_id, ts, metric, value, unit FROM iot_readings"
    where = f"device_id IN ({_marks(len(device_ids))})"
    return _window_rows(store, "iot", cols, where, list(device_ids), start, end)


def vibration_samples(store: Store, series_id: str) -> dict[str, Any] | None:
    """One vibration series with its samples (a list of floats), or None."""
    frame = _q(
        store,
        "SELECT series_id, device_id, start_ts, sample_rate_hz, rpm, channel, "
        "samples FROM vibration_series WHERE series_id = ?",
        [series_id],
    )
    return frame.row(0, named=True) if frame.height else None


def _nearby(store: Store, ticket: dict[str, Any], at: datetime) -> pl.DataFrame:
    """Other tickets within ``NEARBY_RADIUS_M`` created by ``at`` and not closed at ``at``.

    Candidates come from the ticket's H3 r7 cell and its ring (the table's sort key), then a
    box and the exact distance; their status at ``at`` is the last event at or before it."""
    lat, lon = ticket["lat"], ticket["lon"]
    cells = [h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(lat, lon, 7), 1)]
    cos = math.cos(math.radians(lat))
    near = _q(
        store,
        f"SELECT ticket_id, lat, lon, tag, priority, created_ts, {_dist_sql('lat', 'lon')} "
        f"AS distance_m FROM tickets WHERE h3_r7 IN ({_marks(len(cells))}) "
        "AND lat BETWEEN ? AND ? AND lon BETWEEN ? AND ? AND ticket_id <> ? "
        "AND created_ts <= ? AND distance_m <= ? ORDER BY distance_m",
        [lat, lon, cos, *cells, *_box(lat, lon, NEARBY_RADIUS_M), ticket["ticket_id"], at,
         NEARBY_RADIUS_M],
    )  # fmt: skip
    ids = near["ticket_id"].to_list()
    status = _q(
        store,
        "SELECT ticket_id, arg_max(event_type, ts) AS status FROM ticket_events "
        f"WHERE ticket_id IN ({_marks(len(ids))}) AND ts <= ? GROUP BY ticket_id",
        [*ids, at],
    )
    return (
        near.join(status, on="ticket_id", how="left")
        .with_columns(pl.col("status").fill_null("created"))
        .filter(pl.col("status") != "closed")
    )


def _alerts(store: Store, lat: float, lon: float, start: datetime, end: datetime) -> pl.DataFrame:
    """Cluster alerts live during the window that contain the address (cell or polygon)."""
    cells = [h3.latlng_to_cell(lat, lon, res) for res in range(16)]
    return _q(
        store,
        "SELECT alert_id, cluster_key, tag, status, trend, member_count, member_cells, "
        "geom_wkt, explanation, first_seen, closed_at FROM cluster_alerts "
        "WHERE first_seen <= ? AND (closed_at IS NULL OR closed_at >= ?) "
        f"AND (closed_at IS NOT NULL OR status NOT IN ({_marks(len(CLOSED_ALERT_STATUSES))})) "
        "AND (list_has_any(member_cells, ?::VARCHAR[]) OR (geom_wkt IS NOT NULL AND "
        "ST_Contains(ST_GeomFromText(geom_wkt), ST_Point(?, ?)))) ORDER BY first_seen",
        [end, start, *CLOSED_ALERT_STATUSES, cells, lon, lat],
    )


def _as_utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _pool() -> ThreadPoolExecutor:
    """Created on first use (nothing at import); DuckDB releases the GIL while it reads."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="replay")
    return _POOL


def replay_bundle(
    store: Store,
    ticket_id: str,
    at: datetime,
    *,
    before: timedelta = timedelta(minutes=30),
    after: timedelta = timedelta(minutes=30),
) -> ReplayBundle:
    """All streams of ``ticket_id`` in ``[at - before, at + after]`` (naive ``at`` is UTC).

    The ticket and its lifecycle are read first; the independent stream reads then run
    concurrently on their own cursors."""
    if before < timedelta(0) or after < timedelta(0):
        raise ReplayError(f"replay window before={before}, after={after}: expected >= 0")
    at = _as_utc(at)
    start, end = at - before, at + after
    pool, ticket = _pool(), ticket_row(store, ticket_id)
    nodes_f = pool.submit(_nodes_with_checks, store, ticket_id)
    lat, lon = ticket["lat"], ticket["lon"]
    has_point = lat is not None and lon is not None
    devices, vibration = _devices(store, ticket)
    reads: dict[str, tuple[bool, Callable[..., Any], tuple[object, ...]]] = {
        "weather": (has_point, _weather, (lat, lon, start, end)),
        "outages": (has_point, covering_outages, (lat, lon, start, end)),
        "alerts": (has_point, _alerts, (lat, lon, start, end)),
        "nearby": (has_point, _nearby, (ticket, at)),
        "uwb": (ticket["site_id"] is not None, _uwb, (ticket["site_id"], start, end)),
        "iot": (True, _iot, (devices["device_id"].to_list(), start, end)),
    }
    futures = {k: pool.submit(fn, store, *args) for k, (ok, fn, args) in reads.items() if ok}
    nodes, checks = _split_checks(nodes_f.result())
    techs = sorted(
        {a for a, k in zip(nodes["actor"], nodes["event_type"], strict=True)
         if a and k in TECHNICIAN_EVENTS}
    )  # fmt: skip
    gps = _gps(store, techs, start, end)
    got: dict[str, Any] = {k: futures[k].result() if k in futures else None for k in reads}
    uwb_site, uwb = got.pop("uwb") or (None, pl.DataFrame(schema=UWB_SCHEMA))
    got = {k: pl.DataFrame() if v is None else v for k, v in got.items()}
    return ReplayBundle(
        ticket=ticket, at=at, start=start, end=end, lifecycle=nodes, checks=checks, gps=gps,
        uwb_site=uwb_site, uwb=uwb, devices=devices, vibration=vibration,
        technicians=tuple(techs), **got,
    )  # fmt: skip
