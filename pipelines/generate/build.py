"""Build the demo world in memory (everything except the GPS fixes, sampled lazily).

Every random stream is derived from the seed and a fixed label, and each technician-day has
its own stream ``(seed, tech, day)``, so the world does not depend on iteration order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import polars as pl
import shapely

from pipelines.generate.city import (
    Customer,
    Site,
    Technician,
    make_customers,
    make_sites,
    make_technicians,
    sample_points,
)
from pipelines.generate.daysim import ArrivalTruth, DayTrack, UwbTrace, simulate_day
from pipelines.generate.feeds import iot_frame, outage_polygon, rain_episodes, weather_frame
from pipelines.generate.geo import region_box_m, to_latlon
from pipelines.generate.gps import sample_fixes
from pipelines.generate.tickets import (
    DAY_S,
    LOCAL_OFFSET_S,
    Ticket,
    assign_channels,
    background_tickets,
    choose_faults,
    day0_s,
    extra_tickets,
    plan_visits,
    plant_missing_parts,
)

CLUSTER_TAG = "refrigerant_leak"
CLUSTER_SIZE = 24
CLUSTER_RADIUS_M = 700.0
CLUSTER_SPAN_H = 60.0
OUTAGE_TICKETS = 8
GCJ_REGION = "east"
# A customer chases (calls or messages to ask where the technician is) when the wait from
# report to the technician's arrival drags: with probability 1 - exp(-(wait_h - 2) / 12)
# once the wait exceeds 2 h, 1–3 times between an hour after creation and the arrival.
CHASE_AFTER_H = 2.0
CHASE_SCALE_H = 12.0
Progress = Callable[[str, float], None]

_STREAMS = {
    "city": 1,
    "tickets": 2,
    "plan": 3,
    "weather": 4,
    "iot": 5,
    "close": 6,
    "bad": 7,
    "day": 8,
    "gps": 9,
    "report": 10,
}


def stream(seed: int, name: str, *more: int) -> np.random.Generator:
    """An independent generator for one named part of the world (and optional sub-keys)."""
    return np.random.default_rng([seed, _STREAMS[name], *more])


@dataclass
class World:
    seed: int
    scale: float
    days: int
    start: date
    t0_s: float
    techs: list[Technician]
    sites: list[Site]
    tickets: list[Ticket]
    tracks: list[tuple[int, DayTrack]] = field(default_factory=list)
    arrivals: list[ArrivalTruth] = field(default_factory=list)
    uwb: list[UwbTrace] = field(default_factory=list)
    weather: pl.DataFrame = field(default_factory=pl.DataFrame)
    rain_hours_s: list[float] = field(default_factory=list)
    outage: dict[str, Any] = field(default_factory=dict)
    cluster: dict[str, Any] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)
    iot: pl.DataFrame = field(default_factory=pl.DataFrame)
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    chases: list[dict[str, Any]] = field(default_factory=list)
    reopened: list[dict[str, Any]] = field(default_factory=list)


def _disk(rng: np.random.Generator, n: int, center: tuple[float, float], r_m: float) -> Any:
    rad = r_m * np.sqrt(rng.random(n))
    ang = rng.uniform(0, 2 * math.pi, n)
    return center[0] + rad * np.cos(ang), center[1] + rad * np.sin(ang)


def _inside_box(rng: np.random.Generator, region: str, margin_m: float) -> tuple[float, float]:
    x0, y0, x1, y1 = region_box_m(region)
    return (
        float(rng.uniform(x0 + margin_m, x1 - margin_m)),
        float(rng.uniform(y0 + margin_m, y1 - margin_m)),
    )


def _make_tickets(world: World, outdoor: list[Customer], indoor: list[Customer]) -> None:
    rng = stream(world.seed, "tickets")
    t0, days = world.t0_s, world.days
    rain = rain_episodes(stream(world.seed, "weather"), t0, days)
    world.weather, world.rain_hours_s = weather_frame(
        stream(world.seed, "weather", 1), t0, days, rain
    )
    # the cluster: 24 refrigerant leaks within 700 m over 60 h, in the north
    c_xy = _inside_box(rng, "north", 2500.0)
    c_day = max(1, days * 2 // 5)
    w0 = t0 - LOCAL_OFFSET_S + c_day * DAY_S + 9 * 3600 + float(rng.uniform(0, 3 * 3600))
    cx, cy = _disk(rng, CLUSTER_SIZE, c_xy, CLUSTER_RADIUS_M)
    cluster_cust = make_customers(rng, cx, cy, 80_000)
    cluster_t = w0 + np.sort(rng.uniform(0, CLUSTER_SPAN_H * 3600, CLUSTER_SIZE))
    # the outage: ~1.2 km around a point in the south, 4–7 h on one afternoon
    o_xy = _inside_box(rng, "south", 2500.0)
    wkt, _ = outage_polygon(rng, o_xy, 1200.0)
    o_day = max(1, days * 3 // 5)
    o_start = t0 - LOCAL_OFFSET_S + o_day * DAY_S + 13 * 3600 + float(rng.uniform(0, 7200))
    o_end = o_start + float(rng.uniform(4, 7)) * 3600
    ox, oy = _disk(rng, OUTAGE_TICKETS, o_xy, 700.0)
    outage_cust = make_customers(rng, ox, oy, 81_000)
    outage_t = rng.uniform(o_start + 600, o_end - 600, OUTAGE_TICKETS)
    # water leaks follow the rain
    rain_t = np.concatenate(
        [rng.uniform(ep.start_s, ep.end_s, rng.poisson(max(1.0, world.scale) * 3.0)) for ep in rain]
    )
    rain_cust = [outdoor[int(i)] for i in rng.integers(len(outdoor), size=len(rain_t))]
    n_bg = max(60, round(5000 * world.scale) - CLUSTER_SIZE - OUTAGE_TICKETS - len(rain_t))
    tickets = background_tickets(rng, n_bg, outdoor, indoor, t0, days, indoor_fraction=0.065)
    tickets += extra_tickets(rng, cluster_cust, CLUSTER_TAG, cluster_t, 100_000)
    tickets += extra_tickets(rng, outage_cust, "no_power", outage_t, 200_000)
    tickets += extra_tickets(rng, rain_cust, "water_leak", rain_t, 300_000)
    tickets.sort(key=lambda t: (t.created_s, t.key))
    for i, t in enumerate(tickets):
        t.ticket_id = f"TKT-{i + 1:06d}"
    choose_faults(rng, tickets, world.scale)
    report_rng = stream(world.seed, "report")
    assign_channels(report_rng, tickets)
    plant_missing_parts(report_rng, tickets)
    world.tickets = tickets
    cluster_ids = [t.ticket_id for t in tickets if t.key >= 100_000 and t.key < 200_000]
    clat, clon = to_latlon(*c_xy)
    world.cluster = {
        "tag": CLUSTER_TAG,
        "ticket_ids": cluster_ids,
        "center_lat": round(float(clat), 6),
        "center_lon": round(float(clon), 6),
        "window_start_s": float(cluster_t[0]),
        "window_end_s": float(cluster_t[0]) + 72 * 3600,
    }
    poly = shapely.from_wkt(wkt)
    affected = [
        t.ticket_id
        for t in tickets
        if o_start <= t.created_s <= o_end
        and shapely.contains_xy(poly, t.customer.lon, t.customer.lat)
    ]
    world.outage = {
        "outage_id": "OUT-0001",
        "source": "demo",
        "geom_wkt": wkt,
        "start_s": o_start,
        "end_s": o_end,
        "customers_affected": int(rng.integers(800, 3000)),
        "cause": "substation fault",
        "ticket_ids": affected,
    }


def _close_tickets(world: World) -> None:
    """Closing, reopening and customer chases, once every visit has been simulated."""
    rng = stream(world.seed, "close")
    for t in world.tickets:
        done = max(ts for _, kind, ts, _, _ in t.events if kind == "completed")
        closed = done + float(rng.uniform(600, 6 * 3600))
        t.add_event("closed", closed, "dispatcher")
        if t.reopen:
            again = closed + float(rng.uniform(2 * 3600, 48 * 3600))
            ev = t.add_event("reopened", again, t.customer.customer_id, "problem is back")
            t.add_event("closed", again + float(rng.uniform(3600, 24 * 3600)), "dispatcher")
            world.reopened.append({"ticket_id": t.ticket_id, "event_id": ev})
    for t in world.tickets:
        first_tap = min(ts for _, kind, ts, _, _ in t.events if kind == "arrived")
        wait_h = (first_tap - (t.reported_s or t.created_s)) / 3600
        p_chase = 1 - math.exp(-(wait_h - CHASE_AFTER_H) / CHASE_SCALE_H)
        if wait_h <= CHASE_AFTER_H or first_tap - t.created_s <= 3600 or rng.random() >= p_chase:
            continue
        times = np.sort(rng.uniform(t.created_s + 3600, first_tap, int(rng.integers(1, 4))))
        ids = [
            t.add_event("customer_chased", float(ts), t.customer.customer_id, "any update?")
            for ts in times
        ]
        world.chases.append({"ticket_id": t.ticket_id, "event_ids": ids})


def _ticket_with(world: World, tag: str, rng: np.random.Generator) -> Ticket:
    lo, hi = world.t0_s + 3 * DAY_S, world.t0_s + (world.days - 3) * DAY_S
    pool = [
        t
        for t in world.tickets
        if t.tag == tag and lo <= t.created_s <= hi and not t.revisit and t.customer.site_id is None
    ]
    return pool[int(rng.integers(len(pool)))]


def _make_iot(world: World) -> None:
    rng = stream(world.seed, "iot")
    vib_t = _ticket_with(world, "noise_vibration", rng)
    wifi_t = _ticket_with(world, "wifi_drop", rng)
    n_dev = max(6, round(60 * world.scale))
    others = [t for t in world.tickets if t is not vib_t and t is not wifi_t]
    chosen = [vib_t, wifi_t] + [others[int(i)] for i in rng.choice(len(others), n_dev - 2, False)]
    for i, t in enumerate(chosen):
        world.devices.append(
            {
                "device_id": f"DEV-{i + 1:04d}",
                "kind": "hvac_monitor",
                "customer_id": t.customer.customer_id,
                "ticket_id": t.ticket_id,
                "lat": round(t.customer.lat, 7),
                "lon": round(t.customer.lon, 7),
                "description": f"Smart HVAC monitor at {t.customer.address}",
            }
        )

    def done(t: Ticket) -> float:
        return min(ts for _, kind, ts, _, _ in t.events if kind == "completed")

    vib_onset = vib_t.created_s - 36 * 3600
    wifi_onset = wifi_t.created_s - float(rng.uniform(6, 18)) * 3600
    world.iot = iot_frame(
        stream(world.seed, "iot", 1),
        [d["device_id"] for d in world.devices],
        world.t0_s,
        world.days,
        ("DEV-0001", vib_onset, done(vib_t)),
        ("DEV-0002", wifi_onset, done(wifi_t)),
    )
    world.faults = {
        "vibration_fault": {"device_id": "DEV-0001", "ticket_id": vib_t.ticket_id},
        "wifi_drop": {"device_id": "DEV-0002", "ticket_id": wifi_t.ticket_id},
    }
    world.faults["vibration_fault"]["onset_s"] = vib_onset
    world.faults["wifi_drop"]["onset_s"] = wifi_onset


def build_world(
    *, seed: int, scale: float, days: int, start: date, progress: Progress | None = None
) -> World:
    """The whole world in memory except GPS fixes (see ``world_gps``)."""
    say = progress or (lambda _m, _f: None)
    rng = stream(seed, "city")
    techs = make_technicians(rng, max(4, round(50 * scale)))
    sites, indoor = make_sites(rng, max(3, round(10 * scale)), 90_000)
    px, py = sample_points(rng, max(80, round(4200 * scale)))
    outdoor = make_customers(rng, px, py, 1)
    world = World(seed, scale, days, start, day0_s(start), techs, sites, [])
    say("tickets", 0.05)
    _make_tickets(world, outdoor, indoor)
    visits = plan_visits(stream(seed, "plan"), world.tickets, techs, world.t0_s)
    for t in world.tickets:
        t.add_event("created", t.created_s, "portal")
        t.add_event("assigned", t.assigned_s, "dispatcher", t.technician_id)
    say("technician days", 0.1)
    index = {tech.technician_id: i for i, tech in enumerate(techs)}
    site_of = {s.site_id: s for s in sites}
    for (tech_id, day), vs in visits.items():
        i = index[tech_id]
        res = simulate_day(techs[i], day, vs, site_of, world.t0_s, stream(seed, "day", i, day))
        world.tracks.append((i, res.track))
        world.arrivals += res.arrivals
        world.uwb += res.uwb
    _close_tickets(world)
    _make_iot(world)
    return world


def world_gps(world: World, *, truth: bool = False) -> Iterator[tuple[str, pl.DataFrame]]:
    """GPS fixes per technician (sorted by ts), in technician order; deterministic."""
    by_tech: dict[int, list[DayTrack]] = {}
    for i, track in world.tracks:
        by_tech.setdefault(i, []).append(track)
    for i in sorted(by_tech):
        frames = [
            sample_fixes(tr, stream(world.seed, "gps", i, tr.day), truth=truth)
            for tr in sorted(by_tech[i], key=lambda tr: tr.day)
        ]
        yield world.techs[i].technician_id, pl.concat(frames)
