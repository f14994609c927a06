"""Analytics page (analysts): journey segments, lags, regions, technicians, verdicts and their
calibration, and the trend report's figures with their breakdowns and the Gi* hot spots of
missing-part revisits."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, dcc, html

from dashboard import ids
from dashboard.auth import guard
from dashboard.context import AppContext
from dashboard.figures import analytics as figs
from dashboard.figures import report as report_figs
from dashboard.figures.maps import Basemap
from dashboard.pages import Page
from pipelines.views import analytics as views
from pipelines.views import filter_options
from pipelines.views import report as report_views

ROLES = frozenset({"analyst"})


def _graph(id_: str) -> dcc.Loading:
    return dcc.Loading(dcc.Graph(id=id_), type="circle")


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Journey analytics"),
            html.Div(
                dcc.Dropdown(
                    id=ids.ANALYTICS_REGION, placeholder="All regions", className="filter"
                ),
                className="filters",
            ),
            html.Div(
                [_graph(ids.ANALYTICS_SEGMENTS), _graph(ids.ANALYTICS_LAG)], className="grid-2"
            ),
            html.Div(
                [_graph(ids.ANALYTICS_REGIONS), _graph(ids.ANALYTICS_TECHNICIANS)],
                className="grid-2",
            ),
            _graph(ids.ANALYTICS_VERDICTS),
            reliability_section(),
            report_section(),
        ]
    )


def reliability_section() -> html.Div:
    """Are the verdicts' probabilities calibrated? Predicted against labelled outcomes."""
    return html.Div(
        [
            html.H3("Verdict calibration"),
            html.P(
                "Each arrival verdict states P(within 5 m) and P(on site). Among labelled "
                "arrivals, the share truly within is plotted against the predicted "
                "probability, per decile (sparse deciles pooled). On the diagonal the "
                "probabilities mean what they say.",
                className="hint",
            ),
            _graph(ids.ANALYTICS_RELIABILITY),
        ]
    )


def reliability_view(ctx: AppContext, region: str | None) -> Any:
    th = ctx.settings.thresholds
    bins = views.reliability(
        ctx.store, region, radius_m=th.arrival_radius_m, site_radius_m=th.site_radius_m
    )
    return figs.reliability_figure(bins)


# -- the trend report's figures (own section and callback) --------------------------------
def report_section() -> html.Div:
    return html.Div(
        [
            html.H3("The trend report's figures on this store"),
            html.P(
                "Each breakpoint of the 2026 trend report measured on the store, with the "
                "breakdown that shows where it comes from. Definitions: report → create over "
                "tickets with a report time (a phone call before creation); accept → depart "
                "from the first accepted to the first departed event; missing-part revisits "
                "of parts-related tickets (tags with any parts request): a parts request and a "
                "second arrival; unnoticed resolution: closed with no customer chase (a "
                "customer_chased event: the customer called or wrote to ask).",
                className="hint",
            ),
            dcc.Loading(html.Div(id=ids.ANALYTICS_REPORT_TABLE), type="circle"),
            _graph(ids.ANALYTICS_REPORT_BREAKDOWNS),
            _graph(ids.ANALYTICS_HOTSPOTS),
        ],
        className="report-section",
    )


def report_view(ctx: AppContext) -> tuple[Any, ...]:
    store = ctx.store
    breakdowns = report_views.report_breakdowns(store)
    return (
        report_figs.report_table(report_views.report_table(breakdowns)),
        report_figs.breakdowns_figure(breakdowns, report_views.UNITS),
        report_figs.hotspots_figure(
            report_views.revisit_hotspots(store), Basemap.from_settings(ctx.settings)
        ),
    )


def register_report(app: Dash, ctx: AppContext) -> None:
    @app.callback(
        Output(ids.ANALYTICS_REPORT_TABLE, "children"),
        Output(ids.ANALYTICS_REPORT_BREAKDOWNS, "figure"),
        Output(ids.ANALYTICS_HOTSPOTS, "figure"),
        Input(ids.ANALYTICS_REPORT_TABLE, "id"),
    )
    @guard(ROLES)
    def report(_id: str) -> tuple[Any, ...]:
        return report_view(ctx)


def analytics_view(ctx: AppContext, region: str | None) -> tuple[Any, ...]:
    store = ctx.store
    return (
        figs.segments_figure(views.segment_quantiles(store, region), views.SEGMENT_NAMES),
        figs.lag_figure(views.lag_histogram(store, region)),
        figs.regions_figure(views.region_medians(store), views.SEGMENT_NAMES),
        figs.technicians_figure(views.technician_medians(store, region)),
        figs.verdicts_figure(views.verdict_mix(store, region)),
    )


def register(app: Dash, ctx: AppContext) -> None:
    @app.callback(Output(ids.ANALYTICS_REGION, "options"), Input(ids.ANALYTICS_REGION, "id"))
    @guard(ROLES)
    def options(_id: str) -> list[str]:
        return filter_options(ctx.store)["regions"]

    @app.callback(
        Output(ids.ANALYTICS_SEGMENTS, "figure"),
        Output(ids.ANALYTICS_LAG, "figure"),
        Output(ids.ANALYTICS_REGIONS, "figure"),
        Output(ids.ANALYTICS_TECHNICIANS, "figure"),
        Output(ids.ANALYTICS_VERDICTS, "figure"),
        Input(ids.ANALYTICS_REGION, "value"),
    )
    @guard(ROLES)
    def update(region: str | None) -> tuple[Any, ...]:
        return analytics_view(ctx, region or None)

    @app.callback(Output(ids.ANALYTICS_RELIABILITY, "figure"), Input(ids.ANALYTICS_REGION, "value"))
    @guard(ROLES)
    def update_reliability(region: str | None) -> Any:
        return reliability_view(ctx, region or None)

    register_report(app, ctx)


PAGE = Page(path="/analytics", name="Analytics", layout=layout, register=register, roles=ROLES)
