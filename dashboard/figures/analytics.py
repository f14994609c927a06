"""Analytics figures: pictures of the journey, built from pre-aggregated frames."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from dashboard.figures.status import empty_figure

_LAYOUT = {
    "template": "plotly_white",
    "height": 360,
    "margin": {"l": 10, "r": 10, "t": 48, "b": 10},
}
VERDICT_COLOURS = {"VERIFIED": "#2b8a3e", "INCONCLUSIVE": "#f08c00", "REJECTED": "#e03131"}


def segments_figure(q: pl.DataFrame, order: tuple[str, ...]) -> go.Figure:
    """Box per journey segment from precomputed quantiles (whiskers: p05–p95), log minutes."""
    if q.height == 0:
        return empty_figure("No completed journey segments yet")
    q = q.with_columns(pl.col("segment").cast(pl.Enum(order))).sort("segment", descending=True)
    labels = [f"{s} (n={n:,})" for s, n in zip(q["segment"], q["n"], strict=True)]
    fig = go.Figure(
        go.Box(
            y=labels,
            q1=q["p25"].to_list(),
            median=q["p50"].to_list(),
            q3=q["p75"].to_list(),
            lowerfence=q["p05"].to_list(),
            upperfence=q["p95"].to_list(),
            orientation="h",
            marker_color="#1c7ed6",
            name="minutes",
            meta="segments",
        )
    )
    fig.update_layout(
        **_LAYOUT,
        title="Journey segments (minutes; box p25–p75, whiskers p5–p95)",
        xaxis={"type": "log", "title": "minutes"},
        showlegend=False,
    )
    return fig


def lag_figure(hist: pl.DataFrame) -> go.Figure:
    if hist.height == 0:
        return empty_figure("Status-vs-physical lag: arrival checks not computed yet")
    fig = go.Figure(
        go.Bar(
            x=hist["lag_min"].to_list(), y=hist["n"].to_list(), marker_color="#7048e8", meta="lag"
        )
    )
    fig.add_vline(x=0, line_dash="dot", line_color="#495057")
    fig.update_layout(
        **_LAYOUT,
        title="'arrived' tapped minus physical arrival (minutes)",
        xaxis_title="minutes (negative: tapped before arriving)",
        yaxis_title="arrivals",
    )
    return fig


def regions_figure(medians: pl.DataFrame, order: tuple[str, ...]) -> go.Figure:
    """Heatmap region × segment of median minutes."""
    if medians.height == 0:
        return empty_figure("No journeys per region yet")
    wide = medians.pivot(on="segment", index="region", values="minutes").sort("region")
    cols = [s for s in order if s in wide.columns]
    z = wide.select(cols).to_numpy()
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=wide["region"].to_list(),
            colorscale="YlOrRd",
            texttemplate="%{z:.0f}",
            colorbar={"title": "min"},
            meta="regions",
        )
    )
    fig.update_layout(**_LAYOUT, title="Median minutes by region and segment")
    return fig


def technicians_figure(tech: pl.DataFrame) -> go.Figure:
    """One dot per technician: idle vs on-site, size = tickets, colour = travel."""
    tech = tech.drop_nulls(["idle_min", "onsite_min"])
    if tech.height == 0:
        return empty_figure("No technician journeys yet")
    size = (tech["tickets"].cast(pl.Float64).sqrt() * 4 + 4).to_list()
    fig = go.Figure(
        go.Scatter(
            x=tech["idle_min"].to_list(),
            y=tech["onsite_min"].to_list(),
            mode="markers",
            text=tech["technician_id"].to_list(),
            meta="technicians",
            marker={
                "size": size,
                "color": tech["travel_min"].to_list(),
                "colorscale": "Viridis",
                "colorbar": {"title": "travel min"},
                "line": {"width": 0.5, "color": "white"},
            },
            hovertemplate="%{text}<br>idle %{x:.0f} min · on-site %{y:.0f} min<extra></extra>",
        )
    )
    fig.update_layout(
        **_LAYOUT,
        title="Technicians: accept→depart idle vs on-site (median)",
        xaxis_title="idle minutes",
        yaxis_title="on-site minutes",
    )
    return fig


def verdicts_figure(mix: pl.DataFrame) -> go.Figure:
    if mix.height == 0:
        return empty_figure("Arrival verdicts: not computed yet")
    fig = go.Figure()
    for verdict, colour in VERDICT_COLOURS.items():
        part = mix.filter(pl.col("verdict") == verdict)
        if part.height:
            fig.add_trace(
                go.Bar(
                    x=part["day"].to_list(),
                    y=part["n"].to_list(),
                    name=verdict,
                    marker_color=colour,
                    meta="verdicts",
                )
            )
    fig.update_layout(
        **_LAYOUT, barmode="stack", title="Arrival verdict mix per day", yaxis_title="arrivals"
    )
    return fig
