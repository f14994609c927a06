"""The words FieldTrace stores, in one place: the schema CHECKs them, the code imports them.

Ticket event types and datums (ingest rules), arrival verdict tiers with their reasons and
``decided_by`` (from the pure ``geofence.verdict``), cluster alert statuses and trends, restock
order statuses and audit actions. Pages and tests use these names; no other spelling is stored.

Restock orders move through one state machine (``pipelines.alerts.orders``) that the
dashboard, the CLI and the deliverer all call; each move writes one ``audit_log`` row whose
``action`` is one of ``AUDIT_ACTIONS``.

``open -> sent -> acknowledged -> fulfilled``; ``open -> undeliverable`` when delivery gave up
(dead letter) and ``undeliverable -> open`` when it is re-driven; ``cancelled`` from any step
before ``fulfilled``.
"""

from __future__ import annotations

from typing import Final

from geofence.verdict_terms import DECIDED_BY, LEGACY_VERDICTS, REASONS, TIERS

EVENT_TYPES: Final[tuple[str, ...]] = (
    "created",
    "assigned",
    "accepted",
    "departed",
    "arrived",
    "work_started",
    "parts_requested",
    "completed",
    "closed",
    "reopened",
    "customer_chased",
)
DATUMS: Final[tuple[str, ...]] = ("WGS84", "GCJ02", "BD09")

# Arrival verdict tiers and the legacy arrival-v1 value stored rows may still hold (read as
# AT_DOOR); the reasons an INCONCLUSIVE carries; the evidence a verdict was decided by.
ARRIVAL_VERDICTS: Final[tuple[str, ...]] = TIERS
LEGACY_ARRIVAL_VERDICTS: Final[tuple[str, ...]] = tuple(LEGACY_VERDICTS)
VERDICT_REASONS: Final[tuple[str, ...]] = REASONS
VERDICT_DECIDED_BY: Final[tuple[str, ...]] = DECIDED_BY

ORDER_OPEN: Final = "open"
ORDER_SENT: Final = "sent"
ORDER_ACKNOWLEDGED: Final = "acknowledged"
ORDER_FULFILLED: Final = "fulfilled"
ORDER_UNDELIVERABLE: Final = "undeliverable"
ORDER_CANCELLED: Final = "cancelled"
ORDER_STATUSES: Final[tuple[str, ...]] = (
    ORDER_OPEN,
    ORDER_SENT,
    ORDER_ACKNOWLEDGED,
    ORDER_FULFILLED,
    ORDER_UNDELIVERABLE,
    ORDER_CANCELLED,
)

AUDIT_ORDER_CREATED: Final = "order_created"
AUDIT_ORDER_SENT: Final = "order_sent"
AUDIT_ORDER_ACKNOWLEDGED: Final = "order_acknowledged"
AUDIT_ORDER_FULFILLED: Final = "order_fulfilled"
AUDIT_ORDER_CANCELLED: Final = "order_cancelled"
AUDIT_ORDER_DEAD_LETTERED: Final = "order_dead_lettered"
AUDIT_ORDER_REDRIVEN: Final = "order_redriven"
ALERT_OPEN: Final = "open"
ALERT_CLOSED: Final = "closed"
ALERT_STATUSES: Final[tuple[str, ...]] = (ALERT_OPEN, ALERT_CLOSED)
ALERT_TRENDS: Final[tuple[str, ...]] = ("new", "growing", "steady", "fading")
AUDIT_ALERT_OPENED: Final = "alert_opened"
# the alerts runner logs ``alert_<trend>`` on an update and ``alert_<status>_<trend>`` on a fade
AUDIT_ALERT_ACTIONS: Final[tuple[str, ...]] = (
    AUDIT_ALERT_OPENED,
    *(f"alert_{t}" for t in ALERT_TRENDS),
    *(f"alert_{s}_{t}" for s in ALERT_STATUSES for t in ALERT_TRENDS),
)
AUDIT_ACTIONS: Final[tuple[str, ...]] = (
    *AUDIT_ALERT_ACTIONS,
    AUDIT_ORDER_CREATED,
    AUDIT_ORDER_SENT,
    AUDIT_ORDER_ACKNOWLEDGED,
    AUDIT_ORDER_FULFILLED,
    AUDIT_ORDER_CANCELLED,
    AUDIT_ORDER_DEAD_LETTERED,
    AUDIT_ORDER_REDRIVEN,
)
AUDIT_OBJECT_TYPES: Final[tuple[str, ...]] = ("restock_order", "cluster_alert")


def sql_list(words: tuple[str, ...]) -> str:
    """``('a', 'b')`` -> ``'a', 'b'`` for a CHECK clause (constants only, never user input)."""
    return ", ".join("'" + w.replace("'", "''") + "'" for w in words)
