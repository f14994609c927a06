"""Deliver restock orders to warehouse webhooks from the outbox: at-least-once, signed, idempotent.

``enqueue_order`` (``pipelines.alerts.orders``, called in the transaction that creates the
order) freezes a CloudEvents 1.0 structured-mode JSON of the order in ``outbox``; its
``idempotency_key`` and its CloudEvent ``id`` are the order id. ``deliver_due`` POSTs every due
message to its warehouse's ``webhook_url``:

* headers ``X-FieldTrace-Timestamp`` (unix seconds), ``X-FieldTrace-Signature``
  (``v2=`` + hex HMAC-SHA256 over timestamp, idempotency key and body with the warehouse's
  secret, ``pipelines.alerts.signing``) and ``Idempotency-Key``;
  ``Content-Type: application/cloudevents+json``. See docs/WEBHOOKS.md.
* 2xx: the message is delivered and the order moves ``open -> sent`` (one transaction).
* anything else: ``attempts + 1`` and ``next_attempt_at = now + backoff`` where backoff is
  ``min(max, base * 2**attempts)`` with equal jitter (half fixed, half random). The wait for an
  answer doubles per attempt too (``DeliveryPolicy.timeout_for``), so a receiver slower than the
  first timeout is heard on a resend, and its 2xx (a replay: it has the order) ends them.
* after ``max_attempts`` failures the message is dead-lettered (``outbox.dead_at``) and its order
  moves ``open -> undeliverable``; ``redrive`` (``fieldtrace alerts redrive``) queues it again.
* a warehouse without a webhook URL or a secret is refused with the reason, as a failed attempt;
  the other warehouses proceed.

Each warehouse is delivered by its own thread, one message after the other, so a slow or dead
warehouse delays only its own orders. All state lives in the store, so a deliverer killed
mid-drain resumes where it stopped; the message in flight is sent again and the receiver drops
it by its signed idempotency key.
Run standalone:
``python -m pipelines.alerts.delivery --store F.duckdb [--rules R.toml] [--until-empty]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import polars as pl

from pipelines.alerts.config import AlertConfig, DeliveryPolicy, load_config
from pipelines.alerts.orders import (
    DEAD_LETTER,
    EVENT_TYPE,
    REDRIVE,
    SEND,
    move_order,
)
from pipelines.alerts.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from pipelines.credentials import WebhookSecrets, missing_reason
from pipelines.errors import FieldTraceError
from pipelines.settings import load_settings
from pipelines.store.gateway import Store, Tx
from pipelines.vocabulary import ORDER_CANCELLED, ORDER_OPEN, ORDER_UNDELIVERABLE

__all__ = [
    "EVENT_TYPE",
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryReport",
    "deliver_due",
    "drain",
    "pending",
    "redrive",
    "sign",
]

CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
DELIVERER: Final = "deliverer"
MAX_PARALLEL_WAREHOUSES: Final = 32
SecretLookup = Callable[[str], str | None]


class RedriveError(FieldTraceError, LookupError):
    """An order asked to be re-driven has no dead-lettered message."""


def backoff(attempts: int, policy: DeliveryPolicy, rng: random.Random) -> timedelta:
    """Delay before retry number ``attempts + 1``: exponential, capped, equal jitter."""
    ceiling = min(policy.max_backoff_s, policy.base_backoff_s * 2.0 ** min(attempts, 30))
    return timedelta(seconds=ceiling / 2 + rng.uniform(0, ceiling / 2))


@dataclass
class DeliveryReport:
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    replayed: int = 0  # 2xx answers saying "already had it" (idempotent replay)
    refused: int = 0  # not sent: the warehouse has no webhook URL or no secret
    dead_lettered: int = 0  # gave up after max_attempts; see `fieldtrace alerts redrive`

    def add(self, other: DeliveryReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: an HTTP status and/or the error that makes it a failure."""

    status: int | None
    error: str | None
    elapsed_ms: float
    replay: bool = False
    refused: bool = False


def _due(store: Store, now: datetime, limit: int | None) -> pl.DataFrame:
    return store.query(
        "SELECT o.message_id, o.order_id, o.warehouse_id, o.idempotency_key, o.payload, "
        "o.attempts, w.webhook_url FROM outbox o "
        "JOIN restock_orders r ON r.order_id = o.order_id "
        "LEFT JOIN warehouses w ON w.warehouse_id = o.warehouse_id "
        "WHERE o.delivered_at IS NULL AND o.dead_at IS NULL AND r.status <> ? "
        "AND o.next_attempt_at <= ? ORDER BY o.next_attempt_at, o.message_id LIMIT ?",
        (ORDER_CANCELLED, now, limit if limit is not None else 2**62),
    )


