"""Ticket detail: lifecycle vs GPS, the arrival verdict with its evidence, a preparation list."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

import polars as pl
from dash import Dash, Input, Output, dcc, html

from dashboard import ids
from dashboard.auth import guard, require_principal
from dashboard.context import AppContext
from dashboard.figures.edge import evidence_spectrum_figure
from dashboard.figures.maps import Basemap, DecisiveFix, arrival_figure
from dashboard.figures.status import empty_figure
from dashboard.figures.ticket import evidence_list, evidence_rows, timeline_figure
from dashboard.pages import Page
from pipelines.views import data_clock
from pipelines.views import edge as edge_views
from pipelines.views import ticket as views
from pipelines.views.checklist import ChecklistItem, build_checklist

ROLES = frozenset({"dispatcher", "analyst"})
ARRIVAL_WINDOW = timedelta(minutes=5)  # fixes drawn either side of the arrival
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
    items = evidence_list(evidence_rows(check, check["evidence"])).children
    return html.Div(
        [
            html.Span(
                verdict, className=f"verdict verdict-{verdict.lower()}", id="arrival-verdict"
            ),
            html.Ul(items, id="arrival-evidence"),
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
        lat, lon = ev.get("stop_centroid_lat"), ev.get("stop_centroid_lon")
        if isinstance(lat, int | float) and isinstance(lon, int | float):
            return float(lat), float(lon)
    arrived = physical.filter(pl.col("event") == "arrived")
    return (arrived["lat"][0], arrived["lon"][0]) if arrived.height else None


def decisive_fix(check: dict[str, Any] | None) -> DecisiveFix | None:
    """The fix the verdict rests on, from the evidence's ``fix_lat/fix_lon/fix_ts``. Pure."""
    ev = (check or {}).get("evidence") or {}
    if not isinstance(ev, dict):
        return None
    lat, lon = ev.get("fix_lat"), ev.get("fix_lon")
    if not (isinstance(lat, int | float) and isinstance(lon, int | float)):
        return None
    distance = (check or {}).get("distance_m")
    distance = float(distance) if isinstance(distance, int | float) else None
    when = str(ev.get("fix_ts") or "")
    with contextlib.suppress(ValueError):
        when = f"{datetime.fromisoformat(when):%H:%M:%S}"
    label = "decisive fix" + (f" {when}" if when else "")
    if distance is not None:
        label += f" · {distance:.1f} m"
    return DecisiveFix(float(lat), float(lon), label, distance)


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
    fx, physical = pl.DataFrame(), pl.DataFrame(schema={"event": pl.String})
    if tech and ev.height:
        first: datetime = ev["ts"].min()  # type: ignore[assignment]
        last: datetime = ev["ts"].max()  # type: ignore[assignment]
        fx = views.fixes(store, tech, first - TRACK_MARGIN, last + TRACK_MARGIN)
        stops = views.detect_stops(fx, th)
        if customer is not None:
            physical = views.physical_events(stops, fx, customer)
    fenced = views.geofence_events(store, t["ticket_id"])  # the live geofence engine's
    if fenced.height:
        physical = pl.concat([physical, fenced], how="diagonal_relaxed").sort("ts")
    check = views.arrival_check(store, t["ticket_id"])
    arrived = ev.filter(pl.col("event_type") == "arrived")
    visit_ts = arrived["ts"][0] if arrived.height else data_clock(store)
    arrival_ts = check["event_ts"] if check and check.get("event_ts") else visit_ts
    near = (
        fx.filter((pl.col("ts") - arrival_ts).abs() <= ARRIVAL_WINDOW).head(200)
        if fx.height
        else fx
    )
    arrival_map = arrival_figure(
        customer=customer,
        fixes=near,
        stop=_stop_from(check, physical),
        radius_m=th.arrival_radius_m,
        basemap=basemap,
        decisive=decisive_fix(check),
    )
    items = build_checklist(views.checklist_inputs(store, t, visit_ts)) if customer else []
    header = html.Div(
        [
            html.H2(
                [
                    f"Ticket {t['ticket_id']} ",
                    dcc.Link(
                        "▶ replay",
                        href=f"/replay?{urlencode({'ticket': t['ticket_id']})}",
                        className="replay-link",
                    ),
                ]
            ),
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
                f"technician {tech or '—'} · physical events from stop detection "
                f"(≤ {th.stop_max_diameter_m:g} m for ≥ {th.stop_min_duration_s:g} s)",
                className="small muted",
            ),
            *_origin_block(ctx, t["ticket_id"]),
        ]
    )
    return (
        header,
        timeline_figure(ev, physical),
        arrival_map,
        evidence_panel(check),
        checklist_panel(items),
    )


def _origin_block(ctx: AppContext, ticket_id: str) -> list[Any]:
    """For a ticket created at an edge node: its origin and the spectrum its rule saw."""
    origin = edge_views.ticket_origin(ctx.store, ticket_id)
    if origin is None:
        return []
    return [
        html.Div(edge_views.origin_summary(origin), className="small", id=ids.TICKET_ORIGIN),
        dcc.Graph(id=ids.TICKET_ORIGIN_SPECTRUM, figure=evidence_spectrum_figure(origin)),
    ]


def register(app: Dash, ctx: AppContext) -> None:
    basemap = Basemap.from_settings(ctx.settings)

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
