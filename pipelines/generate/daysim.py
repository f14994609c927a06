"""One technician-day: where the technician physically is, and what they tap, when.

``simulate_day`` walks a technician's visits in order and builds three consistent records:

* a *track* of knots (time, local x/y) — waits, drives on the road grid, dwells — from which
  ``pipelines.generate.gps`` samples noisy fixes; indoor dwells are gaps (GPS lost);
* the ticket *events* the technician taps (accepted, departed, arrived, work_started,
  parts_requested, completed), written onto each ``Ticket``;
* the *truth* of every arrival (where and when the technician really got there), plus UWB
  positions at 1 Hz while inside an indoor site.

A visit: wait until the ticket is ready → accept (already accepted on assignment at a
morning-batch desk) → (idle 1–4 h if planted) → depart → drive →
(planted false arrival: park 150–400 m away, tap "arrived", then drive on) → physical arrival →
tap "arrived" 0–60 s later (3–20 min if a planted status lag) → work → complete or, for a
planted revisit, request the missing part (named in the note) and leave; the second visit
comes 1–3 days later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipelines.generate.city import ENTRANCE_XY_M, Customer, Site, Technician
from pipelines.generate.geo import drive, to_latlon
from pipelines.generate.tickets import DAY_S, Visit

FloatArray = npt.NDArray[np.float64]
WALK_MPS = 1.2
UWB_NOISE_M = 0.1


@dataclass(frozen=True, slots=True)
class ArrivalTruth:
    event_id: str
    ticket_id: str
    technician_id: str
    indoor: bool
    site_id: str | None
    true_lat: float
    true_lon: float
    true_ts_s: float
    tap_ts_s: float
    false_distance_m: float | None
    second_visit: bool


@dataclass(slots=True)
class DayTrack:
    """Knots of one technician-day. ``group[k]`` labels the interval ending at knot ``k``:
    0 is moving, ``g > 0`` is a stationary spell with multipath bias ``bias_xy_m[g]``."""

    technician_id: str
    day: int
    t_s: list[float] = field(default_factory=list)
    x_m: list[float] = field(default_factory=list)
    y_m: list[float] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    n_groups: int = 1
    gaps_s: list[tuple[float, float]] = field(default_factory=list)

    @property
    def now(self) -> float:
        return self.t_s[-1]

    @property
    def pos(self) -> tuple[float, float]:
        return self.x_m[-1], self.y_m[-1]

    def start(self, t: float, x: float, y: float) -> None:
        self.t_s, self.x_m, self.y_m, self.group = [t], [x], [y], [0]

    def stay(self, until_s: float) -> None:
        if until_s <= self.now + 0.5:
            return
        self.t_s.append(until_s)
        self.x_m.append(self.x_m[-1])
        self.y_m.append(self.y_m[-1])
        self.group.append(self.n_groups)
        self.n_groups += 1

    def drive_to(self, xy: tuple[float, float], rng: np.random.Generator) -> None:
        route = drive(self.pos, xy, rng)
        t0 = self.now
        self.t_s += (t0 + route.t_s[1:]).tolist()
        self.x_m += route.x_m[1:].tolist()
        self.y_m += route.y_m[1:].tolist()
        self.group += [0] * (len(route.t_s) - 1)


@dataclass(slots=True)
class UwbTrace:
    site_id: str
    tag_id: str
    ts_s: FloatArray
    x_m: FloatArray
    y_m: FloatArray
    z_m: FloatArray
    error_m: FloatArray


@dataclass(slots=True)
class DayResult:
    track: DayTrack
    arrivals: list[ArrivalTruth]
    uwb: list[UwbTrace]


def _uwb_visit(
    site: Site,
    target_xy: tuple[float, float],
    tag_id: str,
    t_enter: float,
    t_exit: float,
    dwell: tuple[float, float],
    rng: np.random.Generator,
) -> UwbTrace:
    """1 Hz site-frame positions: walk in along the corridor, dwell at the unit, walk out."""
    ex, ey = ENTRANCE_XY_M
    tx, ty = target_xy
    kx = np.array([ex, ex, tx, tx, ex, ex])
    ky = np.array([ey, ty, ty, ty, ty, ey])
    kt = np.array([t_enter, 0.0, dwell[0], dwell[1], 0.0, t_exit])
    kt[1] = t_enter + abs(ty - ey) / WALK_MPS
    kt[4] = dwell[1] + abs(tx - ex) / WALK_MPS
    kt = np.maximum.accumulate(kt + np.arange(6) * 1e-3)
    ts = np.arange(math.ceil(t_enter), t_exit, 1.0)
    n = len(ts)
    wander = rng.normal(0.0, 0.03, size=(n, 2)).cumsum(axis=0)
    wander -= np.linspace(0, 1, n)[:, None] * wander[-1] if n else 0.0
    wander = np.clip(wander, -0.5, 0.5)
    at_unit = (ts >= dwell[0]) & (ts <= dwell[1])
    x = np.interp(ts, kt, kx) + np.where(at_unit, wander[:, 0], 0.0)
    y = np.interp(ts, kt, ky) + np.where(at_unit, wander[:, 1], 0.0)
    noise = rng.normal(0.0, UWB_NOISE_M, size=(n, 3))
    return UwbTrace(
        site.site_id,
        tag_id,
        ts,
        np.round(x + noise[:, 0], 3),
        np.round(y + noise[:, 1], 3),
        np.round(1.1 + noise[:, 2], 3),
        np.round(UWB_NOISE_M * math.sqrt(2) * rng.uniform(0.8, 1.3, n), 3),
    )


def simulate_day(
    tech: Technician,
    day: int,
    visits: list[Visit],
    sites: dict[str, Site],
    t0_s: float,
    rng: np.random.Generator,
) -> DayResult:
    """Simulate one technician-day (see the module docstring); writes events onto tickets."""
    tid = tech.technician_id
    track = DayTrack(tid, day)
    track.start(t0_s + day * DAY_S + float(rng.uniform(-600, 1200)), tech.home_x_m, tech.home_y_m)
    arrivals: list[ArrivalTruth] = []
    uwb: list[UwbTrace] = []
    for v in visits:
        tk = v.ticket
        first = not v.second
        ready = max(track.now, v.ready_s)
        t_acc = ready + float(rng.uniform(60, 240)) if first else ready
        if first and tk.claim_on_assign:  # morning-batch desk: claimed when assigned
            tk.add_event("accepted", tk.assigned_s + float(rng.uniform(10, 50)), tid)
        elif first:
            tk.add_event("accepted", t_acc, tid)
        idle_s = rng.uniform(3600, 4 * 3600) if (tk.idle and first) else rng.uniform(60, 360)
        t_dep = t_acc + float(idle_s)
        track.stay(t_dep)
        tk.add_event("departed", t_dep, tid)
        cust = tk.customer
        site = sites.get(cust.site_id) if cust.site_id else None
        dest = (site.entrance_x_m, site.entrance_y_m) if site else (cust.x_m, cust.y_m)
        false_d: float | None = None
        t_tap = 0.0
        if tk.false_arrival and first:
            false_d = float(rng.uniform(150, 400))
            theta = float(rng.uniform(0, 2 * math.pi))
            park = (cust.x_m + false_d * math.cos(theta), cust.y_m + false_d * math.sin(theta))
            track.drive_to(park, rng)
            parked_s = float(rng.uniform(240, 600))
            t_tap = track.now + float(rng.uniform(30, 120))
            track.stay(track.now + parked_s)
        track.drive_to(dest, rng)
        t_door = track.now
        tx, ty = site_target(cust)
        walk_in = (abs(ty - ENTRANCE_XY_M[1]) + abs(tx - ENTRANCE_XY_M[0])) / WALK_MPS
        t_true = t_door + walk_in
        if false_d is None:
            lag = rng.uniform(180, 1200) if (tk.status_lag and first) else rng.uniform(0, 60)
            t_tap = t_true + float(lag)
        ev_arr = tk.add_event("arrived", t_tap, tid)
        t_work = max(t_true, t_tap) + float(rng.uniform(60, 240))
        tk.add_event("work_started", t_work, tid)
        if tk.revisit and first:
            t_parts = t_work + float(rng.uniform(600, 1800))
            tk.add_event("parts_requested", t_parts, tid, f"{tk.part or 'part'} not on van")
            t_end = t_parts + float(rng.uniform(300, 900))
        else:
            t_end = max(t_true + float(rng.uniform(1500, 5400)), t_work + 900)
            tk.add_event("completed", t_end - float(rng.uniform(0, 180)), tid)
        if site:
            t_exit = t_end + walk_in
            uwb.append(_uwb_visit(site, (tx, ty), tid, t_door, t_exit, (t_true, t_end), rng))
            track.gaps_s.append((t_door, t_exit))
            track.stay(t_exit)
        else:
            track.stay(t_end)
        arrivals.append(
            ArrivalTruth(
                ev_arr,
                tk.ticket_id,
                tid,
                site is not None,
                cust.site_id,
                cust.lat,
                cust.lon,
                t_true,
                t_tap,
                false_d,
                v.second,
            )
        )
    track.stay(track.now + float(rng.uniform(180, 600)))
    return DayResult(track, arrivals, uwb)


def site_target(cust: Customer) -> tuple[float, float]:
    """The site-frame target of an indoor customer (the entrance for an outdoor one)."""
    if cust.target_x_m is None or cust.target_y_m is None:
        return ENTRANCE_XY_M
    return cust.target_x_m, cust.target_y_m


def truth_latlon(track: DayTrack, t_s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The true WGS84 position along a track at the given times."""
    x = np.interp(t_s, track.t_s, track.x_m)
    y = np.interp(t_s, track.t_s, track.y_m)
    return to_latlon(x, y)
