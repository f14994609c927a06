"""Deliver restock orders to warehouse webhooks from the outbox: at-least-once, signed, idempotent.

``enqueue_order`` (called by the alerts runner in the transaction that creates the order)
freezes a CloudEvents 1.0 structured-mode JSON of the order in ``outbox``; its
``idempotency_key`` is the order id. ``deliver_due`` POSTs every due message to its
warehouse's ``webhook_url``:

* headers ``X-FieldTrace-Timestamp`` (unix seconds), ``X-FieldTrace-Signature``
  (``v1=`` + hex HMAC-SHA256 of ``"{timestamp}." + body`` with the warehouse's secret) and
  ``Idempotency-Key``; ``Content-Type: application/cloudevents+json``.
* 2xx: the message is delivered and the order moves ``open -> sent`` (one transaction).
* anything else: ``attempts + 1`` and ``next_attempt_at = now + backoff`` where backoff is
  ``min(max, base * 2**attempts)`` with equal jitter (half fixed, half random).

All state lives in the store, so a deliverer killed mid-drain resumes where it stopped; the
message in flight is sent again and the receiver drops it by its idempotency key.
Run standalone:
``python -m pipelines.alerts.delivery --store F.duckdb [--rules R.toml] [--until-empty]``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import httpx
import polars as pl

from pipelines.alerts.config import AlertConfig, DeliveryPolicy, load_config
from pipelines.store.gateway import Store, Tx

EVENT_TYPE: Final = "com.fieldtrace.restock.order.created"
SIGNATURE_HEADER: Final = "X-FieldTrace-Signature"
TIMESTAMP_HEADER: Final = "X-FieldTrace-Timestamp"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
DELIVERER: Final = "deliverer"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256 of "{timestamp}.{body}">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def backoff(attempts: int, policy: DeliveryPolicy, rng: random.Random) -> timedelta:
    """Delay before retry number ``attempts + 1``: exponential, capped, equal jitter."""
    ceiling = min(policy.max_backoff_s, policy.base_backoff_s * 2.0 ** min(attempts, 30))
    return timedelta(seconds=ceiling / 2 + rng.uniform(0, ceiling / 2))


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
    """Freeze the order's event in the outbox (same transaction as the order); returns its id."""
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


@dataclass
class DeliveryReport:
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    replayed: int = 0  # 2xx answers saying "already had it" (idempotent replay)


def _due(store: Store, now: datetime, limit: int | None) -> pl.DataFrame:
    return store.query(
        "SELECT o.message_id, o.order_id, o.warehouse_id, o.idempotency_key, o.payload, "
        "o.attempts, w.webhook_url FROM outbox o "
        "JOIN restock_orders r ON r.order_id = o.order_id "
        "LEFT JOIN warehouses w ON w.warehouse_id = o.warehouse_id "
        "WHERE o.delivered_at IS NULL AND r.status <> 'cancelled' AND o.next_attempt_at <= ? "
        "ORDER BY o.next_attempt_at, o.message_id LIMIT ?",
        (now, limit if limit is not None else 2**62),
    )


def _post(client: httpx.Client, url: str, secret: str, key: str, body: bytes) -> httpx.Response:
    stamp = int(time.time())  # the receiver checks freshness against its own clock
    headers = {
        "Content-Type": CONTENT_TYPE,
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(secret, stamp, body),
        IDEMPOTENCY_HEADER: key,
    }
    return client.post(url, content=body, headers=headers)


