"""The spectrum an edge rule saw, with its fault bands (pure: evidence dict in, figure out)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go


def evidence_spectrum_figure(origin: dict[str, Any]) -> go.Figure:
    """Envelope spectrum of the strongest window, with BPFI/BPFO/BSF lines; the crossed band red."""
    evidence = origin["evidence"]
    spectrum = evidence["spectrum"]
    fig = go.Figure(
        go.Scatter(
            x=spectrum["freq_hz"],
            y=spectrum["amplitude"],
            mode="lines",
            name="envelope spectrum",
            line={"color": "#343a40", "width": 1},
        )
    )
    for band, hz in evidence["fault_hz"].items():
        crossed = band == origin["band"]
        fig.add_vline(
            x=hz,
            line={
                "dash": "solid" if crossed else "dot",
                "color": "#e03131" if crossed else "#1c7ed6",
            },
            annotation_text=f"{band} {hz:.1f} Hz · ratio {evidence['peak_ratio'][band]:,.0f}",
        )
    fig.update_layout(
        template="plotly_white",
        height=260,
        showlegend=False,
        margin={"l": 40, "r": 10, "t": 36, "b": 36},
        title={
            "text": f"Edge evidence: {origin['rule']}@{origin['rule_version']}",
            "font": {"size": 13},
        },
        xaxis={"title": "Hz"},
    )
    return fig
