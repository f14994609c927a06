"""Edge queries for the dashboard: each site's link to the hub, and a ticket's edge origin."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from pipelines.store.gateway import Store


def site_links(store: Store) -> pl.DataFrame:
    """One row per site: link state, last sync, backlog (messages not yet in this store)."""
    return store.query(
        "SELECT site, link_state, strftime(last_sync_at, '%Y-%m-%d %H:%M:%S') AS last_sync_utc, "
        "backlog, messages_synced, round(source_active_s, 1) AS source_seen_s_ago, "
        "strftime(last_event_ts, '%Y-%m-%d %H:%M:%S') AS last_event_utc, error, "
        "strftime(updated_at, '%Y-%m-%d %H:%M:%S') AS checked_utc "
        "FROM edge_links ORDER BY site"
    )


def ticket_origin(store: Store, ticket_id: str) -> dict[str, Any] | None:
    """The edge origin of a ticket (site, rule, band, band values, evidence), or None."""
    frame = store.query(
        "SELECT ticket_id, site, origin, device_id, band, rule, rule_version, band_values, "
        "evidence, series_id, event_ts, received_at FROM edge_tickets WHERE ticket_id = ?",
        [ticket_id],
    )
    if frame.height == 0:
        return None
    row = frame.row(0, named=True)
    row["band_values"] = json.loads(row["band_values"])
    row["evidence"] = json.loads(row["evidence"])
    return row


def origin_summary(origin: dict[str, Any]) -> str:
    """``edge site s1 · bearing_band_energy@1 · BPFI ratio 1164 in 3 windows``."""
    band = origin["band"]
    values = origin["band_values"]
    ratio = values["peak_ratio"].get(band)
    windows = values["windows_over"].get(band)
    return (
        f"created at edge site {origin['site']} ({origin['origin']}) · "
        f"{origin['rule']}@{origin['rule_version']} · {band} band ratio "
        f"{ratio:,.0f} in {windows} windows · device {origin['device_id']}"
    )
