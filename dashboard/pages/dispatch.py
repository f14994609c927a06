"""Dispatch page: live map of technicians, open tickets, geofences, density and alerts + KPIs."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode

from dash import Dash, Input, Output, State, dcc, html, no_update

from dashboard import ids
from dashboard.auth import current_settings, guard
from dashboard.context import AppContext
from dashboard.figures.maps import LAYERS, Basemap, dispatch_figure
from dashboard.figures.status import empty_figure
from dashboard.pages import Page
from pipelines.schema import EVENT_TYPES
from pipelines.views import TicketFilter, data_clock, filter_options
from pipelines.views import dispatch as views

ROLES = frozenset({"dispatcher", "analyst"})
HOUR_CHOICES = (("last 24 h", 24), ("last 7 days", 168), ("last 30 days", 720), ("all", 0))
DEFAULT_LAYERS = ["technicians", "tickets", "hexagons", "alerts"]
STATUS_CHOICES = [e for e in EVENT_TYPES if e != "closed"]


def parse_filters(search: str) -> dict[str, Any]:
    """URL query string -> filter values (unknown keys ignored). Pure."""
    q = {k: v[-1] for k, v in parse_qs(search.lstrip("?")).items() if v}
    layers = [x for x in q.get("layers", ",".join(DEFAULT_LAYERS)).split(",") if x in LAYERS]
    try:
        hours = int(q.get("hours", "0"))
    except ValueError:
        hours = 0
    return {
        "region": q.get("region"),
        "tag": q.get("tag"),
        "status": q.get("status"),
        "hours": hours if hours in {h for _, h in HOUR_CHOICES} else 0,
        "layers": layers,
    }


def build_search(
    region: str | None,
    tag: str | None,
    status: str | None,
    hours: int | None,
    layers: list[str] | None,
) -> str:
    """Filter values -> URL query string (only non-default values). Pure."""
    q: dict[str, str] = {}
    for key, value in (("region", region), ("tag", tag), ("status", status)):
        if value:
            q[key] = value
    if hours:
        q["hours"] = str(hours)
    if layers is not None and sorted(layers) != sorted(DEFAULT_LAYERS):
        q["layers"] = ",".join(x for x in LAYERS if x in layers) or "none"
    return "?" + urlencode(q) if q else ""


def _dropdown(
    id_: str, placeholder: str, value: Any, options: list[Any] | None = None
) -> dcc.Dropdown:
    return dcc.Dropdown(
        id=id_,
        placeholder=placeholder,
        value=value,
        options=options or [],
        clearable=True,
        className="filter",
    )


def layout(search: str = "", **_: Any) -> html.Div:
    f = parse_filters(search)
    refresh_ms = max(5, current_settings().refresh_interval_s) * 1000
    return html.Div(
        [
            html.Div(
                [
                    _dropdown(
                        ids.DISPATCH_REGION,
                        "All regions",
                        f["region"],
                        [f["region"]] if f["region"] else None,
                    ),
                    _dropdown(
                        ids.DISPATCH_TAG, "All tags", f["tag"], [f["tag"]] if f["tag"] else None
                    ),
                    _dropdown(ids.DISPATCH_STATUS, "Any open status", f["status"], STATUS_CHOICES),
                    dcc.Dropdown(
                        id=ids.DISPATCH_HOURS,
                        value=f["hours"],
                        clearable=False,
                        className="filter",
                        options=[{"label": n, "value": h} for n, h in HOUR_CHOICES],
                    ),
                    dcc.Checklist(
                        id=ids.DISPATCH_LAYERS,
                        value=f["layers"],
                        inline=True,
                        options=[{"label": x, "value": x} for x in LAYERS],
                        className="layers",
                    ),
                ],
                className="filters",
            ),
            dcc.Interval(id=ids.DISPATCH_REFRESH, interval=refresh_ms, n_intervals=0),
            dcc.Loading(html.Div(id=ids.DISPATCH_KPIS, className="cards"), type="dot"),
            dcc.Loading(
                dcc.Graph(id=ids.DISPATCH_MAP, config={"scrollZoom": True}, className="map-graph"),
                type="circle",
            ),
            html.Div(id=ids.DISPATCH_NOTE, className="note"),
        ]
    )


def _fmt_minutes(value: float | None) -> str:
    if value is None:
        return "no data"
    if value < 60:
        return f"{value:.0f} min"
    return f"{int(value // 60)} h {value % 60:02.0f} m"


def _fmt_rate(value: float | None) -> str:
    return "no data" if value is None else f"{100 * value:.0f} %"


def kpi_cards(k: dict[str, Any], checks_total: int) -> list[html.Div]:
    """KPI cards from ``views.kpis``; arrival verification says when nothing is computed."""
    verified = "not computed yet" if checks_total == 0 else _fmt_rate(k["verified_rate"])
    items = [
        ("first response", _fmt_minutes(k["first_response_min"]), "created → accepted, median"),
        ("accept → depart idle", _fmt_minutes(k["idle_min"]), "median"),
        ("travel time", _fmt_minutes(k["travel_min"]), "departed → arrived, median"),
        ("on-site time", _fmt_minutes(k["onsite_min"]), "arrived → completed, median"),
        ("revisit for parts", _fmt_rate(k["revisit_rate"]), "parts requested and a second arrival"),
        ("arrival verified", verified, "VERIFIED share of arrival checks"),
        (
            "unnoticed resolution",
            _fmt_rate(k["unnoticed_rate"]),
            "closed without any customer chase",
        ),
    ]
    return [
        html.Div(
            [html.Div(v, className="card-value"), html.Div(label, className="card-label")],
            className="card",
            title=hint,
            **{"data-kpi": label},  # type: ignore[arg-type]
        )
        for label, v, hint in items
    ]


def _filter(
    region: str | None, tag: str | None, status: str | None, hours: int | None
) -> TicketFilter:
    return TicketFilter(
        region=region or None,
        tag=tag or None,
        status=status or None,
        hours=float(hours) if hours else None,
    )


def register(app: Dash, ctx: AppContext) -> None:
    basemap = Basemap(ctx.settings.basemap_style, ctx.settings.basemap_tiles_url)
    radius_m = ctx.settings.thresholds.arrival_radius_m
    filters = [
        Input(ids.DISPATCH_REGION, "value"),
        Input(ids.DISPATCH_TAG, "value"),
        Input(ids.DISPATCH_STATUS, "value"),
        Input(ids.DISPATCH_HOURS, "value"),
    ]

    @app.callback(
        Output(ids.DISPATCH_REGION, "options"),
        Output(ids.DISPATCH_TAG, "options"),
        Input(ids.DISPATCH_REFRESH, "n_intervals"),
    )
    @guard(ROLES)
    def options(_n: int) -> tuple[list[str], list[str]]:
        opts = filter_options(ctx.store)
        return opts["regions"], opts["tags"]

    @app.callback(
        Output(ids.DISPATCH_MAP, "figure"),
        Output(ids.DISPATCH_NOTE, "children"),
        *filters,
        Input(ids.DISPATCH_LAYERS, "value"),
        Input(ids.DISPATCH_REFRESH, "n_intervals"),
    )
    @guard(ROLES)
    def update_map(
        region: str | None,
        tag: str | None,
        status: str | None,
        hours: int | None,
        layers: list[str] | None,
        _n: int,
    ) -> tuple[Any, str]:
        return map_view(
            ctx, _filter(region, tag, status, hours), set(layers or []), basemap, radius_m
        )

    @app.callback(
        Output(ids.DISPATCH_KPIS, "children"), *filters, Input(ids.DISPATCH_REFRESH, "n_intervals")
    )
    @guard(ROLES)
    def update_kpis(
        region: str | None, tag: str | None, status: str | None, hours: int | None, _n: int
    ) -> list[html.Div]:
        f = _filter(region, tag, status, hours)
        store = ctx.store
        return kpi_cards(views.kpis(store, f, data_clock(store)), store.count("arrival_checks"))

    @app.callback(
        Output(ids.URL, "search", allow_duplicate=True),
        *filters,
        Input(ids.DISPATCH_LAYERS, "value"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    @guard(ROLES)
    def keep_filters_in_url(
        region: str | None,
        tag: str | None,
        status: str | None,
        hours: int | None,
        layers: list[str] | None,
        current: str | None,
    ) -> Any:
        search = build_search(region, tag, status, hours, layers)
        return no_update if search == (current or "") else search

    @app.callback(
        Output(ids.URL, "href"), Input(ids.DISPATCH_MAP, "clickData"), prevent_initial_call=True
    )
    @guard(ROLES)
    def open_detail(click: dict[str, Any] | None) -> Any:
        return detail_href(click)


def detail_href(click: dict[str, Any] | None) -> Any:
    """Map click -> ``/ticket?id=...`` (a technician opens their current ticket). Pure."""
    for point in (click or {}).get("points", []):
        data = point.get("customdata") or []
        if len(data) >= 2 and data[0] == "t":
            return "/ticket?" + urlencode({"id": data[1]})
        if len(data) >= 3 and data[0] == "k" and data[2]:
            return "/ticket?" + urlencode({"id": data[2], "technician": data[1]})
    return no_update


def map_view(
    ctx: AppContext, f: TicketFilter, visible: set[str], basemap: Basemap, radius_m: float
) -> tuple[Any, str]:
    """The dispatch map callback body: queries, aggregation, figure (the bench calls this)."""
    store = ctx.store
    now = data_clock(store)
    tickets = views.open_tickets(store, f, now)
    technicians = views.technician_positions(store, f, now)
    if tickets.height == 0 and technicians.height == 0:
        return empty_figure("No open tickets or technician positions for these filters"), ""
    points, aggregated = views.ticket_points(tickets)
    fig = dispatch_figure(
        technicians=technicians,
        tickets=points,
        aggregated=aggregated,
        geofences=views.geofence_centres(tickets),
        hexes=views.hex_density(tickets),
        alerts=views.active_alerts(store, f),
        visible=visible,
        basemap=basemap,
        radius_m=radius_m,
    )
    note = (
        f"{tickets.height:,} open tickets"
        + (f", shown as {points.height:,} bins" if aggregated else "")
        + f" · {technicians.height:,} technicians · data clock {now:%Y-%m-%d %H:%M} UTC"
    )
    return fig, note


PAGE = Page(path="/dispatch", name="Dispatch", layout=layout, register=register, roles=ROLES)
