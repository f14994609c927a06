"""The trend report's breakpoints on the analytics page: the figure table, the breakdowns
that show where each figure comes from, and the Gi* hot spots of missing-part revisits.
Pure: frames in, figures (or Dash components) out."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from dash import html
from plotly.subplots import make_subplots

from dashboard.figures.maps import (
    Basemap,
    cell_outline,
    cells_geojson,
    center_zoom,
    map_layout,
    to_basemap,
)
from dashboard.figures.status import empty_figure
from pipelines.views.report import Breakdown

_VALUE_FORMAT = {"min": "{:.1f} min", "h": "{:.2f} h", "share": "{:.1%}"}
_CAUSE = "#e03131"
_OTHER = "#adb5bd"


def format_value(value: float | None, unit: str) -> str:
    """A figure as text in its unit ('—' when there is none). Pure."""
    return "—" if value is None else _VALUE_FORMAT[unit].format(value)


def report_table(table: pl.DataFrame) -> html.Table:
    """Figure · report · this store · within ±10 % · where it comes from."""
    head = html.Tr(
        [
            html.Th(c)
            for c in ("figure", "trend report", "this store", "±10 %", "where it comes from")
        ]
    )
    rows = []
    for r in table.iter_rows(named=True):
        within = {True: "✓ within", False: "✗ outside", None: "—"}[r["within_10pct"]]
        rows.append(
            html.Tr(
                [
                    html.Td(r["figure"]),
                    html.Td(format_value(r["report"], r["unit"])),
                    html.Td(f"{format_value(r['value'], r['unit'])} (n={r['n']:,})"),
                    html.Td(within, className="ok" if r["within_10pct"] else ""),
                    html.Td(
                        f"{r['dimension']}: {r['top_group']} "
                        f"{format_value(r['top_value'], r['unit'])}"
                        if r["top_group"] is not None
                        else "—"
                    ),
                ],
                **{"data-figure": r["figure"]},
            )
        )
    return html.Table([html.Thead(head), html.Tbody(rows)], className="report-table")


def _is_cause(b: Breakdown, group: str, value: float | None, overall: float | None) -> bool:
    """The group the figure comes from: the extreme group of the breakdown."""
    if value is None or overall is None or b.rows.height == 0:
        return False
    values = [float(v) for v in b.rows["value"].to_list() if v is not None]
    if b.figure == "customer-unnoticed resolution":
        return float(value) == min(values)
    if b.figure == "missing-part revisits":
        return group.startswith("flagged")
    return float(value) == max(values)


def breakdowns_figure(breakdowns: list[Breakdown], units: dict[str, str]) -> go.Figure:
    """One bar panel per breakpoint: its value per group, the overall value as a dotted line,
    the group(s) it comes from in red."""
    if not breakdowns or all(b.rows.height == 0 for b in breakdowns):
        return empty_figure("No tickets yet: the report's figures need ticket events")
    titles = [f"{b.figure} by {b.dimension}" for b in breakdowns]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.32)
    for i, b in enumerate(breakdowns):
        row, col = divmod(i, 2)
        unit = units[b.figure]
        groups = b.rows["group"].to_list()[::-1] if b.rows.height else []
        values = b.rows["value"].to_list()[::-1] if b.rows.height else []
        ns = b.rows["n"].to_list()[::-1] if b.rows.height else []
        colours = [
            _CAUSE if _is_cause(b, g, v, b.value) else _OTHER
            for g, v in zip(groups, values, strict=True)
        ]
        scale = 100.0 if unit == "share" else 1.0
        fig.add_trace(
            go.Bar(
                x=[None if v is None else v * scale for v in values],
                y=groups,
                orientation="h",
                marker_color=colours,
                customdata=ns,
                meta=f"report:{b.figure}",
                name=b.figure,
                hovertemplate="%{y}: %{x:.2f}"
                + (" %" if unit == "share" else f" {unit}")
                + " (n=%{customdata})<extra></extra>",
            ),
            row=row + 1,
            col=col + 1,
        )
        if b.value is not None:
            fig.add_vline(
                x=b.value * scale, line_dash="dot", line_color="#495057", row=row + 1, col=col + 1
            )
        fig.update_xaxes(
            title_text="%" if unit == "share" else unit, row=row + 1, col=col + 1, title_standoff=2
        )
    fig.update_layout(
        template="plotly_white",
        height=620,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        showlegend=False,
        title="Where each figure comes from (red: the group behind it; dotted: overall)",
    )
    fig.update_yaxes(tickfont={"size": 10}, automargin=True)
    return fig


def hotspots_figure(gi: pl.DataFrame, basemap: Basemap) -> go.Figure:
    """Gi* z per H3 cell of missing-part revisits; hot cells (significant, z > 0) outlined."""
    if gi.height == 0:
        return empty_figure("No missing-part revisits to map yet")
    cells = gi["cell_id"].to_list()
    fig = go.Figure(
        go.Choroplethmap(
            geojson=cells_geojson(cells),
            locations=cells,
            z=gi["z"].fill_nan(0.0).fill_null(0.0).round(2).to_list(),
            customdata=gi.select("count", "p_sim").to_numpy().tolist(),
            colorscale="RdBu_r",
            zmid=0,
            marker={"opacity": 0.55, "line": {"width": 0}},
            colorbar={"title": "Gi* z"},
            meta="hotspots",
            name="Gi* z",
            hovertemplate=(
                "%{location}<br>revisits %{customdata[0]:.0f} · z %{z:.2f} · "
                "p %{customdata[1]:.3f}<extra></extra>"
            ),
        )
    )
    hot = gi.filter(pl.col("hot"))["cell_id"].to_list()
    lat, lon = cell_outline(hot)
    fig.add_trace(
        go.Scattermap(
            lat=lat,
            lon=lon,
            mode="lines",
            line={"color": _CAUSE, "width": 2},
            meta="hot-cells",
            name=f"hot spots ({len(hot)} cells)",
        )
    )
    center, zoom = center_zoom(gi["lat"].to_list(), gi["lon"].to_list(), max_zoom=13)
    fig.update_layout(**map_layout(basemap, center, zoom, height=420))
    fig.update_layout(
        title={"text": "Hot spots of missing-part revisits (Getis-Ord Gi*)", "y": 0.98},
        margin={"l": 0, "r": 0, "t": 32, "b": 0},
    )
    return to_basemap(fig, basemap)
