"""Figures of the status page."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go
import polars as pl

_LAYOUT = {
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "template": "plotly_white",
    "height": 320,
}


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(**_LAYOUT, xaxis_visible=False, yaxis_visible=False)
    return fig


def quarantine_bar(reasons: pl.DataFrame) -> go.Figure:
    """Quarantined rows by kind and rule (horizontal bars)."""
    if reasons.height == 0:
        return empty_figure("No quarantined rows")
    data = reasons.with_columns(pl.format("{} · {}", "kind", "rule").alias("label"))
    fig = px.bar(
        data.to_pandas(),
        x="rows",
        y="label",
        color="kind",
        orientation="h",
        title="Quarantined rows by rule",
    )
    fig.update_layout(**_LAYOUT, yaxis_title=None, xaxis_title="rows")
    return fig


def batches_bar(totals: pl.DataFrame) -> go.Figure:
    """Accepted vs quarantined rows per kind (log scale: GPS dwarfs the rest)."""
    if totals.height == 0:
        return empty_figure("Nothing ingested yet: run `fieldtrace ingest` or `make demo`")
    long = totals.unpivot(
        index="kind",
        on=["rows_accepted", "rows_quarantined"],
        variable_name="outcome",
        value_name="rows",
    )
    fig = px.bar(
        long.to_pandas(),
        x="kind",
        y="rows",
        color="outcome",
        barmode="group",
        log_y=True,
        title="Rows ingested per kind",
        color_discrete_map={"rows_accepted": "#2b8a3e", "rows_quarantined": "#e8590c"},
    )
    fig.update_layout(**_LAYOUT, xaxis_title=None)
    return fig
