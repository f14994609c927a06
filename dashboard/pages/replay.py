"""Reverse-tracing replay: click a lifecycle node, every stream jumps to that moment.

``/replay?ticket=T&node=EVENT_ID&t=ISO_TIME&w=MINUTES`` reproduces a view exactly. A node click
(or a deep link) asks the server once for the window's bundle; scrubbing and playback (0.5×–60×
true elapsed time) then run in the browser (``assets/replay.js``) over the compact samples.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import polars as pl
from dash import ALL, ClientsideFunction, Dash, Input, Output, State, dcc, html, no_update

from dashboard import ids
from dashboard import replay_ids as rid
from dashboard.auth import guard
from dashboard.context import AppContext
from dashboard.evidence import render_evidence_html
from dashboard.figures import replay as figs
from dashboard.figures import replay_panels as panels
from dashboard.figures.maps import Basemap
from dashboard.figures.status import empty_figure
from dashboard.pages import Page
from pipelines.views import edge as edge_views
from pipelines.views.replay import (
    ReplayBundle,
    ReplayError,
    lifecycle,
    replay_bundle,
    ticket_row,
    vibration_samples,
)

ROLES = frozenset({"dispatcher", "analyst"})
SPEEDS = (0.5, 1, 5, 10, 60)
WINDOWS_MIN = (10, 30, 60, 180)
DEFAULT_WINDOW_MIN = 30
TICK_MS = 250
MIN_YEAR, MAX_YEAR = 1970, 2100  # times outside are refused, not replayed
_HIDDEN = {"display": "none"}


def parse_request(search: str | None) -> dict[str, Any]:
    """URL query -> the replay request (ticket, node, t, window_min). Pure."""
    q = {k: v[-1] for k, v in parse_qs((search or "").lstrip("?")).items() if v}
    try:
        window = int(q.get("w", DEFAULT_WINDOW_MIN))
    except ValueError:
        window = DEFAULT_WINDOW_MIN
    return {
        "ticket": q.get("ticket"),
        "node": q.get("node"),
        "t": q.get("t"),
        "window_min": window if window in WINDOWS_MIN else DEFAULT_WINDOW_MIN,
    }


def _parse_time(value: str | None) -> datetime | None:
    """ISO time -> UTC, or None when it is not a time of this era (so windows never overflow)."""
    try:
        t = datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None
    if t is None or not MIN_YEAR <= t.year <= MAX_YEAR:
        return None
    return figs.as_utc(t)


def window_of(req: dict[str, Any]) -> timedelta:
    """Half-width of the replay window; only the offered choices, whatever the client sent."""
    value = req.get("window_min")
    return timedelta(minutes=value if value in WINDOWS_MIN else DEFAULT_WINDOW_MIN)


# fmt: off
def layout(search: str = "", **_: Any) -> html.Div:
    req = parse_request(search)
    controls = html.Div([
        html.Button("▶ Play", id=rid.PLAY, n_clicks=0, className="btn"),
        dcc.RadioItems(id=rid.SPEED, value=1, inline=True,
                       options=[{"label": f"{s:g}×", "value": s} for s in SPEEDS]),
        dcc.Dropdown(id=rid.WINDOW, value=req["window_min"], clearable=False,
                     style={"width": "130px"},
                     options=[{"label": f"±{m} min", "value": m} for m in WINDOWS_MIN]),
        html.B(id=rid.TIME, style={"fontFamily": "monospace", "fontSize": "15px"}),
        html.Div(id=rid.STATUS, className="small muted"),
        html.Button("Export evidence", id=rid.EXPORT, n_clicks=0, className="btn",
                    style={"marginLeft": "auto"}),
    ], className="filters")
    side = html.Div([
        html.H3("Verdict at node"), html.Div(id=rid.VERDICT, className="evidence"),
        html.H3("Weather at T"), html.Div(id=rid.WEATHER, className="small"),
        html.H3("Events"), html.Div(id=rid.EVENTS, className="small"),
    ], className="panel")
    row = {"display": "flex", "gap": "12px", "marginBottom": "12px"}
    return html.Div([
        dcc.Store(id=rid.REQUEST, data=req), dcc.Store(id=rid.SAMPLES),
        dcc.Store(id=rid.CLOCK, data={"playing": False, "wall": None}),
        dcc.Interval(id=rid.INTERVAL, interval=TICK_MS, disabled=True),
        dcc.Download(id=rid.DOWNLOAD), html.Div(id=rid.HEADER),
        dcc.Graph(id=rid.TIMELINE, config={"displayModeBar": False}), controls,
        dcc.Slider(id=rid.SLIDER, min=0, max=3600, value=1800, step=0.001, updatemode="drag",
                   marks=None, tooltip=None, allow_direct_input=False),
        html.Div([
            html.Div(dcc.Graph(id=rid.MAP, config={"scrollZoom": True}, className="map-graph"),
                     style={"flex": "2"}),
            html.Div(side, style={"flex": "1", "minWidth": "280px"}),
        ], style=row),
        html.Div([
            html.Div([html.H3("IoT"), dcc.Graph(id=rid.IOT)], className="panel",
                     style={"flex": "1"}),
            html.Div(dcc.Graph(id=rid.UWB), id=rid.UWB_PANEL, className="panel",
                     style={"flex": "1"}),
        ], style=row),
        html.Div(dcc.Graph(id=rid.SPECTRUM), id=rid.SPECTRUM_PANEL, className="panel"),
    ])
# fmt: on


def _resolve(
    nodes: pl.DataFrame, req: dict[str, Any], created: datetime
) -> tuple[str | None, datetime]:
    """The node to select and the window centre: the node asked for, else ``t``, else the
    first arrival, else the last node, else the ticket's creation."""
    node = nodes.filter(pl.col("event_id") == (req.get("node") or ""))
    t = _parse_time(req.get("t"))
    if node.height:
        return node["event_id"][0], node["ts"][0]
    if t is not None:
        return None, t
    arrived = nodes.filter(pl.col("event_type") == "arrived")
    pick = arrived if arrived.height else nodes.tail(1)
    return (pick["event_id"][0], pick["ts"][0]) if pick.height else (None, created)


