"""Tickets of the demo world and their plan: who serves which ticket on which day.

Times are float seconds since the Unix epoch (UTC). Day ``d`` of the world starts at 08:00
local (Asia/Shanghai, UTC+8), which is 00:00 UTC of the same date.

The world reproduces the 2026 trend report's breakpoints, each with a planted cause:

* **report → create** (report: 17 min): a ticket comes in by ``phone``, ``portal`` or ``app``.
  A phone ticket is typed in after the call, a Gamma(4, 17/4) minutes later (mean 17 min);
  its ``reported_ts`` is the call. Portal and app tickets are created by the customer, so
  they have no separate report time (``reported_ts`` empty). Cause: the phone channel.
* **accept → depart idle** (report: 4.2 h mean): the ``south`` desk runs a *morning batch*
  (``MORNING_BATCH_REGION``): technicians accept (claim) a ticket the moment it is assigned,
  and tickets created after ``MORNING_BATCH_CUTOFF_H`` go to the next morning's batch. The
  claim-to-departure wait is the idle; it spans the night for batched tickets.
* **missing-part revisits** (report: 31 % of parts-related tickets): parts-related tickets
  are those of ``PARTS_TAGS``. ``LEGACY_SHARE`` of them are for a discontinued unit: every
  one on the two east-side estates (``LEGACY_ESTATES_XY_M``, built with that model) and the
  rest at random. They carry the ``legacy_unit`` tag; vans do not stock the model's parts, so
  ``LEGACY_REVISIT_RATE`` of them need a second visit, against a few of the others. The
  preparation checklist's ``legacy_unit_parts`` rule flags such a ticket before the first
  visit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Final

import numpy as np

from pipelines.generate.city import Customer, Technician

TAGS: Final = (
    "refrigerant_leak",
    "compressor_fault",
    "thermostat",
    "wifi_drop",
    "no_power",
    "water_leak",
    "noise_vibration",
)
TAG_WEIGHTS: Final = (0.045, 0.17, 0.2, 0.17, 0.095, 0.16, 0.16)
CATEGORY: Final = {
    "refrigerant_leak": "hvac",
    "compressor_fault": "hvac",
    "thermostat": "hvac",
    "noise_vibration": "hvac",
    "wifi_drop": "network",
    "no_power": "electrical",
    "water_leak": "plumbing",
}
# Parts-related tags and the part a technician may lack (the ``parts_requested`` note).
PARTS_TAGS: Final = {
    "compressor_fault": "compressor start relay",
    "refrigerant_leak": "R-32 refrigerant and brazing kit",
    "thermostat": "thermostat controller",
}
LEGACY_TAG: Final = "legacy_unit"
LEGACY_PART: Final = "discontinued-model compressor relay"
# Two east-side estates built with the discontinued model: centres in local metres, radius.
LEGACY_ESTATES_XY_M: Final = ((6000.0, -2000.0), (7000.0, 6500.0))
LEGACY_ESTATE_RADIUS_M: Final = 2500.0
LEGACY_SHARE: Final = 0.28  # of parts-related tickets: the estate's, then others at random
PARTS_REVISIT_RATE: Final = 0.31
LEGACY_REVISIT_RATE: Final = 0.85
CHANNELS: Final = ("phone", "portal", "app")
CHANNEL_WEIGHTS: Final = (0.45, 0.35, 0.2)
PHONE_LAG_MEAN_S: Final = 17 * 60.0
PHONE_LAG_SHAPE: Final = 4.0
MORNING_BATCH_REGION: Final = "south"
MORNING_BATCH_CUTOFF_H: Final = 11.0
PRIORITIES: Final = ("low", "normal", "high", "urgent")
PRIORITY_WEIGHTS: Final = (0.2, 0.55, 0.2, 0.05)
_HOUR_WEIGHTS: Final = np.array([2, 5, 8, 9, 8, 6, 7, 8, 7, 6, 5, 4, 3, 2, 1], dtype=float)  # 7-21h
LOCAL_OFFSET_S: Final = 8 * 3600
DAY_S: Final = 86_400


def day0_s(start: date) -> float:
    """Epoch seconds of 08:00 local on ``start`` (= 00:00 UTC)."""
    return datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()


@dataclass(slots=True)
class Ticket:
    """A ticket, its planted faults and (filled in by the day simulation) its events."""

    key: int
    customer: Customer
    tag: str
    priority: str
    created_s: float
    extra_tags: tuple[str, ...] = ()
    channel: str = "portal"
    reported_s: float | None = None
    ticket_id: str = ""
    technician_id: str = ""
    assigned_s: float = 0.0
    service_day: int = 0
    idle: bool = False
    false_arrival: bool = False
    status_lag: bool = False
    revisit: bool = False
    reopen: bool = False
    claim_on_assign: bool = False
    part: str = ""
    events: list[tuple[str, str, float, str, str]] = field(default_factory=list)

    def add_event(self, event_type: str, ts_s: float, actor: str, note: str = "") -> str:
        """Record an event; returns its id (``<ticket_id>-NN`` in creation order)."""
        event_id = f"{self.ticket_id}-{len(self.events) + 1:02d}"
        self.events.append((event_id, event_type, ts_s, actor, note))
        return event_id


@dataclass(slots=True)
class Visit:
    ticket: Ticket
    day: int
    second: bool
    ready_s: float


@dataclass(frozen=True, slots=True)
class PlantedTickets:
    """Ticket keys of the planted cluster and outage, and the cluster's window."""

    cluster_keys: tuple[int, ...]
    cluster_center_xy_m: tuple[float, float]
    cluster_window_s: tuple[float, float]
    outage_window_s: tuple[float, float]


