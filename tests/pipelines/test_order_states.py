"""One order state machine for the dashboard, the CLI and the deliverer (issue 10).

Orders are made by the real writers (tickets -> ``run_alerts`` -> order); each surface then
tries the same moves, and must allow and refuse the same ones with the same audit words.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
import typer
from typer.testing import CliRunner

from cli.alerts import alerts_app
from pipelines.alerts.orders import (
    ACKNOWLEDGE,
    CANCEL,
    DEAD_LETTER,
    FULFIL,
    MOVES,
    REDRIVE,
    SEND,
    allowed_actions,
)
from pipelines.alerts.runner import run_alerts
from pipelines.store.gateway import Store
from pipelines.store.schema import MIGRATIONS
from pipelines.views.alerts import set_order_status
from pipelines.vocabulary import AUDIT_ACTIONS, ORDER_STATUSES
from tests.pipelines.test_alerts import CONFIG, FAR, T0, add_tickets, add_warehouses, planted

Surface = Callable[[Path, str, str], str]


def _order(path: Path) -> str:
    """One ``open`` order of a planted cluster, written by the alerts runner."""
    with Store(path) as store:
        add_tickets(store, planted(20))
        add_warehouses(store, [FAR])
        run_alerts(store, CONFIG, at=T0 + timedelta(hours=40))
        return str(store.scalar("SELECT order_id FROM restock_orders"))


def _dashboard(path: Path, order_id: str, action: str) -> str:
    with Store(path) as store:
        return set_order_status(store, order_id, action, actor="clerk", warehouse_id=None)


def _cli(path: Path, order_id: str, action: str) -> str:
    app = typer.Typer()
    app.add_typer(alerts_app, name="alerts")
    command = {ACKNOWLEDGE: "ack", FULFIL: "fulfil"}[action]
    env = {"FIELDTRACE_STORE_PATH": str(path), "FIELDTRACE_DATA_DIR": str(path.parent)}
    result = CliRunner().invoke(app, ["alerts", command, order_id, "--actor", "clerk"], env=env)
    return " ".join(result.output.split())


def _state(path: Path, order_id: str) -> tuple[str, list[str]]:
    with Store(path, read_only=True) as store:
        status = store.scalar("SELECT status FROM restock_orders WHERE order_id = ?", (order_id,))
        actions = store.query(
            "SELECT action FROM audit_log WHERE object_id = ? ORDER BY logged_at", (order_id,)
        )["action"].to_list()
    return str(status), actions


@pytest.mark.parametrize("surface", [_dashboard, _cli], ids=["dashboard", "cli"])
@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        (ACKNOWLEDGE, "is 'open'; cannot move to 'acknowledged' (allowed from: sent)"),
        (FULFIL, "is 'open'; cannot move to 'fulfilled' (allowed from: acknowledged)"),
    ],
)
def test_an_unsent_order_can_be_neither_acknowledged_nor_fulfilled(
    tmp_path: Path, surface: Surface, action: str, fragment: str
) -> None:
    path = tmp_path / "ft.duckdb"
    order_id = _order(path)
    said = surface(path, order_id, action)
    assert fragment in said
    assert _state(path, order_id) == ("open", ["order_created"])


@pytest.mark.parametrize("surface", [_dashboard, _cli], ids=["dashboard", "cli"])
def test_both_surfaces_walk_the_same_path_with_the_same_audit_words(
    tmp_path: Path, surface: Surface
) -> None:
    path = tmp_path / "ft.duckdb"
    order_id = _order(path)
    with Store(path) as store:
        store.execute("UPDATE restock_orders SET status = 'sent' WHERE order_id = ?", (order_id,))
    assert "cannot move to 'fulfilled'" in surface(path, order_id, FULFIL)  # not acknowledged
    assert f"order {order_id} acknowledged by clerk" in surface(path, order_id, ACKNOWLEDGE)
    assert f"order {order_id} fulfilled by clerk" in surface(path, order_id, FULFIL)
    assert _state(path, order_id) == (
        "fulfilled",
        ["order_created", "order_acknowledged", "order_fulfilled"],
    )


def test_the_dashboard_hides_other_warehouses_orders_and_unknown_actions(tmp_path: Path) -> None:
    path = tmp_path / "ft.duckdb"
    order_id = _order(path)
    with Store(path) as store:
        scoped = set_order_status(store, order_id, CANCEL, actor="x", warehouse_id="WH-FAR")
        other = set_order_status(store, order_id, ACKNOWLEDGE, actor="x", warehouse_id="WH-NEAR")
    assert scoped == "unknown action 'cancel'; expected one of acknowledge, fulfil"
    assert other == f"order {order_id} not found"


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ("open", {SEND, CANCEL, DEAD_LETTER}),
        ("sent", {ACKNOWLEDGE, CANCEL}),
        ("acknowledged", {FULFIL, CANCEL}),
        ("fulfilled", set()),
        ("undeliverable", {REDRIVE, CANCEL}),
        ("cancelled", set()),
    ],
)
def test_the_state_machine_table(status: str, allowed: set[str]) -> None:
    assert allowed_actions(status) == allowed


def test_every_status_and_audit_word_of_the_machine_is_in_the_vocabulary() -> None:
    reached = {m.to for m in MOVES.values()} | {s for m in MOVES.values() for s in m.sources}
    assert reached == set(ORDER_STATUSES)
    assert {m.audit_action for m in MOVES.values()} <= set(AUDIT_ACTIONS)
    assert "order_created" in AUDIT_ACTIONS


@pytest.mark.parametrize(
    ("sql", "column"),
    [
        ("UPDATE restock_orders SET status = 'acked'", "status"),
        (
            "INSERT INTO audit_log VALUES (now(), 'x', 'acknowledged', 'restock_order', 'o', '')",
            "action",
        ),
        ("INSERT INTO audit_log VALUES (now(), 'x', 'order_sent', 'order', 'o', '')", "object"),
    ],
)
def test_the_schema_checks_the_vocabulary(tmp_path: Path, sql: str, column: str) -> None:
    path = tmp_path / "ft.duckdb"
    _order(path)
    with Store(path) as store, pytest.raises(duckdb.ConstraintException, match=column):
        store.execute(sql)


def test_migration_keeps_orders_and_renames_old_dashboard_audit_words(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR, "
        "applied_at TIMESTAMPTZ)"
    )
    for migration in MIGRATIONS[:3]:
        for statement in migration.statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [migration.version, ""])
    con.execute(
        "INSERT INTO restock_orders (order_id, alert_id, warehouse_id, sku, quantity, status, "
        "created_at) VALUES ('O-1', 'A-1', 'WH', 'SKU', 1, 'acknowledged', now())"
    )
    con.execute(
        "INSERT INTO audit_log VALUES (now(), 'wh', 'acknowledged', 'restock_order', 'O-1', '{}')"
    )
    con.close()
    with Store(path) as store:
        assert store.schema_version() >= 4
        assert store.query("SELECT order_id, status FROM restock_orders").rows() == [
            ("O-1", "acknowledged")
        ]
        assert store.query("SELECT action FROM audit_log")["action"].to_list() == [
            "order_acknowledged"
        ]
        assert store.query("SELECT dead_at FROM outbox").height == 0
