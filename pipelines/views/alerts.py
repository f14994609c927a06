"""Cluster alerts and restock orders, scoped to one warehouse for warehouse users.

``warehouse_id=None`` means unscoped (dispatchers, analysts). A scoped caller sees an alert
only when it has at least one order for that warehouse, and only that warehouse's orders.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import h3
import polars as pl

from pipelines.alerts.orders import (
    ACKNOWLEDGE,
    FULFIL,
    OrderNotFoundError,
    OrderTransitionError,
    apply_action,
)
from pipelines.store.gateway import Store

# the order actions a dashboard user may take (the state machine decides when)
DASHBOARD_ACTIONS: tuple[str, ...] = (ACKNOWLEDGE, FULFIL)
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
    """Apply a dashboard order action through the one order state machine; returns what
    happened, for the user.

    ``action`` is a ``pipelines.alerts.orders`` action the dashboard offers (acknowledge,
    fulfil). An order outside the caller's scope is reported as not found (nothing is revealed
    about it); a move the state machine refuses is reported with its reason, and nothing is
    written then.
    """
    if action not in DASHBOARD_ACTIONS:
        return f"unknown action {action!r}; expected one of {', '.join(DASHBOARD_ACTIONS)}"
    try:
        status = apply_action(store, order_id, action, actor, warehouse_id=warehouse_id)
    except OrderNotFoundError:
        return f"order {order_id} not found"
    except OrderTransitionError as exc:
        return str(exc)
    return f"order {order_id} {status} by {actor}"


def audit_trail(store: Store, order_id: str) -> pl.DataFrame:
    return store.query(
        "SELECT logged_at, actor, action, detail FROM audit_log WHERE "
        "object_type = 'restock_order' AND object_id = ? ORDER BY logged_at",
        [order_id],
    )
