"""Ingest 10M GPS fixes from Parquet with validation and H3 r9 indexing.

References measured in the same run:
- naive baseline: pandas row loop + h3-py per point + executemany inserts, on a sample;
- floor: Parquet read + vectorized H3 (polars-h3) alone.
Targets: >= 1.5M fixes/s end to end, peak RSS <= 3 GB, >= 50% of the floor's throughput.
Run: ``python -m bench.bench_ingest [--fixes N]``.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from rich.progress import Progress

from bench.common import run_child, show, timed, write_results


def make_parquet(path: Path, n: int, *, technicians: int = 5000, seed: int = 1) -> None:
    """n fixes: technicians drive random walks around Hangzhou at 5 s per fix."""
    rng = np.random.default_rng(seed)
    per = n // technicians
    tech = np.repeat(np.arange(technicians), per)
    n = len(tech)
    t0 = datetime(2026, 10, 5, tzinfo=UTC)
    step = np.tile(np.arange(per), technicians)
    lat0 = 30.27 + rng.normal(0, 0.05, technicians)
    lon0 = 120.15 + rng.normal(0, 0.05, technicians)
    walk_lat = np.cumsum(rng.normal(0, 0.00003, n)).reshape(technicians, per)
    walk_lon = np.cumsum(rng.normal(0, 0.00003, n)).reshape(technicians, per)
    walk_lat -= walk_lat[:, :1]
    walk_lon -= walk_lon[:, :1]
    frame = pl.DataFrame(
        {
            "technician_id": pl.Series([f"tech-{i:05d}" for i in range(technicians)]).gather(tech),
            "ts_us": step * 5_000_000 + int(t0.timestamp() * 1e6),
            "lat": (lat0[:, None] + walk_lat).ravel(),
            "lon": (lon0[:, None] + walk_lon).ravel(),
            "accuracy_m": rng.uniform(3, 15, n),
            "speed_mps": rng.uniform(0, 14, n),
            "heading_deg": rng.uniform(0, 360, n),
        }
    )
    frame.with_columns(ts=pl.col("ts_us").cast(pl.Datetime("us", "UTC"))).drop(
        "ts_us"
    ).write_parquet(path)


FULL = """
import json, time
from pathlib import Path
from pipelines.ingest.machine import ingest_file
from pipelines.settings import load_settings
from pipelines.store.gateway import Store
s = load_settings()
store = Store(Path({store!r}))
t0 = time.perf_counter()
r = ingest_file(store, "gps", Path({path!r}), s)
dt = time.perf_counter() - t0
print(json.dumps({{"seconds": dt, "accepted": r.rows_accepted, "read": r.rows_read,
                  "quarantined": r.rows_quarantined}}))
"""

FLOOR = """
import json, time
import polars as pl, polars_h3 as plh3
t0 = time.perf_counter()
f = pl.read_parquet({path!r}).with_columns(plh3.latlng_to_cell("lat", "lon", 9).alias("h3"))
print(json.dumps({{"seconds": time.perf_counter() - t0, "rows": f.height}}))
"""

NAIVE = """
import json, time
import duckdb, h3, pandas as pd
df = pd.read_parquet({path!r}).head({sample})
con = duckdb.connect()
con.execute("CREATE TABLE g (technician_id VARCHAR, ts TIMESTAMPTZ, lat DOUBLE, lon DOUBLE,"
            " accuracy_m DOUBLE, h3 UBIGINT)")
t0 = time.perf_counter()
rows = []
for r in df.itertuples(index=False):
    if not (-90 <= r.lat <= 90 and -180 <= r.lon <= 180) or r.accuracy_m != r.accuracy_m:
        continue
    cell = h3.str_to_int(h3.latlng_to_cell(r.lat, r.lon, 9))
    rows.append((r.technician_id, r.ts.to_pydatetime(), r.lat, r.lon, r.accuracy_m, cell))
con.executemany("INSERT INTO g VALUES (?, ?, ?, ?, ?, ?)", rows)
print(json.dumps({{"seconds": time.perf_counter() - t0, "rows": len(df)}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixes", type=int, default=10_000_000)
    parser.add_argument("--naive-sample", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Progress() as bar:
        task = bar.add_task("ingest benchmark", total=4)
        path = Path(tmp) / "fixes.parquet"
        _, gen_s = timed(lambda: make_parquet(path, args.fixes))
        bar.update(task, advance=1, description="floor: parquet read + vectorized H3")
        floor = run_child(FLOOR.format(path=str(path)))
        bar.update(task, advance=1, description="FieldTrace ingest (validation + H3 + DuckDB)")
        full = run_child(FULL.format(path=str(path), store=str(Path(tmp) / "ft.duckdb")))
        bar.update(task, advance=1, description="naive: pandas loop + h3-py + executemany")
        naive = run_child(NAIVE.format(path=str(path), sample=args.naive_sample))
        bar.update(task, advance=1)
    n = full["read"]
    rate = n / full["seconds"]
    floor_rate = floor["rows"] / floor["seconds"]
    naive_rate = naive["rows"] / naive["seconds"]
    results = {
        "fixes": n,
        "generate_s": gen_s,
        "fieldtrace": {**full, "fixes_per_s": rate},
        "floor": {**floor, "fixes_per_s": floor_rate},
        "naive": {**naive, "fixes_per_s": naive_rate},
        "ratio_vs_floor": rate / floor_rate,
        "speedup_vs_naive": rate / naive_rate,
        "targets": {"fixes_per_s": 1.5e6, "peak_rss_mb": 3072, "ratio_vs_floor": 0.5},
    }
    write_results("ingest", results)
    show(
        f"GPS ingest, {n:,} fixes from Parquet",
        [
            ("FieldTrace fixes/s", f"{rate:,.0f}", ">= 1,500,000"),
            ("FieldTrace peak RSS", f"{full['peak_rss_mb']:,.0f} MB", "<= 3,072 MB"),
            ("floor fixes/s (read + H3)", f"{floor_rate:,.0f}", "reference"),
            ("ratio vs floor", f"{rate / floor_rate:.0%}", ">= 50%"),
            ("naive fixes/s (sample)", f"{naive_rate:,.0f}", f"sample of {naive['rows']:,}"),
            ("speed-up vs naive", f"{rate / naive_rate:,.0f}×", "reference"),
        ],
    )


if __name__ == "__main__":
    main()