def load_bundle(ctx: AppContext, req: dict[str, Any]) -> tuple[ReplayBundle, str | None, datetime]:
    """Request -> (bundle around the node, selected node, cursor time)."""
    ticket = str(req.get("ticket") or "")
    created = ticket_row(ctx.store, ticket)["created_ts"]
    node, at = _resolve(lifecycle(ctx.store, ticket), req, created)
    half = window_of(req)
    bundle = replay_bundle(ctx.store, ticket, at, before=half, after=half)
    t = _parse_time(req.get("t"))
    cursor = t if t is not None and bundle.start <= t <= bundle.end else bundle.at
    return bundle, node, cursor


def spectrum_view(ctx: AppContext, bundle: ReplayBundle) -> tuple[Any, dict[str, Any]]:
    if bundle.vibration.is_empty():
        return empty_figure("No vibration series"), _HIDDEN
    series = bundle.vibration.sort("start_ts").row(-1, named=True)
    row = vibration_samples(ctx.store, series["series_id"])
    if row is None:
        return empty_figure("No vibration series"), _HIDDEN
    title = (
        f"{series['device_id']} · {series['series_id']} · {row['rpm'] or '?'} rpm · "
        "envelope spectrum"
    )
    origin = edge_views.ticket_origin(ctx.store, bundle.ticket["ticket_id"])
    if origin is not None:  # a ticket created at an edge node: say where and by which rule
        title = f"{title}<br>{edge_views.origin_summary(origin)}"
    return panels.spectrum_figure(
        row["samples"], sample_rate_hz=row["sample_rate_hz"], rpm=row["rpm"], title=title
    ), {}