def deliver_due(
    store: Store,
    config: AlertConfig,
    *,
    now: datetime | None = None,
    client: httpx.Client | None = None,
    limit: int | None = None,
    rng: random.Random | None = None,
) -> DeliveryReport:
    """POST every message due at ``now`` (default: the clock), one at a time, oldest first."""
    when = now or datetime.now(UTC)
    jitter = rng or random.Random()
    report = DeliveryReport()
    own = client is None
    http = client or httpx.Client(timeout=config.delivery.timeout_s)
    try:
        for msg in _due(store, when, limit).iter_rows(named=True):
            report.attempted += 1
            started = time.perf_counter()
            status: int | None = None
            error: str | None = None
            if not msg["webhook_url"]:
                error = f"warehouse {msg['warehouse_id']!r} has no webhook_url"
            else:
                try:
                    response = _post(
                        http, msg["webhook_url"], config.secret_for(msg["warehouse_id"]),
                        msg["idempotency_key"], msg["payload"].encode(),
                    )  # fmt: skip
                    status = response.status_code
                    if not response.is_success:
                        error = f"HTTP {status}: {response.text[:200]}"
                    elif response.headers.get("X-Idempotent-Replay") == "true":
                        report.replayed += 1
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
            elapsed_ms = (time.perf_counter() - started) * 1000
            _record(store, msg, when, status, error, elapsed_ms, config.delivery, jitter)
            if error is None:
                report.delivered += 1
            else:
                report.failed += 1
    finally:
        if own:
            http.close()
    return report


def _record(
    store: Store, msg: dict[str, object], when: datetime, status: int | None, error: str | None,
    elapsed_ms: float, policy: DeliveryPolicy, rng: random.Random,
) -> None:  # fmt: skip
    attempts = int(str(msg["attempts"])) + 1
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO delivery_attempts VALUES (?, ?, ?, ?, ?, ?)",
            (msg["message_id"], attempts, when, status, error, elapsed_ms),
        )
        if error is not None:
            tx.execute(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? "
                "WHERE message_id = ?",
                (attempts, when + backoff(attempts - 1, policy, rng), error, msg["message_id"]),
            )
            return
        tx.execute(
            "UPDATE outbox SET attempts = ?, delivered_at = ?, last_error = NULL "
            "WHERE message_id = ?",
            (attempts, when, msg["message_id"]),
        )
        tx.execute(
            "UPDATE restock_orders SET status = 'sent', sent_at = ? "
            "WHERE order_id = ? AND status = 'open'",
            (when, msg["order_id"]),
        )
        tx.execute(
            "INSERT INTO audit_log VALUES (?, ?, 'order_sent', 'restock_order', ?, ?)",
            (when, DELIVERER, msg["order_id"],
             json.dumps({"attempts": attempts, "http_status": status})),
        )  # fmt: skip


def pending(store: Store) -> tuple[int, datetime | None]:
    """Undelivered messages of live orders, and the earliest time one is due."""
    row = store.query(
        "SELECT count(*) AS n, min(o.next_attempt_at) AS due FROM outbox o "
        "JOIN restock_orders r ON r.order_id = o.order_id "
        "WHERE o.delivered_at IS NULL AND r.status <> 'cancelled'"
    ).row(0)
    return int(row[0]), row[1]


def drain(
    store: Store,
    config: AlertConfig,
    *,
    until_empty: bool = True,
    max_wait_s: float = 5.0,
    deadline_s: float | None = None,
) -> DeliveryReport:
    """Deliver in real time until nothing is pending (or forever), sleeping until the next due."""
    total = DeliveryReport()
    started = time.monotonic()
    with httpx.Client(timeout=config.delivery.timeout_s) as client:
        while deadline_s is None or time.monotonic() - started < deadline_s:
            got = deliver_due(store, config, client=client)
            for name in ("attempted", "delivered", "failed", "replayed"):
                setattr(total, name, getattr(total, name) + getattr(got, name))
            left, due = pending(store)
            if left == 0 and until_empty:
                break
            wait = max_wait_s if due is None else (due - datetime.now(UTC)).total_seconds()
            time.sleep(min(max(wait, 0.05), max_wait_s))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.alerts.delivery", description=__doc__
    )
    parser.add_argument("--store", type=Path, required=True, help="DuckDB store file")
    parser.add_argument("--rules", type=Path, default=None, help="rules TOML (secrets, policy)")
    parser.add_argument("--until-empty", action="store_true", help="exit when nothing pending")
    parser.add_argument("--max-wait-s", type=float, default=5.0, help="longest sleep")
    args = parser.parse_args(argv)
    config = load_config(args.rules)
    with Store(args.store) as store:
        report = drain(store, config, until_empty=args.until_empty, max_wait_s=args.max_wait_s)
    print(json.dumps(report.__dict__), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
