"""Replay side panels: UWB floor plan, IoT chart, vibration spectrum, verdict and event list.

Pure: frames / rows in, figures / components out. ``meta`` names the traces ``replay.js``
rewrites at each cursor move (``uwb-trail``, ``uwb-pos``) and the IoT ``cursor`` shape.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

import plotly.graph_objects as go
import polars as pl
from dash import html

from dashboard import replay_ids as rid
from dashboard.figures.replay import TECH_COLOURS, cursor_shape, plot_time, times
from dashboard.figures.status import empty_figure
from dashboard.figures.ticket import evidence_list, evidence_rows
from geofence.spectrum import (
    SKF_6205_2RS,
    BearingGeometry,
    envelope_spectrum,
    fault_frequencies_hz,
    mark_fault_peaks,
)
from pipelines.views.replay import ReplayBundle

FAULT_LINES: Final = ("BPFI", "BPFO", "BSF")


def uwb_figure(site: dict[str, Any] | None, uwb: pl.DataFrame, cursor: datetime) -> go.Figure:
    """Floor plan in the site frame: anchors, unit targets and each tag's trail up to T."""
    if site is None:
        return empty_figure("No UWB site at this address")
    fig = go.Figure()
    anchors = json.loads(site["anchors"] or "[]")
    fig.add_trace(
        go.Scatter(
            x=[a["x"] for a in anchors],
            y=[a["y"] for a in anchors],
            mode="markers+text",
            text=[a.get("anchor_id", "") for a in anchors],
            textposition="top center",
            meta="anchors",
            name="anchors",
            marker={"symbol": "triangle-up", "size": 12, "color": "#495057"},
        )
    )
    targets = json.loads(site.get("targets") or "[]")
    if targets:
        fig.add_trace(
            go.Scatter(
                x=[a["x"] for a in targets],
                y=[a["y"] for a in targets],
                mode="markers",
                meta="targets",
                name="units",
                marker={"symbol": "square-open", "size": 9, "color": "#adb5bd"},
            )
        )
    seen = uwb.filter(pl.col("ts") <= cursor)
    for i, tag in enumerate(sorted(set(uwb["tag_id"].to_list()))):
        mine = seen.filter(pl.col("tag_id") == tag)
        colour = TECH_COLOURS[i % len(TECH_COLOURS)]
        fig.add_trace(
            go.Scatter(
                x=mine["x_m"].to_list(),
                y=mine["y_m"].to_list(),
                mode="lines",
                meta="uwb-trail",
                name=tag,
                line={"color": colour},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=mine["x_m"].tail(1).to_list(),
                y=mine["y_m"].tail(1).to_list(),
                mode="markers",
                meta="uwb-pos",
                name=tag,
                showlegend=False,
                marker={"size": 12, "color": colour},
            )
        )
    fig.update_layout(
        template="plotly_white",
        height=300,
        margin={"l": 30, "r": 10, "t": 30, "b": 30},
        title={"text": f"UWB · {site['site_id']} (site frame, m)", "font": {"size": 13}},
        yaxis={"scaleanchor": "x"},
        uirevision="uwb",
    )
    return fig


def iot_figure(iot: pl.DataFrame, cursor: datetime, start: datetime, end: datetime) -> go.Figure:
    """One line per (device, metric) over the window, with the time cursor."""
    if iot.is_empty():
        return empty_figure("No IoT readings for this customer's devices in the window")
    fig = go.Figure()
    for (device, metric), part in iot.sort("ts").group_by(
        ["device_id", "metric"], maintain_order=True
    ):
        fig.add_trace(
            go.Scatter(
                x=times(part["ts"]),
                y=part["value"].to_list(),
                mode="lines+markers",
                name=f"{device} · {metric}",
                meta="iot",
            )
        )
    fig.update_layout(
        template="plotly_white",
        height=240,
        shapes=[cursor_shape(cursor)],
        margin={"l": 40, "r": 10, "t": 10, "b": 30},
        uirevision="iot",
        xaxis={"range": [plot_time(start), plot_time(end)]},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def spectrum_figure(
    samples: list[float],
    *,
    sample_rate_hz: float,
    rpm: float | None,
    geometry: BearingGeometry = SKF_6205_2RS,
    max_freq_hz: float = 600.0,
    title: str = "",
) -> go.Figure:
    """Envelope spectrum with BPFI/BPFO/BSF lines and the peaks matched to them."""
    freq, amp = envelope_spectrum(samples, sample_rate_hz=sample_rate_hz)
    keep = freq <= max_freq_hz
    fig = go.Figure(
        go.Scatter(
            x=freq[keep].round(3).tolist(),
            y=amp[keep].tolist(),
            mode="lines",
            meta="envelope",
            name="envelope spectrum",
            line={"color": "#343a40", "width": 1},
        )
    )
    if rpm:
        faults = fault_frequencies_hz(rpm, geometry).as_mapping()
        for name in FAULT_LINES:
            fig.add_vline(
                x=faults[name],
                line={"dash": "dot", "color": "#1c7ed6"},
                annotation_text=f"{name} {faults[name]:.1f} Hz",
            )
        peaks = mark_fault_peaks(
            freq, amp, fault_freqs=faults, factor=10.0, max_harmonic=5, max_freq_hz=max_freq_hz
        ).filter(pl.col("match").is_not_null())
        fig.add_trace(
            go.Scatter(
                x=peaks["freq_hz"].to_list(),
                y=peaks["amplitude"].to_list(),
                mode="markers+text",
                meta="peaks",
                name="marked peaks",
                text=peaks["match"].to_list(),
                textposition="top center",
                marker={"size": 9, "color": "#e03131"},
            )
        )
    fig.update_layout(
        template="plotly_white",
        height=280,
        showlegend=False,
        margin={"l": 40, "r": 10, "t": 36, "b": 36},
        title={"text": title or "Envelope spectrum", "font": {"size": 13}},
        xaxis={"title": "Hz"},
    )
    return fig


def verdict_panel(bundle: ReplayBundle, node: str | None) -> html.Div:
    checks = bundle.checks.filter(pl.col("event_id") == node)
    if checks.is_empty():
        kind = bundle.lifecycle.filter(pl.col("event_id") == node)["event_type"].to_list()
        return html.Div(
            f"No arrival check for node {node or '—'} ({kind[0] if kind else 'no node'}).",
            className="muted",
        )
    c = checks.row(0, named=True)
    try:
        evidence = json.loads(c["evidence"] or "{}")
    except ValueError:
        evidence = c["evidence"]
    return html.Div(
        [
            html.Span(
                c["verdict"],
                id=rid.VERDICT_BADGE,
                className=f"verdict verdict-{c['verdict'].lower()}",
            ),
            evidence_list(evidence_rows(c, evidence)),
        ]
    )


def event_list(bundle: ReplayBundle, node: str | None, cursor: datetime) -> html.Ol:
    return html.Ol(
        [
            html.Li(
                f"{r['ts']:%H:%M:%S} {r['event_type']} · {r['actor'] or '—'}"
                + (f" · {r['verdict']}" if r["verdict"] else ""),
                id={"type": rid.EVENT_ITEM, "index": i},
                style={
                    "opacity": 1 if r["ts"] <= cursor else 0.35,
                    "fontWeight": 700 if r["event_id"] == node else 400,
                },
            )
            for i, r in enumerate(bundle.lifecycle.iter_rows(named=True))
        ]
    )
