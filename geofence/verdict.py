"""Arrival verdicts: was the technician within ``radius_m`` of the customer at "arrived"?

One vectorized pass over all arrivals (no loop over rows). Evidence, in order of trust:

1. **UWB** (indoors): the nearest UWB position of the technician at the arrival's ``site_id``
   within ``±max_fix_gap`` with ``error_m <= uwb_max_error_m`` decides alone:
   VERIFIED if ``d + accuracy_k·error <= radius``, REJECTED if ``d - reject_margin_k·error >
   radius``, else INCONCLUSIVE ``straddles_radius``.
2. **Spoofing**: a flagged fix of the technician within ``±max_fix_gap`` (the fixes the GPS
   evidence rests on) makes the verdict INCONCLUSIVE with the rule's name:
   ``mock_location``, ``future_fix`` (fix ``ts`` after ``now`` or after its own
   ``ingested_ts``), ``spoof_speed`` (reaching the fix needed more than ``max_speed_mps``),
   ``spoof_repeated_coords`` (the fix is in a run of >= ``repeat_coord_run`` identical
   coordinates).
3. **GPS fix**: the decisive fix is the nearest in time of the technician's last fix at or
   before the arrival and first fix after it, both within ``max_fix_gap``, preferring one with
   ``accuracy_m <= max_accuracy_m``. VERIFIED if ``d + accuracy_k·accuracy <= radius``.
4. **Stop**: the latest stop starting before ``ts + max_fix_gap`` that has not ended before
   ``ts - max_fix_gap``, with ``>= stop_min_fixes`` fixes: VERIFIED if
   ``d + stop_se_k·se <= radius``.
5. REJECTED when the fix (acceptable accuracy) says ``d - reject_margin_k·accuracy > radius``,
   or, without an acceptable fix, the stop says ``d - reject_margin_k·se > radius``.
6. Otherwise INCONCLUSIVE: ``no_fix_within_window`` / ``gps_blind_no_uwb`` (no acceptable fix
   and the arrival is at a UWB site), ``poor_accuracy`` or ``straddles_radius``.

Distances are ``local_distance_m`` (m); times are UTC.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import polars as pl

from geofence.distance import local_distance_m
from geofence.errors import ThresholdError, require_columns

ARRIVAL_COLUMNS = ("ticket_id", "event_id", "technician_id", "ts", "customer_lat", "customer_lon")
FIX_COLUMNS = ("technician_id", "ts", "lat", "lon", "accuracy_m")
STOP_COLUMNS = (
    "technician_id",
    "start_ts",
    "end_ts",
    "n_fixes",
    "centroid_lat",
    "centroid_lon",
    "centroid_se_m",
)
UWB_COLUMNS = ("technician_id", "site_id", "ts", "lat", "lon", "error_m")


@dataclass(frozen=True)
class ArrivalThresholds:
    """Named thresholds of the arrival rule; units are in the names or the types."""

    radius_m: float = 5.0
    accuracy_k: float = 1.0
    max_fix_gap: timedelta = timedelta(minutes=2)
    max_accuracy_m: float = 25.0
    stop_min_fixes: int = 3
    stop_max_diameter_m: float = 15.0
    stop_min_duration: timedelta = timedelta(minutes=2)
    stop_se_k: float = 2.0
    reject_margin_k: float = 2.0
    max_speed_mps: float = 70.0
    repeat_coord_run: int = 5
    uwb_max_error_m: float = 0.5
    arrival_lookback: timedelta = field(default=timedelta(minutes=30))
    reject_window: timedelta = timedelta(seconds=30)
    rule_version: str = "arrival-v1"

    def __post_init__(self) -> None:
        bad = {
            k: v
            for k, v in asdict(self).items()
            if isinstance(v, int | float | timedelta)
            and not isinstance(v, bool)
            and (v < timedelta(0) if isinstance(v, timedelta) else v < 0)
        }
        if bad or self.radius_m <= 0:
            raise ThresholdError(
                f"ArrivalThresholds: {bad or {'radius_m': self.radius_m}}; "
                "expected non-negative values and radius_m > 0"
            )

    def to_json(self) -> str:
        """Thresholds as JSON (timedeltas in seconds), stored beside every verdict."""
        return json.dumps(
            {
                k: v.total_seconds() if isinstance(v, timedelta) else v
                for k, v in asdict(self).items()
            },
            sort_keys=True,
        )


def _dist(lat1: str, lon1: str, lat2: str, lon2: str) -> pl.Expr:
    cols = pl.struct(lat1, lon1, lat2, lon2)
    return cols.map_batches(
        lambda s: pl.Series(
            local_distance_m(*(s.struct.field(c).to_numpy() for c in (lat1, lon1, lat2, lon2)))
        ),
        return_dtype=pl.Float64,
    ).fill_nan(None)


def _flag_fixes(fixes: pl.DataFrame, th: ArrivalThresholds, now: datetime | None) -> pl.DataFrame:
    """Fixes sorted per technician with named data-quality flags (nothing dropped)."""
    tech = "technician_id"
    fx = fixes.sort(tech, "ts").with_columns(
        pl.col("lat").shift(1).over(tech).alias("_plat"),
        pl.col("lon").shift(1).over(tech).alias("_plon"),
        pl.col("ts").diff().over(tech).dt.total_microseconds().truediv(1e6).alias("_dt_s"),
        (
            (pl.col("lat") != pl.col("lat").shift(1))
            | (pl.col("lon") != pl.col("lon").shift(1))
            | (pl.col(tech) != pl.col(tech).shift(1))
        )
        .fill_null(True)
        .cum_sum()
        .alias("_same_run"),
    )
    step = _dist("_plat", "_plon", "lat", "lon")
    speed = (
        pl.when(pl.col("_dt_s") > 0)
        .then(step / pl.col("_dt_s"))
        .when(step > 0)
        .then(float("inf"))
        .otherwise(0.0)
    )
    future = pl.lit(False)
    if now is not None:
        future = future | (pl.col("ts") > pl.lit(now).dt.convert_time_zone("UTC"))
    if "ingested_ts" in fixes.columns:
        future = future | (pl.col("ts") > pl.col("ingested_ts")).fill_null(False)
    mock = (
        pl.col("mock_location").fill_null(False)
        if "mock_location" in fixes.columns
        else pl.lit(False)
    )
    return fx.with_columns(
        (speed.fill_null(0.0) > th.max_speed_mps).alias("spoof_speed"),
        (pl.len().over("_same_run") >= th.repeat_coord_run).alias("spoof_repeated_coords"),
        mock.cast(pl.Boolean).alias("mock_location"),
        future.alias("future_fix"),
    ).select(
        tech,
        "ts",
        "lat",
        "lon",
        "accuracy_m",
        "spoof_speed",
        "spoof_repeated_coords",
        "mock_location",
        "future_fix",
    )


_SPOOFS = ("mock_location", "future_fix", "spoof_speed", "spoof_repeated_coords")


def _nearest_fix(a: pl.DataFrame, fx: pl.DataFrame, th: ArrivalThresholds) -> pl.DataFrame:
    """Before/after fixes (asof joins) and the decisive one, with its distance."""
    out = a
    sides: tuple[tuple[str, Literal["backward", "forward"]], ...] = (
        ("b", "backward"),
        ("f", "forward"),
    )
    for side, strategy in sides:
        side_fx = fx.rename({c: f"{side}_{c}" for c in fx.columns if c != "technician_id"})
        out = out.join_asof(
            side_fx,
            left_on="ts",
            right_on=f"{side}_ts",
            by="technician_id",
            strategy=strategy,
            check_sortedness=False,
            tolerance=th.max_fix_gap,
        )
        out = out.with_columns(
            _dist(f"{side}_lat", f"{side}_lon", "customer_lat", "customer_lon").alias(f"{side}_d"),
            (pl.col(f"{side}_accuracy_m") <= th.max_accuracy_m)
            .fill_null(False)
            .alias(f"{side}_ok"),
            (pl.col("ts") - pl.col(f"{side}_ts")).abs().alias(f"{side}_gap"),
        )
    b_first = (
        (pl.col("b_ok") & ~pl.col("f_ok"))
        | ((pl.col("b_ok") == pl.col("f_ok")) & (pl.col("b_gap") <= pl.col("f_gap")))
        | pl.col("f_ts").is_null()
    )
    pick = [c.removeprefix("b_") for c in out.columns if c.startswith("b_")]
    return out.with_columns(
        pl.when(b_first).then(pl.col(f"b_{c}")).otherwise(pl.col(f"f_{c}")).alias(f"fix_{c}")
        for c in pick
    )


def _WINDOW_SIDES(  # noqa: N802 - reads as a constant table
    th: ArrivalThresholds,
) -> tuple[tuple[Literal["backward", "forward"], timedelta], ...]:
    return (("forward", th.arrival_lookback), ("backward", th.max_fix_gap))


def _window_counts(a: pl.DataFrame, fx: pl.DataFrame, th: ArrivalThresholds) -> pl.DataFrame:
    """Per arrival: fixes within ±max_fix_gap, their spoof flags, the closest any of them could
    be (``distance - reject_margin_k·accuracy``), and the first fix inside the radius in the
    lookback.

    Linear in the number of fixes: each fix is mapped to the arrival it can be evidence for by
    two as-of joins (the next arrival within the lookback, the previous one within the gap),
    never by a join of every fix with every arrival of the technician.
    """
    arr = a.select(
        "event_id", "technician_id", pl.col("ts").alias("a_ts"), "customer_lat", "customer_lon"
    ).sort("technician_id", "a_ts")
    f = fx.select(
        "technician_id", pl.col("ts").alias("fts"), "lat", "lon", "accuracy_m", *_SPOOFS
    ).sort("technician_id", "fts")
    mapped = pl.concat(
        [
            f.join_asof(
                arr,
                left_on="fts",
                right_on="a_ts",
                by="technician_id",
                strategy=strategy,
                tolerance=tolerance,
                check_sortedness=False,
            ).filter(pl.col("event_id").is_not_null())
            for strategy, tolerance in _WINDOW_SIDES(th)
        ]
    ).unique(["event_id", "fts"], keep="first")
    d = _dist("lat", "lon", "customer_lat", "customer_lon")
    acc = pl.col("accuracy_m")
    within = d + th.accuracy_k * acc.fill_null(float("inf")) <= th.radius_m
    in_window = (pl.col("fts") - pl.col("a_ts")).abs() <= th.max_fix_gap
    near_event = (pl.col("fts") - pl.col("a_ts")).abs() <= min(th.reject_window, th.max_fix_gap)
    usable = near_event & (acc <= th.max_accuracy_m).fill_null(False)
    return mapped.group_by("event_id").agg(
        in_window.sum().cast(pl.Int64).alias("n_fixes_in_window"),
        pl.col("fts").filter(within).min().alias("_first_in_radius_ts"),
        (d - th.reject_margin_k * acc).filter(usable).min().alias("_w_min_lower_m"),
        *(pl.col(name).filter(in_window).any().alias(f"_w_{name}") for name in _SPOOFS),
    )


def verify_arrivals(
    arrivals: pl.DataFrame,
    fixes: pl.DataFrame,
    stops: pl.DataFrame,
    uwb: pl.DataFrame | None,
    thresholds: ArrivalThresholds = ArrivalThresholds(),
    *,
    now: datetime | None = None,
) -> pl.DataFrame:
    """One verdict row per arrival (see the module docstring for the rule).

    Output: the arrival columns plus ``verdict`` (VERIFIED | REJECTED | INCONCLUSIVE),
    ``reason``, ``decided_by`` ('gps_fix' | 'stop' | 'uwb' | null), ``fix_before_ts``,
    ``fix_after_ts``, ``fix_ts``, ``fix_lat``, ``fix_lon``, ``distance_m``, ``accuracy_m``,
    ``n_fixes_in_window``, ``stop_centroid_lat``, ``stop_centroid_lon``, ``stop_distance_m``,
    ``stop_se_m``, ``stop_n_fixes``, ``uwb_lat``, ``uwb_lon``, ``uwb_distance_m``,
    ``physical_arrival_ts`` (stop start, else first fix within the radius in the lookback),
    ``status_lag_s`` (arrival ts minus physical arrival, s), ``thresholds`` (JSON) and
    ``rule_version``.
    """
    th = thresholds
    require_columns(arrivals.columns, ARRIVAL_COLUMNS, "arrivals")
    require_columns(fixes.columns, FIX_COLUMNS, "fixes")
    require_columns(stops.columns, STOP_COLUMNS, "stops")
    a = arrivals.with_columns(
        pl.col("site_id")
        if "site_id" in arrivals.columns
        else pl.lit(None, pl.String).alias("site_id")
    ).sort("technician_id", "ts")
    fx = _flag_fixes(fixes, th, now)
    a = _nearest_fix(a, fx, th).join(_window_counts(a, fx, th), on="event_id", how="left")
    st = stops.filter(pl.col("n_fixes") >= th.stop_min_fixes).sort("technician_id", "start_ts")
    st = st.select(
        "technician_id",
        "start_ts",
        pl.col("end_ts").alias("stop_end_ts"),
        pl.col("n_fixes").alias("stop_n_fixes"),
        pl.col("centroid_lat").alias("stop_centroid_lat"),
        pl.col("centroid_lon").alias("stop_centroid_lon"),
        pl.col("centroid_se_m").alias("stop_se_m"),
    )
    a = a.with_columns((pl.col("ts") + th.max_fix_gap).alias("_ts_hi")).sort(
        "technician_id", "_ts_hi"
    )
    a = a.join_asof(
        st, left_on="_ts_hi", right_on="start_ts", by="technician_id", check_sortedness=False
    )
    stop_cols = [c for c in st.columns if c != "technician_id"]
    live = pl.col("stop_end_ts") >= pl.col("ts") - th.max_fix_gap
    a = a.with_columns(pl.when(live).then(pl.col(c)).alias(c) for c in stop_cols)
    a = a.with_columns(
        _dist("stop_centroid_lat", "stop_centroid_lon", "customer_lat", "customer_lon").alias(
            "stop_distance_m"
        )
    )
    a = _join_uwb(a, uwb, th)
    return _decide(a, th)


def _join_uwb(a: pl.DataFrame, uwb: pl.DataFrame | None, th: ArrivalThresholds) -> pl.DataFrame:
    if uwb is None:
        uwb = pl.DataFrame(
            schema={
                "technician_id": pl.String,
                "site_id": pl.String,
                "ts": a.schema["ts"],
                "lat": pl.Float64,
                "lon": pl.Float64,
                "error_m": pl.Float64,
            }
        )
    require_columns(uwb.columns, UWB_COLUMNS, "uwb")
    u = uwb.select(*UWB_COLUMNS).filter(pl.col("error_m") <= th.uwb_max_error_m)
    u = u.with_columns(pl.col("site_id").cast(pl.String)).sort("technician_id", "site_id", "ts")
    u = u.rename({"ts": "uwb_ts", "lat": "uwb_lat", "lon": "uwb_lon", "error_m": "uwb_error_m"})
    a = a.sort("technician_id", "site_id", "ts").with_columns(pl.col("site_id").cast(pl.String))
    a = a.join_asof(
        u,
        left_on="ts",
        right_on="uwb_ts",
        by=["technician_id", "site_id"],
        strategy="nearest",
        check_sortedness=False,
        tolerance=th.max_fix_gap,
    )
    return a.with_columns(
        _dist("uwb_lat", "uwb_lon", "customer_lat", "customer_lon").alias("uwb_distance_m")
    )


def _decide(a: pl.DataFrame, th: ArrivalThresholds) -> pl.DataFrame:
    r = th.radius_m
    has_uwb = pl.col("uwb_lat").is_not_null()
    uwb_in = pl.col("uwb_distance_m") + th.accuracy_k * pl.col("uwb_error_m") <= r
    uwb_out = pl.col("uwb_distance_m") - th.reject_margin_k * pl.col("uwb_error_m") > r
    has_fix = pl.col("fix_ts").is_not_null()
    fix_ok = has_fix & pl.col("fix_ok")
    acc = pl.col("fix_accuracy_m")
    fix_in = fix_ok & (pl.col("fix_d") + th.accuracy_k * acc <= r)
    # Reject on GPS only when every usable fix within ±reject_window is confidently outside:
    # reported accuracy understates the true error about a third of the time, so one fix is
    # not enough. (A window shorter than max_fix_gap: a technician driving on after a false tap
    # must not be excused by where they were two minutes later.)
    fix_out = (
        fix_ok
        & (pl.col("fix_d") - th.reject_margin_k * acc > r)
        & (pl.col("_w_min_lower_m") > r).fill_null(False)
    )
    stop_in = (pl.col("stop_distance_m") + th.stop_se_k * pl.col("stop_se_m") <= r).fill_null(False)
    stop_out = (pl.col("stop_distance_m") - th.reject_margin_k * pl.col("stop_se_m") > r).fill_null(
        False
    )
    spoof: pl.Expr = pl.lit(None, pl.String)
    for name in reversed(_SPOOFS):  # first name in _SPOOFS wins
        flagged = pl.col(f"fix_{name}").fill_null(False) | pl.col(f"_w_{name}").fill_null(False)
        spoof = pl.when(has_fix & flagged).then(pl.lit(name)).otherwise(spoof)
    at_site = pl.col("site_id").is_not_null()
    verdict_reason_by = (
        pl.when(has_uwb & uwb_in)
        .then(pl.lit(["VERIFIED", None, "uwb"]))
        .when(has_uwb & uwb_out)
        .then(pl.lit(["REJECTED", None, "uwb"]))
        .when(has_uwb)
        .then(pl.lit(["INCONCLUSIVE", "straddles_radius", "uwb"]))
        .when(spoof.is_not_null())
        .then(pl.concat_list(pl.lit("INCONCLUSIVE"), spoof, pl.lit(None)))
        .when(fix_in)
        .then(pl.lit(["VERIFIED", None, "gps_fix"]))
        .when(stop_in)
        .then(pl.lit(["VERIFIED", None, "stop"]))
        .when(fix_out)
        .then(pl.lit(["REJECTED", None, "gps_fix"]))
        .when(~fix_ok & stop_out)
        .then(pl.lit(["REJECTED", None, "stop"]))
        .when(~fix_ok & at_site)
        .then(pl.lit(["INCONCLUSIVE", "gps_blind_no_uwb", None]))
        .when(~has_fix)
        .then(pl.lit(["INCONCLUSIVE", "no_fix_within_window", None]))
        .when(~fix_ok)
        .then(pl.lit(["INCONCLUSIVE", "poor_accuracy", None]))
        .otherwise(pl.lit(["INCONCLUSIVE", "straddles_radius", None]))
    )
    physical = (
        pl.when(pl.col("stop_distance_m") + th.stop_se_k * pl.col("stop_se_m") <= r)
        .then(pl.col("start_ts"))
        .otherwise(pl.col("_first_in_radius_ts"))
    )
    return (
        a.with_columns(verdict_reason_by.alias("_v"), physical.alias("physical_arrival_ts"))
        .select(
            *[
                c
                for c in a.columns
                if not c.startswith(("b_", "f_", "fix_", "_", "stop_", "uwb_"))
                and c not in ("start_ts", "n_fixes_in_window", "stop_distance_m")
            ],
            pl.col("_v").list.get(0).alias("verdict"),
            pl.col("_v").list.get(1).alias("reason"),
            pl.col("_v").list.get(2).alias("decided_by"),
            pl.col("b_ts").alias("fix_before_ts"),
            pl.col("f_ts").alias("fix_after_ts"),
            "fix_ts",
            "fix_lat",
            "fix_lon",
            pl.col("fix_d").alias("distance_m"),
            pl.col("fix_accuracy_m").alias("accuracy_m"),
            pl.col("n_fixes_in_window").fill_null(0),
            "stop_centroid_lat",
            "stop_centroid_lon",
            "stop_distance_m",
            "stop_se_m",
            "stop_n_fixes",
            "uwb_lat",
            "uwb_lon",
            "uwb_distance_m",
            "physical_arrival_ts",
            (pl.col("ts") - pl.col("physical_arrival_ts"))
            .dt.total_microseconds()
            .truediv(1e6)
            .alias("status_lag_s"),
            pl.lit(th.to_json()).alias("thresholds"),
            pl.lit(th.rule_version).alias("rule_version"),
        )
        .sort("technician_id", "ts", "event_id")
    )
