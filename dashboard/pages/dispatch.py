"""Dispatch page: live map of technicians, open tickets, geofences, density and alerts + KPIs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

from dash import Dash, Input, Output, Patch, State, dcc, html, no_update

from dashboard import ids
from dashboard.auth import current_settings, guard
from dashboard.context import AppContext
from dashboard.figures.maps import LAYERS, Basemap, dispatch_figure
from dashboard.figures.status import empty_figure
from dashboard.pages import Page
from pipelines.views import TicketFilter, data_clock, data_span, default_as_of, filter_options
from pipelines.views import dispatch as views
from pipelines.views import live as live_views
from pipelines.vocabulary import EVENT_TYPES

ROLES = frozenset({"dispatcher", "analyst"})
HOUR_CHOICES = (("last 24 h", 24), ("last 7 days", 168), ("last 30 days", 720), ("all", 0))
DEFAULT_LAYERS = ["technicians", "tickets", "hexagons", "alerts"]
STATUS_CHOICES = [e for e in EVENT_TYPES if e != "closed"]
AT_STEP_S = 3600
AT_LATEST = "latest"
LIVE, ASOF = "live", "asof"
LIVE_TICK_MS = 500  # live mode polls the latest positions this often (<= 2 s behind)
_AT_FORMAT = "%Y-%m-%dT%H:%M"


def parse_at(value: str | None, tz: str) -> int | str | None:
    """``at=`` -> epoch seconds (local ISO minute in ``tz``), ``"latest"`` or None. Pure."""
    if not value:
        return None
    if value == AT_LATEST:
        return AT_LATEST
    try:
        local = datetime.strptime(value, _AT_FORMAT).replace(tzinfo=ZoneInfo(tz))
    except (TypeError, ValueError):
        return None
    if not 1970 <= local.year <= 2100:
        return None
    return int(local.timestamp())


def format_at(epoch_s: float, tz: str, *, fmt: str = _AT_FORMAT) -> str:
    """Epoch seconds -> local time text in ``tz``. Pure."""
    return datetime.fromtimestamp(epoch_s, ZoneInfo(tz)).strftime(fmt)


def slider_marks(first_s: int, last_s: int, tz: str) -> dict[str, str]:
    """Labelled ticks for the as-of slider: Mondays (local) over weeks, else every 6 h. Pure."""
    zone = ZoneInfo(tz)
    long_span = last_s - first_s > 3 * 86_400
    step = timedelta(days=1) if long_span else timedelta(hours=6)
    tick = datetime.fromtimestamp(first_s, zone).replace(minute=0, second=0, microsecond=0)
    tick = tick.replace(hour=0) if long_span else tick.replace(hour=tick.hour // 6 * 6)
    marks: dict[str, str] = {}
    while tick.timestamp() <= last_s:
        if tick.timestamp() >= first_s and (not long_span or tick.weekday() == 0):
            marks[str(int(tick.timestamp()))] = tick.strftime("%a %d %b" if long_span else "%H:00")
        tick += step
    return marks


def slider_range(first: datetime, clock: datetime) -> tuple[int, int]:
    """(min, max) epoch seconds of the slider: whole hours around the data. Pure."""
    lo = int(first.timestamp()) // AT_STEP_S * AT_STEP_S
    hi = -(-int(clock.timestamp()) // AT_STEP_S) * AT_STEP_S
    return lo, max(hi, lo + AT_STEP_S)


def parse_filters(search: str, tz: str = "UTC") -> dict[str, Any]:
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
        "at": parse_at(q.get("at"), tz),
    }


def build_search(
    region: str | None,
    tag: str | None,
    status: str | None,
    hours: int | None,
    layers: list[str] | None,
    at: tuple[float, float, str] | None = None,
) -> str:
    """Filter values -> URL query string (only non-default values). Pure.

    ``at`` is (slider value, slider max, zone): the end of the slider is ``at=latest``, which
    follows the data clock of a live store.
    """
    q: dict[str, str] = {}
    for key, value in (("region", region), ("tag", tag), ("status", status)):
        if value:
            q[key] = value
    if hours:
        q["hours"] = str(hours)
    if layers is not None and sorted(layers) != sorted(DEFAULT_LAYERS):
        q["layers"] = ",".join(x for x in LAYERS if x in layers) or "none"
    if at is not None:
        at_s, top, tz = at
        q["at"] = AT_LATEST if at_s >= top else format_at(at_s, tz)
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
    settings = current_settings()
    f = parse_filters(search, settings.timezone)
    refresh_ms = max(5, settings.refresh_interval_s) * 1000
    mode = LIVE if parse_qs(search.lstrip("?")).get("mode", [""])[-1] == LIVE else ASOF
    return html.Div(
        [
            html.Div(
                [
                    dcc.RadioItems(
                        id=ids.DISPATCH_MODE,
                        value=mode,
                        inline=True,
                        options=[
                            {"label": "live", "value": LIVE},
                            {"label": "as of", "value": ASOF},
                        ],
                        className="mode",
                    ),
                    dcc.Interval(
                        id=ids.DISPATCH_LIVE_TICK, interval=LIVE_TICK_MS, disabled=mode != LIVE
                    ),
                    dcc.Store(id=ids.DISPATCH_LIVE_SINCE),
                    dcc.Store(id=ids.DISPATCH_LIVE_INDEX),
                ],
                className="mode-bar",
            ),
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
            html.Div(
                [
                    html.Span("as of", className="muted small"),
                    html.Div(
                        dcc.Slider(
                            id=ids.DISPATCH_AT,
                            min=0,
                            max=0,  # 0 = not loaded yet; the range callback sets the span
                            step=AT_STEP_S,
                            # The URL's moment; "latest"/None are resolved by the range callback.
                            value=f["at"] if isinstance(f["at"], int) else None,
                            marks=None,
                            allow_direct_input=False,
                            included=False,
                            updatemode="mouseup",
                        ),
                        className="as-of-slider",
                    ),
                    html.Span(id=ids.DISPATCH_AT_LABEL, className="as-of-label"),
                    html.Button("latest", id=ids.DISPATCH_AT_LATEST, className="btn"),
                ],
                className="as-of",
            ),
            dcc.Store(id=ids.DISPATCH_AT_WANT, data=f["at"]),
            dcc.Interval(id=ids.DISPATCH_REFRESH, interval=refresh_ms, n_intervals=0),
            dcc.Loading(html.Div(id=ids.DISPATCH_KPIS, className="cards"), type="dot"),
            dcc.Loading(
                dcc.Graph(id=ids.DISPATCH_MAP, config={"scrollZoom": True}, className="map-graph"),
                type="circle",
            ),
            html.Div(id=ids.DISPATCH_NOTE, className="note"),
            html.Ol(id=ids.DISPATCH_TICKER, className="ticker"),
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
    on_site = "not computed yet"
    if checks_total:
        at_door, on = k["at_door_rate"], k["on_site_rate"]
        confirmed = None if at_door is None or on is None else at_door + on
        on_site = f"{_fmt_rate(confirmed)} ({_fmt_rate(at_door)} at door)"
    tiers_hint = "AT_DOOR + ON_SITE share of arrival checks; " + ", ".join(
        f"{name} {_fmt_rate(k.get(f'{name.lower()}_rate'))}"
        for name in ("AT_DOOR", "ON_SITE", "INCONCLUSIVE", "REJECTED")
    )
    items = [
        ("first response", _fmt_minutes(k["first_response_min"]), "created → accepted, median"),
        ("accept → depart idle", _fmt_minutes(k["idle_min"]), "median"),
        ("travel time", _fmt_minutes(k["travel_min"]), "departed → arrived, median"),
        ("on-site time", _fmt_minutes(k["onsite_min"]), "arrived → completed, median"),
        ("revisit for parts", _fmt_rate(k["revisit_rate"]), "parts requested and a second arrival"),
        ("arrival on site", on_site, tiers_hint),
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
    basemap = Basemap.from_settings(ctx.settings)
    radius_m = ctx.settings.thresholds.arrival_radius_m
    tz = ctx.settings.timezone
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
        Output(ids.DISPATCH_AT, "min"),
        Output(ids.DISPATCH_AT, "max"),
        Output(ids.DISPATCH_AT, "marks"),
        Output(ids.DISPATCH_AT, "value"),
        Input(ids.DISPATCH_REFRESH, "n_intervals"),
        State(ids.DISPATCH_AT, "value"),
        State(ids.DISPATCH_AT, "max"),
        State(ids.DISPATCH_AT_WANT, "data"),
    )
    @guard(ROLES)
    def at_range(
        _n: int, value: int | None, prev_max: int | None, want: int | str | None
    ) -> tuple[Any, ...]:
        lo, hi, default = at_bounds(ctx, datetime.now(UTC))
        if value is None:
            value = hi if want == AT_LATEST else default
        elif prev_max and value >= prev_max:
            value = hi  # at the end of the slider: follow the data clock
        return lo, hi, slider_marks(lo, hi, tz), min(max(value, lo), hi)

    @app.callback(
        Output(ids.DISPATCH_AT, "value", allow_duplicate=True),
        Input(ids.DISPATCH_AT_LATEST, "n_clicks"),
        State(ids.DISPATCH_AT, "max"),
        prevent_initial_call=True,
    )
    @guard(ROLES)
    def at_latest(_clicks: int | None, top: int | None) -> Any:
        return top or no_update

    @app.callback(
        Output(ids.DISPATCH_AT_LABEL, "children"),
        Input(ids.DISPATCH_AT, "drag_value"),
        Input(ids.DISPATCH_AT, "value"),
        State(ids.DISPATCH_AT, "max"),
    )
    @guard(ROLES)
    def at_label(dragged: int | None, value: int | None, top: int | None) -> str:
        shown = dragged if dragged is not None else value
        if shown is None:
            return ""
        if top and shown >= top:
            return "latest: the data clock"  # the slider's end is the next whole hour
        return f"{format_at(shown, tz, fmt='%a %d %b %Y %H:%M')} ({tz})"

    @app.callback(
        Output(ids.DISPATCH_MAP, "figure"),
        Output(ids.DISPATCH_NOTE, "children"),
        Output(ids.DISPATCH_LIVE_INDEX, "data"),
        *filters,
        Input(ids.DISPATCH_LAYERS, "value"),
        Input(ids.DISPATCH_AT, "value"),
        Input(ids.DISPATCH_REFRESH, "n_intervals"),
        State(ids.DISPATCH_MODE, "value"),
    )
    @guard(ROLES)
    def update_map(
        region: str | None,
        tag: str | None,
        status: str | None,
        hours: int | None,
        layers: list[str] | None,
        at_s: int | None,
        _n: int,
        mode: str | None,
    ) -> tuple[Any, Any, Any]:
        if at_s is None:
            return no_update, no_update, no_update  # the range callback resolves it first
        fig, note = map_view(
            ctx,
            _filter(region, tag, status, hours),
            set(layers or []),
            basemap,
            radius_m,
            at=datetime.fromtimestamp(at_s, UTC),
            live=mode == LIVE,
        )
        return fig, note, technician_index(fig)

    @app.callback(
        Output(ids.DISPATCH_LIVE_TICK, "disabled"),
        Output(ids.DISPATCH_AT, "disabled"),
        Output(ids.DISPATCH_AT, "value", allow_duplicate=True),
        Input(ids.DISPATCH_MODE, "value"),
        State(ids.DISPATCH_AT, "max"),
        prevent_initial_call="initial_duplicate",
    )
    @guard(ROLES)
    def switch_mode(mode: str | None, top: int | None) -> tuple[Any, ...]:
        """Live: polling on, the as-of slider pinned to the latest; as of: polling off."""
        live = mode == LIVE
        return not live, live, (top or no_update) if live else no_update

    @app.callback(
        Output(ids.DISPATCH_MAP, "figure", allow_duplicate=True),
        Output(ids.DISPATCH_LIVE_SINCE, "data"),
        Output(ids.DISPATCH_TICKER, "children"),
        Input(ids.DISPATCH_LIVE_TICK, "n_intervals"),
        State(ids.DISPATCH_LIVE_INDEX, "data"),
        State(ids.DISPATCH_LIVE_SINCE, "data"),
        prevent_initial_call=True,
    )
    @guard(ROLES)
    def live_tick(
        _n: int, index: dict[str, list[int]] | None, since: str | None
    ) -> tuple[Any, ...]:
        """Move the technicians the writer saw since the last tick (a patch, no redraw)."""
        return live_patch(ctx, index or {}, since)

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
        Input(ids.DISPATCH_AT, "value"),
        State(ids.DISPATCH_AT, "max"),
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
        at_s: int | None,
        top: int | None,
        current: str | None,
    ) -> Any:
        at = (at_s, top, tz) if at_s is not None and top else None
        search = build_search(region, tag, status, hours, layers, at)
        return no_update if search == (current or "") else search

    @app.callback(
        Output(ids.URL, "href"), Input(ids.DISPATCH_MAP, "clickData"), prevent_initial_call=True
    )
    @guard(ROLES)
    def open_detail(click: dict[str, Any] | None) -> Any:
        return detail_href(click)


def at_bounds(ctx: AppContext, wall_clock: datetime) -> tuple[int, int, int]:
    """Slider (min, max) and the default moment, epoch seconds, from the store's time span."""
    first, clock, latest_created = data_span(ctx.store)
    lo, hi = slider_range(first, clock)
    default = default_as_of(
        first, clock, latest_created, wall_clock=wall_clock, tz=ctx.settings.timezone
    )
    return lo, hi, int(default.timestamp())


