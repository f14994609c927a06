"""Benchmark ticket clusters and Gi*: ``python bench/bench_clusters.py [--tickets N]``.

* 1M synthetic tagged tickets over 90 days (a ~110 x 110 km service area, 4 tags, a
  weekly rhythm and a few planted bursts).
* Full evaluation: every rule at every hour of the 90 days (72 h windows, res 7, 1-ring).
* Incremental update: a 1-hour batch of 500 new tickets, only touched rings re-evaluated.
* A naive per-cell Python loop on a sample of (cell, hour) pairs, extrapolated; the ratio.
* Gi* against esda.G_Local on the NYC 311 sample at res 8 (speed and hot-cell overlap).

Prints a table and writes ``bench/results/clusters.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import h3
import numpy as np
import polars as pl
import polars_h3 as plh3
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geofence.clusters import (  # noqa: E402
    ClusterRule,
    evaluate,
    evaluate_many,
    fit_baselines,
    merge_adjacent,
    prepare_tickets,
    rolling_ring_counts,
)
from geofence.hotspots import gi_star, hot_cells, pad_with_neighbours, star_weights  # noqa: E402

T = TypeVar("T")
START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 90
TAGS = ("refrigerant_leak", "breaker_trip", "compressor_noise", "water_ingress")
CENTRE = (41.0, -87.8)
REALDATA = Path(os.environ.get("FIELDTRACE_REALDATA", REPO.parent / "shared" / "realdata"))


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[T, float, list[float]]:
    """Result of the last run, median seconds and all run times."""
    times: list[float] = []
    result: T | None = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    assert result is not None
    return result, statistics.median(times), times


def make_tickets(n: int, seed: int, *, start: datetime, hours: float, prefix: str) -> pl.DataFrame:
    """Tickets: population-like Gaussian blobs, weekday/daytime rhythm, 4 tags."""
    rng = np.random.default_rng(seed)
    blobs = rng.normal(0, 0.3, size=(12, 2))
    which = rng.integers(0, len(blobs), n)
    lat = CENTRE[0] + blobs[which, 0] + rng.normal(0, 0.12, n)
    lon = CENTRE[1] + blobs[which, 1] * 1.3 + rng.normal(0, 0.15, n)
    # thinning gives a daytime / weekday rhythm
    offered = rng.uniform(0, hours, int(n * 2.2))
    hour_of_day = (offered % 24).astype(int)
    weekday = ((offered // 24) + start.weekday()) % 7
    keep = rng.uniform(size=offered.size) < np.where(
        (hour_of_day >= 7) & (hour_of_day < 19), 0.9, 0.3
    ) * np.where(weekday < 5, 1.0, 0.6)
    kept = offered[keep]
    if kept.size < n:
        kept = np.concatenate([kept, rng.uniform(0, hours, n - kept.size)])
    # a random subset, not the first n: the rhythm must cover the whole span
    offset_h = np.sort(rng.choice(kept, size=n, replace=False))
    start_us = int(start.timestamp() * 1_000_000)
    return pl.DataFrame(
        {
            "ticket_id": pl.Series([f"{prefix}{i}" for i in range(n)], dtype=pl.String),
            "created_ts": pl.Series(start_us + (offset_h * 3.6e9).astype(np.int64)).cast(
                pl.Datetime("us", "UTC")
            ),
            "lat": lat,
            "lon": lon,
            "tag": rng.choice(TAGS, n, p=[0.4, 0.3, 0.2, 0.1]),
            "region": "midwest",
        }
    )


def naive_counts(
    tag_cells: list[str], tag_ts: np.ndarray, cells: list[str], eval_us: list[int], window_us: int
) -> list[int]:
    """The obvious loop: for each cell and hour, scan its ring's tickets."""
    out: list[int] = []
    for cell in cells:
        ring = set(h3.grid_disk(cell, 1))
        in_ring = np.array([c in ring for c in tag_cells])
        for t in eval_us:
            out.append(int(((tag_ts > t - window_us) & (tag_ts <= t) & in_ring).sum()))
    return out