def replay_view(ctx: AppContext, req: dict[str, Any] | None, basemap: Basemap) -> tuple[Any, ...]:
    """The node-click callback body: one bundle, every panel at the cursor, the samples."""
    try:
        bundle, node, cursor = load_bundle(ctx, req or {})
    except ReplayError as exc:
        empty = empty_figure(str(exc))
        msg = html.Div(f"Nothing to replay: {exc}", className="empty", id="replay-empty")
        return (
            None,
            msg,
            empty,
            empty,
            empty,
            empty,
            _HIDDEN,
            empty,
            _HIDDEN,
            "",
            "",
            3600,
            {},
            0,
            {"playing": False, "wall": None},
        )
    t = bundle.ticket
    radius = ctx.settings.thresholds.arrival_radius_m
    window_s = (bundle.end - bundle.start).total_seconds()
    marks = {
        round((r["ts"] - bundle.start).total_seconds(), 3): {"label": r["event_type"]}
        for r in bundle.lifecycle.iter_rows(named=True)
        if bundle.start <= r["ts"] <= bundle.end
    }
    header = html.Div(
        [
            html.H2(f"Replay · ticket {t['ticket_id']}"),
            html.Div(
                " · ".join(
                    str(x) for x in (t["tag"], t["priority"], t["customer_name"], t["address"]) if x
                ),
                className="muted",
            ),
            html.Div(
                f"technicians {', '.join(bundle.technicians) or '—'} · window "
                f"{figs.plot_time(bundle.start)} – {figs.plot_time(bundle.end)} UTC · "
                f"{bundle.gps.height} fixes · {bundle.outages.height} outages · "
                f"{bundle.nearby.height} nearby open tickets · {bundle.alerts.height} alerts",
                className="small muted",
            ),
        ]
    )
    spectrum, spectrum_style = spectrum_view(ctx, bundle)
    return (
        figs.playback_samples(bundle, datum=basemap.datum),
        header,
        figs.timeline_figure(
            bundle.lifecycle, selected=node, cursor=cursor, start=bundle.start, end=bundle.end
        ),
        figs.map_figure(bundle, cursor, radius_m=radius, basemap=basemap),
        panels.iot_figure(bundle.iot, cursor, bundle.start, bundle.end),
        panels.uwb_figure(bundle.uwb_site, bundle.uwb, cursor),
        {"flex": "1"} if bundle.uwb_site else _HIDDEN,
        spectrum,
        spectrum_style,
        panels.verdict_panel(bundle, node),
        panels.event_list(bundle, node, cursor),
        window_s,
        marks,
        round((cursor - bundle.start).total_seconds(), 3),
        {"playing": False, "wall": None},
    )


def export_view(
    ctx: AppContext, req: dict[str, Any] | None, value: float | None, basemap: Basemap
) -> dict[str, Any]:
    bundle, node, cursor = load_bundle(ctx, req or {})
    if value is not None:
        cursor = min(bundle.end, bundle.start + timedelta(seconds=float(value)))
    # The export draws on plain lon/lat axes without tiles: WGS84, whatever the basemap's datum.
    fig = figs.map_figure(
        bundle,
        cursor,
        radius_m=ctx.settings.thresholds.arrival_radius_m,
        basemap=replace(basemap, datum="WGS84"),
    )
    html_text = render_evidence_html(
        bundle,
        node_id=node,
        cursor=cursor,
        map_figure=fig,
        thresholds=ctx.settings.thresholds.model_dump(),
    )
    name = f"evidence-{bundle.ticket['ticket_id']}-{node or 'cursor'}.html"
    return {"content": html_text, "filename": name, "type": "text/html"}


def _clientside(app: Dash, name: str, *deps: Any, **kwargs: Any) -> None:
    """Register ``window.dash_clientside.replay[name]`` (runs in the browser only)."""
    app.clientside_callback(  # type: ignore[no-untyped-call]
        ClientsideFunction("replay", name), *deps, **kwargs
    )


