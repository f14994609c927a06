"""Benchmark the replay bundle: ``python -m bench.bench_replay [--fixes N] [--store PATH]``.

* A synthetic store: ``--fixes`` GPS fixes (default 10M, 1 Hz, 250 technicians) written through
  the ``Store`` gateway, then ``store.optimize()``; 20k tickets with lifecycles, hourly weather
  on a 0.1° grid, outages, IoT devices with 10-minute readings, a UWB site and cluster alerts.
* ``replay_bundle`` p50/p95 over random arrival nodes (target p95 ≤ 25 ms).
* The node-click callback end to end through Flask (``/_dash-update-component``; ≤ 300 ms).
* The naive way in the same run: read the technician's whole day, filter the window in Python.

Prints a table and writes ``bench/results/replay.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3
import numpy as np
import polars as pl
import polars_h3 as plh3

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import show, write_results  # noqa: E402
from pipelines.store.gateway import Store  # noqa: E402
from pipelines.views.replay import replay_bundle  # noqa: E402

DAY0 = datetime(2026, 3, 2, tzinfo=UTC)
CENTRE = (30.27, 120.15)
N_TECHS = 250
N_TICKETS = 20_000
CHUNK = 2_000_000
EVENTS = (
    "created",
    "assigned",
    "accepted",
    "departed",
    "arrived",
    "work_started",
    "completed",
    "closed",
)


def _tech(i: int) -> str:
    return f"tech-{i:04d}"


def build(path: Path, n_fixes: int, seed: int = 7) -> None:
    """Write the synthetic store at ``path`` (through the gateway) and optimize it."""
    rng = np.random.default_rng(seed)
    per_tech = n_fixes // N_TECHS
    with Store(path) as store:
        done = 0
        for first in range(0, N_TECHS, max(1, CHUNK // per_tech)):
            techs = range(first, min(N_TECHS, first + max(1, CHUNK // per_tech)))
            n = per_tech * len(techs)
            tech_idx = np.repeat(np.array(list(techs)), per_tech)
            step = rng.normal(0, 0.00003, size=(n, 2)).cumsum(axis=0)
            step -= np.repeat(step[::per_tech], per_tech, axis=0)  # each tech starts at home
            home = rng.uniform(-0.15, 0.15, size=(N_TECHS, 2))[tech_idx]
            offsets = np.tile(np.arange(per_tech, dtype=np.int64), len(techs))
            fx = pl.DataFrame(
                {
                    "technician_id": pl.Series([_tech(int(i)) for i in techs])
                    .to_numpy()
                    .repeat(per_tech),
                    "ts_us": offsets * 1_000_000 + int(DAY0.timestamp() * 1e6),
                    "lat": CENTRE[0] + home[:, 0] + step[:, 0],
                    "lon": CENTRE[1] + home[:, 1] + step[:, 1],
                    "accuracy_m": rng.gamma(2.0, 3.0, n).round(1),
                    "speed_mps": rng.gamma(1.5, 2.0, n).round(2),
                }
            ).with_columns(
                pl.from_epoch("ts_us", time_unit="us").dt.replace_time_zone("UTC").alias("ts"),
                pl.lit("WGS84").alias("datum_in"),
            )
            fx = fx.with_columns(plh3.latlng_to_cell("lat", "lon", 9).alias("h3")).drop("ts_us")
            with store.transaction() as tx:
                tx.insert_frame("gps_fixes", fx)
            done += fx.height
            print(f"  gps_fixes: {done:,}/{n_fixes:,}", flush=True)
        _side_tables(store, rng, per_tech)
        t0 = time.perf_counter()
        store.optimize()
        print(f"  optimize: {time.perf_counter() - t0:.1f} s", flush=True)


def _side_tables(store: Store, rng: np.random.Generator, per_tech: int) -> None:
    day_s = per_tech
    lat = CENTRE[0] + rng.uniform(-0.15, 0.15, N_TICKETS)
    lon = CENTRE[1] + rng.uniform(-0.15, 0.15, N_TICKETS)
    created = rng.uniform(0, max(day_s - 7200, 1), N_TICKETS)
    tickets = pl.DataFrame(
        {
            "ticket_id": [f"T-{i:06d}" for i in range(N_TICKETS)],
            "source": "bench",
            "customer_id": [f"C-{i:06d}" for i in range(N_TICKETS)],
            "lat": lat,
            "lon": lon,
            "datum_in": "WGS84",
            "tag": rng.choice(["hvac", "plumbing", "power"], N_TICKETS),
            "region": "r1",
            "site_id": ["SITE-01" if i % 500 == 0 else None for i in range(N_TICKETS)],
            "created_ts": [DAY0 + timedelta(seconds=float(s)) for s in created],
            "h3_r7": [
                h3.str_to_int(h3.latlng_to_cell(a, b, 7)) for a, b in zip(lat, lon, strict=True)
            ],
        }
    )
    gaps = np.array([0, 60, 300, 600, 1800, 1900, 4000, 4500])
    ev_rows = []
    for i in range(N_TICKETS):
        tech = _tech(int(rng.integers(N_TECHS)))
        for k, kind in enumerate(EVENTS):
            ev_rows.append(
                (
                    f"T-{i:06d}-{k}",
                    f"T-{i:06d}",
                    kind,
                    DAY0 + timedelta(seconds=float(created[i] + gaps[k])),
                    tech if kind in EVENTS[2:7] else "dispatch",
                )
            )
    events = pl.DataFrame(
        ev_rows, schema=["event_id", "ticket_id", "event_type", "ts", "actor"], orient="row"
    )
    hours = [DAY0 + timedelta(hours=h) for h in range(day_s // 3600 + 2)]
    grid = [
        (round(CENTRE[0] + a, 1), round(CENTRE[1] + b, 1))
        for a in np.arange(-0.3, 0.31, 0.1)
        for b in np.arange(-0.3, 0.31, 0.1)
    ]
    weather = pl.DataFrame(
        [
            (g[0], g[1], t, v, float(rng.gamma(1, 2)), u)
            for g in grid
            for t in hours
            for v, u in (("precipitation", "mm"), ("temperature", "C"))
        ],
        schema=["grid_lat", "grid_lon", "ts", "variable", "value", "unit"],
        orient="row",
    )
    out_rows = []
    for k in range(300):
        a, b, d = CENTRE[0] + rng.uniform(-0.15, 0.15), CENTRE[1] + rng.uniform(-0.15, 0.15), 0.01
        out_rows.append(
            {
                "outage_id": f"OUT-{k}",
                "source": "bench",
                "geom_wkt": f"POLYGON(({b - d} {a - d}, {b + d} {a - d}, {b + d} {a + d}, "
                f"{b - d} {a + d}, {b - d} {a - d}))",
                "min_lat": a - d,
                "max_lat": a + d,
                "min_lon": b - d,
                "max_lon": b + d,
                "start_ts": DAY0 + timedelta(hours=float(rng.uniform(0, 10))),
                "end_ts": DAY0 + timedelta(hours=float(rng.uniform(10, 14))),
            }
        )
    devices = pl.DataFrame(
        {
            "device_id": [f"D-{i:05d}" for i in range(0, N_TICKETS, 10)],
            "customer_id": [f"C-{i:06d}" for i in range(0, N_TICKETS, 10)],
            "kind": "compressor",
            "lat": lat[::10],
            "lon": lon[::10],
        }
    )
    steps = np.arange(0, day_s, 600)
    readings = (
        pl.DataFrame(
            {
                "device_id": np.repeat(devices["device_id"].to_numpy(), steps.size),
                "ts_s": np.tile(steps, devices.height),
                "metric": "vibration_rms",
                "value": rng.gamma(2, 1.5, devices.height * steps.size),
                "unit": "mm/s",
            }
        )
        .with_columns((pl.lit(DAY0) + pl.duration(seconds="ts_s")).alias("ts"))
        .drop("ts_s")
    )
    alerts = pl.DataFrame(
        [
            {
                "alert_id": f"A-{k}",
                "cluster_key": f"k{k}",
                "tag": "hvac",
                "status": "open",
                "trend": "growing",
                "member_count": 3,
                "member_cells": [h3.latlng_to_cell(lat[k * 97], lon[k * 97], 7)],
                "member_ticket_ids": [f"T-{k * 97:06d}"],
                "explanation": "bench",
                "rule_version": "bench",
                "first_seen": DAY0,
                "last_updated": DAY0,
            }
            for k in range(100)
        ]
    )
    site = pl.DataFrame(
        [
            {
                "site_id": "SITE-01",
                "name": "Tower",
                "origin_lat": CENTRE[0],
                "origin_lon": CENTRE[1],
                "rotation_deg": 0.0,
                "anchors": json.dumps([{"anchor_id": "A1", "x": 0, "y": 0}]),
            }
        ]
    )
    with store.transaction() as tx:
        for table, frame in (
            ("tickets", tickets),
            ("ticket_events", events),
            ("weather_obs", weather),
            ("outages", pl.DataFrame(out_rows)),
            ("iot_devices", devices),
            ("iot_readings", readings),
            ("cluster_alerts", alerts),
            ("uwb_sites", site),
        ):
            tx.insert_frame(table, frame)


def _arrivals(store: Store, n: int, seed: int) -> list[tuple[str, datetime, str, str]]:
    frame = store.query(
        "SELECT ticket_id, ts, actor, event_id FROM ticket_events WHERE event_type = "
        "'arrived' ORDER BY hash(event_id, ?) LIMIT ?",
        [seed, n],
    )
    return [(r[0], r[1], r[2], r[3]) for r in frame.iter_rows()]


def naive_bundle_gps(store: Store, tech: str, at: datetime) -> pl.DataFrame:
    """The baseline: the technician's whole day into Python, then filter the window."""
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    frame = store.query(
        "SELECT technician_id, ts, lat, lon, accuracy_m, speed_mps FROM "
        "gps_fixes WHERE technician_id = ? AND ts >= ? AND ts < ?",
        [tech, day, day + timedelta(days=1)],
    )
    half = timedelta(minutes=30)
    return frame.filter(pl.col("ts").is_between(at - half, at + half))


