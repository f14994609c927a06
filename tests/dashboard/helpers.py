"""Helpers for dashboard tests: log in with the Flask client, call a callback like the browser."""

from __future__ import annotations

import json
from typing import Any

from dash import Dash


def login(client: Any, name: str, password: str) -> Any:
    return client.post("/login", data={"username": name, "password": password, "next": "/"})


def callback_key(app: Dash, first_output: str) -> str:
    """The callback_map key whose outputs start with ``first_output`` (e.g. 'alerts-list')."""
    for key in app.callback_map:
        if key.lstrip(".").startswith(first_output + "."):
            return key
    raise KeyError(first_output)


def call(
    client: Any,
    app: Dash,
    first_output: str,
    inputs: list[tuple[str, str, Any]],
    state: list[tuple[str, str, Any]] = (),
) -> Any:  # type: ignore[assignment]
    """POST /_dash-update-component exactly as the renderer would (no UI involved)."""
    key = callback_key(app, first_output)
    entry = app.callback_map[key]
    outputs = [
        {"id": o.split(".")[0], "property": o.split(".")[1].split("@")[0]}
        for o in key.strip(".").split("...")
    ]
    body = {
        "output": key,
        "outputs": outputs if key.startswith("..") else outputs[0],
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
        "changedPropIds": [f"{inputs[0][0]}.{inputs[0][1]}"],
    }
    assert entry is not None
    return client.post("/_dash-update-component", json=body)


def order_action_key(app: Dash) -> str:
    """The callback_map key of the alerts page's order buttons (outputs: message, version)."""
    return next(k for k in app.callback_map if k.startswith("..alerts-message"))


def order_action_body(key: str, action: str, order: str) -> dict[str, Any]:
    """The body the browser POSTs when a user presses an order button (``action`` on ``order``)."""
    trigger = {"type": "order-action", "action": action, "order": order}
    return {
        "output": key,
        "outputs": [
            {"id": "alerts-message", "property": "children"},
            {"id": "alerts-version", "property": "data"},
        ],
        "inputs": [[{"id": trigger, "property": "n_clicks", "value": 1}]],
        "state": [{"id": "alerts-version", "property": "data", "value": 0}],
        "changedPropIds": [
            json.dumps(trigger, separators=(",", ":"), sort_keys=True) + ".n_clicks"
        ],
    }
