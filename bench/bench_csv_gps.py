"""GPS ingest throughput from text formats vs the native Parquet path, in one run.

The same synthetic fixes (technicians on random walks at 5 s per fix) are written as Parquet,
as a generic ``;``-separated CSV and as GPX 1.1 (one file per format, one track), then each is
ingested end to end (parse, coerce, rules, H3, DuckDB) into a fresh store. Target: generic CSV
>= 40% of Parquet's fixes/s. GPX is reported, without a target.
Run: ``python -m bench.bench_csv_gps [--fixes N] [--gpx-fixes N]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.common import show, timed, write_results

TARGET_CSV_RATIO = 0.40


def make_parquet(path: Path, n: int, *, technicians: int, seed: int = 1) -> None:
    """n fixes: technicians on random walks around Hangzhou at 5 s per fix."""
    rng = np.random.default_rng(seed)
    per = max(1, n // technicians)
    tech = np.repeat(np.arange(technicians), per)
    step = np.tile(np.arange(per), technicians)
    walk = np.cumsum(rng.normal(0, 0.00003, (2, tech.size)), axis=1)
    t0 = np.datetime64("2026-10-05T00:00:00", "us")
    pl.DataFrame(
        {
            "technician_id": np.char.add("tech-", tech.astype(str)),
            "ts": t0 + step.astype("timedelta64[s]") * 5,
            "lat": 30.27 + rng.normal(0, 0.05, technicians)[tech] + walk[0] - walk[0][0],
            "lon": 120.15 + rng.normal(0, 0.05, technicians)[tech] + walk[1] - walk[1][0],
            "accuracy_m": rng.uniform(3, 15, tech.size),
            "speed_mps": rng.uniform(0, 14, tech.size),
            "heading_deg": rng.uniform(0, 360, tech.size),
        }
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC")).write_parquet(path)


def write_generic_csv(parquet: Path, out: Path) -> None:
    pl.read_parquet(parquet).select(
        pl.col("technician_id").alias("device"),
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("timestamp"),
        pl.col("lat").alias("latitude"),
        pl.col("lon").alias("longitude"),
        pl.col("accuracy_m").round(2).alias("accuracy"),
        pl.col("speed_mps").round(2).alias("speed"),
        pl.col("heading_deg").round(1).alias("bearing"),
    ).write_csv(out, separator=";")


def write_gpx(parquet: Path, out: Path, n: int) -> None:
    """One technician's fixes as GPX (GPX has no device column: the file is the device)."""
    frame = (
        pl.read_parquet(parquet)
        .head(n)
        .select(
            pl.format(
                '<trkpt lat="{}" lon="{}"><ele>12.0</ele><time>{}</time><hdop>{}</hdop></trkpt>',
                pl.col("lat").round(7),
                pl.col("lon").round(7),
                pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                (pl.col("accuracy_m") / 5).round(2),
            ).alias("x")
        )
    )
    with out.open("w") as fh:
        fh.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="bench" '
            'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>\n'
        )
        fh.write("\n".join(frame["x"].to_list()))
        fh.write("\n</trkseg></trk></gpx>\n")


def ingest(path: Path, fmt: str, store_path: Path) -> dict[str, Any]:
    from pipelines.ingest.contract import IngestOptions
    from pipelines.ingest.machine import ingest_file
    from pipelines.settings import load_settings
    from pipelines.store.gateway import Store

    with Store(store_path) as store:
        result, seconds = timed(
            lambda: ingest_file(
                store, "gps", path, load_settings(), IngestOptions(fmt=fmt, extra={"device": "g"})
            )
        )
    return {
        "seconds": seconds,
        "read": result.rows_read,
        "accepted": result.rows_accepted,
        "quarantined": result.rows_quarantined,
        "fixes_per_s": result.rows_read / seconds,
        "mb": path.stat().st_size / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixes", type=int, default=1_000_000)
    parser.add_argument("--gpx-fixes", type=int, default=None, help="default: --fixes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pq, csv, gpx = tmp / "fixes.parquet", tmp / "fixes.csv", tmp / "fixes.gpx"
        make_parquet(pq, args.fixes, technicians=max(1, args.fixes // 2000))
        write_generic_csv(pq, csv)
        write_gpx(pq, gpx, args.gpx_fixes or args.fixes)
        runs = {
            "parquet": ingest(pq, "parquet", tmp / "a.duckdb"),
            "generic_csv": ingest(csv, "generic", tmp / "b.duckdb"),
            "gpx": ingest(gpx, "gpx", tmp / "c.duckdb"),
        }
    base = runs["parquet"]["fixes_per_s"]
    ratios = {k: v["fixes_per_s"] / base for k, v in runs.items()}
    write_results(
        "csv_gps",
        {
            "fixes": args.fixes,
            "runs": runs,
            "ratio_vs_parquet": ratios,
            "targets": {"generic_csv_ratio": TARGET_CSV_RATIO},
        },
    )
    show(
        f"GPS ingest from text formats, {args.fixes:,} fixes",
        [
            *(
                (
                    f"{k} fixes/s",
                    f"{v['fixes_per_s']:,.0f}",
                    f"{ratios[k]:.0%} of parquet; {v['read']:,} read, {v['mb']:.0f} MB",
                )
                for k, v in runs.items()
            ),
            ("generic CSV / parquet", f"{ratios['generic_csv']:.0%}", f">= {TARGET_CSV_RATIO:.0%}"),
        ],
    )


if __name__ == "__main__":
    main()
