"""Alerts & warehouse inbox: cluster alerts, their cells, counts and restock orders.

Warehouse users see only alerts with an order for their warehouse and only those orders, with
customer names and addresses masked. The scope comes from the session, never the browser.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode

import polars as pl
from dash import ALL, Dash, Input, Output, State, callback_context, dcc, html, no_update

from dashboard import ids
from dashboard.auth import Principal, guard, require_principal
from dashboard.context import AppContext
from dashboard.figures.alerts import Explanation, counts_figure, explain_alert
from dashboard.figures.maps import Basemap, cells_figure
from dashboard.figures.status import empty_figure
from dashboard.pages import Page
from pipelines.alerts.orders import ACKNOWLEDGE, FULFIL, allowed_actions
from pipelines.views import alerts as views

ROLES = frozenset({"dispatcher", "analyst", "warehouse"})
ACTION_ROLES = frozenset({"dispatcher", "warehouse"})


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Cluster alerts & restock orders"),
            dcc.Store(id=ids.ALERTS_VERSION, data=0),
            html.Div(id=ids.ALERTS_MESSAGE, className="message"),
            html.Div(
                [
                    dcc.Loading(html.Div(id=ids.ALERTS_LIST, className="alert-list")),
                    html.Div(
                        [
                            dcc.Loading(html.Div(id=ids.ALERTS_DETAIL)),
                            html.Div(
                                [
                                    dcc.Loading(dcc.Graph(id=ids.ALERTS_MAP), type="circle"),
                                    dcc.Loading(dcc.Graph(id=ids.ALERTS_COUNTS), type="circle"),
                                ],
                                className="grid-2",
                            ),
                            html.H3("Restock orders"),
                            dcc.Loading(html.Div(id=ids.ALERTS_ORDERS)),
                        ],
                        className="alert-detail",
                    ),
                ],
                className="split",
            ),
        ]
    )


def _scope(p: Principal) -> str | None:
    return p.warehouse_id if p.kind == "warehouse" else None


def alert_list(frame: pl.DataFrame, selected: str | None) -> Any:
    if frame.height == 0:
        return html.Div(
            "No cluster alerts yet: the cluster runner has not raised any "
            "(or none routes to your warehouse).",
            className="empty",
            id="alerts-empty",
        )
    return [
        html.Button(
            [
                html.Div(f"{r['tag']} · {r['member_count']} tickets", className="alert-title"),
                html.Div(
                    f"{r['status']} · {r['trend']} · {r['orders']} orders "
                    f"({r['unacknowledged']} unacknowledged)",
                    className="small muted",
                ),
            ],
            id={"type": ids.ALERT_PICK, "alert": r["alert_id"]},
            className="alert-item" + (" selected" if r["alert_id"] == selected else ""),
        )
        for r in frame.iter_rows(named=True)
    ]


def orders_table(frame: pl.DataFrame, can_act: bool) -> Any:
    if frame.height == 0:
        return html.Div("No restock orders for this alert in your scope.", className="empty")
    head = html.Tr(
        [
            html.Th(c)
            for c in ("order", "warehouse", "sku", "qty", "status", "acknowledged", "fulfilled", "")
        ]
    )
    rows = []
    for r in frame.iter_rows(named=True):
        allowed = allowed_actions(r["status"])
        buttons = (
            [
                html.Button(
                    label,
                    id={"type": ids.ORDER_ACTION, "action": action, "order": r["order_id"]},
                    disabled=action not in allowed,
                    className="btn",
                )
                for action, label in ((ACKNOWLEDGE, "Acknowledge"), (FULFIL, "Fulfil"))
            ]
            if can_act
            else []
        )
        rows.append(
            html.Tr(
                [
                    html.Td(r["order_id"]),
                    html.Td(r["warehouse_id"]),
                    html.Td(r["sku"]),
                    html.Td(f"{r['quantity']:g} {r['unit'] or ''}"),
                    html.Td(r["status"], className="order-status", **{"data-order": r["order_id"]}),
                    html.Td(
                        f"{r['acknowledged_at']:%Y-%m-%d %H:%M}" if r["acknowledged_at"] else "—"
                    ),
                    html.Td(f"{r['fulfilled_at']:%Y-%m-%d %H:%M}" if r["fulfilled_at"] else "—"),
                    html.Td(buttons),
                ]
            )
        )
    return html.Table([html.Thead(head), html.Tbody(rows)], className="orders", id="orders-table")


def selected_from(search: str | None) -> str | None:
    values = parse_qs((search or "").lstrip("?")).get("alert")
    return values[-1] if values else None


def explanation_block(x: Explanation, tz: str) -> html.Div:
    """The readable explanation, hourly counts and the raw JSON collapsed for auditors."""
    children: list[Any] = [html.P(x.summary, className="explanation", id="alert-explanation")]
    if x.counts_by_hour:
        children.append(
            html.Div(
                [
                    html.Div(
                        f"member tickets by hour ({len(x.counts_by_hour)} hours with tickets)",
                        className="small muted",
                    ),
                    html.Table(
                        [
                            html.Thead(html.Tr([html.Th(f"hour ({tz})"), html.Th("tickets")])),
                            html.Tbody(
                                [
                                    html.Tr([html.Td(h), html.Td(str(n))])
                                    for h, n in x.counts_by_hour
                                ]
                            ),
                        ],
                        className="hour-counts",
                        id="alert-hour-counts",
                    ),
                ]
            )
        )
    if x.raw and x.raw != x.summary:
        children.append(
            html.Details(
                [
                    html.Summary("raw explanation (JSON, for auditors)"),
                    html.Pre(x.raw, className="raw-json", id="alert-raw"),
                ],
                className="raw-details",
            )
        )
    return html.Div(children)


def detail_view(ctx: AppContext, search: str | None, basemap: Basemap) -> tuple[Any, ...]:
    """List + selected alert's explanation, map, counts and orders, all in the caller's scope."""
    p = require_principal()
    scope = _scope(p)
    listing = views.alerts(ctx.store, scope)
    wanted = selected_from(search) or (listing["alert_id"][0] if listing.height else None)
    a = views.alert(ctx.store, wanted, scope) if wanted else None
    if a is None:
        msg = (
            f"Alert {wanted} is not in your scope or does not exist."
            if wanted
            else "Select an alert."
        )
        empty = empty_figure("No alert selected")
        return (alert_list(listing, None), html.Div(msg, className="empty"), empty, empty, "")
    members = views.member_tickets(ctx.store, a["alert_id"], mask_personal=p.masks_personal_data)
    cells = list(a["member_cells"])
    detail = html.Div(
        [
            html.H3(f"{a['tag']} cluster · {a['status']} · {a['trend']}"),
            explanation_block(explain_alert(a, ctx.settings.timezone), ctx.settings.timezone),
            html.Details(
                [
                    html.Summary(f"member tickets ({members.height})"),
                    html.Ul(
                        [
                            html.Li(f"{r['ticket_id']} · {r['customer_name']} · {r['address']}")
                            for r in members.head(50).iter_rows(named=True)
                        ],
                        id="alert-members",
                    ),
                ]
            ),
        ]
    )
    return (
        alert_list(listing, a["alert_id"]),
        detail,
        cells_figure(cells, views.cell_counts(cells, members), basemap),
        counts_figure(views.daily_counts(members), a["tag"]),
        orders_table(views.orders(ctx.store, a["alert_id"], scope), p.may(ACTION_ROLES)),
    )


def register(app: Dash, ctx: AppContext) -> None:
    basemap = Basemap.from_settings(ctx.settings)

    @app.callback(
        Output(ids.ALERTS_LIST, "children"),
        Output(ids.ALERTS_DETAIL, "children"),
        Output(ids.ALERTS_MAP, "figure"),
        Output(ids.ALERTS_COUNTS, "figure"),
        Output(ids.ALERTS_ORDERS, "children"),
        Input(ids.URL, "search"),
        Input(ids.ALERTS_VERSION, "data"),
    )
    @guard(ROLES)
    def show(search: str | None, _version: int) -> tuple[Any, ...]:
        return detail_view(ctx, search, basemap)

    @app.callback(
        Output(ids.URL, "search", allow_duplicate=True),
        Input({"type": ids.ALERT_PICK, "alert": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    @guard(ROLES)
    def pick(clicks: list[int | None]) -> Any:
        trigger = callback_context.triggered_id
        if not isinstance(trigger, dict) or not any(clicks):
            return no_update
        return "?" + urlencode({"alert": trigger["alert"]})

    @app.callback(
        Output(ids.ALERTS_MESSAGE, "children"),
        Output(ids.ALERTS_VERSION, "data"),
        Input({"type": ids.ORDER_ACTION, "action": ALL, "order": ALL}, "n_clicks"),
        State(ids.ALERTS_VERSION, "data"),
        prevent_initial_call=True,
    )
    @guard(ACTION_ROLES)
    def act(clicks: list[int | None], version: int) -> tuple[Any, Any]:
        trigger = callback_context.triggered_id
        if not isinstance(trigger, dict) or not any(clicks):
            return no_update, no_update
        p = require_principal()
        outcome = views.set_order_status(
            ctx.store,
            str(trigger["order"]),
            str(trigger["action"]),
            actor=p.name,
            warehouse_id=_scope(p),
        )
        return outcome, (version or 0) + 1


PAGE = Page(path="/alerts", name="Alerts", layout=layout, register=register, roles=ROLES)
