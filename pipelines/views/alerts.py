"""Cluster alerts and restock orders, scoped to one warehouse for warehouse users.

``warehouse_id=None`` means unscoped (dispatchers, analysts). A scoped caller sees an alert
only when it has at least one order for that warehouse, and only that warehouse's orders.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import h3
import polars as pl

from pipelines.store.gateway import Store

# action -> (timestamp column, new status, statuses from which the action is refused)
ORDER_ACTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ack": ("acknowledged_at", "acknowledged", ("acknowledged", "fulfilled", "cancelled")),
    "fulfil": ("fulfilled_at", "fulfilled", ("fulfilled", "cancelled")),
}
_SCOPE = "(? IS NULL OR o.warehouse_id = ?)"


def alerts(store: Store, warehouse_id: str | None) -> pl.DataFrame:
    """Alerts in scope, newest first, with their order counts in scope."""
    return store.query(
        f"""
        SELECT a.alert_id, a.tag, a.status, a.trend, a.member_count, a.explanation,
               a.last_updated, count(o.order_id) AS orders,
               count(o.order_id) FILTER (WHERE o.acknowledged_at IS NULL) AS unacknowledged
        FROM cluster_alerts a LEFT JOIN restock_orders o
          ON o.alert_id = a.alert_id AND {_SCOPE}
        GROUP BY ALL
        HAVING ? IS NULL OR count(o.order_id) > 0
        ORDER BY a.last_updated DESC, a.alert_id LIMIT 200
        """,
        [warehouse_id, warehouse_id, warehouse_id],
    )


def alert(store: Store, alert_id: str, warehouse_id: str | None) -> dict[str, Any] | None:
    """One alert if it is in scope (a scoped caller gets None for other warehouses' alerts)."""
    frame = store.query(
        f"""
        SELECT a.* FROM cluster_alerts a WHERE a.alert_id = ? AND (? IS NULL OR EXISTS (
            SELECT 1 FROM restock_orders o WHERE o.alert_id = a.alert_id AND {_SCOPE}))
        """,
        [alert_id, warehouse_id, warehouse_id, warehouse_id],
    )
    return frame.row(0, named=True) if frame.height else None


def orders(store: Store, alert_id: str, warehouse_id: str | None) -> pl.DataFrame:
    return store.query(
        f"SELECT o.order_id, o.warehouse_id, o.sku, o.quantity, o.unit, o.status, o.created_at, "
        f"o.acknowledged_at, o.fulfilled_at FROM restock_orders o WHERE o.alert_id = ? "
        f"AND {_SCOPE} ORDER BY o.created_at, o.order_id",
        [alert_id, warehouse_id, warehouse_id],
    )


def member_tickets(store: Store, alert_id: str, *, mask_personal: bool) -> pl.DataFrame:
    """Member tickets of an alert; customer name and address masked in SQL when asked."""
    return store.query(
        "SELECT t.ticket_id, t.created_ts, t.lat, t.lon, "
        "CASE WHEN ? THEN '•••' ELSE t.customer_name END AS customer_name, "
        "CASE WHEN ? THEN '•••' ELSE t.address END AS address "
        "FROM (SELECT unnest(member_ticket_ids) AS ticket_id FROM cluster_alerts "
        "WHERE alert_id = ?) m JOIN tickets t USING (ticket_id) ORDER BY t.created_ts",
        [mask_personal, mask_personal, alert_id],
    )


def daily_counts(members: pl.DataFrame) -> pl.DataFrame:
    """Member tickets per day. Pure."""
    if members.height == 0:
        return pl.DataFrame(schema={"day": pl.Date, "tickets": pl.UInt32})
    return (
        members.group_by(pl.col("created_ts").dt.date().alias("day"))
        .agg(pl.len().alias("tickets"))
        .sort("day")
    )


def cell_counts(cells: list[str], members: pl.DataFrame) -> list[int]:
    """Member tickets per member cell (same resolution as the cells). Pure."""
    if not cells:
        return []
    res = h3.get_resolution(cells[0])
    hits = Counter(
        h3.latlng_to_cell(lat, lon, res)
        for lat, lon in zip(members["lat"], members["lon"], strict=True)
        if lat is not None and lon is not None
    )
    return [hits.get(c, 0) for c in cells]


def set_order_status(
    store: Store, order_id: str, action: str, *, actor: str, warehouse_id: str | None
) -> str:
    """Acknowledge or fulfil one order and write an ``audit_log`` row, atomically.

    Returns what happened, for the user. An order outside the caller's scope is reported as
    not found (nothing is revealed about it) and nothing is written.
    """
    if action not in ORDER_ACTIONS:
        return f"unknown action {action!r}"
    column, new_status, refused_from = ORDER_ACTIONS[action]
    now = datetime.now(UTC)
    with store.transaction() as tx:
        found = tx.query(
            f"SELECT o.status, o.warehouse_id FROM restock_orders o "
            f"WHERE o.order_id = ? AND {_SCOPE}",
            [order_id, warehouse_id, warehouse_id],
        )
        if found.height == 0:
            return f"order {order_id} not found"
        status = found["status"][0]
        if status in refused_from:
            return f"order {order_id} is already {status}"
        tx.execute(
            f"UPDATE restock_orders SET status = ?, {column} = ? WHERE order_id = ?",
            [new_status, now, order_id],
        )
        tx.execute(
            "INSERT INTO audit_log (logged_at, actor, action, object_type, object_id, "
            "detail) VALUES (?, ?, ?, 'restock_order', ?, ?)",
            [
                now,
                actor,
                new_status,
                order_id,
                json.dumps(
                    {"from": status, "to": new_status, "warehouse_id": found["warehouse_id"][0]}
                ),
            ],
        )
    return f"order {order_id} {new_status} by {actor}"


def audit_trail(store: Store, order_id: str) -> pl.DataFrame:
    return store.query(
        "SELECT logged_at, actor, action, detail FROM audit_log WHERE "
        "object_type = 'restock_order' AND object_id = ? ORDER BY logged_at",
        [order_id],
    )