def _pcts(times_s: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times_s)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
        "max_ms": round(ms[-1], 2),
        "n": len(ms),
    }


def _callback_time(store_path: Path, nodes: list[tuple[str, datetime, str, str]]) -> dict[str, Any]:
    """POST the node-click callback like the browser and time the server round trip."""
    from dashboard import create_app
    from dashboard.replay_ids import BUNDLE_KEY
    from pipelines.settings import load_settings

    settings = load_settings(store_path=store_path, auth_mode="open", basemap_style="white-bg")
    app = create_app(settings)
    client = app.server.test_client()
    key = next(k for k in app.callback_map if BUNDLE_KEY in k)
    entry = app.callback_map[key]
    outputs = [
        {"id": o.split(".")[0], "property": o.split(".")[1].split("@")[0]}
        for o in key.strip(".").split("...")
    ]
    times = []
    for ticket_id, _, _, event_id in nodes:
        node = {"ticket": ticket_id, "t": None, "node": event_id, "window_min": 30}
        body = {
            "output": key,
            "outputs": outputs,
            "inputs": [{**i, "value": node} for i in entry["inputs"]],
            "state": [{**s, "value": None} for s in entry["state"]],
            "changedPropIds": [f"{entry['inputs'][0]['id']}.{entry['inputs'][0]['property']}"],
        }
        t0 = time.perf_counter()
        resp = client.post("/_dash-update-component", json=body)
        times.append(time.perf_counter() - t0)
        if resp.status_code != 200:
            raise RuntimeError(f"callback answered {resp.status_code}: {resp.data[:300]!r}")
    return _pcts(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fixes", type=int, default=10_000_000)
    parser.add_argument("--store", type=Path, default=Path("/tmp/fieldtrace-bench-replay.duckdb"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--nodes", type=int, default=200)
    args, _ = parser.parse_known_args()
    build_s = 0.0
    if args.rebuild or not args.store.exists():
        args.store.unlink(missing_ok=True)
        t0 = time.perf_counter()
        build(args.store, args.fixes)
        build_s = time.perf_counter() - t0
    store = Store(args.store)
    n_fixes = store.count("gps_fixes")
    nodes = _arrivals(store, args.nodes, 11)
    for ticket_id, ts, _, _ in nodes[:10]:  # warm-up
        replay_bundle(store, ticket_id, ts)
    times, rows = [], 0
    for ticket_id, ts, _, _ in nodes:
        t0 = time.perf_counter()
        bundle = replay_bundle(store, ticket_id, ts)
        times.append(time.perf_counter() - t0)
        rows += bundle.gps.height
    bundle_stats = _pcts(times)
    naive = []
    for _, ts, tech, _ in nodes:
        t0 = time.perf_counter()
        naive_bundle_gps(store, tech, ts)
        naive.append(time.perf_counter() - t0)
    naive_stats = _pcts(naive)
    window = []
    for _, ts, tech, _ in nodes:
        t0 = time.perf_counter()
        store.query(
            "SELECT technician_id, ts, lat, lon, accuracy_m, speed_mps FROM gps_fixes "
            "WHERE technician_id = ? AND ts BETWEEN ? AND ?",
            [tech, ts - timedelta(minutes=30), ts + timedelta(minutes=30)],
        )
        window.append(time.perf_counter() - t0)
    window_stats = _pcts(window)
    store.close()
    callback_stats = _callback_time(args.store, nodes[:60])
    results = {
        "gps_fixes": n_fixes,
        "build_s": round(build_s, 1),
        "nodes": len(nodes),
        "gps_rows_per_bundle": round(rows / max(len(nodes), 1), 1),
        "replay_bundle": bundle_stats,
        "gps_window_read_only": window_stats,
        "naive_whole_day_then_filter_gps_only": naive_stats,
        "node_click_callback": callback_stats,
        "targets": {"replay_bundle_p95_ms": 25, "node_click_callback_p95_ms": 300},
    }
    path = write_results("replay", results)
    show(
        f"replay bundle on {n_fixes:,} GPS fixes ({len(nodes)} arrival nodes)",
        [
            (
                "replay_bundle p50 / p95",
                f"{bundle_stats['p50_ms']} / {bundle_stats['p95_ms']} ms",
                "target p95 ≤ 25 ms; all streams",
            ),
            (
                "GPS window read only p50 / p95",
                f"{window_stats['p50_ms']} / {window_stats['p95_ms']} ms",
                "one stream",
            ),
            (
                "naive: whole day → Python filter p50 / p95",
                f"{naive_stats['p50_ms']} / {naive_stats['p95_ms']} ms",
                "GPS stream only",
            ),
            (
                "node-click callback p50 / p95",
                f"{callback_stats['p50_ms']} / {callback_stats['p95_ms']} ms",
                "target p95 ≤ 300 ms; Flask round trip",
            ),
            ("build store", f"{build_s:.1f} s", "0 = reused"),
        ],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
