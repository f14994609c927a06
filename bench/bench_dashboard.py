"""Dispatch callbacks at scale: 5,000 technicians and 50,000 open tickets.

Builds a synthetic store fast (polars frames through the gateway), then times each dispatch
callback's server function (view + figure, as the callback runs it) and checks the payload
budget (< 2 MB, < 50,000 points). Writes bench/results/dashboard.json.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3
import numpy as np
import plotly.io as pio
import polars as pl

from bench.common import show, write_results
from dashboard.context import AppContext
from dashboard.figures.maps import LAYERS, Basemap
from dashboard.pages.dispatch import kpi_cards, map_view
from pipelines.settings import load_settings
from pipelines.store.gateway import Store
from pipelines.views import TicketFilter, data_clock, filter_options
from pipelines.views import dispatch as views

N_TECH, N_TICKETS, FIXES_PER_TECH, REPEATS = 5_000, 50_000, 20, 15
CLOCK = datetime(2026, 10, 5, 8, 0, tzinfo=UTC)


def build(path: Path, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    lat = 30.0 + rng.random(N_TICKETS) * 0.6
    lon = 119.9 + rng.random(N_TICKETS) * 0.6
    regions = np.array(["north", "south", "east", "west"])[rng.integers(0, 4, N_TICKETS)]
    tags = np.array(["hvac", "plumbing", "power", "network"])[rng.integers(0, 4, N_TICKETS)]
    created = [CLOCK - timedelta(minutes=int(m)) for m in rng.integers(10, 60 * 24 * 5, N_TICKETS)]
    ids = [f"T{i}" for i in range(N_TICKETS)]
    r7 = [h3.str_to_int(h3.latlng_to_cell(a, b, 7)) for a, b in zip(lat, lon, strict=True)]
    tickets = pl.DataFrame(
        {
            "ticket_id": ids,
            "source": "bench",
            "lat": lat,
            "lon": lon,
            "datum_in": "WGS84",
            "tag": tags,
            "region": regions,
            "priority": "normal",
            "created_ts": created,
            "h3_r7": pl.Series(r7, dtype=pl.UInt64),
        }
    )
    techs = [f"K{i}" for i in range(N_TECH)]
    accepted = rng.random(N_TICKETS) < 0.3
    events = pl.concat(
        [
            pl.DataFrame(
                {
                    "event_id": [f"{t}-c" for t in ids],
                    "ticket_id": ids,
                    "event_type": "created",
                    "ts": created,
                    "actor": "dispatch",
                }
            ),
            pl.DataFrame(
                {
                    "event_id": [f"{t}-a" for t, a in zip(ids, accepted, strict=True) if a],
                    "ticket_id": [t for t, a in zip(ids, accepted, strict=True) if a],
                    "event_type": "accepted",
                    "ts": [
                        c + timedelta(minutes=5)
                        for c, a in zip(created, accepted, strict=True)
                        if a
                    ],
                    "actor": [techs[i % N_TECH] for i in range(int(accepted.sum()))],
                }
            ),
        ]
    )
    n_fix = N_TECH * FIXES_PER_TECH
    fixes = pl.DataFrame(
        {
            "technician_id": np.repeat(techs, FIXES_PER_TECH),
            "ts": [CLOCK - timedelta(seconds=30 * (i % FIXES_PER_TECH)) for i in range(n_fix)],
            "lat": 30.0 + rng.random(n_fix) * 0.6,
            "lon": 119.9 + rng.random(n_fix) * 0.6,
            "accuracy_m": 5.0,
            "datum_in": "WGS84",
            "h3": pl.Series([0] * n_fix, dtype=pl.UInt64),
        }
    )
    technicians = pl.DataFrame(
        {
            "technician_id": techs,
            "region": np.array(["north", "south", "east", "west"])[np.arange(N_TECH) % 4],
        }
    )
    with Store(path) as store, store.transaction() as tx:
        for table, frame in (
            ("tickets", tickets),
            ("ticket_events", events),
            ("gps_fixes", fixes),
            ("technicians", technicians),
        ):
            tx.insert_frame(table, frame)


def p95(samples: list[float]) -> float:
    return float(np.percentile(samples, 95))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        build(path)
        build_s = time.perf_counter() - t0
        ctx = AppContext(load_settings(store_path=path, basemap_style="white-bg"))
        basemap = Basemap("white-bg")
        everything, north = TicketFilter(), TicketFilter(region="north", tag="hvac")

        def map_all() -> Any:
            return map_view(ctx, everything, set(LAYERS), basemap, 5.0)

        def map_north() -> Any:
            return map_view(ctx, north, set(LAYERS), basemap, 5.0)

        def kpis() -> Any:
            s = ctx.store
            return kpi_cards(views.kpis(s, everything, data_clock(s)), s.count("arrival_checks"))

        def options() -> Any:
            return filter_options(ctx.store)

        results: dict[str, Any] = {
            "build_s": round(build_s, 2),
            "tickets": N_TICKETS,
            "technicians": N_TECH,
            "callbacks": {},
        }
        rows = [("store build", f"{build_s:.1f} s", f"{N_TICKETS:,} tickets, {N_TECH:,} techs")]
        for name, fn in (
            ("update_map (all layers)", map_all),
            ("update_map (north, hvac)", map_north),
            ("update_kpis", kpis),
            ("options", options),
        ):
            fn()  # warm-up
            samples = []
            for _ in range(REPEATS):
                t = time.perf_counter()
                out = fn()
                samples.append(time.perf_counter() - t)
            entry = {
                "p50_ms": round(1000 * statistics.median(samples), 1),
                "p95_ms": round(1000 * p95(samples), 1),
            }
            if name.startswith("update_map"):
                fig = out[0]
                entry["payload_mb"] = round(len(pio.to_json(fig, validate=False)) / 1e6, 3)
                entry["points"] = sum(
                    len(t.get("lat") or t.get("locations") or []) for t in fig["data"]
                )
            results["callbacks"][name] = entry
            extra = (
                f" · {entry['payload_mb']} MB · {entry['points']:,} pts"
                if "points" in entry
                else ""
            )
            ok = "OK" if entry["p95_ms"] < 300 else "OVER"
            rows.append((name, f"p95 {entry['p95_ms']} ms", f"< 300 ms {ok}{extra}"))
        ctx.store.close()
    write_results("dashboard", results)
    show("dashboard callbacks (5k technicians, 50k open tickets)", rows)


if __name__ == "__main__":
    main()
