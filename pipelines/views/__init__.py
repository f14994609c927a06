"""Read queries behind the dashboard pages: parameterized SQL through the ``Store`` gateway.

Every function takes the store and plain values, returns a polars frame (or a small dict) and
never formats user input into SQL: optional filters are fixed SQL fragments with ``?`` params.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from geofence.verdict_terms import LEGACY_VERDICTS
from pipelines.store.gateway import Store
from pipelines.vocabulary import ALERT_CLOSED

# Events only the technician on the ticket performs: their actor is the ticket's technician.
TECHNICIAN_EVENTS: tuple[str, ...] = (
    "accepted",
    "departed",
    "arrived",
    "work_started",
    "parts_requested",
    "completed",
)
# Hours from creation until the ticket breaches its service-level agreement, by priority.
SLA_HOURS: dict[str, float] = {
    "urgent": 4.0,
    "high": 8.0,
    "p1": 4.0,
    "p2": 8.0,
    "medium": 24.0,
    "normal": 24.0,
    "p3": 24.0,
    "low": 72.0,
    "p4": 72.0,
}
DEFAULT_SLA_H = 24.0


def verdict_sql(column: str = "a.verdict") -> str:
    """SQL reading a stored arrival verdict in today's tiers (arrival-v1's VERIFIED is
    AT_DOOR). ``column`` is a fixed column reference written by the caller, never input."""
    cases = " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in LEGACY_VERDICTS.items())
    return f"(CASE {column} {cases} ELSE {column} END)"


CLOSED_ALERT_STATUSES: tuple[str, ...] = (ALERT_CLOSED,)


@dataclass(frozen=True)
class TicketFilter:
    """What the user filtered on. ``hours`` counts back from the data clock (None = all)."""

    region: str | None = None
    tag: str | None = None
    status: str | None = None
    hours: float | None = None


def data_clock(store: Store) -> datetime:
    """'Now' of the data: the latest lifecycle event (falls back to the wall clock)."""
    latest = store.query("SELECT max(ts) AS ts FROM ticket_events")["ts"][0]
    if latest is None:
        return datetime.now(UTC)
    return latest.astimezone(UTC) if latest.tzinfo else latest.replace(tzinfo=UTC)


def ticket_where(f: TicketFilter, now: datetime, alias: str = "t") -> tuple[str, list[object]]:
    """A WHERE fragment over ``tickets`` (as ``alias``) for region, tag and time. Pure."""
    parts: list[str] = ["TRUE"]
    params: list[object] = []
    if f.region:
        parts.append(f"{alias}.region = ?")
        params.append(f.region)
    if f.tag:
        parts.append(f"({alias}.tag = ? OR list_contains(coalesce({alias}.tags, []), ?))")
        params += [f.tag, f.tag]
    if f.hours:
        parts.append(f"{alias}.created_ts >= ?")
        params.append(now - timedelta(hours=f.hours))
    return " AND ".join(parts), params


_TECH_LIST = ", ".join(f"'{e}'" for e in TECHNICIAN_EVENTS)

_MILESTONES_SELECT = f"""
SELECT ticket_id,
  min(ts) FILTER (WHERE event_type = 'created') AS created_ev_ts,
  min(ts) FILTER (WHERE event_type = 'assigned') AS assigned_ts,
  min(ts) FILTER (WHERE event_type = 'accepted') AS accepted_ts,
  min(ts) FILTER (WHERE event_type = 'departed') AS departed_ts,
  min(ts) FILTER (WHERE event_type = 'arrived') AS arrived_ts,
  min(ts) FILTER (WHERE event_type = 'completed') AS completed_ts,
  max(ts) FILTER (WHERE event_type = 'closed') AS closed_ts,
  max(ts) FILTER (WHERE event_type = 'arrived') AS last_arrived_ts,
  count(*) FILTER (WHERE event_type = 'arrived') AS n_arrived,
  count(*) FILTER (WHERE event_type = 'parts_requested') AS n_parts,
  count(*) FILTER (WHERE event_type = 'customer_chased') AS n_chased,
  arg_max(event_type, ts) AS status,
  arg_max(actor, ts) FILTER (WHERE event_type IN ({_TECH_LIST})) AS technician_id
FROM ticket_events"""

# One row per ticket: first time of each milestone, counts and the current status.
MILESTONES_SQL = _MILESTONES_SELECT + "\nGROUP BY ticket_id\n"
# The same as it stood at one moment: bind one parameter, the moment (events after it unseen).
MILESTONES_AT_SQL = _MILESTONES_SELECT + "\nWHERE ts <= ? GROUP BY ticket_id\n"

# A store whose data clock is this far behind the wall clock is historical (a demo, a backfill):
# the dispatch board then opens on a busy moment instead of the quiet end of the data.
LIVE_WITHIN = timedelta(days=1)
BUSY_HOUR_LOCAL = 10


def data_span(store: Store) -> tuple[datetime, datetime, datetime]:
    """(first event, data clock, latest ticket creation) in UTC; the wall clock when empty."""
    row = store.query(
        "SELECT (SELECT min(ts) FROM ticket_events) AS first, "
        "(SELECT max(ts) FROM ticket_events) AS last, "
        "(SELECT max(created_ts) FROM tickets) AS created"
    ).row(0)
    now = datetime.now(UTC)
    first, last, created = (
        now if v is None else (v.astimezone(UTC) if v.tzinfo else v.replace(tzinfo=UTC))
        for v in row
    )
    return first, last, min(created, last)


def default_as_of(
    first: datetime,
    clock: datetime,
    latest_created: datetime,
    *,
    wall_clock: datetime,
    tz: str,
    live_within: timedelta = LIVE_WITHIN,
    busy_hour: int = BUSY_HOUR_LOCAL,
) -> datetime:
    """The moment the dispatch board opens on. Pure.

    A live store (data clock within ``live_within`` of the wall clock) opens on its data clock.
    A historical one opens on the latest weekday ``busy_hour``:00 local time (``tz``) at or
    before the latest ticket creation, so the board is populated; the data clock when the data
    holds no such moment.
    """
    if wall_clock - clock <= live_within:
        return clock
    zone = ZoneInfo(tz)
    local = latest_created.astimezone(zone)
    candidate = local.replace(hour=busy_hour, minute=0, second=0, microsecond=0)
    if candidate > local:
        candidate -= timedelta(days=1)
    while candidate.weekday() >= 5:  # Saturday, Sunday
        candidate -= timedelta(days=1)
    return candidate.astimezone(UTC) if candidate >= first else clock


def filter_options(store: Store) -> dict[str, list[str]]:
    """Distinct regions and tags for the filter dropdowns."""
    regions = store.query(
        "SELECT DISTINCT region FROM tickets WHERE region IS NOT NULL ORDER BY region"
    )
    tags = store.query(
        "SELECT DISTINCT tag FROM (SELECT tag FROM tickets UNION ALL "
        "SELECT unnest(tags) AS tag FROM tickets) WHERE tag IS NOT NULL "
        "ORDER BY tag"
    )
    return {"regions": regions["region"].to_list(), "tags": tags["tag"].to_list()}


def sla_hours_expr(priority_col: str = "priority") -> pl.Expr:
    """SLA hours per ticket from its priority (unknown priorities get ``DEFAULT_SLA_H``)."""
    return (
        pl.col(priority_col)
        .str.to_lowercase()
        .replace_strict(SLA_HOURS, default=DEFAULT_SLA_H, return_dtype=pl.Float64)
    )
