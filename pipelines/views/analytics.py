"""Journey analytics: segment distributions, lags, breakdowns, verdict mix (aggregated in SQL)."""

from __future__ import annotations

import polars as pl

from pipelines.store.gateway import Store
from pipelines.views import MILESTONES_SQL

SEGMENTS: tuple[tuple[str, str], ...] = (
    ("report → create", "epoch(m.created_ev_ts - t.created_ts)"),
    ("create → accept", "epoch(m.accepted_ts - coalesce(m.created_ev_ts, t.created_ts))"),
    ("accept → depart", "epoch(m.departed_ts - m.accepted_ts)"),
    ("travel", "epoch(m.arrived_ts - m.departed_ts)"),
    ("on-site", "epoch(m.completed_ts - m.arrived_ts)"),
    ("revisit gap", "CASE WHEN m.n_arrived >= 2 THEN epoch(m.last_arrived_ts - m.arrived_ts) END"),
)
SEGMENT_NAMES = tuple(name for name, _ in SEGMENTS)
_REGION = "(? IS NULL OR t.region = ?)"


def _durations_sql() -> str:
    """Per (ticket, segment) duration in minutes, long format, non-negative values only."""
    cols = ", ".join(f'{expr} / 60.0 AS "{name}"' for name, expr in SEGMENTS)
    names = ", ".join(f'"{name}"' for name, _ in SEGMENTS)
    return f"""
    SELECT ticket_id, region, technician_id, segment, minutes FROM (
      UNPIVOT (SELECT t.ticket_id, t.region, m.technician_id, {cols}
               FROM tickets t JOIN ({MILESTONES_SQL}) m USING (ticket_id) WHERE {_REGION})
      ON {names} INTO NAME segment VALUE minutes)
    WHERE minutes IS NOT NULL AND minutes >= 0
    """


def segment_quantiles(store: Store, region: str | None) -> pl.DataFrame:
    """Box-plot statistics per journey segment (minutes)."""
    return store.query(
        f"""
        SELECT segment, count(*) AS n,
          quantile_cont(minutes, 0.05) AS p05, quantile_cont(minutes, 0.25) AS p25,
          quantile_cont(minutes, 0.5) AS p50, quantile_cont(minutes, 0.75) AS p75,
          quantile_cont(minutes, 0.95) AS p95, quantile_cont(minutes, 0.99) AS p99
        FROM ({_durations_sql()}) GROUP BY segment
        """,
        [region, region],
    )


def region_medians(store: Store) -> pl.DataFrame:
    """Median minutes per (region, segment)."""
    return store.query(
        f"SELECT coalesce(region, '(none)') AS region, segment, median(minutes) AS minutes, "
        f"count(*) AS n FROM ({_durations_sql()}) GROUP BY ALL ORDER BY region",
        [None, None],
    )


def technician_medians(store: Store, region: str | None, *, limit: int = 300) -> pl.DataFrame:
    """Per technician: tickets and median idle, travel and on-site minutes (busiest first)."""
    return store.query(
        f"""
        SELECT technician_id, count(DISTINCT ticket_id) AS tickets,
          median(minutes) FILTER (WHERE segment = 'accept → depart') AS idle_min,
          median(minutes) FILTER (WHERE segment = 'travel') AS travel_min,
          median(minutes) FILTER (WHERE segment = 'on-site') AS onsite_min
        FROM ({_durations_sql()}) WHERE technician_id IS NOT NULL
        GROUP BY technician_id ORDER BY tickets DESC, technician_id LIMIT ?
        """,
        [region, region, limit],
    )


def lag_histogram(store: Store, region: str | None, *, clip_min: int = 60) -> pl.DataFrame:
    """Status 'arrived' minus physical arrival, in whole minutes clipped to ±``clip_min``."""
    return store.query(
        f"""
        SELECT greatest(-?, least(?, floor(a.status_lag_s / 60)))::INTEGER AS lag_min,
               count(*) AS n
        FROM arrival_checks a JOIN tickets t USING (ticket_id)
        WHERE a.status_lag_s IS NOT NULL AND {_REGION} GROUP BY 1 ORDER BY 1
        """,
        [clip_min, clip_min, region, region],
    )


def verdict_mix(store: Store, region: str | None) -> pl.DataFrame:
    """Arrival verdicts per day."""
    return store.query(
        f"""
        SELECT a.event_ts::DATE AS day, a.verdict, count(*) AS n
        FROM arrival_checks a JOIN tickets t USING (ticket_id) WHERE {_REGION}
        GROUP BY ALL ORDER BY day, a.verdict
        """,
        [region, region],
    )