def _attempt(
    client: httpx.Client, msg: dict[str, Any], secrets: SecretLookup, policy: DeliveryPolicy
) -> Outcome:
    """One POST of one message (or the reason it cannot be sent)."""
    started = time.perf_counter()
    if not msg["webhook_url"]:
        error = f"warehouse {msg['warehouse_id']!r} has no webhook_url"
        return Outcome(None, error, 0.0, refused=True)
    secret = secrets(msg["warehouse_id"])
    if not secret:
        return Outcome(None, missing_reason(msg["warehouse_id"]), 0.0, refused=True)
    body = str(msg["payload"]).encode()
    key = str(msg["idempotency_key"])
    stamp = int(time.time())  # the receiver checks freshness against its own clock
    headers = {
        "Content-Type": CONTENT_TYPE,
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(secret, stamp, key, body),
        IDEMPOTENCY_HEADER: key,
    }
    timeout = policy.timeout_for(int(msg["attempts"]))
    try:
        response = client.post(msg["webhook_url"], content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return Outcome(None, f"{type(exc).__name__} after {timeout:g} s: {exc}", elapsed)
    elapsed = (time.perf_counter() - started) * 1000
    if not response.is_success:
        error = f"HTTP {response.status_code}: {response.text[:200]}"
        return Outcome(response.status_code, error, elapsed)
    replay = response.headers.get("X-Idempotent-Replay") == "true"
    return Outcome(response.status_code, None, elapsed, replay=replay)


def _record(
    store: Store, msg: dict[str, Any], when: datetime, outcome: Outcome, policy: DeliveryPolicy,
    retry_in: timedelta,
) -> bool:  # fmt: skip
    """Store one attempt's outcome; True when it dead-lettered the message."""
    attempts = int(msg["attempts"]) + 1

    def record(tx: Tx) -> bool:  # repeatable: retried whole if it loses a race
        tx.execute(
            "INSERT INTO delivery_attempts VALUES (?, ?, ?, ?, ?, ?)",
            (msg["message_id"], attempts, when, outcome.status, outcome.error, outcome.elapsed_ms),
        )
        status = tx.scalar(
            "SELECT status FROM restock_orders WHERE order_id = ?", (msg["order_id"],)
        )
        if outcome.error is not None:
            if attempts < policy.max_attempts:
                tx.execute(
                    "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? "
                    "WHERE message_id = ?",
                    (attempts, when + retry_in, outcome.error, msg["message_id"]),
                )
                return False
            tx.execute(
                "UPDATE outbox SET attempts = ?, dead_at = ?, last_error = ? WHERE message_id = ?",
                (attempts, when, outcome.error, msg["message_id"]),
            )
            if status == ORDER_OPEN:
                move_order(
                    tx, msg["order_id"], DEAD_LETTER, DELIVERER, when, attempts=attempts,
                    last_error=outcome.error,
                )  # fmt: skip
            return True
        tx.execute(
            "UPDATE outbox SET attempts = ?, delivered_at = ?, last_error = NULL "
            "WHERE message_id = ?",
            (attempts, when, msg["message_id"]),
        )
        if status == ORDER_OPEN:  # a CSV hand-over may have marked it sent already
            move_order(
                tx, msg["order_id"], SEND, DELIVERER, when, attempts=attempts,
                http_status=outcome.status,
            )  # fmt: skip
        return False

    return store.atomic(record)


def deliver_due(
    store: Store,
    config: AlertConfig,
    secrets: SecretLookup,
    *,
    now: datetime | None = None,
    client: httpx.Client | None = None,
    limit: int | None = None,
    rng: random.Random | None = None,
) -> DeliveryReport:
    """POST every message due at ``now`` (default: the clock): one thread per warehouse, each
    sending its warehouse's messages oldest first, so one slow warehouse delays only itself."""
    when = now or datetime.now(UTC)
    jitter = rng or random.Random()
    policy = config.delivery
    report = DeliveryReport()
    lock = threading.Lock()
    by_warehouse: dict[str, list[dict[str, Any]]] = {}
    for msg in _due(store, when, limit).iter_rows(named=True):
        by_warehouse.setdefault(str(msg["warehouse_id"]), []).append(msg)
    if not by_warehouse:
        return report

    def one_warehouse(messages: list[dict[str, Any]]) -> None:
        for msg in messages:
            outcome = _attempt(http, msg, secrets, policy)
            with lock:
                retry_in = backoff(int(msg["attempts"]), policy, jitter)
            dead = _record(store, msg, when, outcome, policy, retry_in)
            with lock:
                report.attempted += 1
                report.delivered += outcome.error is None
                report.failed += outcome.error is not None
                report.replayed += outcome.replay
                report.refused += outcome.refused
                report.dead_lettered += dead

    own = client is None
    http = client or httpx.Client()
    try:
        workers = min(len(by_warehouse), MAX_PARALLEL_WAREHOUSES)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deliver") as pool:
            for done in [pool.submit(one_warehouse, m) for m in by_warehouse.values()]:
                done.result()  # re-raise a store error from any warehouse's thread
    finally:
        if own:
            http.close()
    return report


def redrive(
    store: Store, order_ids: Sequence[str] | None, actor: str, *, at: datetime | None = None
) -> list[str]:
    """Queue dead-lettered messages again (all of them when ``order_ids`` is None).

    Each order moves ``undeliverable -> open`` and its message gets a fresh attempt budget, due
    at once. Returns the order ids re-driven; an asked-for order without a dead letter raises.
    """
    when = at or datetime.now(UTC)
    dead = store.query(
        "SELECT o.message_id, o.order_id FROM outbox o JOIN restock_orders r USING (order_id) "
        "WHERE o.dead_at IS NOT NULL AND r.status = ? ORDER BY o.order_id",
        (ORDER_UNDELIVERABLE,),
    )
    found = dict(zip(dead["order_id"].to_list(), dead["message_id"].to_list(), strict=True))
    wanted = sorted(found) if order_ids is None else list(order_ids)
    unknown = [o for o in wanted if o not in found]
    if unknown:
        raise RedriveError(
            f"no dead-lettered delivery for order(s) {', '.join(unknown)}; dead letters: "
            f"{', '.join(sorted(found)) or 'none'}"
        )
    with store.transaction() as tx:
        for order_id in wanted:
            tx.execute(
                "UPDATE outbox SET attempts = 0, dead_at = NULL, next_attempt_at = ? "
                "WHERE message_id = ?",
                (when, found[order_id]),
            )
            move_order(tx, order_id, REDRIVE, actor, when)
    return wanted


def pending(store: Store) -> tuple[int, datetime | None]:
    """Undelivered, not dead-lettered messages of live orders, and the earliest one due."""
    row = store.query(
        "SELECT count(*) AS n, min(o.next_attempt_at) AS due FROM outbox o "
        "JOIN restock_orders r ON r.order_id = o.order_id "
        "WHERE o.delivered_at IS NULL AND o.dead_at IS NULL AND r.status <> ?",
        (ORDER_CANCELLED,),
    ).row(0)
    return int(row[0]), row[1]


def dead_letters(store: Store) -> pl.DataFrame:
    """Dead-lettered messages with their order, warehouse, attempts and last error."""
    return store.query(
        "SELECT o.order_id, o.warehouse_id, o.attempts, o.dead_at, o.last_error, r.status "
        "FROM outbox o JOIN restock_orders r USING (order_id) WHERE o.dead_at IS NOT NULL "
        "ORDER BY o.dead_at, o.order_id"
    )


def drain(
    store: Store,
    config: AlertConfig,
    secrets: SecretLookup,
    *,
    until_empty: bool = True,
    max_wait_s: float = 5.0,
    deadline_s: float | None = None,
) -> DeliveryReport:
    """Deliver in real time until nothing is pending (or forever), sleeping until the next due."""
    total = DeliveryReport()
    started = time.monotonic()
    with httpx.Client() as client:
        while deadline_s is None or time.monotonic() - started < deadline_s:
            total.add(deliver_due(store, config, secrets, client=client))
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
    secrets = WebhookSecrets(load_settings(store_path=args.store))
    with Store(args.store) as store:
        report = drain(
            store, config, secrets.lookup, until_empty=args.until_empty, max_wait_s=args.max_wait_s
        )
    print(json.dumps(report.__dict__), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
