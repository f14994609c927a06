"""Log-in, role guard and warehouse scope, exercised over HTTP without a browser."""

from __future__ import annotations

import json

import pytest

from dashboard import create_app
from dashboard.auth import is_guarded
from pipelines.store.gateway import Store
from tests.dashboard.conftest import PASSWORDS
from tests.dashboard.helpers import call, callback_key, login, order_action_body, order_action_key


@pytest.fixture
def app(settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.server.test_client()


def _as(app, name):  # type: ignore[no-untyped-def]
    client = app.server.test_client()
    assert login(client, name, PASSWORDS[name]).status_code == 302
    return client


@pytest.mark.parametrize("path", ["/", "/dispatch", "/ticket?id={ticket}", "/alerts", "/analytics"])
def test_unauthenticated_page_request_gets_the_login_page(client, ids, path) -> None:  # type: ignore[no-untyped-def]
    path = path.format(ticket=ids.at_door_ticket)
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    page = client.get(response.headers["Location"])
    assert page.status_code == 200
    assert b'id="login-form"' in page.data


@pytest.mark.parametrize("path", ["/_dash-layout", "/_dash-dependencies"])
def test_unauthenticated_dash_endpoints_answer_401(client, path) -> None:  # type: ignore[no-untyped-def]
    assert client.get(path).status_code == 401


def test_unauthenticated_callback_post_answers_401(app, client) -> None:  # type: ignore[no-untyped-def]
    response = call(
        client, app, "alerts-list", [("url", "search", ""), ("alerts-version", "data", 0)]
    )
    assert response.status_code == 401


def test_wrong_password_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    response = login(client, "dispatch", "nope")
    assert response.status_code == 401
    assert b"wrong password" in response.data
    assert client.get("/_dash-layout").status_code == 401


def test_login_redirect_stays_on_site(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post(
        "/login",
        data={"username": "dispatch", "next": "//evil.example/", "password": PASSWORDS["dispatch"]},
    )
    assert response.headers["Location"] == "/"


def test_every_callback_is_guarded(app) -> None:  # type: ignore[no-untyped-def]
    server_side = {k: v for k, v in app.callback_map.items() if "callback" in v}
    unguarded = [k for k, v in server_side.items() if not is_guarded(v["callback"])]
    assert unguarded == []
    assert len(server_side) >= 10  # every page's server callbacks were inspected


@pytest.mark.parametrize(
    ("user", "visible", "hidden"),
    [
        ("dispatch", ["Dispatch", "Alerts"], ["Analytics"]),
        ("analyst", ["Dispatch", "Alerts", "Analytics"], []),
        ("wh-sent", ["Alerts"], ["Dispatch", "Analytics"]),
    ],
)
def test_menu_shows_only_allowed_pages(app, user, visible, hidden) -> None:  # type: ignore[no-untyped-def]
    layout = json.dumps(_as(app, user).get("/_dash-layout").get_json())
    for name in visible:
        assert f'"children": "{name}"' in layout
    for name in hidden:
        assert f'"children": "{name}"' not in layout


def test_warehouse_user_gets_403_from_dispatch_callbacks(app, ids) -> None:  # type: ignore[no-untyped-def]
    client = _as(app, "wh-sent")
    # every input and state of the map callback, as the renderer sends them
    entry = app.callback_map[callback_key(app, "dispatch-map")]
    values = {"dispatch-layers.value": ["tickets"], "dispatch-at.value": 1_790_000_000}
    inputs = [
        (i["id"], i["property"], values.get(f"{i['id']}.{i['property']}")) for i in entry["inputs"]
    ]
    state = [(d["id"], d["property"], None) for d in entry["state"]]
    response = call(client, app, "dispatch-map", inputs, state)
    assert response.status_code == 403
    assert ids.at_door_ticket.encode() not in response.data


def _alerts(client, app, search: str) -> str:  # type: ignore[no-untyped-def]
    response = call(
        client, app, "alerts-list", [("url", "search", search), ("alerts-version", "data", 0)]
    )
    assert response.status_code == 200
    return json.dumps(response.get_json(), ensure_ascii=False)


def _member(store: Store, alert_id: str) -> dict[str, str]:
    """A member ticket's customer name and address (what a warehouse user must not see)."""
    return store.query(
        "SELECT t.customer_name, t.address FROM cluster_alerts a, tickets t "
        "WHERE a.alert_id = ? AND list_contains(a.member_ticket_ids, t.ticket_id) "
        "AND t.customer_name IS NOT NULL ORDER BY t.ticket_id LIMIT 1",
        [alert_id],
    ).row(0, named=True)


def _orders(store: Store, alert_id: str) -> list[tuple[str, str, str]]:
    """(order_id, warehouse_id, sku) of an alert's orders."""
    return store.query(
        "SELECT order_id, warehouse_id, sku FROM restock_orders WHERE alert_id = ? "
        "ORDER BY order_id",
        [alert_id],
    ).rows()


def test_warehouse_scope_holds_for_direct_callback_posts(app, ids) -> None:  # type: ignore[no-untyped-def]
    store = app.server.config["FIELDTRACE_CONTEXT"].store
    own_orders, other_orders = _orders(store, ids.sent_alert), _orders(store, ids.open_alert)
    assert {w for _, w, _ in own_orders} == {ids.sent_warehouse}
    assert {w for _, w, _ in other_orders} == {ids.open_warehouse}
    member = _member(store, ids.sent_alert)
    user = _as(app, "wh-sent")
    own = _alerts(user, app, f"?alert={ids.sent_alert}")
    for order_id, _, _ in own_orders:
        assert order_id in own
    assert ids.open_order not in own
    assert member["customer_name"] not in own
    assert member["address"] not in own
    assert "•••" in own
    # Another warehouse's alert, asked for by editing the URL: nothing about it leaks.
    other = _alerts(user, app, f"?alert={ids.open_alert}")
    for order_id, _, sku in other_orders:
        assert order_id not in other
        assert sku not in other
    assert "not in your scope" in other
    # The dispatcher sees everything, unmasked.
    dispatcher = _as(app, "dispatch")
    everything = _alerts(dispatcher, app, f"?alert={ids.sent_alert}")
    assert ids.sent_order in everything
    assert member["customer_name"] in everything
    assert ids.open_order in _alerts(dispatcher, app, f"?alert={ids.open_alert}")


def _audit_count(store: Store) -> int:
    return int(store.scalar("SELECT count(*) FROM audit_log"))


def test_warehouse_user_cannot_act_on_another_warehouses_order(app, ids) -> None:  # type: ignore[no-untyped-def]
    store = app.server.config["FIELDTRACE_CONTEXT"].store
    audited = _audit_count(store)
    user = _as(app, "wh-sent")
    body = order_action_body(order_action_key(app), "acknowledge", ids.open_order)
    response = user.post("/_dash-update-component", json=body)
    assert response.status_code == 200
    assert "not found" in response.get_data(as_text=True)
    status = store.query("SELECT status FROM restock_orders WHERE order_id = ?", [ids.open_order])
    assert status["status"][0] == "open"
    assert _audit_count(store) == audited


def test_open_mode_needs_no_login(store_root, ids) -> None:  # type: ignore[no-untyped-def]
    from tests.dashboard.conftest import settings_for

    app = create_app(settings_for(store_root, auth_mode="open"))
    client = app.server.test_client()
    assert client.get("/_dash-layout").status_code == 200
    assert _alerts(client, app, f"?alert={ids.open_alert}").count(ids.open_order) >= 1


def test_store_is_untouched_by_reads(app, settings, ids) -> None:  # type: ignore[no-untyped-def]
    store = app.server.config["FIELDTRACE_CONTEXT"].store
    before = store.table_counts()
    for name in ("dispatch", "wh-sent"):
        _alerts(_as(app, name), app, f"?alert={ids.sent_alert}")
    assert store.table_counts() == before
    assert before["restock_orders"] > 0
