"""Verdict probabilities where the truth is spread: ``python -m bench.bench_verdict_calibration``.

The generated demo worlds put every true arrival at the customer point and every false one
150–400 m away, so their reliability check only exercises the extremes. Here technicians
stand wherever a flatter prior puts them (40 % at the door, 40 % anywhere within the 25 m site
radius, 20 % anywhere within 60 m), each for two hours, with fixes from the demo generator's
own GPS error model (``pipelines.generate.gps.sample_fixes``: per-spell multipath bias 0–8 m,
AR(1) noise, urban canyons, misjudged accuracy). The verdicts use the same prior, so any gap
between predicted and observed comes from the evidence model (bias, stop standard error,
accuracy misjudgement). A measurement, not a unit test: prints predicted vs observed per
decile with the binomial standard error and writes ``bench/results/verdict_calibration.json``.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import polars as pl

from bench.common import show, write_results
from geofence.arrival_model import ErrorModel
from geofence.stops import detect_stops
from geofence.verdict import ArrivalThresholds, verify_arrivals
from pipelines.generate.daysim import DayTrack
from pipelines.generate.geo import to_latlon
from pipelines.generate.gps import sample_fixes

MODEL = ErrorModel(prior_at_door=0.4, prior_on_site=0.4, away_radius_m=60.0)
_T0_S = 1.8e9
_STAY_S = 7200.0


def _datetime(seconds: pl.Expr) -> pl.Expr:
    return (seconds * 1e6).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))


def trials(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(arrivals, fixes inside each arrival's window, truth ``event_id, r``)."""
    rng = np.random.default_rng(seed)
    weights = [MODEL.prior_at_door, MODEL.prior_on_site, MODEL.prior_away]
    comp = rng.choice(3, n, p=weights)
    door = np.hypot(*rng.normal(0.0, MODEL.door_sigma_m, (2, n)))
    site = 25.0 * np.sqrt(rng.random(n))
    away = MODEL.away_radius_m * np.sqrt(rng.random(n))
    r = np.select([comp == 0, comp == 1], [door, site], away)
    angle = rng.uniform(0.0, 2.0 * math.pi, n)
    tap_s = _T0_S + _STAY_S / 2
    parts = []
    for i in range(n):
        track = DayTrack(f"tech-{i:05d}", 0)
        track.start(_T0_S, r[i] * math.cos(angle[i]), r[i] * math.sin(angle[i]))
        track.stay(_T0_S + _STAY_S)
        parts.append(sample_fixes(track, rng))
    window = pl.col("ts").is_between(
        _datetime(pl.lit(tap_s - 2100)), _datetime(pl.lit(tap_s + 900))
    )
    fixes = (
        pl.concat(parts)
        .filter(window)
        .select("technician_id", "ts", "lat", "lon", "accuracy_m", "speed_mps", "mock_location")
    )
    lat, lon = to_latlon(0.0, 0.0)
    ids = [f"tech-{i:05d}" for i in range(n)]
    arrivals = pl.DataFrame(
        {
            "ticket_id": [f"T-{i}" for i in range(n)],
            "event_id": [f"E-{i}" for i in range(n)],
            "technician_id": ids,
            "ts": [tap_s] * n,
            "customer_lat": [float(lat)] * n,
            "customer_lon": [float(lon)] * n,
        }
    ).with_columns(_datetime(pl.col("ts")).alias("ts"))
    truth = pl.DataFrame({"event_id": [f"E-{i}" for i in range(n)], "r": r})
    return arrivals, fixes, truth


def deciles(checks: pl.DataFrame, column: str, limit_m: float) -> pl.DataFrame:
    return (
        checks.with_columns((pl.col(column) * 10).floor().clip(0, 9).cast(pl.Int64).alias("bin"))
        .group_by("bin")
        .agg(
            pl.len().alias("n"),
            pl.col(column).mean().alias("predicted"),
            (pl.col("r") <= limit_m).mean().alias("observed"),
        )
        .with_columns(
            (pl.col("predicted") * (1 - pl.col("predicted")) / pl.col("n")).sqrt().alias("se")
        )
        .sort("bin")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=5)
    args, _ = parser.parse_known_args()
    th = ArrivalThresholds(model=MODEL)
    arrivals, fixes, truth = trials(args.trials, args.seed)
    stops = detect_stops(
        fixes, max_diameter_m=th.stop_max_diameter_m, min_duration=th.stop_min_duration
    )
    checks = verify_arrivals(arrivals, fixes, stops, None, th).join(truth, on="event_id")
    results: dict[str, object] = {"trials": args.trials, "seed": args.seed}
    for column, limit in (("p_within_radius", th.radius_m), ("p_on_site", th.site_radius_m)):
        for evidence in ("stop", "gps_fix", None):
            part = (
                checks if evidence is None else checks.filter(pl.col("model_evidence") == evidence)
            )
            table = deciles(part, column, limit)
            key = f"{column}:{evidence or 'all'}"
            results[key] = table.to_dicts()
            show(
                key,
                [
                    (
                        f"{b / 10:.1f}–{(b + 1) / 10:.1f} (n={n})",
                        f"predicted {p:.3f}",
                        f"observed {o:.3f} ± {s:.3f}",
                    )
                    for b, n, p, o, s in table.iter_rows()
                ],
            )
    write_results("verdict_calibration", results)


if __name__ == "__main__":
    main()
