"""Analytics figures: pictures of the journey, built from pre-aggregated frames."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from dashboard.figures.status import empty_figure

_LAYOUT = {
    "template": "plotly_white",
    "height": 360,
    "margin": {"l": 10, "r": 10, "t": 48, "b": 10},
}
VERDICT_COLOURS = {
    "AT_DOOR": "#2b8a3e",
    "ON_SITE": "#74b816",
    "INCONCLUSIVE": "#f08c00",
    "REJECTED": "#e03131",
}
RELIABILITY_COLOURS = {"P(within 5 m)": "#1c7ed6", "P(on site)": "#ae3ec9"}


def _minutes_text(value: float | None) -> str:
    """Minutes as short text: minutes below 10 h, else hours. Pure."""
    if value is None:
        return ""
    return f"{value:.0f}" if value < 600 else f"{value / 60:.0f} h"


def segments_figure(q: pl.DataFrame, order: tuple[str, ...]) -> go.Figure:
    """One row per journey segment, each on its own linear minutes axis.

    Boxes come from precomputed quantiles (box p25–p75, whiskers p5–p95); each row's view
    ends just past its p95 whisker (the p99 tail is in the hover), so outliers do not squash
    the box. Segments differ by orders of magnitude (a minute's idle, days' revisit gap), so
    a shared axis would flatten the short ones; a segment that is always 0 says so.
    """
    if q.height == 0:
        return empty_figure("No completed journey segments yet")
    q = q.with_columns(pl.col("segment").cast(pl.Enum(order))).sort("segment")
    rows = q.height
    fig = make_subplots(rows=rows, cols=1, vertical_spacing=0.35 / rows)
    for i, r in enumerate(q.iter_rows(named=True), start=1):
        top = r["p95"] or 0.0
        label = f"{r['segment']} (n={r['n']:,})"
        fig.add_trace(
            go.Box(
                y=[label],
                q1=[r["p25"]],
                median=[r["p50"]],
                q3=[r["p75"]],
                lowerfence=[r["p05"]],
                upperfence=[r["p95"]],
                orientation="h",
                marker_color="#1c7ed6",
                line={"width": 2},
                fillcolor="rgba(28,126,214,.35)",
                name=str(r["segment"]),
                meta="segments",
                hovertemplate=(
                    f"{r['segment']}<br>median {r['p50']:.1f} min · p25–p75 "
                    f"{r['p25']:.1f}–{r['p75']:.1f} · p5–p95 {r['p05']:.1f}–{r['p95']:.1f}"
                    f" · p99 {r.get('p99') or 0:.1f}<extra></extra>"
                ),
            ),
            row=i,
            col=1,
        )
        pad = max(top * 0.06, 0.05)
        fig.update_xaxes(range=[-pad, (top or 1.0) + pad], row=i, col=1, nticks=8)
        if top == 0:
            fig.add_annotation(
                text="always 0 min",
                xref=f"x{i if i > 1 else ''} domain",
                yref=f"y{i if i > 1 else ''} domain",
                x=0.5,
                y=0.5,
                showarrow=False,
                font={"size": 11, "color": "#57606a"},
            )
    fig.update_layout(
        **{**_LAYOUT, "height": 90 + 70 * rows},
        title="Journey segments (minutes, own scale per row; box p25–p75, whiskers p5–p95)",
        showlegend=False,
    )
    fig.update_yaxes(tickfont={"size": 11}, fixedrange=True)
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
    """Heatmap region × segment: text gives median minutes, colour how a region compares with
    the segment's median over regions (red slower, blue faster, saturating at ±25 %).

    Colouring by raw minutes would let the days-long revisit gap wash out every other column.
    """
    if medians.height == 0:
        return empty_figure("No journeys per region yet")
    wide = medians.pivot(on="segment", index="region", values="minutes").sort("region")
    cols = [s for s in order if s in wide.columns]
    minutes = wide.select(cols)
    relative = minutes.select(
        (100 * (pl.col(c) / pl.col(c).median() - 1)).fill_nan(0.0).fill_null(0.0).alias(c)
        for c in cols
    )
    fig = go.Figure(
        go.Heatmap(
            z=relative.to_numpy(),
            x=cols,
            y=wide["region"].to_list(),
            text=[[_minutes_text(v) for v in row] for row in minutes.rows()],
            customdata=minutes.to_numpy(),
            colorscale="RdBu_r",
            zmid=0,
            zmin=-25,
            zmax=25,
            texttemplate="%{text}",
            hovertemplate=(
                "%{y} · %{x}: median %{customdata:.1f} min (%{z:+.0f} % vs median)<extra></extra>"
            ),
            colorbar={"title": "% vs median", "ticksuffix": " %"},
            meta="regions",
        )
    )
    fig.update_layout(
        **_LAYOUT,
        title="Median minutes by region and segment (shade: vs the segment's median)",
    )
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


def reliability_figure(bins: pl.DataFrame) -> go.Figure:
    """Predicted against observed per probability bin (``views.reliability``), one line per
    outcome, with the diagonal of perfect calibration and a ±5-point band. Marker size
    grows with the bin's arrivals; the hover names the bin's range and count. Pure."""
    if bins.height == 0:
        return empty_figure(
            "Reliability: no labelled arrivals with probabilities (the demo labels its own)"
        )
    fig = go.Figure()
    diagonal = [0.0, 1.0]
    fig.add_trace(
        go.Scatter(
            x=[0.0, 1.0, 1.0, 0.0],
            y=[0.05, 1.05, 0.95, -0.05],
            fill="toself",
            fillcolor="rgba(134, 142, 150, 0.15)",
            line={"width": 0},
            hoverinfo="skip",
            name="±5 points",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=diagonal,
            y=diagonal,
            mode="lines",
            line={"color": "#868e96", "dash": "dash"},
            hoverinfo="skip",
            name="perfect calibration",
        )
    )
    n_max = max([1, *bins["n"].to_list()])
    for outcome, colour in RELIABILITY_COLOURS.items():
        part = bins.filter(pl.col("outcome") == outcome).sort("predicted")
        if part.height == 0:
            continue
        text = [
            f"{lo:.1f}–{hi:.1f}: n={n}, predicted {p:.3f}, observed {o:.3f}"
            for lo, hi, n, p, o in part.select(
                "p_lo", "p_hi", "n", "predicted", "observed"
            ).iter_rows()
        ]
        fig.add_trace(
            go.Scatter(
                x=part["predicted"].to_list(),
                y=part["observed"].to_list(),
                mode="lines+markers",
                marker={
                    "color": colour,
                    "size": [8 + 16 * (n / n_max) ** 0.5 for n in part["n"].to_list()],
                },
                line={"color": colour},
                text=text,
                hovertemplate="%{text}<extra></extra>",
                name=outcome,
                meta="reliability",
            )
        )
    fig.update_layout(
        **_LAYOUT,
        title="Verdict probabilities: predicted vs observed (labelled arrivals)",
        xaxis={"title": "predicted probability", "range": [-0.02, 1.02]},
        yaxis={"title": "observed share", "range": [-0.07, 1.07]},
    )
    return fig