def bench_gi(console: Console) -> dict[str, Any]:
    path = REALDATA / "nyc311_sample" / "nyc311_1000.csv"
    if not path.exists():
        console.print(f"[yellow]skip Gi*: {path} is absent")
        return {"skipped": True}
    from esda import G_Local
    from libpysal.weights import W

    raw = pl.read_csv(path, infer_schema_length=0)
    points = raw.select(
        lat=pl.col("Latitude").cast(pl.Float64), lon=pl.col("Longitude").cast(pl.Float64)
    ).drop_nulls()
    counts = pad_with_neighbours(
        points.select(cell=plh3.latlng_to_cell("lat", "lon", 8))
        .group_by("cell")
        .agg(count=pl.len())
    )
    ours, ours_s, _ = timed(lambda: gi_star(counts, seed=7), repeat=5)

    def run_esda() -> Any:
        adjacency = star_weights(counts["cell"]).tocoo()
        neighbours: dict[int, list[int]] = {i: [] for i in range(counts.height)}
        for i, j in zip(adjacency.row.tolist(), adjacency.col.tolist(), strict=True):
            if i != j:
                neighbours[i].append(j)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return G_Local(
                counts["count"].to_numpy(),
                W(neighbours),
                transform="B",
                star=True,
                permutations=999,
                seed=7,
                n_jobs=1,
            )

    theirs, esda_s, _ = timed(run_esda, repeat=3)
    cells = counts["cell"].to_numpy()
    e_norm = set(cells[(theirs.Zs > 0) & (theirs.p_norm < 0.01)].tolist())
    e_sim = set(cells[(theirs.Zs > 0) & (np.round(theirs.p_sim * 1000) / 1000 < 0.01)].tolist())
    o_norm = set(hot_cells(ours, p_max=0.01).to_list())
    o_sim = set(hot_cells(ours, p_max=0.01, p_column="p_sim").to_list())

    def jaccard(a: set[int], b: set[int]) -> float:
        return len(a & b) / max(len(a | b), 1)

    return {
        "cells": counts.height,
        "gi_star_s": ours_s,
        "esda_s": esda_s,
        "speedup": esda_s / ours_s,
        "max_abs_z_diff": float(np.abs(ours["z"].to_numpy() - theirs.Zs).max()),
        "hot_p_norm": {
            "ours": len(o_norm),
            "esda": len(e_norm),
            "jaccard": jaccard(o_norm, e_norm),
        },
        "hot_p_sim_independent_draws": {
            "ours": len(o_sim),
            "esda": len(e_sim),
            "jaccard": jaccard(o_sim, e_sim),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "clusters.json")
    args = parser.parse_args()
    console = Console()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "polars_threads": pl.thread_pool_size(),
        },
        "tickets": args.tickets,
        "days": DAYS,
    }
    storm_rules = [
        ClusterRule(tag=tag, more_than=more, version="storm", fire_on="either")
        for tag, more in zip(TAGS, (59, 49, 39, 29), strict=True)
    ]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("bench", total=8)

        progress.update(task, description="generate 1M tickets")
        raw = make_tickets(args.tickets, 1, start=START, hours=DAYS * 24, prefix="t")
        progress.advance(task)

        progress.update(task, description="prepare (H3 cells)")
        (usable, skipped), prep_s, _ = timed(lambda: prepare_tickets(raw, [7]))
        results["prepare_s"] = prep_s
        progress.advance(task)

        # production-like thresholds: the 99.9th percentile of a tag's cell-hours, so alerts
        # are rare; the "storm" rules (fixed low thresholds) measure an alert storm
        end = START + timedelta(days=DAYS)
        hourly = pl.datetime_range(
            START + timedelta(hours=1), end, interval="1h", eager=True, time_zone="UTC"
        )
        rules = [
            ClusterRule(
                tag=tag,
                more_than=int(
                    rolling_ring_counts(
                        usable,
                        tag=tag,
                        resolution=7,
                        k_ring=1,
                        window=timedelta(hours=72),
                        eval_times=hourly,
                    )["count"].quantile(0.999)
                ),
                version="p999",
                fire_on="either",
            )
            for tag in TAGS
        ]
        results["thresholds_more_than"] = {r.tag: r.more_than for r in rules}
        progress.update(task, description="fit baselines")
        baselines, base_s, _ = timed(
            lambda: fit_baselines(
                usable, [*rules, *storm_rules], history_start=START, history_end=end
            )
        )
        results["fit_baselines_s"] = base_s
        progress.advance(task)

        progress.update(task, description="full evaluation (hourly, 90 days)")
        firing, full_s, full_runs = timed(
            lambda: evaluate_many(usable, rules, eval_times=hourly, baselines=baselines), repeat=3
        )
        clusters, merge_s, _ = timed(lambda: merge_adjacent(firing))
        n_centres = int(usable.select(plh3.grid_disk("h3_r7", 1)).explode("h3_r7").n_unique())
        results["full"] = {
            "eval_times": hourly.len(),
            "rules": len(rules),
            "ring_centres": n_centres,
            "cell_hours_per_rule": n_centres * hourly.len(),
            "seconds_median": full_s,
            "runs": full_runs,
            "firing_rows": firing.height,
            "merge_s": merge_s,
            "clusters": clusters.height,
        }
        storm, storm_s, _ = timed(
            lambda: evaluate_many(usable, storm_rules, eval_times=hourly, baselines=baselines)
        )
        results["alert_storm"] = {
            "more_than": [r.more_than for r in storm_rules],
            "seconds": storm_s,
            "firing_rows": storm.height,
        }
        progress.advance(task)

        progress.update(task, description="incremental (500 tickets, 1 h)")
        incremental_runs: list[float] = []
        touched_rows = []
        for seed in range(10):
            batch_raw = make_tickets(500, 100 + seed, start=end, hours=1, prefix=f"n{seed}_")
            at = end + timedelta(hours=1)

            def step(batch_raw: pl.DataFrame = batch_raw, at: datetime = at) -> pl.DataFrame:
                batch, _ = prepare_tickets(batch_raw, [7])
                state = pl.concat([usable, batch], rechunk=False)
                return evaluate(
                    state,
                    rules,
                    at=at,
                    history_start=START,
                    baselines=baselines,
                    touched_by=batch,
                )

            out, _, runs = timed(step, repeat=1)
            incremental_runs += runs
            touched_rows.append(out.height)
        results["incremental"] = {
            "batch": 500,
            "seconds_median": statistics.median(incremental_runs),
            "seconds_max": max(incremental_runs),
            "runs": incremental_runs,
        }
        progress.advance(task)

        progress.update(task, description="naive loop (sample)")
        tag = rules[0].tag
        tagged = usable.filter(pl.col("tag") == tag)
        tag_cells = tagged.select(plh3.int_to_str("h3_r7")).to_series().to_list()
        tag_ts = tagged["created_ts"].dt.epoch("us").to_numpy()
        sample_cells = sorted(set(tag_cells))[:: max(1, len(set(tag_cells)) // 20)][:20]
        sample_eval = hourly.dt.epoch("us").to_list()[::90][:24]
        window_us = 72 * 3_600_000_000
        _, naive_s, _ = timed(
            lambda: naive_counts(tag_cells, tag_ts, sample_cells, sample_eval, window_us)
        )
        per_pair = naive_s / (len(sample_cells) * len(sample_eval))
        naive_full_s = per_pair * n_centres * hourly.len() * len(rules)
        results["naive"] = {
            "sample_pairs": len(sample_cells) * len(sample_eval),
            "sample_s": naive_s,
            "extrapolated_full_s": naive_full_s,
            "ratio_vs_vectorised": naive_full_s / full_s,
        }
        progress.advance(task)

        progress.update(task, description="Gi* vs esda (NYC 311, res 8)")
        results["gi_star"] = bench_gi(console)
        progress.advance(task)
    results["skipped"] = skipped

    table = Table(title="FieldTrace clusters benchmark")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    full = results["full"]
    table.add_row("tickets / days / rules", f"{args.tickets:,} / {DAYS} / {len(rules)}", "")
    table.add_row("prepare (H3 res 7)", f"{prep_s:.2f} s", "")
    table.add_row("fit baselines", f"{base_s:.2f} s", "")
    table.add_row(
        "full eval: hourly x 90 d, all rules",
        f"{full['seconds_median']:.2f} s ({full['cell_hours_per_rule']:,} cell-hours/rule)",
        "<= 3 s",
    )
    table.add_row("  firing rows / clusters", f"{full['firing_rows']:,} / {full['clusters']:,}", "")
    storm = results["alert_storm"]
    table.add_row(
        "alert storm (more_than 59/49/39/29)",
        f"{storm['seconds']:.2f} s ({storm['firing_rows']:,} firing rows)",
        "",
    )
    inc = results["incremental"]
    table.add_row(
        "incremental: 500 tickets",
        f"{inc['seconds_median'] * 1000:.0f} ms (max {inc['seconds_max'] * 1000:.0f})",
        "<= 100 ms",
    )
    naive = results["naive"]
    table.add_row("naive loop, extrapolated", f"{naive['extrapolated_full_s']:,.0f} s", "")
    table.add_row("  ratio naive / vectorised", f"{naive['ratio_vs_vectorised']:,.0f}x", "")
    gi = results["gi_star"]
    if not gi.get("skipped"):
        table.add_row(
            f"Gi* ({gi['cells']} cells, 999 perms)",
            f"{gi['gi_star_s'] * 1000:.0f} ms vs esda {gi['esda_s'] * 1000:.0f} ms",
            "",
        )
        table.add_row(
            "  hot cells p_norm<0.01 Jaccard", f"{gi['hot_p_norm']['jaccard']:.2f}", ">= 0.9"
        )
        table.add_row(
            "  hot cells p_sim<0.01 Jaccard (own draws)",
            f"{gi['hot_p_sim_independent_draws']['jaccard']:.2f}",
            "",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
