"""Restock orders of cluster alerts: top-up on growth, routing, and the one order state machine.

Every change of an order's status goes through ``move_order`` (inside a transaction) or
``apply_action`` (its own transaction): the dashboard buttons, the CLI and the deliverer call
the same function, so they allow the same moves and write the same audit words
(``pipelines.vocabulary``)::

    open --send--> sent --acknowledge--> acknowledged --fulfil--> fulfilled
    open --dead_letter--> undeliverable --redrive--> open
    open | sent | acknowledged | undeliverable --cancel--> cancelled

``send`` is done by ``pipelines.alerts.delivery`` when the warehouse answers 2xx (or by
``mark_sent`` for a CSV hand-over); ``dead_letter`` and ``redrive`` by the deliverer's attempt
limit and ``fieldtrace alerts redrive``. Each move stamps its ``*_at`` column when it has one
and writes one ``audit_log`` row (actor, previous status) in the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import polars as pl

from geofence.restock import choose_warehouse, order_quantity
from pipelines.alerts.config import AlertConfig
from pipelines.errors import FieldTraceError
from pipelines.store.gateway import Store, Tx
from pipelines.vocabulary import (
    AUDIT_ORDER_ACKNOWLEDGED,
    AUDIT_ORDER_CANCELLED,
    AUDIT_ORDER_CREATED,
    AUDIT_ORDER_DEAD_LETTERED,
    AUDIT_ORDER_FULFILLED,
    AUDIT_ORDER_REDRIVEN,
    AUDIT_ORDER_SENT,
    ORDER_ACKNOWLEDGED,
    ORDER_CANCELLED,
    ORDER_FULFILLED,
    ORDER_OPEN,
    ORDER_SENT,
    ORDER_STATUSES,
    ORDER_UNDELIVERABLE,
)

RUNNER: Final = "alerts-runner"
EVENT_TYPE: Final = "com.fieldtrace.restock.order.created"
__all__ = ["ORDER_STATUSES"]


@dataclass(frozen=True, slots=True)
class Move:
    """One edge of the order state machine."""

    to: str
    sources: frozenset[str]
    audit_action: str
    stamp_column: str | None  # the ``*_at`` column the move sets, if any

    def update(self, order_id: str, at: datetime) -> tuple[str, tuple[object, ...]]:
        """The parameterized UPDATE (the column name is one of the constants above)."""
        if self.stamp_column is None:
            return "UPDATE restock_orders SET status = ? WHERE order_id = ?", (self.to, order_id)
        sql = f"UPDATE restock_orders SET status = ?, {self.stamp_column} = ? WHERE order_id = ?"
        return sql, (self.to, at, order_id)


def _move(to: str, sources: set[str], action: str, stamp: str | None) -> Move:
    return Move(to, frozenset(sources), action, stamp)


SEND: Final = "send"
ACKNOWLEDGE: Final = "acknowledge"
FULFIL: Final = "fulfil"
CANCEL: Final = "cancel"
DEAD_LETTER: Final = "dead_letter"
REDRIVE: Final = "redrive"
MOVES: Final[dict[str, Move]] = {
    SEND: _move(ORDER_SENT, {ORDER_OPEN}, AUDIT_ORDER_SENT, "sent_at"),
    ACKNOWLEDGE: _move(
        ORDER_ACKNOWLEDGED, {ORDER_SENT}, AUDIT_ORDER_ACKNOWLEDGED, "acknowledged_at"
    ),
    FULFIL: _move(ORDER_FULFILLED, {ORDER_ACKNOWLEDGED}, AUDIT_ORDER_FULFILLED, "fulfilled_at"),
    CANCEL: _move(
        ORDER_CANCELLED,
        {ORDER_OPEN, ORDER_SENT, ORDER_ACKNOWLEDGED, ORDER_UNDELIVERABLE},
        AUDIT_ORDER_CANCELLED,
        "cancelled_at",
    ),
    DEAD_LETTER: _move(ORDER_UNDELIVERABLE, {ORDER_OPEN}, AUDIT_ORDER_DEAD_LETTERED, None),
    REDRIVE: _move(ORDER_OPEN, {ORDER_UNDELIVERABLE}, AUDIT_ORDER_REDRIVEN, None),
}


def allowed_actions(status: str) -> frozenset[str]:
    """The actions the state machine allows from ``status`` (the UI enables only these)."""
    return frozenset(name for name, move in MOVES.items() if status in move.sources)


class OrderNotFoundError(FieldTraceError, KeyError):
    """No restock order has the given id."""


class OrderTransitionError(FieldTraceError, ValueError):
    """A restock order cannot move from its current status to the one asked for."""


def audit(tx: Tx, at: datetime, actor: str, action: str, kind: str, oid: str, **d: Any) -> None:
    """One ``audit_log`` row; ``d`` is stored as sorted JSON."""
    tx.execute(
        "INSERT INTO audit_log (logged_at, actor, action, object_type, object_id, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
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
        "SELECT coalesce(sum(quantity), 0) FROM restock_orders WHERE alert_id = ? AND status <> ?",
        (alert_id, ORDER_CANCELLED),
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
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (order_id, alert_id, choice.warehouse_id, choice.how, rule.sku, quantity, rule.unit,
         ORDER_OPEN, at, choice.distance_m, member_count),
    )  # fmt: skip
    audit(
        tx, at, RUNNER, AUDIT_ORDER_CREATED, "restock_order", order_id, alert_id=alert_id,
        warehouse=choice.warehouse_id, routed_by=choice.how, sku=rule.sku, quantity=quantity,
    )  # fmt: skip
    url = warehouses.filter(pl.col("warehouse_id") == choice.warehouse_id)["webhook_url"][0]
    if url:
        enqueue_order(tx, order_id, config.delivery.source, at)
    return TopUp(order_id)


def order_event(order: dict[str, object], alert: dict[str, object], source: str) -> str:
    """The CloudEvents 1.0 (structured JSON) body announcing one restock order."""
    created = order["created_at"]
    event = {
        "specversion": "1.0",
        "type": EVENT_TYPE,
        "source": source,
        "id": order["order_id"],
        "time": created.isoformat() if isinstance(created, datetime) else str(created),
        "subject": f"warehouses/{order['warehouse_id']}/orders/{order['order_id']}",
        "datacontenttype": "application/json",
        "data": {**order, "alert": alert},
    }
    return json.dumps(event, default=str, sort_keys=True, separators=(",", ":"))


def enqueue_order(tx: Tx, order_id: str, source: str, at: datetime) -> str:
    """Freeze the order's event in the outbox (same transaction as the order); returns its id.

    The idempotency key and the CloudEvent id are both the order id, so a resend of the same
    order is recognised by the receiver whichever of the two it de-duplicates on.
    """
    order = tx.query(
        "SELECT order_id, alert_id, warehouse_id, routed_by, distance_m, sku, quantity, unit, "
        "member_count, created_at FROM restock_orders WHERE order_id = ?",
        (order_id,),
    ).row(0, named=True)
    alert = tx.query(
        "SELECT alert_id, tag, rule_version, member_count, centroid_lat, centroid_lon, "
        "geom_wkt, crossed_at, first_seen FROM cluster_alerts WHERE alert_id = ?",
        (order["alert_id"],),
    ).row(0, named=True)
    message_id = f"MSG-{order_id}"
    tx.execute(
        "INSERT INTO outbox (message_id, order_id, warehouse_id, idempotency_key, payload, "
        "attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
        (message_id, order_id, order["warehouse_id"], order_id, order_event(order, alert, source),
         at, at),
    )  # fmt: skip
    return message_id


def move_order(
    tx: Tx,
    order_id: str,
    action: str,
    actor: str,
    at: datetime,
    *,
    warehouse_id: str | None = None,
    **detail: Any,
) -> str:
    """Apply ``action`` to one order inside ``tx``; returns the status it came from.

    ``warehouse_id`` scopes the caller: an order of another warehouse is reported as not found
    (nothing is revealed about it). Unknown actions and moves the state machine does not allow
    raise ``OrderTransitionError``; nothing is written then.
    """
    move = MOVES.get(action)
    if move is None:
        raise OrderTransitionError(
            f"restock order {order_id!r}: unknown action {action!r}; "
            f"expected one of {', '.join(MOVES)}"
        )
    found = tx.query(
        "SELECT status FROM restock_orders WHERE order_id = ? AND (? IS NULL OR warehouse_id = ?)",
        (order_id, warehouse_id, warehouse_id),
    )
    if found.height == 0:
        raise OrderNotFoundError(f"restock order {order_id!r} does not exist")
    status = str(found["status"][0])
    if status not in move.sources:
        raise OrderTransitionError(
            f"restock order {order_id!r} is {status!r}; cannot move to {move.to!r} "
            f"(allowed from: {', '.join(sorted(move.sources))})"
        )
    tx.execute(*move.update(order_id, at))
    audit(tx, at, actor, move.audit_action, "restock_order", order_id, previous=status, **detail)
    return status


def apply_action(
    store: Store,
    order_id: str,
    action: str,
    actor: str,
    *,
    at: datetime | None = None,
    warehouse_id: str | None = None,
    **detail: Any,
) -> str:
    """``move_order`` in its own transaction (retried if it loses a race); the new status."""
    when = at or datetime.now(UTC)
    store.atomic(
        lambda tx: move_order(
            tx, order_id, action, actor, when, warehouse_id=warehouse_id, **detail
        )
    )
    return MOVES[action].to


def mark_sent(
    store: Store, order_id: str, actor: str, *, channel: str, at: datetime | None = None
) -> None:
    """An order handed over outside the webhook (e.g. a CSV export) (``open`` -> ``sent``)."""
    apply_action(store, order_id, SEND, actor, at=at, channel=channel)


def acknowledge_order(
    store: Store, order_id: str, actor: str, *, at: datetime | None = None
) -> None:
    """The warehouse saw the order (``sent`` -> ``acknowledged``)."""
    apply_action(store, order_id, ACKNOWLEDGE, actor, at=at)


def fulfil_order(store: Store, order_id: str, actor: str, *, at: datetime | None = None) -> None:
    """The stock left the warehouse (``acknowledged`` -> ``fulfilled``)."""
    apply_action(store, order_id, FULFIL, actor, at=at)


def cancel_order(
    store: Store, order_id: str, actor: str, *, reason: str, at: datetime | None = None
) -> None:
    """Withdraw an order that is not fulfilled yet; an unsent one is then never delivered."""
    apply_action(store, order_id, CANCEL, actor, at=at, reason=reason)
