"""The alerts page's order buttons go through the one order state machine (issue 10)."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from dashboard import create_app
from dashboard.pages.alerts import orders_table
from tests.dashboard.conftest import PASSWORDS
from tests.dashboard.helpers import login, order_action_body, order_action_key


@pytest.fixture
def app(settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


def _click(app: Any, user: str, action: str, order: str) -> str:
    client = app.server.test_client()
    assert login(client, user, PASSWORDS[user]).status_code == 302
    body = order_action_body(order_action_key(app), action, order)
    response = client.post("/_dash-update-component", json=body)
    assert response.status_code == 200
    return str(response.get_json()["response"]["alerts-message"]["children"])


def _audit(app: Any) -> list[tuple[str, str, str]]:
    """Audit rows written by people (the alerts runner and the deliverer write their own)."""
    store = app.server.config["FIELDTRACE_CONTEXT"].store
    return store.query(
        "SELECT actor, action, object_id FROM audit_log WHERE actor IN (?, ?) ORDER BY logged_at",
        ["dispatch", "wh-sent"],
    ).rows()


def test_a_sent_order_cannot_be_fulfilled_before_it_is_acknowledged(app, ids) -> None:  # type: ignore[no-untyped-def]
    order = ids.sent_order
    said = _click(app, "wh-sent", "fulfil", order)
    assert "is 'sent'; cannot move to 'fulfilled' (allowed from: acknowledged)" in said
    assert _audit(app) == []
    assert _click(app, "wh-sent", "acknowledge", order) == f"order {order} acknowledged by wh-sent"
    assert _click(app, "wh-sent", "fulfil", order) == f"order {order} fulfilled by wh-sent"
    assert _audit(app) == [
        ("wh-sent", "order_acknowledged", order),
        ("wh-sent", "order_fulfilled", order),
    ]


def test_an_unsent_order_cannot_be_acknowledged_from_the_dashboard(app, ids) -> None:  # type: ignore[no-untyped-def]
    # the open order's warehouse has no webhook secret: delivery refused it, it is still 'open'
    said = _click(app, "dispatch", "acknowledge", ids.open_order)
    assert "is 'open'; cannot move to 'acknowledged' (allowed from: sent)" in said
    assert _audit(app) == []


@pytest.mark.parametrize(
    ("status", "enabled"),
    [
        ("open", []),
        ("sent", ["acknowledge"]),
        ("acknowledged", ["fulfil"]),
        ("fulfilled", []),
        ("undeliverable", []),
        ("cancelled", []),
    ],
)
def test_buttons_are_enabled_only_for_moves_the_machine_allows(
    status: str, enabled: list[str]
) -> None:
    frame = pl.DataFrame(
        [{"order_id": "O", "warehouse_id": "W", "sku": "S", "quantity": 1.0, "unit": "kg",
          "status": status, "acknowledged_at": None, "fulfilled_at": None}]
    )  # fmt: skip
    table = orders_table(frame, can_act=True)
    buttons = table.children[1].children[0].children[-1].children
    assert [b.id["action"] for b in buttons if not b.disabled] == enabled
