"""Arrival verification runner: store → ``geofence.verdict`` → ``arrival_checks``.

Stages (each a small function below):

1. ``load_arrivals``  – every "arrived" event with its ticket's customer point (WGS84) and site.
2. ``load_evidence``  – GPS fixes and UWB positions of those technicians, only inside each
   arrival's window (``arrival_windows``: from ``arrival_lookback + stop_min_duration +
   max_fix_gap`` before to 15 min after). A technician's overlapping windows are merged
   (``evidence_windows``), so no fix is read twice, and the store joins on (technician,
   hour) before the exact time test, so a fix meets one or two windows, not all of them.
3. ``kept_window_stops`` (``pipelines.arrivals.kept_stops``) – stops on those window fixes
   only (``window_stops``, the compiled ``geofence.stops``), never on a technician's whole
   month; a technician whose window fixes are the ones its kept stops were detected on
   (same digest, same stop thresholds) gets them back from the store without detection.
4. ``verify``         – ``geofence.verdict.verify_arrivals`` with thresholds from settings.
5. ``write_checks``   – replace those events' rows in ``arrival_checks`` in one transaction,
   with every evidence column kept as JSON so an auditor can see why.

Re-running after a settings change recomputes and replaces the verdicts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from geofence.arrival_model import ErrorModel
from geofence.distance import local_distance_m
from geofence.verdict import ArrivalThresholds, verify_arrivals
from pipelines.arrivals.kept_stops import (
    StopReuse,
    expects_detection,
    kept_marks,
    kept_window_stops,
)
from pipelines.settings import Settings, Thresholds
from pipelines.store.gateway import Store

_AFTER_EVENT = timedelta(minutes=15)


@dataclass(frozen=True)
class ArrivalRun:
    checks: pl.DataFrame
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage, in order
    stops: StopReuse | None = None  # stops kept and stops detected again, per technician


def thresholds_from(settings: Thresholds) -> ArrivalThresholds:
    """The pure core's thresholds from the user's settings (same names, explicit units)."""
    return ArrivalThresholds(
        radius_m=settings.arrival_radius_m,
        accuracy_k=settings.accuracy_k,
        reject_margin_k=settings.reject_margin_k,
        max_fix_gap=timedelta(seconds=settings.max_fix_gap_s),
        max_accuracy_m=settings.max_accuracy_m,
        max_speed_mps=settings.max_speed_mps,
        stop_max_diameter_m=settings.stop_max_diameter_m,
        stop_min_duration=timedelta(seconds=settings.stop_min_duration_s),
        stop_min_fixes=settings.stop_min_fixes,
        uwb_max_error_m=settings.uwb_max_error_m,
        site_radius_m=settings.site_radius_m,
        on_site_min_p=settings.on_site_min_p,
        reject_max_p=settings.reject_max_p,
        model=ErrorModel(
            bias_max_m=settings.gps_bias_max_m,
            prior_at_door=settings.prior_at_door_p,
            prior_on_site=settings.prior_on_site_p,
        ),
    )


def load_arrivals(store: Store, *, since: datetime | None = None) -> pl.DataFrame:
    return store.query(
        "SELECT e.ticket_id, e.event_id, e.actor AS technician_id, e.ts, "
        "t.lat AS customer_lat, t.lon AS customer_lon, t.site_id, t.region "
        "FROM ticket_events e JOIN tickets t USING (ticket_id) "
        "WHERE e.event_type = 'arrived' AND e.actor IS NOT NULL AND t.lat IS NOT NULL "
        "AND e.ts >= coalesce(?::TIMESTAMPTZ, '-infinity'::TIMESTAMPTZ) "
        "ORDER BY e.actor, e.ts",
        [since],
    )


def arrival_windows(arrivals: pl.DataFrame, th: ArrivalThresholds) -> pl.DataFrame:
    """Each arrival's evidence window ``technician_id, lo, hi``, row for row: from
    ``arrival_lookback + stop_min_duration + max_fix_gap`` before it to
    ``max(max_fix_gap, 15 min)`` after it."""
    before = th.arrival_lookback + th.stop_min_duration + th.max_fix_gap
    return arrivals.select(
        "technician_id",
        (pl.col("ts") - before).alias("lo"),
        (pl.col("ts") + max(th.max_fix_gap, _AFTER_EVENT)).alias("hi"),
    )


def evidence_windows(arrivals: pl.DataFrame, th: ArrivalThresholds) -> pl.DataFrame:
    """``arrival_windows`` with each technician's overlapping windows merged:
    ``technician_id, code, lo, hi`` (``code``: the technician's rank from 1, so the store
    sorts integers, not names)."""
    spans = arrival_windows(arrivals, th).sort("technician_id", "lo")
    reach = pl.col("hi").cum_max().shift(1).over("technician_id")
    merged = (
        spans.with_columns((pl.col("lo") > reach).fill_null(True).cum_sum().alias("_run"))
        .group_by("technician_id", "_run")
        .agg(pl.col("lo").min(), pl.col("hi").max())
        .drop("_run")
    )
    return merged.with_columns(
        pl.col("technician_id").rank("dense").cast(pl.Int32).alias("code")
    ).sort("code", "lo")


def _names(frame: pl.DataFrame, win: pl.DataFrame) -> pl.DataFrame:
    """``code`` back to ``technician_id`` (the frame's first column), keeping row order."""
    names = win.select("code", "technician_id").unique("code").sort("code")["technician_id"]
    return frame.select(names.gather(frame["code"] - 1).alias("technician_id"), pl.exclude("code"))


_BUCKET_US = 3_600_000_000  # one hour: the equality key of the evidence join


def _bucketed(win: pl.DataFrame) -> pl.DataFrame:
    """One row per window and hour it touches (``bucket``: whole hours since 1970), so
    the store joins fixes on (technician, hour) and each fix meets one or two windows, not
    every window of its technician; ``ts BETWEEN lo AND hi`` decides."""

    def hour(col: str) -> pl.Expr:
        return pl.col(col).dt.epoch("us") // _BUCKET_US

    return win.with_columns(pl.int_ranges(hour("lo"), hour("hi") + 1).alias("bucket")).explode(
        "bucket"
    )


_EVIDENCE_JOIN = (
    "JOIN win w ON {t}.{tech} = w.technician_id "
    "AND epoch_us({t}.ts) // {bucket} = w.bucket "
    "WHERE {t}.ts BETWEEN w.lo AND w.hi ORDER BY w.code, {t}.ts"
)


def load_evidence(
    store: Store, arrivals: pl.DataFrame, th: ArrivalThresholds
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Fixes and UWB positions of the arrivals' technicians inside their windows only, in
    technician and time order. The windows do not overlap, so no row is read twice."""
    win = evidence_windows(arrivals, th)
    frames = {"win": _bucketed(win)}
    fixes = store.query_frames(
        "SELECT w.code, f.ts, f.lat, f.lon, f.accuracy_m, f.mock_location "
        "FROM gps_fixes f " + _EVIDENCE_JOIN.format(t="f", tech="technician_id", bucket=_BUCKET_US),
        frames,
    )
    uwb = store.query_frames(
        "SELECT w.code, u.site_id, u.ts, u.lat, u.lon, coalesce(u.error_m, 0.1) AS error_m "
        "FROM uwb_positions u " + _EVIDENCE_JOIN.format(t="u", tech="tag_id", bucket=_BUCKET_US),
        frames,
    )
    return _distinct_rows(_names(fixes, win)), _distinct_rows(_names(uwb, win))


def _distinct_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop exact duplicate rows (a fix stored twice by two batches); the frame is sorted, so
    duplicates are neighbours and the check is one pass."""
    same = pl.all_horizontal(pl.all().eq_missing(pl.all().shift(1)))
    repeated = frame.select(same.fill_null(False).alias("_dup"))["_dup"]
    return frame.filter(~repeated) if repeated.any() else frame


def verify(
    arrivals: pl.DataFrame,
    fixes: pl.DataFrame,
    uwb: pl.DataFrame,
    th: ArrivalThresholds,
    *,
    now: datetime,
    stops: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Verdicts of ``arrivals`` from their evidence (``load_evidence``); ``stops``: the window
    stops of those fixes when already known (``kept_window_stops``), else detected here."""
    if stops is None:
        stops = window_stops(fixes, th)
    return verify_arrivals(arrivals, fixes, stops, uwb if uwb.height else None, th, now=now)


def window_stops(fixes: pl.DataFrame, th: ArrivalThresholds) -> pl.DataFrame:
    """Stops on the arrivals' window fixes (``load_evidence``), the only fixes it is given."""
    # imported here: the compiled detector (numba, ~0.7 s to load) only when stops are detected
    from geofence.stops import detect_stops

    return detect_stops(
        fixes, max_diameter_m=th.stop_max_diameter_m, min_duration=th.stop_min_duration
    )


_EVIDENCE_SKIP = {"ticket_id", "event_id", "technician_id", "ts", "verdict", "reason", "region"}


def _evidence_json() -> pl.Expr:
    """Every evidence column of a verdict as one JSON object (times as ISO-8601)."""
    return pl.struct(pl.exclude(*_EVIDENCE_SKIP)).struct.json_encode().alias("evidence")


def write_checks(store: Store, checks: pl.DataFrame, *, computed_at: datetime) -> None:
    rows = checks.select(
        "event_id",
        "ticket_id",
        "technician_id",
        pl.col("ts").alias("event_ts"),
        "verdict",
        "reason",
        "decided_by",
        "distance_m",
        "accuracy_m",
        pl.col("n_fixes_in_window").cast(pl.Int32).alias("n_fixes"),
        "physical_arrival_ts",
        "status_lag_s",
        _evidence_json(),
        "rule_version",
        "p_within_radius",
        "p_on_site",
        pl.lit(computed_at).dt.convert_time_zone("UTC").alias("computed_at"),
    )

    # one event id, one verdict: replaced in one transaction
    store.atomic(lambda tx: tx.replace_rows("arrival_checks", rows, key="event_id"))


def truth_labels(
    true_arrivals: pl.DataFrame, false_arrivals: pl.DataFrame, customers: pl.DataFrame
) -> pl.DataFrame:
    """Labelled outcomes from a generated world's planted truth: ``event_id, true_distance_m``.

    ``true_arrivals``: ``event_id, true_lat, true_lon`` (where the technician stood at the tap);
    ``false_arrivals``: ``event_id, distance_m`` (parked that far away); ``customers``:
    ``event_id, customer_lat, customer_lon`` as stored (the point the verdict measures from).
    A false arrival's distance wins over its true-arrival record (its later real arrival).
    """
    true = true_arrivals.select("event_id", "true_lat", "true_lon").join(
        customers.select("event_id", "customer_lat", "customer_lon"), on="event_id", how="inner"
    )
    distance = local_distance_m(
        true["true_lat"].cast(pl.Float64).to_numpy(),
        true["true_lon"].cast(pl.Float64).to_numpy(),
        true["customer_lat"].cast(pl.Float64).to_numpy(),
        true["customer_lon"].cast(pl.Float64).to_numpy(),
    )
    walked = true.select("event_id", pl.Series("true_distance_m", distance, pl.Float64))
    parked = false_arrivals.select("event_id", pl.col("distance_m").cast(pl.Float64))
    return (
        walked.join(parked, on="event_id", how="left")
        .select("event_id", pl.coalesce("distance_m", "true_distance_m").alias("true_distance_m"))
        .drop_nulls()
        .sort("event_id")
    )


def write_labels(store: Store, labels: pl.DataFrame, *, source: str, labelled_at: datetime) -> int:
    """Replace those events' rows in ``arrival_labels``; returns the rows written."""
    rows = labels.select("event_id", "true_distance_m")
    with store.transaction() as tx:
        tx.register("new_labels", rows.select("event_id"))
        tx.execute("DELETE FROM arrival_labels WHERE event_id IN (SELECT event_id FROM new_labels)")
        tx.unregister("new_labels")
        tx.insert_frame(
            "arrival_labels",
            rows,
            {"source": source, "labelled_at": labelled_at.astimezone(UTC)},
        )
    return rows.height


def label_from_manifest(store: Store, manifest_path: Path) -> int:
    """Label the store's arrivals with a generated world's planted truth (``truth_labels``);
    returns the rows written."""
    # imported here: the generator package (scipy) is not needed to verify arrivals
    from pipelines.generate.manifest import Manifest

    manifest = Manifest.load(manifest_path)
    planted = manifest.planted
    true = pl.DataFrame(
        [{k: r[k] for k in ("event_id", "true_lat", "true_lon")} for r in planted.true_arrivals],
        schema={"event_id": pl.String, "true_lat": pl.Float64, "true_lon": pl.Float64},
    )
    false = pl.DataFrame(
        [{k: r[k] for k in ("event_id", "distance_m")} for r in planted.false_arrivals],
        schema={"event_id": pl.String, "distance_m": pl.Float64},
    )
    customers = load_arrivals(store).select("event_id", "customer_lat", "customer_lon")
    labels = truth_labels(true, false, customers)
    source = f"generator truth (seed {manifest.seed}, scale {manifest.scale})"
    return write_labels(store, labels, source=source, labelled_at=datetime.now(UTC))


def _preload() -> None:
    """Modules the run needs later, imported on a second core while the store reads: pandas,
    which DuckDB imports to bind the first Python value (the verdicts written), and the
    verdict model's scipy.special (~0.35 s between them, off the critical path)."""
    import pandas  # noqa: F401
    import scipy.special  # noqa: F401


def _load_detector() -> None:
    from geofence.stops import compile_kernels  # numba, and the kernel from its cache

    compile_kernels()


def run_arrivals(store: Store, settings: Settings, *, since: datetime | None = None) -> ArrivalRun:
    """Verify every "arrived" event (since ``since``) and store the verdicts with evidence."""
    clock = _StageClock()
    threading.Thread(target=_preload, name="preload", daemon=True).start()
    th = thresholds_from(settings.thresholds)
    now = datetime.now(UTC)
    arrivals = load_arrivals(store, since=since)
    if arrivals.height == 0:
        return ArrivalRun(pl.DataFrame(), clock.total())
    marks = kept_marks(store)
    if expects_detection(marks, th):  # load the compiled detector on a second core meanwhile
        threading.Thread(target=_load_detector, name="stop-kernel", daemon=True).start()
    fixes, uwb = load_evidence(store, arrivals, th)
    clock.lap("load")
    stops, reuse = kept_window_stops(store, fixes, th, marks=marks, detect=window_stops)
    clock.lap("stops")
    checks = verify(arrivals, fixes, uwb, th, now=now, stops=stops)
    clock.lap("verdicts")
    write_checks(store, checks, computed_at=now)
    clock.lap("write")
    return ArrivalRun(checks, clock.total(), clock.laps, reuse)


class _StageClock:
    """Wall seconds per named stage (``lap`` closes the stage that just ran)."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.t0


def summary(checks: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Verdict counts by region, median status lag, top technicians by rejected arrivals."""
    by_region = (
        checks.group_by("region", "verdict")
        .len()
        .pivot("verdict", index="region", values="len")
        .fill_null(0)
        .sort("region")
    )
    lag = checks.filter(pl.col("verdict").is_in(["AT_DOOR", "ON_SITE"])).select(
        pl.col("status_lag_s").median().alias("median_status_lag_s"),
        pl.col("status_lag_s").quantile(0.9).alias("p90_status_lag_s"),
    )
    top = (
        checks.filter(pl.col("verdict") == "REJECTED")
        .group_by("technician_id")
        .len("rejected")
        .sort("rejected", "technician_id", descending=[True, False])
        .head(10)
    )
    reasons = (
        checks.filter(pl.col("verdict") == "INCONCLUSIVE")
        .group_by("reason")
        .len()
        .sort("len", descending=True)
    )
    return {"by_region": by_region, "lag": lag, "top_rejected": top, "inconclusive": reasons}
