"""Figures of the alerts page."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from dashboard.figures.status import empty_figure


def counts_figure(daily: pl.DataFrame, tag: str) -> go.Figure:
    """Member tickets of the cluster per day."""
    if daily.height == 0:
        return empty_figure("No member tickets")
    fig = go.Figure(
        go.Bar(
            x=daily["day"].to_list(),
            y=daily["tickets"].to_list(),
            marker_color="#c92a2a",
            name=tag,
            meta="counts",
        )
    )
    fig.update_layout(
        template="plotly_white",
        height=320,
        title=f"{tag}: tickets per day",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        yaxis_title="tickets",
    )
    return fig
