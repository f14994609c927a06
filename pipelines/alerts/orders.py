"""Restock orders of cluster alerts: top-up on growth, routing, and the order lifecycle.

``open -> sent -> acknowledged -> fulfilled``, or ``cancelled`` from any step before
``fulfilled``. ``sent`` is set by ``pipelines.alerts.delivery`` when the warehouse answers 2xx (or
by ``mark_sent`` for a CSV hand-over); the other steps are the functions below. Each step
stamps its own ``*_at`` column and writes an ``audit_log`` row (actor, previous status) in the
same transaction.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import polars as pl

from geofence.restock import choose_warehouse, order_quantity
from pipelines.alerts.config import AlertConfig
from pipelines.alerts.delivery import enqueue_order
from pipelines.errors import FieldTraceError
from pipelines.store.gateway import Store, Tx

RUNNER: Final = "alerts-runner"
ORDER_STATUSES: Final = ("open", "sent", "acknowledged", "fulfilled", "cancelled")
# target status -> (statuses it may come from, the SQL that moves it there)
_TRANSITIONS: Final[dict[str, tuple[frozenset[str], str]]] = {
    "sent": (
        frozenset({"open"}),
        "UPDATE restock_orders SET status = 'sent', sent_at = ? WHERE order_id = ?",
    ),
    "acknowledged": (
        frozenset({"sent"}),
        "UPDATE restock_orders SET status = 'acknowledged', acknowledged_at = ? WHERE order_id = ?",
    ),
    "fulfilled": (
        frozenset({"acknowledged"}),
        "UPDATE restock_orders SET status = 'fulfilled', fulfilled_at = ? WHERE order_id = ?",
    ),
    "cancelled": (
        frozenset({"open", "sent", "acknowledged"}),
        "UPDATE restock_orders SET status = 'cancelled', cancelled_at = ? WHERE order_id = ?",
    ),
}


class OrderNotFoundError(FieldTraceError, KeyError):
    """No restock order has the given id."""


class OrderTransitionError(FieldTraceError, ValueError):
    """A restock order cannot move from its current status to the one asked for."""


def audit(tx: Tx, at: datetime, actor: str, action: str, kind: str, oid: str, **d: Any) -> None:
    """One ``audit_log`` row; ``d`` is stored as sorted JSON."""
    tx.execute(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)",
        (at, actor, action, kind, oid, json.dumps(d, default=str, sort_keys=True)),
    )


class TopUp(NamedTuple):
    order_id: str | None
    unroutable: bool = False


def top_up(
    tx: Tx,
    config: AlertConfig,
    alert_id: str,
    *,
    tag: str,
    member_count: int,
    centroid: tuple[float, float],
    warehouses: pl.DataFrame,
    at: datetime,
) -> TopUp:
    """Order what ``member_count`` needs beyond the alert's live (not cancelled) orders.

    Nothing is ordered while the shortfall is within ``config.steady_band`` of what is already
    ordered, so a cluster creeping up by one ticket per run does not spray tiny orders.

    The order goes to ``choose_warehouse(centroid)``; it is queued for delivery when that
    warehouse has a ``webhook_url``, else it waits for ``alerts export``.
    """
    rule = config.restock.get(tag)
    if rule is None:
        return TopUp(None)
    ordered = tx.scalar(
        "SELECT coalesce(sum(quantity), 0) FROM restock_orders "
        "WHERE alert_id = ? AND status <> 'cancelled'",
        (alert_id,),
    )
    quantity = round(order_quantity(member_count, rule) - float(ordered), 9)
    # a first order always; a top-up only when the shortfall exceeds the steady band
    if quantity <= 0 or quantity <= config.steady_band * float(ordered):
        return TopUp(None)
    if warehouses.height == 0:
        return TopUp(None, unroutable=True)
    choice = choose_warehouse(centroid[0], centroid[1], warehouses)
    seq = int(tx.scalar("SELECT count(*) FROM restock_orders WHERE alert_id = ?", (alert_id,)))
    order_id = f"RO-{alert_id.removeprefix('AL-')}-{seq + 1:02d}"
    tx.execute(
        "INSERT INTO restock_orders (order_id, alert_id, warehouse_id, routed_by, sku, quantity, "
        "unit, status, created_at, distance_m, member_count) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?)",
        (order_id, alert_id, choice.warehouse_id, choice.how, rule.sku, quantity, rule.unit,
         at, choice.distance_m, member_count),
    )  # fmt: skip
    audit(
        tx, at, RUNNER, "order_created", "restock_order", order_id, alert_id=alert_id,
        warehouse=choice.warehouse_id, routed_by=choice.how, sku=rule.sku, quantity=quantity,
    )  # fmt: skip
    url = warehouses.filter(pl.col("warehouse_id") == choice.warehouse_id)["webhook_url"][0]
    if url:
        enqueue_order(tx, order_id, config.delivery.source, at)
    return TopUp(order_id)


def _transition(
    store: Store, order_id: str, to: str, actor: str, at: datetime | None, **detail: Any
) -> None:
    allowed, sql = _TRANSITIONS[to]
    when = at or datetime.now(UTC)
    with store.transaction() as tx:
        status = tx.scalar("SELECT status FROM restock_orders WHERE order_id = ?", (order_id,))
        if status is None:
            raise OrderNotFoundError(f"restock order {order_id!r} does not exist")
        if status not in allowed:
            raise OrderTransitionError(
                f"restock order {order_id!r} is {status!r}; cannot move to {to!r} "
                f"(allowed from: {', '.join(sorted(allowed))})"
            )
        tx.execute(sql, (when, order_id))
        audit(tx, when, actor, f"order_{to}", "restock_order", order_id, previous=status, **detail)


def mark_sent(
    store: Store, order_id: str, actor: str, *, channel: str, at: datetime | None = None
) -> None:
    """An order handed over outside the webhook (e.g. a CSV export) (``open`` -> ``sent``)."""
    _transition(store, order_id, "sent", actor, at, channel=channel)


def acknowledge_order(
    store: Store, order_id: str, actor: str, *, at: datetime | None = None
) -> None:
    """The warehouse saw the order (``sent`` -> ``acknowledged``)."""
    _transition(store, order_id, "acknowledged", actor, at)


def fulfil_order(store: Store, order_id: str, actor: str, *, at: datetime | None = None) -> None:
    """The stock left the warehouse (``acknowledged`` -> ``fulfilled``)."""
    _transition(store, order_id, "fulfilled", actor, at)


def cancel_order(
    store: Store, order_id: str, actor: str, *, reason: str, at: datetime | None = None
) -> None:
    """Withdraw an order that is not fulfilled yet; an unsent one is then never delivered."""
    _transition(store, order_id, "cancelled", actor, at, reason=reason)
