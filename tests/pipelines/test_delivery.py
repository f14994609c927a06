"""Outbox delivery to a real HTTP receiver: signatures, retries, crash safety, exactly-once."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
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
from pipelines.alerts.delivery import (
    EVENT_TYPE,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    deliver_due,
    pending,
    sign,
)
from pipelines.alerts.receiver import WarehouseReceiver
from pipelines.alerts.runner import cancel_order, run_alerts
from pipelines.store.gateway import Store
from tests.pipelines.test_alerts import CENTRE, CONFIG, T0, add_tickets, add_warehouses, box
from tests.pipelines.test_alerts import make_ticket as ticket

ROOT = Path(__file__).resolve().parents[2]
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
    with WarehouseReceiver(CONFIG.secret_for) as rx:
        yield rx


def test_receiver_down_then_up_gets_every_order_exactly_once(tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet: connection refused
    orders = build_orders(
        tmp_path / "ft.duckdb", lambda w: f"http://127.0.0.1:{port}/hooks/{w}", SPOTS
    )
    clock = datetime.now(UTC)  # the orders were queued at the wall clock
    rng = random.Random(7)
    with Store(tmp_path / "ft.duckdb") as store:
        first = deliver_due(store, CONFIG, now=clock, rng=rng)
        assert (first.attempted, first.failed) == (3, 3)
        box_ = store.query("SELECT attempts, next_attempt_at, last_error FROM outbox")
        assert box_["attempts"].to_list() == [1, 1, 1]
        assert all("ConnectError" in e for e in box_["last_error"])
        waits = [(t - clock).total_seconds() for t in box_["next_attempt_at"]]
        assert all(2.5 <= w <= 5.0 for w in waits)  # base 5 s, equal jitter
        assert deliver_due(store, CONFIG, now=clock, rng=rng).attempted == 0  # not due yet

        with WarehouseReceiver(CONFIG.secret_for, port=port, fail_first=3) as rx:
            for _ in range(5):
                clock += timedelta(hours=1)
                deliver_due(store, CONFIG, now=clock, rng=rng)
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
        env={**os.environ, "PYTHONPATH": str(ROOT)},
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
        SIGNATURE_HEADER: sign(secret, stamp, body),
        IDEMPOTENCY_HEADER: "RO-test-01",
    }


BODY = json.dumps({"specversion": "1.0", "id": "RO-test-01", "type": EVENT_TYPE}).encode()
SECRET = CONFIG.secret_for("WH-NORTH")
# (what is wrong, headers, body, expected status, fragment of the reason)
BAD_REQUESTS = [
    ("wrong secret", _good_headers("not-the-secret", BODY), BODY, 401, "does not match"),
    (
        "tampered body",
        _good_headers(SECRET, BODY),
        BODY.replace(b"01", b"02"),
        401,
        "does not match",
    ),
    ("stale", _good_headers(SECRET, BODY, int(time.time()) - 3600), BODY, 401, "from now"),
    ("no timestamp", {SIGNATURE_HEADER: "v1=00"}, BODY, 401, "not unix seconds"),
    ("no key", {**_good_headers(SECRET, BODY), IDEMPOTENCY_HEADER: ""}, BODY, 400, "missing"),
    ("not an event", _good_headers(SECRET, b"[1]"), b"[1]", 400, "CloudEvents"),
]


@pytest.mark.parametrize(("case", "headers", "body", "status", "fragment"), BAD_REQUESTS)
def test_receiver_rejects_bad_requests(
    receiver: WarehouseReceiver, case: str, headers: dict[str, str], body: bytes, status: int,
    fragment: str,
) -> None:  # fmt: skip
    if case == "stale":  # recompute at run time so the signature itself is right
        headers = _good_headers(SECRET, body, int(time.time()) - 3600)
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
        report = deliver_due(store, CONFIG)
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
