"""Recompute the cluster history: the firing cells of every rule at every evaluation time.

Each evaluation time is independent (its baseline is fitted on the tickets before its own
window), so the period is cut into chunks of consecutive times. A chunk reads its tickets
once, with a **halo** before its first time as long as the longest window plus the baseline
history (``read_tickets`` with the history widened by the chunk's length), and evaluates
each time on exactly the tickets the single-process run reads for it: created in
``(at - window - history, at]``. The chunk is pure: tickets in, firing cells out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import polars as pl

from geofence.clusters import evaluate, fit_rule_baselines
from pipelines.alerts.config import AlertConfig
from pipelines.alerts.runner import read_tickets
from pipelines.batch.engine import Runner
from pipelines.store.gateway import Store


@dataclass(frozen=True)
class ClusterHistory:
    firing: pl.DataFrame  # one row per (eval time, rule, firing cell)
    eval_times: int
    seconds: float


def _span(config: AlertConfig) -> timedelta:
    return max(r.window for r in config.rules) + config.history


def firing_at(tickets: pl.DataFrame, config: AlertConfig, at: datetime) -> pl.DataFrame:
    """Firing cells at ``at`` from the tickets read for it (the runner's full evaluation)."""
    created = pl.col("created_ts")
    seen = tickets.filter((created > at - _span(config)) & (created <= at))
    baselines = fit_rule_baselines(seen, config.rules, at=at, history=config.history)
    return evaluate(seen, config.rules, at=at, history_start=at, baselines=baselines)


def firing_chunk(chunk: tuple[pl.DataFrame, list[datetime]], config: AlertConfig) -> pl.DataFrame:
    """Firing cells at every time of one chunk (pure)."""
    tickets, times = chunk
    parts = [firing_at(tickets, config, at) for at in times]
    return pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame()


def eval_times(since: datetime, until: datetime, step: timedelta) -> list[datetime]:
    """``since, since + step, ...`` up to and including ``until``."""
    if step <= timedelta(0):
        raise ValueError(f"cluster history: step={step}; expected > 0")
    n = int((until - since) / step)
    return [since + i * step for i in range(n + 1)]


def cluster_history(
    store: Store,
    config: AlertConfig,
    run: Runner,
    *,
    times: list[datetime],
    chunk_size: int = 24,
) -> ClusterHistory:
    """Firing cells of every rule at each of ``times``, chunk by chunk on ``run``."""
    t0 = time.perf_counter()
    chunks: list[tuple[pl.DataFrame, list[datetime]]] = []
    for i in range(0, len(times), chunk_size):
        part = sorted(times[i : i + chunk_size])
        widened = replace(config, history=config.history + (part[-1] - part[0]))
        tickets, _skipped = read_tickets(store, widened, part[-1], None)
        chunks.append((tickets, part))
    results = run.map(firing_chunk, chunks, config)
    nonempty = [r for r in results if r.height]
    firing = (
        pl.concat(nonempty, how="vertical_relaxed").sort("eval_ts", "tag", "rule_version", "cell")
        if nonempty
        else pl.DataFrame()
    )
    return ClusterHistory(firing, len(times), time.perf_counter() - t0)