def created_times(rng: np.random.Generator, n: int, t0_s: float, days: int) -> np.ndarray:
    day = rng.integers(0, days, size=n)
    hour = 7 + rng.choice(len(_HOUR_WEIGHTS), size=n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    local_midnight = t0_s - LOCAL_OFFSET_S + day * DAY_S
    return np.asarray(local_midnight + hour * 3600 + rng.uniform(0, 3600, n), dtype=np.float64)


def background_tickets(
    rng: np.random.Generator,
    n: int,
    outdoor: list[Customer],
    indoor: list[Customer],
    t0_s: float,
    days: int,
    indoor_fraction: float,
) -> list[Ticket]:
    created = created_times(rng, n, t0_s, days)
    tags = rng.choice(len(TAGS), size=n, p=np.asarray(TAG_WEIGHTS) / sum(TAG_WEIGHTS))
    prio = rng.choice(len(PRIORITIES), size=n, p=PRIORITY_WEIGHTS)
    is_indoor = rng.random(n) < (indoor_fraction if indoor else 0.0)
    out: list[Ticket] = []
    for i in range(n):
        pool = indoor if is_indoor[i] else outdoor
        extra = ("warranty",) if rng.random() < 0.15 else ()
        out.append(
            Ticket(
                key=i,
                customer=pool[int(rng.integers(len(pool)))],
                tag=TAGS[int(tags[i])],
                priority=PRIORITIES[int(prio[i])],
                created_s=float(created[i]),
                extra_tags=extra,
            )
        )
    return out


def extra_tickets(
    rng: np.random.Generator,
    customers: list[Customer],
    tag: str,
    created_s: np.ndarray,
    first_key: int,
) -> list[Ticket]:
    """Tickets of one tag at the given customers and times (cluster, outage, rain)."""
    return [
        Ticket(
            key=first_key + i,
            customer=c,
            tag=tag,
            priority=PRIORITIES[int(rng.choice(len(PRIORITIES), p=PRIORITY_WEIGHTS))],
            created_s=float(created_s[i]),
        )
        for i, c in enumerate(customers)
    ]


def choose_faults(rng: np.random.Generator, tickets: list[Ticket], scale: float) -> None:
    """Mark planted lifecycle faults on disjoint-enough random subsets of tickets."""
    n = len(tickets)

    def pick(frac: float, pool: list[int]) -> list[int]:
        k = min(len(pool), max(3, round(frac * n)))
        return sorted(rng.choice(pool, size=k, replace=False).tolist())

    everyone = list(range(n))
    batch = {i for i in everyone if tickets[i].customer.region == MORNING_BATCH_REGION}
    for i in pick(0.05, [i for i in everyone if i not in batch]):
        tickets[i].idle = True
    outdoor = [i for i in everyone if tickets[i].customer.site_id is None]
    false_set = set(pick(0.03, outdoor))
    for i in false_set:
        tickets[i].false_arrival = True
    for i in pick(0.10, [i for i in everyone if i not in false_set]):
        tickets[i].status_lag = True
    for i in pick(0.03, everyone):
        tickets[i].reopen = True


def is_parts_related(t: Ticket) -> bool:
    return t.tag in PARTS_TAGS


def assign_channels(rng: np.random.Generator, tickets: list[Ticket]) -> None:
    """Channel per ticket; a phone ticket's report (the call) precedes its creation."""
    n = len(tickets)
    channel = rng.choice(len(CHANNELS), size=n, p=CHANNEL_WEIGHTS)
    lag_s = rng.gamma(PHONE_LAG_SHAPE, PHONE_LAG_MEAN_S / PHONE_LAG_SHAPE, size=n)
    for t, c, lag in zip(tickets, channel, lag_s, strict=True):
        t.channel = CHANNELS[int(c)]
        t.reported_s = t.created_s - float(lag) if t.channel == "phone" else None


def on_estate(c: Customer) -> bool:
    return any(
        math.hypot(c.x_m - x, c.y_m - y) <= LEGACY_ESTATE_RADIUS_M for x, y in LEGACY_ESTATES_XY_M
    )


def plant_missing_parts(rng: np.random.Generator, tickets: list[Ticket]) -> None:
    """Legacy units on the estate, and the second visits for missing parts.

    Of the ``n`` parts-related tickets, ``round(LEGACY_SHARE * n)`` are legacy (the estates'
    first) and exactly ``round(PARTS_REVISIT_RATE * n)`` need a revisit:
    ``LEGACY_REVISIT_RATE`` of the legacy ones, the rest drawn from the others.
    """
    parts = [t for t in tickets if is_parts_related(t)]
    legacy = [t for t in parts if on_estate(t.customer)]
    rest = [t for t in parts if not on_estate(t.customer)]
    k_more = min(len(rest), max(0, round(LEGACY_SHARE * len(parts)) - len(legacy)))
    legacy += [rest[int(i)] for i in sorted(rng.choice(len(rest), size=k_more, replace=False))]
    legacy_keys = {t.key for t in legacy}
    for t in legacy:
        t.extra_tags = (*t.extra_tags, LEGACY_TAG)
    others = [t for t in parts if t.key not in legacy_keys]
    k_total = round(PARTS_REVISIT_RATE * len(parts))
    k_legacy = min(len(legacy), round(LEGACY_REVISIT_RATE * len(legacy)), k_total)
    k_other = min(len(others), k_total - k_legacy)
    chosen = [legacy[int(i)] for i in rng.choice(len(legacy), size=k_legacy, replace=False)]
    chosen += [others[int(i)] for i in rng.choice(len(others), size=k_other, replace=False)]
    for t in chosen:
        t.revisit = True
        t.part = LEGACY_PART if t.key in legacy_keys else PARTS_TAGS[t.tag]


def plan_visits(
    rng: np.random.Generator,
    tickets: list[Ticket],
    techs: list[Technician],
    t0_s: float,
) -> dict[tuple[str, int], list[Visit]]:
    """Assign each ticket to a technician of its region and a service day.

    A ticket created before 14:00 local (16:00 if urgent) is served the same day, else the
    next; in the morning-batch region the cut-off is ``MORNING_BATCH_CUTOFF_H`` for every
    priority, and its tickets are accepted on assignment. Per region and day about a third as
    many technicians as tickets are on duty, so an active technician has 2–4 visits. A
    revisit's second visit is 1–3 days later.
    """
    by_region: dict[str, list[Technician]] = defaultdict(list)
    for tech in techs:
        by_region[tech.region].append(tech)
    groups: dict[tuple[str, int], list[Ticket]] = defaultdict(list)
    for t in tickets:
        local_h = ((t.created_s + LOCAL_OFFSET_S) % DAY_S) / 3600
        day = math.floor((t.created_s - t0_s + LOCAL_OFFSET_S) / DAY_S)
        cutoff = 16.0 if t.priority == "urgent" else 14.0
        if t.customer.region == MORNING_BATCH_REGION:
            cutoff = MORNING_BATCH_CUTOFF_H
            t.claim_on_assign = True
        t.service_day = day if local_h < cutoff else day + 1
        t.assigned_s = t.created_s + float(rng.uniform(120, 1500))
        groups[(t.customer.region, t.service_day)].append(t)
    visits: dict[tuple[str, int], list[Visit]] = defaultdict(list)
    for (region, day), group in sorted(groups.items()):
        group.sort(key=lambda t: t.created_s)
        pool = by_region[region]
        n_on = min(len(pool), max(1, math.ceil(len(group) / 3)))
        on = rng.choice(len(pool), size=n_on, replace=False)
        day_start = t0_s + day * DAY_S
        for i, t in enumerate(group):
            tech = pool[int(on[i % n_on])]
            t.technician_id = tech.technician_id
            ready = max(t.assigned_s + float(rng.uniform(60, 300)), day_start)
            visits[(tech.technician_id, day)].append(Visit(t, day, False, ready))
            if t.revisit:
                d2 = day + int(rng.integers(1, 4))
                visits[(tech.technician_id, d2)].append(Visit(t, d2, True, t0_s + d2 * DAY_S))
    for vs in visits.values():
        vs.sort(key=lambda v: (v.ready_s, v.ticket.key))
    return dict(sorted(visits.items()))