def register(app: Dash, ctx: AppContext) -> None:
    basemap = Basemap.from_settings(ctx.settings)

    @app.callback(
        Output(rid.SAMPLES, "data"),
        Output(rid.HEADER, "children"),
        Output(rid.TIMELINE, "figure"),
        Output(rid.MAP, "figure"),
        Output(rid.IOT, "figure"),
        Output(rid.UWB, "figure"),
        Output(rid.UWB_PANEL, "style"),
        Output(rid.SPECTRUM, "figure"),
        Output(rid.SPECTRUM_PANEL, "style"),
        Output(rid.VERDICT, "children"),
        Output(rid.EVENTS, "children"),
        Output(rid.SLIDER, "max"),
        Output(rid.SLIDER, "marks"),
        Output(rid.SLIDER, "value"),
        Output(rid.CLOCK, "data"),
        Input(rid.REQUEST, "data"),
    )
    @guard(ROLES)
    def load(req: dict[str, Any] | None) -> tuple[Any, ...]:
        return replay_view(ctx, req, basemap)

    @app.callback(
        Output(rid.DOWNLOAD, "data"),
        Input(rid.EXPORT, "n_clicks"),
        State(rid.REQUEST, "data"),
        State(rid.SLIDER, "value"),
        prevent_initial_call=True,
    )
    @guard(ROLES)
    def export(n: int, req: dict[str, Any] | None, value: float | None) -> Any:
        return export_view(ctx, req, value, basemap) if n else no_update

    dup = {"allow_duplicate": True}
    _clientside(
        app,
        "render",
        Output(rid.MAP, "figure", **dup),
        Output(rid.TIMELINE, "figure", **dup),
        Output(rid.IOT, "figure", **dup),
        Output(rid.UWB, "figure", **dup),
        Output(rid.TIME, "children"),
        Output(rid.WEATHER, "children"),
        Output(rid.STATUS, "children"),
        Output({"type": rid.EVENT_ITEM, "index": ALL}, "style"),
        Input(rid.SLIDER, "value"),
        Input(rid.SAMPLES, "data"),
        State(rid.MAP, "figure"),
        State(rid.TIMELINE, "figure"),
        State(rid.IOT, "figure"),
        State(rid.UWB, "figure"),
        State({"type": rid.EVENT_ITEM, "index": ALL}, "id"),
        prevent_initial_call=True,
    )
    _clientside(
        app,
        "toggle",
        Output(rid.CLOCK, "data", **dup),
        Output(rid.INTERVAL, "disabled"),
        Output(rid.PLAY, "children"),
        Input(rid.PLAY, "n_clicks"),
        State(rid.CLOCK, "data"),
        prevent_initial_call=True,
    )
    _clientside(
        app,
        "tick",
        Output(rid.SLIDER, "value", **dup),
        Output(rid.CLOCK, "data", **dup),
        Output(rid.INTERVAL, "disabled", **dup),
        Output(rid.PLAY, "children", **dup),
        Input(rid.INTERVAL, "n_intervals"),
        State(rid.CLOCK, "data"),
        State(rid.SPEED, "value"),
        State(rid.SLIDER, "value"),
        State(rid.SLIDER, "max"),
        prevent_initial_call=True,
    )
    _clientside(
        app,
        "seek",
        Output(rid.REQUEST, "data"),
        Input(rid.TIMELINE, "clickData"),
        Input(rid.WINDOW, "value"),
        State(rid.REQUEST, "data"),
        State(rid.SLIDER, "value"),
        State(rid.SAMPLES, "data"),
        prevent_initial_call=True,
    )
    _clientside(
        app,
        "url",
        Output(ids.URL, "search", **dup),
        Input(rid.SLIDER, "value"),
        Input(rid.CLOCK, "data"),
        State(rid.SAMPLES, "data"),
        State(rid.REQUEST, "data"),
        prevent_initial_call=True,
    )


PAGE = Page(
    path="/replay", name="Replay", layout=layout, register=register, roles=ROLES, in_menu=False
)
