"""Ticket detail: lifecycle vs GPS, the arrival verdict with its evidence, a preparation list."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import polars as pl
from dash import Dash, Input, Output, dcc, html

from dashboard import ids
from dashboard.auth import guard, require_principal
from dashboard.context import AppContext
from dashboard.figures.maps import Basemap, arrival_figure
from dashboard.figures.status import empty_figure
from dashboard.figures.ticket import timeline_figure
from dashboard.pages import Page
from pipelines.views import data_clock
from pipelines.views import ticket as views
from pipelines.views.checklist import ChecklistItem, build_checklist

ROLES = frozenset({"dispatcher", "analyst"})
ARRIVAL_WINDOW = timedelta(minutes=10)
TRACK_MARGIN = timedelta(minutes=30)


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            dcc.Loading(html.Div(id=ids.TICKET_HEADER, className="ticket-header"), type="dot"),
            dcc.Loading(dcc.Graph(id=ids.TICKET_TIMELINE), type="circle"),
            html.Div(
                [
                    html.Div(
                        [
                            html.H3("Arrival verdict"),
                            dcc.Loading(dcc.Graph(id=ids.TICKET_ARRIVAL_MAP), type="circle"),
                            dcc.Loading(html.Div(id=ids.TICKET_EVIDENCE, className="evidence")),
                        ],
                        className="panel",
                    ),
                    html.Div(
                        [
                            html.H3("Preparation checklist"),
                            dcc.Loading(html.Div(id=ids.TICKET_CHECKLIST)),
                        ],
                        className="panel",
                    ),
                ],
                className="grid-2",
            ),
        ]
    )


def ticket_id_from(search: str | None) -> str | None:
    values = parse_qs((search or "").lstrip("?")).get("id")
    return values[-1] if values else None


def _value(v: Any) -> str:
    if isinstance(v, datetime):
        return f"{v:%Y-%m-%d %H:%M:%S}"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, dict | list):
        return (
            ", ".join(f"{k}={_value(x)}" for k, x in v.items())
            if isinstance(v, dict)
            else ", ".join(_value(x) for x in v)
        )
    return str(v)


def evidence_panel(check: dict[str, Any] | None) -> html.Div:
    if check is None:
        return html.Div(
            "Not verified yet: the arrival verifier has not produced a check for this ticket.",
            className="empty",
            id="arrival-empty",
        )
    verdict = check["verdict"]
    facts = {
        "reason": check.get("reason"),
        "decided by": check.get("decided_by"),
        "distance (m)": check.get("distance_m"),
        "accuracy (m)": check.get("accuracy_m"),
        "fixes": check.get("n_fixes"),
        "status lag (s)": check.get("status_lag_s"),
        "rule version": check.get("rule_version"),
    }
    evidence = (
        check["evidence"]
        if isinstance(check["evidence"], dict)
        else {"evidence": check["evidence"]}
    )
    rows = [html.Li([html.B(f"{k}: "), _value(v)]) for k, v in facts.items() if v is not None]
    rows += [
        html.Li([html.B(f"{k}: "), _value(v)], className="evidence-item")
        for k, v in evidence.items()
    ]
    return html.Div(
        [
            html.Span(
                verdict, className=f"verdict verdict-{verdict.lower()}", id="arrival-verdict"
            ),
            html.Ul(rows, id="arrival-evidence"),
        ]
    )


def checklist_panel(items: list[ChecklistItem]) -> html.Div | html.Ul:
    if not items:
        return html.Div(
            "Nothing special to prepare: no IoT anomaly, outage, heavy rain or "
            "earlier parts revisit at this address.",
            className="empty",
        )
    return html.Ul(
        [
            html.Li(
                [
                    html.Div(item.action, className="check-action"),
                    html.Div(item.why, className="muted"),
                    html.Div(
                        ", ".join(
                            f"{k}: {_value(v)}" for k, v in item.evidence.items() if v is not None
                        ),
                        className="check-evidence small",
                    ),
                ],
                className="check-item",
                **{"data-rule": item.rule},  # type: ignore[arg-type]
            )
            for item in items
        ],
        id="checklist-items",
    )


def _stop_from(check: dict[str, Any] | None, physical: pl.DataFrame) -> tuple[float, float] | None:
    ev = (check or {}).get("evidence") or {}
    if isinstance(ev, dict):
        stop = ev.get("stop") if isinstance(ev.get("stop"), dict) else ev
        lat = stop.get("stop_lat", stop.get("lat")) if isinstance(stop, dict) else None
        lon = stop.get("stop_lon", stop.get("lon")) if isinstance(stop, dict) else None
        if isinstance(lat, int | float) and isinstance(lon, int | float):
            return float(lat), float(lon)
    arrived = physical.filter(pl.col("event") == "arrived")
    return (arrived["lat"][0], arrived["lon"][0]) if arrived.height else None


def detail_view(ctx: AppContext, ticket_id: str | None, basemap: Basemap) -> tuple[Any, ...]:
    """The ticket callback body: header, timeline, arrival map + evidence, checklist."""
    store, th = ctx.store, ctx.settings.thresholds
    principal = require_principal()
    t = (
        views.ticket(store, ticket_id, mask_personal=principal.masks_personal_data)
        if ticket_id
        else None
    )
    if t is None:
        msg = f"No ticket {ticket_id!r}" if ticket_id else "No ticket selected"
        empty = empty_figure(msg)
        return html.Div(msg, className="empty"), empty, empty, "", ""
    ev = views.events(store, t["ticket_id"])
    tech = views.technician_of(store, t["ticket_id"])
    customer = (t["lat"], t["lon"]) if t["lat"] is not None else None
    fx, physical, method = pl.DataFrame(), pl.DataFrame(schema={"event": pl.String}), "none"
    if tech and ev.height:
        first: datetime = ev["ts"].min()  # type: ignore[assignment]
        last: datetime = ev["ts"].max()  # type: ignore[assignment]
        fx = views.fixes(store, tech, first - TRACK_MARGIN, last + TRACK_MARGIN)
        stops, method = views.detect_stops(fx, th)
        if customer is not None:
            physical = views.physical_events(stops, fx, customer)
    check = views.arrival_check(store, t["ticket_id"])
    arrived = ev.filter(pl.col("event_type") == "arrived")
    visit_ts = arrived["ts"][0] if arrived.height else data_clock(store)
    near = (
        fx.filter((pl.col("ts") - visit_ts).abs() <= ARRIVAL_WINDOW).head(200) if fx.height else fx
    )
    arrival_map = arrival_figure(
        customer=customer,
        fixes=near,
        stop=_stop_from(check, physical),
        radius_m=th.arrival_radius_m,
        basemap=basemap,
    )
    items = build_checklist(views.checklist_inputs(store, t, visit_ts)) if customer else []
    header = html.Div(
        [
            html.H2(f"Ticket {t['ticket_id']}"),
            html.Div(
                " · ".join(
                    str(x)
                    for x in (
                        t["tag"],
                        t["priority"],
                        t["region"],
                        t["customer_name"],
                        t["address"],
                    )
                    if x
                ),
                className="muted",
            ),
            html.Div(
                f"technician {tech or '—'} · physical events from {method} stop detection",
                className="small muted",
            ),
        ]
    )
    return (
        header,
        timeline_figure(ev, physical),
        arrival_map,
        evidence_panel(check),
        checklist_panel(items),
    )


def register(app: Dash, ctx: AppContext) -> None:
    basemap = Basemap(ctx.settings.basemap_style, ctx.settings.basemap_tiles_url)

    @app.callback(
        Output(ids.TICKET_HEADER, "children"),
        Output(ids.TICKET_TIMELINE, "figure"),
        Output(ids.TICKET_ARRIVAL_MAP, "figure"),
        Output(ids.TICKET_EVIDENCE, "children"),
        Output(ids.TICKET_CHECKLIST, "children"),
        Input(ids.URL, "search"),
    )
    @guard(ROLES)
    def show(search: str | None) -> tuple[Any, ...]:
        return detail_view(ctx, ticket_id_from(search), basemap)


PAGE = Page(
    path="/ticket", name="Ticket", layout=layout, register=register, roles=ROLES, in_menu=False
)
