"""Arrival verdicts in event time: a pure step over positions and "arrived" events.

``step(state, inputs) -> (state, verdicts)`` uses the batch core unchanged
(``pipelines.arrivals.runner.verify``: ``geofence.stops`` then ``geofence.verdict``), on the
same evidence the batch runner would load (the technician's fixes inside the windows of all
its known arrivals), so the last version of a live verdict equals ``arrivals verify``.

When an arrival is decided (event time, from the positions' watermark):

1. ``first``  - once the technician's watermark (latest fix time) passes ``ts + decide_after``
                (the decisive window, ``max_fix_gap``), or the watermark of all positions
                passes it by ``lateness``, or after ``max_wait`` of wall time with what has come;
2. ``settle`` - once the watermark passes the whole evidence window (``ts + settle_after``,
                the runner's window): stops that ran on past the decision are then complete;
3. ``late``   - whenever a fix arrives late inside an evaluated window, or a new arrival of
                the technician widens the evidence around it.

Each evaluation publishes only when the verdict row changed, with ``version`` raised by one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from geofence.verdict import ArrivalThresholds
from pipelines.arrivals.runner import verify

FIX_SCHEMA: dict[str, Any] = {
    "technician_id": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "lat": pl.Float64,
    "lon": pl.Float64,
    "accuracy_m": pl.Float64,
    "speed_mps": pl.Float64,
    "mock_location": pl.Boolean,
}
UWB_SCHEMA: dict[str, Any] = {
    "technician_id": pl.String,
    "site_id": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "lat": pl.Float64,
    "lon": pl.Float64,
    "error_m": pl.Float64,
}
ARRIVAL_SCHEMA: dict[str, Any] = {
    "ticket_id": pl.String,
    "event_id": pl.String,
    "technician_id": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "customer_lat": pl.Float64,
    "customer_lon": pl.Float64,
    "site_id": pl.String,
    "region": pl.String,
}
# Columns of a verdict that do not make a new version when only they change.
_NOT_VERSIONED = ("thresholds",)


@dataclass(frozen=True)
class VerdictTiming:
    """When verdicts are decided; units in the names."""

    decide_after: timedelta  # the decisive window after "arrived" (max_fix_gap)
    before: timedelta  # evidence before the arrival (the batch runner's window)
    settle_after: timedelta  # evidence after the arrival (the batch runner's window)
    lateness: timedelta = timedelta(minutes=2)  # slack on the all-positions watermark
    max_wait: timedelta = timedelta(minutes=5)  # wall time, then decide with what has come
    keep: timedelta = timedelta(hours=12)  # state kept behind the watermark past the window

    @classmethod
    def of(cls, th: ArrivalThresholds, *, max_wait_s: float = 300.0) -> VerdictTiming:
        """The windows of ``pipelines.arrivals.runner`` for these thresholds."""
        from pipelines.arrivals.runner import _AFTER_EVENT

        return cls(
            decide_after=th.max_fix_gap,
            before=th.arrival_lookback + th.stop_min_duration + th.max_fix_gap,
            settle_after=max(th.max_fix_gap, _AFTER_EVENT),
            max_wait=timedelta(seconds=max_wait_s),
        )


@dataclass(frozen=True)
class _Arrival:
    row: dict[str, Any]
    seen_wall: datetime
    version: int = 0
    fingerprint: str | None = None
    evaluated_through: datetime | None = None  # technician watermark at the last evaluation
    settled: bool = False
    dirty: bool = False

    @property
    def ts(self) -> datetime:
        ts: datetime = self.row["ts"]
        return ts


@dataclass(frozen=True)
class VerdictState:
    fixes: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=FIX_SCHEMA))
    uwb: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=UWB_SCHEMA))
    arrivals: dict[str, _Arrival] = field(default_factory=dict)
    tech_mark: dict[str, datetime] = field(default_factory=dict)
    mark: datetime | None = None  # watermark of all positions

    def pending(self) -> int:
        return sum(1 for a in self.arrivals.values() if a.version == 0)


@dataclass(frozen=True)
class VerdictInputs:
    """One step's input: new fixes (``FIX_SCHEMA``), UWB positions, arrivals
    (``ARRIVAL_SCHEMA``, the ticket's point already joined) and the wall clock."""

    wall: datetime
    fixes: pl.DataFrame | None = None
    uwb: pl.DataFrame | None = None
    arrivals: pl.DataFrame | None = None
    mark: datetime | None = None  # raise the watermark (end of input, other event streams)


@dataclass(frozen=True)
class Verdict:
    """One published version of an arrival's verdict (``row`` as ``verify`` gives it)."""

    event_id: str
    ticket_id: str
    technician_id: str
    ts: datetime
    version: int
    trigger: str  # first | settle | late | wait
    row: dict[str, Any]

    def data(self) -> dict[str, Any]:
        """The CloudEvent ``data``: the verdict row (JSON-safe) with its version."""
        out = {k: _json_value(v) for k, v in self.row.items() if k != "thresholds"}
        out["thresholds"] = json.loads(self.row["thresholds"]) if self.row.get("thresholds") else {}
        out["version"] = self.version
        out["trigger"] = self.trigger
        return out


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _fingerprint(row: dict[str, Any]) -> str:
    return json.dumps(
        {k: _json_value(v) for k, v in row.items() if k not in _NOT_VERSIONED},
        sort_keys=True,
        default=str,
    )


def _window(a: _Arrival, timing: VerdictTiming) -> tuple[datetime, datetime]:
    return a.ts - timing.before, a.ts + timing.settle_after


def _evidence(fixes: pl.DataFrame, arrivals: list[_Arrival], timing: VerdictTiming) -> pl.DataFrame:
    """The fixes the batch runner would load: each technician's fixes inside the union of its
    arrivals' windows, distinct, in technician/time order."""
    if not arrivals:
        return fixes.clear()
    windows = pl.DataFrame(
        {
            "technician_id": [a.row["technician_id"] for a in arrivals],
            "lo": [_window(a, timing)[0] for a in arrivals],
            "hi": [_window(a, timing)[1] for a in arrivals],
        },
        schema={"technician_id": pl.String, "lo": FIX_SCHEMA["ts"], "hi": FIX_SCHEMA["ts"]},
    )
    return (
        fixes.join(windows, on="technician_id")
        .filter(pl.col("ts").is_between(pl.col("lo"), pl.col("hi")))
        .select(list(FIX_SCHEMA))
        .unique()
        .sort("technician_id", "ts", "lat", "lon", "accuracy_m", nulls_last=True)
    )


def _keep(
    frame: pl.DataFrame, recent: datetime, arrivals: list[_Arrival], timing: VerdictTiming
) -> pl.DataFrame:
    """Rows at or after ``recent``, and older rows inside a kept arrival's window."""
    old = frame.filter(pl.col("ts") < recent)
    if old.height == 0:
        return frame
    inside = _evidence_rows(old, arrivals, timing)
    return pl.concat([inside, frame.filter(pl.col("ts") >= recent)])


def _evidence_rows(
    frame: pl.DataFrame, arrivals: list[_Arrival], timing: VerdictTiming
) -> pl.DataFrame:
    if not arrivals:
        return frame.clear()
    windows = pl.DataFrame(
        {
            "technician_id": [a.row["technician_id"] for a in arrivals],
            "_lo": [_window(a, timing)[0] for a in arrivals],
            "_hi": [_window(a, timing)[1] for a in arrivals],
        },
        schema={"technician_id": pl.String, "_lo": FIX_SCHEMA["ts"], "_hi": FIX_SCHEMA["ts"]},
    )
    hit = (
        frame.with_row_index("_r")
        .join(windows, on="technician_id")
        .filter(pl.col("ts").is_between(pl.col("_lo"), pl.col("_hi")))["_r"]
        .unique()
        .sort()
    )
    return frame[hit]


def _late_touched(a: _Arrival, new_ts: dict[str, np.ndarray], timing: VerdictTiming) -> bool:
    """A fix arrived late inside ``a``'s evaluated evidence."""
    if a.evaluated_through is None:
        return False
    ts = new_ts.get(a.row["technician_id"])
    if ts is None or len(ts) == 0:
        return False
    lo, hi = _window(a, timing)
    upto = min(hi, a.evaluated_through)
    lo_us, hi_us = _us(lo), _us(upto)
    i = int(np.searchsorted(ts, lo_us, side="left"))
    return i < len(ts) and int(ts[i]) <= hi_us


def _us(t: datetime) -> int:
    return int(pl.Series([t], dtype=FIX_SCHEMA["ts"]).dt.epoch("us")[0])


def _spread(due: dict[str, str], arrivals: dict[str, _Arrival]) -> None:
    """Every evaluated arrival of a technician with a due one is due too. The batch runner
    detects stops on the technician's fixes in the union of all its arrivals' windows, and
    a stop does not end at a gap in the fixes: a stop running from one window into the next
    (the technician stayed put) is one stop to it, so an earlier verdict may move as a later
    window fills. Re-evaluating them together keeps live equal to batch; only changed
    verdicts are published."""
    techs = {arrivals[k].row["technician_id"] for k in due}
    for key, a in arrivals.items():
        if key not in due and a.evaluated_through is not None and a.row["technician_id"] in techs:
            due[key] = "widened"


def step(
    state: VerdictState,
    inputs: VerdictInputs,
    th: ArrivalThresholds,
    timing: VerdictTiming,
) -> tuple[VerdictState, list[Verdict]]:
    """Add the inputs, decide what is due in event time, publish changed verdicts. Pure."""
    fixes, tech_mark, mark = state.fixes, dict(state.tech_mark), state.mark
    new_ts: dict[str, np.ndarray] = {}
    if inputs.fixes is not None and inputs.fixes.height:
        new = inputs.fixes.select(
            [pl.col(c).cast(t) if c in inputs.fixes.columns else pl.lit(None, t).alias(c)
             for c, t in FIX_SCHEMA.items()]
        ).filter(pl.col("technician_id").is_not_null() & pl.col("ts").is_not_null())  # fmt: skip
        fixes = pl.concat([fixes, new]).unique().sort("technician_id", "ts")
        per = new.group_by("technician_id").agg(pl.col("ts").max(), pl.col("ts").alias("all"))
        for tech, latest, all_ts in per.iter_rows():
            tech_mark[tech] = max(latest, tech_mark.get(tech, latest))
            new_ts[tech] = np.sort(
                pl.Series(all_ts, dtype=FIX_SCHEMA["ts"]).dt.epoch("us").to_numpy()
            )
        latest_all = new["ts"].max()
        assert isinstance(latest_all, datetime)
        mark = latest_all if mark is None else max(mark, latest_all)
    if inputs.mark is not None:
        mark = inputs.mark if mark is None else max(mark, inputs.mark)
    uwb = state.uwb
    if inputs.uwb is not None and inputs.uwb.height:
        uwb = pl.concat(
            [uwb, inputs.uwb.select([pl.col(c).cast(t) for c, t in UWB_SCHEMA.items()])]
        )
    arrivals = dict(state.arrivals)
    added: list[_Arrival] = []
    if inputs.arrivals is not None:
        for row in inputs.arrivals.select(list(ARRIVAL_SCHEMA)).iter_rows(named=True):
            if row["event_id"] in arrivals or row["ts"] is None or row["technician_id"] is None:
                continue
            a = _Arrival(row=row, seen_wall=inputs.wall)
            arrivals[row["event_id"]] = a
            added.append(a)
    # late fixes and widened evidence mark evaluated arrivals dirty
    for key, a in arrivals.items():
        if a.version == 0 or a.dirty:
            continue
        widened = any(
            b.row["technician_id"] == a.row["technician_id"]
            and _window(b, timing)[0] <= _window(a, timing)[1]
            and _window(a, timing)[0] <= _window(b, timing)[1]
            for b in added
        )
        if widened or _late_touched(a, new_ts, timing):
            arrivals[key] = replace(a, dirty=True)
    due: dict[str, str] = {}
    complete: set[str] = set()  # the whole evidence window has passed
    for key, a in arrivals.items():
        tmark = tech_mark.get(a.row["technician_id"])
        reached = (tmark is not None and tmark >= a.ts + timing.decide_after) or (
            mark is not None and mark >= a.ts + timing.decide_after + timing.lateness
        )
        settled = (tmark is not None and tmark >= a.ts + timing.settle_after) or (
            mark is not None and mark >= a.ts + timing.settle_after + timing.lateness
        )
        if settled:
            complete.add(key)
        if a.evaluated_through is None:
            if reached:
                due[key] = "first"
            elif inputs.wall - a.seen_wall >= timing.max_wait:
                due[key] = "wait"
        elif a.dirty:
            due[key] = "late"
        elif settled and not a.settled:
            due[key] = "settle"
    _spread(due, arrivals)
    out: list[Verdict] = []
    if due:
        techs = {arrivals[k].row["technician_id"] for k in due}
        context = [a for a in arrivals.values() if a.row["technician_id"] in techs]
        evidence = _evidence(fixes, context, timing)
        frame = pl.DataFrame([arrivals[k].row for k in due], schema=ARRIVAL_SCHEMA)
        tech_uwb = uwb.filter(pl.col("technician_id").is_in(sorted(techs)))
        checks = verify(frame, evidence, tech_uwb, th, now=inputs.wall)
        for row in checks.iter_rows(named=True):
            key = row["event_id"]
            a = arrivals[key]
            tmark = tech_mark.get(a.row["technician_id"]) or mark or a.ts
            settled = a.settled or key in complete
            fp = _fingerprint(row)
            version = a.version + (fp != a.fingerprint)
            if fp != a.fingerprint:
                out.append(
                    Verdict(
                        key, row["ticket_id"], row["technician_id"], a.ts, version, due[key], row
                    )
                )
            arrivals[key] = replace(
                a, version=version, fingerprint=fp, evaluated_through=tmark,
                settled=settled, dirty=False,
            )  # fmt: skip
    # forget what no late fix can change any more
    if mark is not None:
        horizon = mark - timing.keep
        arrivals = {
            k: a for k, a in arrivals.items() if not (a.settled and _window(a, timing)[1] < horizon)
        }
        # an arrival yet to come needs fixes back to its window's start; older fixes matter
        # only inside the windows of the arrivals kept (memory: ~``before`` of all fixes)
        recent = mark - timing.before - timing.lateness
        fixes = _keep(fixes, recent, list(arrivals.values()), timing)
        uwb = _keep(uwb, recent, list(arrivals.values()), timing)
    return VerdictState(fixes, uwb, arrivals, tech_mark, mark), out
