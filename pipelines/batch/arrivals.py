"""Re-verify the arrivals of a period in partitions of (technician shard × UTC day).

A partition is pure: its arrivals and its evidence in, its verdicts out
(``runner.verify``). Its evidence is read by arrival window, and every partition also
carries a **halo**: the same technicians' arrivals of the day before and the day after.
Their windows reach across midnight, so the nearest fix and the stops an arrival near
00:00 sees are the ones the single-process run sees. Verdicts are kept for the
partition's own arrivals only; the halo's are dropped.

On DuckLake each task reads its evidence from the lake itself (one store per worker); on
the embedded file, which worker processes cannot open while this process holds it, the
evidence is read here and shipped with the partition. Verdicts come back here and are
written in one transaction, as ``run_arrivals`` does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from geofence.verdict import ArrivalThresholds
from pipelines.arrivals.runner import (
    ArrivalRun,
    load_arrivals,
    load_evidence,
    thresholds_from,
    verify,
    write_checks,
)
from pipelines.batch.engine import Runner, shared_location, worker_store
from pipelines.settings import Settings
from pipelines.store.gateway import Store

HALO = timedelta(days=1)


@dataclass(frozen=True)
class ArrivalPartition:
    shard: int
    day: datetime
    own_event_ids: list[str]
    arrivals: pl.DataFrame  # own arrivals plus the halo
    fixes: pl.DataFrame | None = None  # shipped evidence (embedded file only)
    uwb: pl.DataFrame | None = None


def partition_arrivals(arrivals: pl.DataFrame, *, shards: int) -> list[ArrivalPartition]:
    """Split arrivals by (technician shard, UTC day); each part carries a ±1 day halo."""
    if arrivals.height == 0:
        return []
    keyed = arrivals.with_columns(
        (pl.col("technician_id").hash(seed=0) % shards).alias("_shard"),
        pl.col("ts").dt.truncate("1d").alias("_day"),
    )
    parts: list[ArrivalPartition] = []
    for (shard, day), own in keyed.group_by("_shard", "_day", maintain_order=False):
        techs = own["technician_id"].unique()
        halo = keyed.filter(
            pl.col("technician_id").is_in(techs.implode())
            & (pl.col("_day") >= day - HALO)
            & (pl.col("_day") <= day + HALO)
        )
        parts.append(
            ArrivalPartition(
                shard=int(shard),
                day=day,
                own_event_ids=own["event_id"].to_list(),
                arrivals=halo.drop("_shard", "_day").sort("technician_id", "ts"),
            )
        )
    return sorted(parts, key=lambda p: (p.day, p.shard))


def verify_partition(
    part: ArrivalPartition, location: str | None, th: ArrivalThresholds, now: datetime
) -> pl.DataFrame:
    """Verdicts of one partition's own arrivals (the halo only informs them)."""
    if part.fixes is not None and part.uwb is not None:
        fixes, uwb = part.fixes, part.uwb
    else:
        if location is None:
            raise ValueError(f"partition day={part.day} shard={part.shard}: no evidence given")
        fixes, uwb = load_evidence(worker_store(location, read_only=True), part.arrivals, th)
    checks = verify(part.arrivals, fixes, uwb, th, now=now)
    return checks.filter(pl.col("event_id").is_in(part.own_event_ids))


def verify_period(
    store: Store,
    settings: Settings,
    run: Runner,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime,
    shards: int = 8,
    write: bool = True,
) -> ArrivalRun:
    """Verify the arrivals in ``[since, until)`` partition by partition on ``run``."""
    t0 = time.perf_counter()
    th = thresholds_from(settings.thresholds)
    arrivals = load_arrivals(store, since=since)
    if until is not None:
        arrivals = arrivals.filter(pl.col("ts") < until)
    parts = partition_arrivals(arrivals, shards=shards)
    if not parts:
        return ArrivalRun(pl.DataFrame(), time.perf_counter() - t0)
    location = shared_location(store)
    if location is None:
        parts = [_with_evidence(store, p, th) for p in parts]
    results = run.map(verify_partition, parts, None if location is None else str(location), th, now)
    checks = pl.concat([r for r in results if r.height], how="vertical_relaxed").sort(
        "technician_id", "ts", "event_id"
    )
    if write:
        write_checks(store, checks, computed_at=now)
    return ArrivalRun(checks, time.perf_counter() - t0)


def _with_evidence(store: Store, part: ArrivalPartition, th: ArrivalThresholds) -> ArrivalPartition:
    fixes, uwb = load_evidence(store, part.arrivals, th)
    return ArrivalPartition(part.shard, part.day, part.own_event_ids, part.arrivals, fixes, uwb)