def technician_index(fig: Any) -> dict[str, list[int]]:
    """Technician id -> [trace, point] of its marker on the dispatch figure. Pure."""
    data = fig.get("data", []) if isinstance(fig, dict) else []
    out: dict[str, list[int]] = {}
    for t, trace in enumerate(data):
        if trace.get("meta") != "technicians":
            continue
        for p, custom in enumerate(trace.get("customdata") or []):
            out[str(custom[1])] = [t, p]
    return out


def live_patch(
    ctx: AppContext, index: dict[str, list[int]], since: str | None
) -> tuple[Any, Any, Any]:
    """The live tick's body: a figure patch moving technicians with newer fixes, the newest
    fix time seen, and the ticker (the bench calls this)."""
    store = ctx.store
    start = datetime.fromisoformat(since) if since else live_views.latest_fix_time(store)
    rows = ticker_items(live_views.ticker(store))
    if start is None:
        return no_update, no_update, rows
    moved = live_views.latest_positions(store, start)
    if moved.height == 0:
        return no_update, since or start.isoformat(), rows
    patch = Patch()
    changed = False
    for tech, lat, lon in moved.select("technician_id", "lat", "lon").iter_rows():
        where = index.get(tech)
        if where is None:
            continue  # not drawn yet: the next full refresh adds it
        trace, point = where
        patch["data"][trace]["lat"][point] = round(lat, 5)
        patch["data"][trace]["lon"][point] = round(lon, 5)
        changed = True
    newest = moved["ts"].max()
    assert isinstance(newest, datetime)
    return (patch if changed else no_update), newest.isoformat(), rows


