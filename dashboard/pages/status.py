"""Status page: what the store holds, the last ingest batches and why rows were quarantined."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, dash_table, dcc, html

from dashboard import ids
from dashboard.auth import ALL_ROLES, guard
from dashboard.context import AppContext
from dashboard.figures.status import batches_bar, quarantine_bar
from dashboard.pages import Page
from pipelines.store import queries
from pipelines.views import edge as edge_views

ROLES = ALL_ROLES
_SHOWN_TABLES = (
    "tickets",
    "ticket_events",
    "technicians",
    "gps_fixes",
    "uwb_positions",
    "weather_obs",
    "outages",
    "iot_readings",
    "quarantine",
)


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Store status"),
            dcc.Interval(id=ids.STATUS_REFRESH, interval=60_000, n_intervals=0),
            dcc.Loading(html.Div(id=ids.STATUS_COUNTS, className="cards"), type="dot"),
            html.Div(
                [
                    dcc.Loading(dcc.Graph(id=ids.STATUS_BATCHES_CHART), type="circle"),
                    dcc.Loading(dcc.Graph(id=ids.STATUS_QUARANTINE_CHART), type="circle"),
                ],
                className="grid-2",
            ),
            html.H3("Last ingest batches"),
            dcc.Loading(html.Div(id=ids.STATUS_BATCHES_TABLE)),
            html.H3("Latest quarantined rows"),
            dcc.Loading(html.Div(id=ids.STATUS_QUARANTINE_TABLE)),
            html.H3("Edge sites"),
            dcc.Loading(html.Div(id=ids.STATUS_EDGE_TABLE)),
        ]
    )


def _card(label: str, value: int) -> html.Div:
    return html.Div(
        [html.Div(f"{value:,}", className="card-value"), html.Div(label, className="card-label")],
        className="card",
        id={"type": "status-card", "table": label},
    )


def _table(frame: Any, table_id: str) -> Any:
    return dash_table.DataTable(  # type: ignore[attr-defined]
        id=table_id,
        data=frame.to_dicts(),
        columns=[{"name": c, "id": c} for c in frame.columns],
        page_size=10,
        style_table={"overflowX": "auto"},
        style_cell={
            "fontFamily": "inherit",
            "fontSize": 13,
            "textAlign": "left",
            "maxWidth": 420,
            "overflow": "hidden",
            "textOverflow": "ellipsis",
        },
    )


def _edge_sites(store: Any) -> Any:
    links = edge_views.site_links(store)
    if links.is_empty():
        return html.Div("No edge site has synced to this store.", className="muted small")
    return _table(links, "status-edge-datatable")


def register(app: Dash, ctx: AppContext) -> None:
    @app.callback(
        Output(ids.STATUS_COUNTS, "children"),
        Output(ids.STATUS_BATCHES_CHART, "figure"),
        Output(ids.STATUS_QUARANTINE_CHART, "figure"),
        Output(ids.STATUS_BATCHES_TABLE, "children"),
        Output(ids.STATUS_QUARANTINE_TABLE, "children"),
        Output(ids.STATUS_EDGE_TABLE, "children"),
        Input(ids.STATUS_REFRESH, "n_intervals"),
    )
    @guard(ROLES)
    def refresh(_n: int) -> tuple[Any, ...]:
        store = ctx.store
        counts = store.table_counts()
        cards = [_card(t, counts[t]) for t in _SHOWN_TABLES]
        batches = queries.last_batches(store, limit=50).with_columns(*[])
        return (
            cards,
            batches_bar(queries.ingest_totals(store)),
            quarantine_bar(queries.quarantine_by_reason(store)),
            _table(batches.drop("batch_id"), "status-batches-datatable"),
            _table(queries.quarantine_sample(store), "status-quarantine-datatable"),
            _edge_sites(store),
        )


PAGE = Page(path="/", name="Status", layout=layout, register=register, roles=ROLES)
