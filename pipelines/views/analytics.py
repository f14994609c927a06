"""Journey analytics: segment distributions, lags, breakdowns, verdict mix (aggregated in SQL)."""

from __future__ import annotations

import polars as pl

from pipelines.store.gateway import Store
from pipelines.views import MILESTONES_SQL, verdict_sql

SEGMENTS: tuple[tuple[str, str], ...] = (
    ("report → create", "epoch(t.created_ts - t.reported_ts)"),  # tickets with a report time
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
    """Arrival verdict tiers per day (arrival-v1 verdicts read as tiers)."""
    return store.query(
        f"""
        SELECT a.event_ts::DATE AS day, {verdict_sql()} AS verdict, count(*) AS n
        FROM arrival_checks a JOIN tickets t USING (ticket_id) WHERE {_REGION}
        GROUP BY ALL ORDER BY day, verdict
        """,
        [region, region],
    )


RELIABILITY_OUTCOMES: tuple[tuple[str, str], ...] = (
    ("P(within 5 m)", "p_within_radius"),
    ("P(on site)", "p_on_site"),
)


def reliability(
    store: Store,
    region: str | None,
    *,
    radius_m: float,
    site_radius_m: float,
    bins: int = 10,
    min_per_bin: int = 20,
) -> pl.DataFrame:
    """Predicted against observed per probability bin, for labelled arrivals.

    One row per (``outcome``, bin): ``outcome`` (a name in ``RELIABILITY_OUTCOMES``),
    ``p_lo``/``p_hi`` (the bin's predicted range), ``n``, ``predicted`` (mean probability)
    and ``observed`` (share whose labelled true distance is within ``radius_m`` /
    ``site_radius_m``). Deciles holding fewer than ``min_per_bin`` labelled arrivals are
    pooled with their neighbours toward the middle (``pool_bins``).
    """
    parts = []
    for name, column in RELIABILITY_OUTCOMES:
        limit = radius_m if column == "p_within_radius" else site_radius_m
        raw = store.query(
            f"""
            SELECT least(floor(a.{column} * ?), ? - 1)::INTEGER AS bin, count(*) AS n,
                   sum(a.{column}) AS p_sum,
                   sum(CASE WHEN l.true_distance_m <= ? THEN 1 ELSE 0 END) AS hits
            FROM arrival_checks a JOIN arrival_labels l USING (event_id)
            JOIN tickets t USING (ticket_id)
            WHERE a.{column} IS NOT NULL AND {_REGION}
            GROUP BY 1 ORDER BY 1
            """,
            [bins, bins, limit, region, region],
        )
        parts.append(
            pool_bins(raw, bins=bins, min_per_bin=min_per_bin).with_columns(
                pl.lit(name).alias("outcome")
            )
        )
    return pl.concat(parts).select("outcome", "p_lo", "p_hi", "n", "predicted", "observed")


def pool_bins(raw: pl.DataFrame, *, bins: int, min_per_bin: int) -> pl.DataFrame:
    """Pool sparse probability bins: ``raw`` has ``bin, n, p_sum, hits`` for bins
    ``0..bins-1``; adjacent bins are merged, from each end toward the middle (0.5), until
    each pooled bin holds at least ``min_per_bin`` rows; a short remainder next to the middle
    joins its neighbour on that side (or stands alone when the side has nothing else).
    Returns ``p_lo, p_hi, n, predicted, observed`` in probability order."""
    schema = {"p_lo": pl.Float64, "p_hi": pl.Float64, "n": pl.Int64}
    schema |= {"predicted": pl.Float64, "observed": pl.Float64}
    rows = sorted(raw.iter_rows(named=True), key=lambda r: r["bin"])
    groups: list[list[dict[str, float]]] = []
    half = bins / 2
    low = [r for r in rows if r["bin"] < half]
    high = [r for r in reversed(rows) if r["bin"] >= half]
    for side in (low, high):
        current: list[dict[str, float]] = []
        side_groups = []
        for r in side:
            current.append(r)
            if sum(int(c["n"]) for c in current) >= min_per_bin:
                side_groups.append(current)
                current = []
        if current:  # the remainder joins the last full group, or stands alone
            if side_groups:
                side_groups[-1] += current
            else:
                side_groups.append(current)
        groups += side_groups if side is low else side_groups[::-1]
    out = []
    for g in groups:
        n = sum(int(r["n"]) for r in g)
        lo, hi = min(r["bin"] for r in g), max(r["bin"] for r in g)
        out.append(
            (
                lo / bins,
                (hi + 1) / bins,
                n,
                sum(float(r["p_sum"]) for r in g) / n,
                sum(float(r["hits"]) for r in g) / n,
            )
        )
    return pl.DataFrame(out, schema=schema, orient="row").sort("p_lo")