def ticker_items(frame: Any) -> list[html.Li]:
    """Ticker rows (``pipelines.views.live.ticker``) as list items. Pure."""
    return [
        html.Li(
            [
                html.Span(f"{at:%H:%M:%S}", className="muted small"),
                " ",
                html.B(kind),
                f" {subject}: {text}",
            ],
            className=f"ticker-{kind}",
        )
        for at, kind, subject, text in frame.iter_rows()
    ]


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
    ctx: AppContext,
    f: TicketFilter,
    visible: set[str],
    basemap: Basemap,
    radius_m: float,
    *,
    at: datetime | None = None,
    live: bool = False,
) -> tuple[Any, Any]:
    """The dispatch map callback body: the board as of ``at`` (None or later: the data clock).
    ``live``: technicians at their latest fix even past the data clock (the live writer
    commits positions ahead of ticket events).

    Queries, aggregation, figure (the bench calls this).
    """
    store = ctx.store
    clock = data_clock(store)
    now = clock if at is None else min(at, clock)
    tickets = views.open_tickets(store, f, now)
    newest = live_views.latest_fix_time(store) if live else None
    technicians = views.technician_positions(store, f, max(now, newest) if newest else now)
    tz = ctx.settings.timezone
    when = format_at(now.timestamp(), tz, fmt="%Y-%m-%d %H:%M")
    if tickets.height == 0 and technicians.height == 0:
        return (
            empty_figure("No open tickets or technician positions at this moment"),
            f"0 open tickets · as of {when} {tz}",
        )
    points, aggregated = views.ticket_points(tickets)
    fig = dispatch_figure(
        technicians=technicians,
        tickets=points,
        aggregated=aggregated,
        geofences=views.geofence_centres(tickets),
        hexes=views.hex_density(tickets),
        alerts=views.active_alerts(store, f, now),
        visible=visible,
        basemap=basemap,
        radius_m=radius_m,
    )
    note = html.Span(
        [
            html.B(f"{tickets.height:,}", id="dispatch-open-count"),
            " open tickets"
            + (f", shown as {points.height:,} bins" if aggregated else "")
            + f" · {technicians.height:,} technicians · as of {when} {tz}"
            + f" · data clock {format_at(clock.timestamp(), tz, fmt='%Y-%m-%d %H:%M')}",
        ]
    )
    return fig, note


PAGE = Page(path="/dispatch", name="Dispatch", layout=layout, register=register, roles=ROLES)
