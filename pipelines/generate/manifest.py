"""``manifest.json``: what a generated world contains and which truths were planted in it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Planted:
    """Planted truths; every record names the ids a detector should find.

    Times are ISO-8601 UTC strings; positions are WGS84 degrees; distances metres.

    * ``false_arrivals``: ``{event_id, ticket_id, technician_id, distance_m}`` – "arrived"
      tapped while parked ``distance_m`` (150–400) from the customer's true position.
    * ``true_arrivals``: ``{event_id, ticket_id, technician_id, indoor, site_id, target_id,
      true_lat, true_lon, true_ts, tapped_ts, second_visit}`` – for every "arrived" event.
      For an indoor ticket ``target_x_m``/``target_y_m`` give the site-frame unit position.
    * ``idle_gaps``: ``{ticket_id, technician_id, accepted_event_id, departed_event_id, idle_s}``.
    * ``revisits``: ``{ticket_id, technician_id, parts_requested_event_id,
      first_arrival_event_id, second_arrival_event_id}``.
    * ``status_lags``: ``{event_id, ticket_id, technician_id, lag_s}`` (3–20 min).
    * ``chases``: ``{ticket_id, event_ids}`` (customer_chased events).
    * ``reopened``: ``{ticket_id, event_id}``.
    * ``gcj_region``: ``{region, datum, ticket_count}`` – that region's ticket points are GCJ-02.
    * ``cluster``: ``{tag, ticket_ids, center_lat, center_lon, window_start, window_end}``.
    * ``rain_hours``: hours (UTC) in which it rained over the city.
    * ``outage``: ``{outage_id, ticket_ids, start, end}``.
    * ``vibration_fault`` / ``wifi_drop``: ``{device_id, ticket_id, onset}``.
    * ``bad_rows``: ``{kind: [{file, row, rule, what}]}`` – rows the ingest must quarantine.
    * ``report_figures``: the trend report's breakpoints as planted – ``report_to_create``
      (phone calls, minutes), ``accept_to_depart`` (idle hours, the morning-batch region),
      ``missing_part_revisits`` (share of parts-related tickets, the legacy-unit estate) and
      ``unnoticed_resolution`` (share closed with no ``customer_chased`` event); each with
      its report value, the demo value, the breakdown and the planted cause.
    """

    false_arrivals: list[dict[str, Any]] = field(default_factory=list)
    true_arrivals: list[dict[str, Any]] = field(default_factory=list)
    idle_gaps: list[dict[str, Any]] = field(default_factory=list)
    revisits: list[dict[str, Any]] = field(default_factory=list)
    status_lags: list[dict[str, Any]] = field(default_factory=list)
    chases: list[dict[str, Any]] = field(default_factory=list)
    reopened: list[dict[str, Any]] = field(default_factory=list)
    gcj_region: dict[str, Any] = field(default_factory=dict)
    cluster: dict[str, Any] = field(default_factory=dict)
    rain_hours: list[str] = field(default_factory=list)
    outage: dict[str, Any] = field(default_factory=dict)
    vibration_fault: dict[str, Any] = field(default_factory=dict)
    wifi_drop: dict[str, Any] = field(default_factory=dict)
    bad_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    report_figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """The world's parameters, rows per file, expected ingest outcome and planted truths.

    ``expected[kind]`` is ``{"accepted": n, "quarantined": n, "rules": {rule: n}}`` summed over
    all files of the kind, for a fresh store ingesting the files in ``INGEST_ORDER``.
    """

    seed: int
    scale: float
    days: int
    start: str
    timezone: str
    counts: dict[str, int]
    expected: dict[str, dict[str, Any]]
    planted: Planted

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, ensure_ascii=False)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        raw["planted"] = Planted(**raw["planted"])
        return cls(**raw)
