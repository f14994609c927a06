"""Outbox delivery to a real HTTP receiver: signatures, retries, crash safety, exactly-once."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from cli.alerts import alerts_app
from pipelines.alerts.config import AlertConfig
from pipelines.alerts.delivery import (
    EVENT_TYPE,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryReport,
    deliver_due,
    pending,
    sign,
)
from pipelines.alerts.receiver import WarehouseReceiver
from pipelines.alerts.runner import cancel_order, run_alerts
from pipelines.credentials import WebhookSecrets, webhook_env_name
from pipelines.store.gateway import Store
from tests.pipelines.test_alerts import CENTRE, CONFIG, T0, add_tickets, add_warehouses, box
from tests.pipelines.test_alerts import make_ticket as ticket

ROOT = Path(__file__).resolve().parents[2]
# secrets made per test run (none ships with the code); the receiver and deliverer share them
SECRETS = {w: secrets.token_urlsafe(24) for w in ("WH-NORTH", "WH-SOUTH", "WH-EAST")}
LOOKUP = WebhookSecrets(mapping=SECRETS, environ={}).lookup
# three clusters: two north of 30.3 N (WH-NORTH), one south (WH-SOUTH)
SPOTS = [
    (CENTRE[0] + 0.25, CENTRE[1]),
    (CENTRE[0] + 0.25, CENTRE[1] + 0.3),
    (CENTRE[0] - 0.25, CENTRE[1]),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_orders(
    path: Path, url_for: Callable[[str], str], spots: list[tuple[float, float]]
) -> list[str]:
    """A store with one planted 21-ticket cluster per spot, evaluated once; returns order ids."""
    with Store(path) as store:
        add_warehouses(
            store,
            [
                ("WH-NORTH", 30.6, 120.2, box(30.8, 120.2, 0.5), url_for("WH-NORTH")),
                ("WH-SOUTH", 29.9, 120.2, box(29.8, 120.2, 0.5), url_for("WH-SOUTH")),
            ],
        )
        add_tickets(
            store,
            [
                ticket(f"s{s}-{i:02d}", i * 2.0, lat=lat, lon=lon)
                for s, (lat, lon) in enumerate(spots)
                for i in range(21)
            ],
        )
        report = run_alerts(store, CONFIG, at=T0 + timedelta(hours=48))
        assert len(report.opened) == len(spots)
        return sorted(report.orders)


@pytest.fixture
def receiver() -> Iterator[WarehouseReceiver]:
    with WarehouseReceiver(LOOKUP) as rx:
        yield rx


def test_receiver_down_then_up_gets_every_order_exactly_once(tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet: connection refused
    orders = build_orders(
        tmp_path / "ft.duckdb", lambda w: f"http://127.0.0.1:{port}/hooks/{w}", SPOTS
    )
    clock = datetime.now(UTC)  # the orders were queued at the wall clock
    rng = random.Random(7)
    with Store(tmp_path / "ft.duckdb") as store:
        first = deliver_due(store, CONFIG, LOOKUP, now=clock, rng=rng)
        assert (first.attempted, first.failed) == (3, 3)
        box_ = store.query("SELECT attempts, next_attempt_at, last_error FROM outbox")
        assert box_["attempts"].to_list() == [1, 1, 1]
        assert all("ConnectError" in e for e in box_["last_error"])
        waits = [(t - clock).total_seconds() for t in box_["next_attempt_at"]]
        assert all(2.5 <= w <= 5.0 for w in waits)  # base 5 s, equal jitter
        assert deliver_due(store, CONFIG, LOOKUP, now=clock, rng=rng).attempted == 0  # not due yet

        with WarehouseReceiver(LOOKUP, port=port, fail_first=3) as rx:
            for _ in range(5):
                clock += timedelta(hours=1)
                deliver_due(store, CONFIG, LOOKUP, now=clock, rng=rng)
                if pending(store)[0] == 0:
                    break
            assert sorted(rx.log.accepted) == orders
            assert rx.log.replays == {}
            assert rx.log.requests == 3 + 3  # three 503s, then one success each
            event = rx.log.accepted[orders[0]].event
        assert pending(store) == (0, None)
        sent = store.query("SELECT order_id, status, sent_at FROM restock_orders ORDER BY order_id")
        assert sent["status"].to_list() == ["sent"] * 3
        attempts = store.query("SELECT attempts FROM outbox ORDER BY order_id")["attempts"]
        assert attempts.to_list() == [3, 3, 3]
        assert store.count("delivery_attempts") == 9
        codes = store.query("SELECT status_code FROM delivery_attempts ORDER BY attempted_at")
        assert codes["status_code"].to_list() == [None] * 3 + [503] * 3 + [202] * 3
    assert (event["specversion"], event["type"], event["id"]) == ("1.0", EVENT_TYPE, orders[0])
    assert event["data"]["sku"] == "R32"
    assert event["data"]["quantity"] == pytest.approx(21 * 1.2)
    assert event["data"]["alert"]["tag"] == "refrigerant_leak"


def _deliverer(store_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.alerts.delivery", "--store", str(store_path),
         "--until-empty", "--max-wait-s", "0.2"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT),
             **{webhook_env_name(w): secret for w, secret in SECRETS.items()}},
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_deliverer_killed_mid_drain_loses_and_doubles_nothing(
    tmp_path: Path, receiver: WarehouseReceiver
) -> None:
    spots = [(CENTRE[0] + 0.25 + 0.1 * (i % 2), CENTRE[1] + 0.15 * i) for i in range(6)]
    path = tmp_path / "ft.duckdb"
    orders = build_orders(path, receiver.url, spots)
    assert len(orders) == 6
    receiver.delay_s = 0.5  # slow answers: the kill lands while a request is in flight

    proc = _deliverer(path)
    deadline = time.monotonic() + 30
    while receiver.log.requests < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    in_flight = len(receiver.log.accepted)
    assert 0 < in_flight < 6

    receiver.delay_s = 0.0
    again = _deliverer(path)
    assert again.wait(timeout=60) == 0, again.stderr.read() if again.stderr else ""

    assert sorted(receiver.log.accepted) == orders  # every order arrived, once by key
    assert sum(receiver.log.replays.values()) >= 1  # the one in flight was sent again
    with Store(path) as store:
        assert pending(store) == (0, None)
        rows = store.query(
            "SELECT r.status, o.delivered_at IS NOT NULL AS delivered, o.attempts "
            "FROM restock_orders r JOIN outbox o USING (order_id)"
        )
        assert rows["status"].to_list() == ["sent"] * 6
        assert all(rows["delivered"])
        sent_audit = store.query("SELECT count(*) AS n FROM audit_log WHERE action = 'order_sent'")
        assert sent_audit["n"][0] == 6  # marked sent exactly once each


def _post(url: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=5)


def _good_headers(secret: str, body: bytes, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    return {
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(secret, stamp, "RO-test-01", body),
        IDEMPOTENCY_HEADER: "RO-test-01",
    }


BODY = json.dumps({"specversion": "1.0", "id": "RO-test-01", "type": EVENT_TYPE}).encode()
SECRET = SECRETS["WH-NORTH"]
# (what is wrong, headers made at request time, body, expected status, fragment of the reason)
BAD_REQUESTS: list[tuple[str, Callable[[], dict[str, str]], bytes, int, str]] = [
    ("wrong secret", lambda: _good_headers("not-the-secret", BODY), BODY, 401, "does not match"),
    (
        "tampered body",
        lambda: _good_headers(SECRET, BODY),
        BODY.replace(b"01", b"02"),
        401,
        "does not match",
    ),
    ("stale", lambda: _good_headers(SECRET, BODY, int(time.time()) - 3600), BODY, 401, "from now"),
    ("no timestamp", lambda: {SIGNATURE_HEADER: "v1=00"}, BODY, 401, "not unix seconds"),
    (
        "no key",
        lambda: {**_good_headers(SECRET, BODY), IDEMPOTENCY_HEADER: ""},
        BODY,
        400,
        "missing",
    ),
    ("not an event", lambda: _good_headers(SECRET, b"[1]"), b"[1]", 400, "CloudEvents"),
]


@pytest.mark.parametrize(
    ("case", "make_headers", "body", "status", "fragment"),
    BAD_REQUESTS,
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_receiver_rejects_bad_requests(
    receiver: WarehouseReceiver, case: str, make_headers: Callable[[], dict[str, str]],
    body: bytes, status: int, fragment: str,
) -> None:  # fmt: skip
    headers = make_headers()  # signed now: collection may be minutes before the run
    response = _post(receiver.url("WH-NORTH"), body, **headers)
    assert response.status_code == status, case
    assert fragment in response.json()["error"]
    assert receiver.log.accepted == {}


def test_receiver_accepts_a_good_request_once(receiver: WarehouseReceiver) -> None:
    first = _post(receiver.url("WH-NORTH"), BODY, **_good_headers(SECRET, BODY))
    second = _post(receiver.url("WH-NORTH"), BODY, **_good_headers(SECRET, BODY))
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.headers["X-Idempotent-Replay"] == "true"
    assert list(receiver.log.accepted) == ["RO-test-01"]


def test_a_cancelled_order_is_never_delivered(tmp_path: Path, receiver: WarehouseReceiver) -> None:
    orders = build_orders(tmp_path / "ft.duckdb", receiver.url, SPOTS[:2])
    with Store(tmp_path / "ft.duckdb") as store:
        cancel_order(store, orders[0], "dispatcher", reason="duplicate of a manual order")
        report = deliver_due(store, CONFIG, LOOKUP)
        assert report.delivered == 1
        assert pending(store) == (0, None)
    assert list(receiver.log.accepted) == [orders[1]]


def test_cli_run_delivers_and_prints_lead_time_then_exports(
    tmp_path: Path, receiver: WarehouseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ft.duckdb"
    with Store(path) as store:
        north = ("WH-NORTH", 30.6, 120.2, box(30.3, 120.2, 0.5), receiver.url("WH-NORTH"))
        add_warehouses(store, [north, ("WH-CSV", 29.0, 120.2, box(29.0, 120.2, 0.2), None)])
        add_tickets(store, [ticket(f"a{i}", i * 2.0) for i in range(22)])
        add_tickets(store, [ticket(f"b{i}", i * 2.0, lat=29.0) for i in range(22)])
    monkeypatch.setenv("FIELDTRACE_STORE_PATH", str(path))
    monkeypatch.setenv("FIELDTRACE_DATA_DIR", str(tmp_path))
    for warehouse, secret in SECRETS.items():
        monkeypatch.setenv(webhook_env_name(warehouse), secret)
    app = typer.Typer()
    app.add_typer(alerts_app, name="alerts")
    runner = CliRunner()

    run = runner.invoke(app, ["alerts", "run", "--since", "2026-10-05T12:00:00+00:00",
                              "--at", "2026-10-07T00:00:00+00:00", "--step-h", "1"])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "lead time" in run.output
    assert len(receiver.log.accepted) == 1  # WH-CSV has no webhook
    listed = runner.invoke(app, ["alerts", "list", "--json"])
    rows = pl.DataFrame(json.loads(listed.output))
    hooked = rows.filter(pl.col("warehouse_id") == "WH-NORTH").row(0, named=True)
    # crossed at the 20th ticket (hour 38 = 14:00 on the 6th), detected at the next hourly run
    assert hooked["crossed_at"].startswith("2026-10-06 14:00")
    assert hooked["detection_lag_s"] == 0
    assert 0 <= hooked["delivery_s"] < 5

    out = tmp_path / "orders.csv"
    exported = runner.invoke(app, ["alerts", "export", "--out", str(out), "--warehouse", "WH-CSV",
                                   "--mark-sent"])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    csv = pl.read_csv(out)
    assert csv["warehouse_id"].to_list() == ["WH-CSV"]
    assert csv["member_ticket_ids"][0].split() == sorted(f"b{i}" for i in range(22))
    with Store(path) as store:
        status = store.query("SELECT warehouse_id, status FROM restock_orders ORDER BY 1")
    assert status.rows() == [("WH-CSV", "sent"), ("WH-NORTH", "sent")]


# --------------------------------------------------------------------------- giving up, timeouts,
# independent warehouses (issue 10: delivery never gave up and wedged)


def _policy(**changes: object) -> AlertConfig:
    return dataclasses.replace(CONFIG, delivery=dataclasses.replace(CONFIG.delivery, **changes))


def _order_status(path: Path) -> list[tuple[str, str]]:
    with Store(path, read_only=True) as store:
        return store.query("SELECT order_id, status FROM restock_orders ORDER BY 1").rows()


def test_attempt_limit_dead_letters_then_redrive_delivers(tmp_path: Path) -> None:
    assert CONFIG.delivery.max_attempts == 12  # the built-in limit; 4 here keeps the test short
    config = _policy(max_attempts=4)
    path = tmp_path / "ft.duckdb"
    with WarehouseReceiver(LOOKUP, fail_first=25) as rx:  # 25 answers of 503 in a row
        (order,) = build_orders(path, rx.url, SPOTS[:1])
        clock = datetime.now(UTC)
        with Store(path) as store:
            reports = []
            for _ in range(config.delivery.max_attempts + 3):
                clock += timedelta(days=1)  # always past the (capped) backoff
                reports.append(deliver_due(store, config, LOOKUP, now=clock))
            assert rx.log.requests == 4  # then it stopped
            assert sum(r.dead_lettered for r in reports) == 1
            assert pending(store) == (0, None)
            box_ = store.query(
                "SELECT attempts, dead_at IS NOT NULL AS dead, last_error FROM outbox"
            )
            assert box_.row(0) == (4, True, 'HTTP 503: {"error": "warehouse system is down"}')
            actions = store.query(
                "SELECT action FROM audit_log WHERE object_id = ? ORDER BY logged_at", (order,)
            )["action"].to_list()
            assert actions == ["order_created", "order_dead_lettered"]
        assert _order_status(path) == [(order, "undeliverable")]

        runner = CliRunner()
        app = typer.Typer()
        app.add_typer(alerts_app, name="alerts")
        env = {"FIELDTRACE_STORE_PATH": str(path), "FIELDTRACE_DATA_DIR": str(tmp_path)}
        listed = runner.invoke(app, ["alerts", "dead-letters", "--json"], env=env)
        assert [r["order_id"] for r in json.loads(listed.output)] == [order]
        nothing = runner.invoke(app, ["alerts", "redrive", "RO-nope"], env=env)
        assert nothing.exit_code == 2
        assert "no dead-lettered delivery for order(s) RO-nope" in nothing.output
        redriven = runner.invoke(app, ["alerts", "redrive", "--actor", "ops"], env=env)
        assert redriven.exit_code == 0, redriven.output
        assert f"re-driven 1 order(s): {order}" in redriven.output
        assert _order_status(path) == [(order, "open")]

        rx.fail_first = 0  # the warehouse is back
        with Store(path) as store:
            again = deliver_due(store, CONFIG, LOOKUP)
            assert (again.attempted, again.delivered) == (1, 1)
            actions = store.query(
                "SELECT actor, action FROM audit_log WHERE object_id = ? ORDER BY logged_at",
                (order,),
            ).rows()
        # (the test's clock ran days ahead, so compare without the order of logged_at)
        assert sorted(actions) == [
            ("alerts-runner", "order_created"),
            ("deliverer", "order_dead_lettered"),
            ("deliverer", "order_sent"),
            ("ops", "order_redriven"),
        ]
        assert _order_status(path) == [(order, "sent")]
        assert list(rx.log.accepted) == [order]


def test_resend_after_a_timeout_is_safe_and_ends_at_the_first_2xx(tmp_path: Path) -> None:
    # the receiver always answers after 1 s, far past the first timeout of 0.1 s; it records
    # the order on the first request, so each resend is a replay it answers 200. The wait
    # doubles per attempt (0.1, 0.2, 0.4, 0.8, 1.6 s), so a 2xx is heard at the latest on the
    # 5th attempt (a loaded machine may hear it earlier, never later), and that ends it.
    config = _policy(timeout_s=0.1, max_timeout_s=1.6)
    path = tmp_path / "ft.duckdb"
    with WarehouseReceiver(LOOKUP, delay_s=1.0) as rx:
        (order,) = build_orders(path, rx.url, SPOTS[:1])
        clock = datetime.now(UTC)
        with Store(path) as store:
            reports = []
            for _ in range(8):
                clock += timedelta(days=1)
                reports.append(deliver_due(store, config, LOOKUP, now=clock))
            attempts = store.query(
                "SELECT status_code, error FROM delivery_attempts ORDER BY attempt"
            ).rows()
    codes = [code for code, _ in attempts]
    assert 2 <= len(codes) <= 5
    assert codes[-1] == 200  # the replay answer: the warehouse already had the order
    assert all(code is None and "ReadTimeout" in str(e) for code, e in attempts[:-1])
    assert [r.attempted for r in reports] == [1] * len(codes) + [0] * (8 - len(codes))
    assert reports[len(codes) - 1].replayed == 1
    assert rx.log.requests == len(codes)
    assert list(rx.log.accepted) == [order]  # the warehouse has it once
    assert rx.log.replays == {order: len(codes) - 1}
    assert _order_status(path) == [(order, "sent")]


def test_a_slow_warehouse_delays_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "ft.duckdb"
    orders = build_orders(path, lambda w: f"http://127.0.0.1:9/hooks/{w}", SPOTS)
    hold = threading.Event()
    with (
        WarehouseReceiver(LOOKUP, hold=hold) as slow,
        WarehouseReceiver(LOOKUP) as fast,
        Store(path) as store,
    ):
        first = store.query("SELECT warehouse_id FROM outbox ORDER BY next_attempt_at, message_id")
        slow_wh = first["warehouse_id"][0]  # the one a sequential pass would wait on first
        for warehouse in ("WH-NORTH", "WH-SOUTH"):
            url = (slow if warehouse == slow_wh else fast).url(warehouse)
            store.execute(
                "UPDATE warehouses SET webhook_url = ? WHERE warehouse_id = ?", (url, warehouse)
            )
        fast_orders = store.query(
            "SELECT order_id FROM outbox WHERE warehouse_id <> ? ORDER BY 1", (slow_wh,)
        )["order_id"].to_list()
        result: list[DeliveryReport] = []
        worker = threading.Thread(
            target=lambda: result.append(deliver_due(store, CONFIG, LOOKUP)), daemon=True
        )
        worker.start()
        deadline = time.monotonic() + 20
        while len(fast.log.accepted) < len(fast_orders) and time.monotonic() < deadline:
            time.sleep(0.02)
        # the slow warehouse still holds its first request, yet the others have theirs
        assert not hold.is_set()
        assert sorted(fast.log.accepted) == fast_orders
        assert slow.log.requests == 1
        hold.set()
        worker.join(timeout=30)
    assert result[0].delivered == len(orders)
    assert sorted(slow.log.accepted) == sorted(set(orders) - set(fast_orders))


def test_a_warehouse_without_a_secret_is_refused_while_the_others_proceed(
    tmp_path: Path, receiver: WarehouseReceiver
) -> None:
    path = tmp_path / "ft.duckdb"
    orders = build_orders(path, receiver.url, SPOTS)
    only_north = WebhookSecrets(mapping={"WH-NORTH": SECRETS["WH-NORTH"]}, environ={}).lookup
    with Store(path) as store:
        report = deliver_due(store, CONFIG, only_north)
        south = store.query(
            "SELECT o.order_id, o.last_error, r.status FROM outbox o JOIN restock_orders r "
            "USING (order_id) WHERE o.warehouse_id = 'WH-SOUTH'"
        ).row(0, named=True)
    assert (report.attempted, report.delivered, report.refused) == (3, 2, 1)
    assert len(receiver.log.accepted) == 2
    assert south["status"] == "open"
    assert south["last_error"].startswith(
        "warehouse 'WH-SOUTH' has no webhook secret: set FIELDTRACE_WEBHOOK_SECRET_WH_SOUTH"
    )
    assert south["order_id"] in orders
