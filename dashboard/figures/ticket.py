"""Ticket detail figures: the lifecycle next to what GPS says physically happened."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from dashboard.figures.status import empty_figure

STATUS_COLOUR = "#14213d"
PHYSICAL_COLOUR = "#2b8a3e"


def timeline_figure(events: pl.DataFrame, physical: pl.DataFrame) -> go.Figure:
    """Two lanes on one time axis: status nodes (top) and GPS-derived events (bottom).

    Dotted connectors pair a status 'arrived'/'departed' with its physical counterpart so the
    status-vs-physical lag is visible.
    """
    if events.height == 0:
        return empty_figure("No lifecycle events for this ticket")
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=events["ts"].to_list(),
            y=["status"] * events.height,
            mode="lines+markers+text",
            text=events["event_type"].to_list(),
            textposition="top center",
            meta="status",
            marker={"size": 12, "color": STATUS_COLOUR},
            line={"color": "#adb5bd"},
            name="lifecycle status",
            hovertext=events["actor"].fill_null("").to_list(),
        )
    )
    if physical.height:
        fig.add_trace(
            go.Scatter(
                x=physical["ts"].to_list(),
                y=["physical"] * physical.height,
                mode="lines+markers+text",
                text=physical["event"].to_list(),
                textposition="bottom center",
                meta="physical",
                name="physical (GPS)",
                marker={"size": 12, "color": PHYSICAL_COLOUR, "symbol": "diamond"},
                line={"color": "#b2f2bb"},
            )
        )
        for kind in ("departed", "arrived"):
            s = events.filter(pl.col("event_type") == kind)
            p = physical.filter(pl.col("event") == kind)
            if s.height and p.height:
                lag_min = (s["ts"][0] - p["ts"][0]).total_seconds() / 60
                fig.add_trace(
                    go.Scatter(
                        x=[s["ts"][0], p["ts"][0]],
                        y=["status", "physical"],
                        mode="lines",
                        line={"dash": "dot", "color": "#e8590c"},
                        showlegend=False,
                        hovertext=f"{kind}: status − physical = {lag_min:+.1f} min",
                        hoverinfo="text",
                        meta="lag",
                    )
                )
    fig.update_layout(
        template="plotly_white",
        height=260,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis={"categoryorder": "array", "categoryarray": ["physical", "status"], "title": None},
        legend={"orientation": "h", "y": 1.15},
        title={"text": "Lifecycle vs physical events", "font": {"size": 14}},
    )
    return fig
