"""The live geofence engine: a pure step over positions and ticket events.

Each fix is checked against the fences of its technician's open tickets (a circle of
``fence_radius_m`` round the customer): membership first (``geofence.fences.stamp_membership``,
with accuracy buffers), then transitions (``fence_transitions``: confirmation and exit
hysteresis). On the recent fixes of each technician the transitions are re-derived and only
those past the last one published for a (technician, ticket) come out, so a step boundary
never adds or loses one. Events:

- ``enter`` / ``exit`` - a confirmed transition of the fence;
- ``dwell``            - inside for ``dwell`` (once per visit);
- ``arrived_auto``     - confidently within ``radius_m`` of the customer
                         (distance + ``accuracy_k``·accuracy <= radius) and stopped
                         (speed <= ``stopped_mps``): the trigger of an automatic "arrived",
                         once per (technician, ticket).

Open tickets: ``assigned`` names the technician in its note; the technician's own
``accepted``/``departed``/``arrived``/``work_started`` also open it for them; ``completed``
and ``closed`` end it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from geofence.distance import local_distance_m
from geofence.fences import FenceSet, fence_transitions, stamp_membership
from pipelines.live.processors.verdicts import FIX_SCHEMA

OPENING = frozenset({"accepted", "departed", "arrived", "work_started"})
CLOSING = frozenset({"completed", "closed"})


@dataclass(frozen=True)
class FenceRules:
    """Fence and trigger thresholds; units in the names."""

    fence_radius_m: float = 30.0  # "near the customer" (pipelines/views/nearby.py)
    radius_m: float = 5.0  # arrival radius
    accuracy_k: float = 1.0
    exit_margin_k: float = 2.0
    confirm_fixes: int = 2
    confirm_dwell: timedelta = timedelta(seconds=30)
    dwell: timedelta = timedelta(minutes=5)
    stopped_mps: float = 0.5
    context: timedelta = timedelta(minutes=15)  # recent fixes re-derived each step


@dataclass(frozen=True)
class FenceEvent:
    kind: str  # enter | exit | dwell | arrived_auto
    technician_id: str
    ticket_id: str
    ts: datetime
    data: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.ticket_id}/{self.technician_id}/{self.kind}/{self.ts.isoformat()}"


@dataclass(frozen=True)
class FenceState:
    fixes: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=FIX_SCHEMA))
    points: dict[str, tuple[float, float]] = field(default_factory=dict)  # ticket -> lat, lon
    open: dict[str, frozenset[str]] = field(default_factory=dict)  # technician -> tickets
    inside: dict[tuple[str, str], datetime] = field(default_factory=dict)  # -> since
    last: dict[tuple[str, str], datetime] = field(default_factory=dict)  # last transition ts
    dwelt: frozenset[tuple[str, str]] = frozenset()
    auto: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class FenceInputs:
    fixes: pl.DataFrame | None = None  # FIX_SCHEMA
    events: list[dict[str, Any]] = field(default_factory=list)  # ticket_id, event_type, actor, note
    points: dict[str, tuple[float, float]] = field(default_factory=dict)


def _open_tickets(
    current: dict[str, frozenset[str]], events: list[dict[str, Any]]
) -> dict[str, frozenset[str]]:
    out = dict(current)
    for e in sorted(events, key=lambda e: str(e.get("ts") or "")):
        kind, ticket = e.get("event_type"), e.get("ticket_id")
        if not ticket:
            continue
        tech = e.get("note") if kind == "assigned" else e.get("actor")
        if kind == "assigned" or kind in OPENING:
            if tech:
                out[tech] = out.get(tech, frozenset()) | {ticket}
        elif kind in CLOSING:
            out = {t: s - {ticket} for t, s in out.items()}
    return out


def _arrived_auto(
    fx: pl.DataFrame, point: tuple[float, float], rules: FenceRules
) -> tuple[datetime, dict[str, Any]] | None:
    """The first fix ending a run of ``confirm_fixes`` fixes confidently within ``radius_m``
    and stopped (one good fix among jumps is not an arrival)."""
    d = local_distance_m(fx["lat"].to_numpy(), fx["lon"].to_numpy(), point[0], point[1])
    acc = fx["accuracy_m"].fill_null(np.inf).to_numpy()
    speed = fx["speed_mps"].fill_null(np.inf).to_numpy()
    ok = (d + rules.accuracy_k * acc <= rules.radius_m) & (speed <= rules.stopped_mps)
    run = 0
    for i, good in enumerate(ok):
        run = run + 1 if good else 0
        if run >= rules.confirm_fixes:
            data = {
                "distance_m": float(d[i]),
                "accuracy_m": float(acc[i]),
                "speed_mps": float(speed[i]),
            }
            ts: datetime = fx["ts"][i]
            return ts, data
    return None


def _dwell(tech: str, ticket: str, since: datetime, rules: FenceRules) -> FenceEvent:
    return FenceEvent("dwell", tech, ticket, since + rules.dwell, {"since": since.isoformat()})


def step(
    state: FenceState, inputs: FenceInputs, rules: FenceRules
) -> tuple[FenceState, list[FenceEvent]]:
    """Add fixes and ticket events; return the new geofence events in time order. Pure."""
    points = {**state.points, **inputs.points}
    open_ = _open_tickets(state.open, inputs.events)
    fixes = state.fixes
    new = inputs.fixes if inputs.fixes is not None else pl.DataFrame(schema=FIX_SCHEMA)
    if new.height:
        fixes = (
            pl.concat([fixes, new.select(list(FIX_SCHEMA))]).unique().sort("technician_id", "ts")
        )
        latest = fixes["ts"].max()
        assert isinstance(latest, datetime)
        fixes = fixes.filter(pl.col("ts") >= latest - rules.context)
    inside, last = dict(state.inside), dict(state.last)
    dwelt, auto = set(state.dwelt), set(state.auto)
    out: list[FenceEvent] = []
    techs = sorted(set(new["technician_id"].to_list()) & set(open_)) if new.height else []
    pairs = [(t, k) for t in techs for k in sorted(open_[t]) if k in points]
    if pairs:
        mine = fixes.filter(pl.col("technician_id").is_in(techs))
        ids = sorted({k for _, k in pairs})
        fences = FenceSet.from_frame(
            pl.DataFrame(
                {
                    "fence_id": ids,
                    "kind": ["circle"] * len(ids),
                    "lat": [points[k][0] for k in ids],
                    "lon": [points[k][1] for k in ids],
                    "radius_m": [rules.fence_radius_m] * len(ids),
                    "wkt": [None] * len(ids),
                },
                schema_overrides={"wkt": pl.String},
            )
        )
        stamped = stamp_membership(mine, fences, accuracy_k=rules.accuracy_k)
        wanted = pl.DataFrame(pairs, schema=["technician_id", "fence_id"], orient="row")
        stamped = stamped.join(wanted, on=["technician_id", "fence_id"])
        moves = fence_transitions(
            stamped, confirm_fixes=rules.confirm_fixes, confirm_dwell=rules.confirm_dwell,
            exit_margin_k=rules.exit_margin_k,
        )  # fmt: skip
        for tech, ticket, event, ts, since, via, _row in moves.iter_rows():
            key = (tech, ticket)
            if key in last and ts <= last[key]:
                continue
            entering = event == "ENTER"
            if entering == (key in inside):
                continue  # the state already says so (a re-derived transition)
            last[key] = ts
            if entering:
                inside[key] = since
            else:
                began = inside.pop(key)
                if key not in dwelt and ts - began >= rules.dwell:
                    out.append(_dwell(tech, ticket, began, rules))
                dwelt.discard(key)
            out.append(FenceEvent("enter" if entering else "exit", tech, ticket, ts, {"via": via}))
        newest = mine.group_by("technician_id").agg(pl.col("ts").max())
        newest_of = dict(newest.iter_rows())
        for key, since in list(inside.items()):
            tech, ticket = key
            now = newest_of.get(tech)
            if now is not None and key not in dwelt and now - since >= rules.dwell:
                dwelt.add(key)
                out.append(_dwell(tech, ticket, since, rules))
        # arrived_auto: confidently within radius_m and stopped, over confirm_fixes fixes in a row
        for tech, ticket in pairs:
            if (tech, ticket) not in auto:
                hit = _arrived_auto(
                    mine.filter(pl.col("technician_id") == tech), points[ticket], rules
                )
                if hit is not None:
                    auto.add((tech, ticket))
                    out.append(FenceEvent("arrived_auto", tech, ticket, hit[0], hit[1]))
    # forget closed tickets' state
    still = {(t, k) for t, ks in open_.items() for k in ks}
    inside = {k: v for k, v in inside.items() if k in still}
    out.sort(key=lambda e: (e.ts, e.technician_id, e.ticket_id))
    new_state = replace(
        state, fixes=fixes, points=points, open=open_, inside=inside, last=last,
        dwelt=frozenset(dwelt & still), auto=frozenset(auto),
    )  # fmt: skip
    return new_state, out
