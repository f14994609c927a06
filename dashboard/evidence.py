"""Evidence export: one self-contained HTML file for a lifecycle node. Pure: bundle in, text out.

The file holds the node, its times and sources, the arrival verdict with its thresholds and
evidence, the map (inline Plotly with plotly.js embedded, so it opens offline) and the data rows
behind every panel at the cursor.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from html import escape
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl

from geofence.replay_state import state_at
from pipelines.views.replay import STREAM_KEYS, STREAM_MAX_STALENESS, ReplayBundle

MAX_ROWS = 200
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #212529; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 18px; }
th, td { border: 1px solid #dee2e6; padding: 3px 6px; text-align: left; }
th { background: #f1f3f5; }
.verdict { display: inline-block; padding: 3px 10px; border-radius: 12px; color: white;
           font-weight: 700; }
.AT_DOOR { background: #2b8a3e; } .ON_SITE { background: #74b816; }
.REJECTED { background: #e03131; }
.INCONCLUSIVE { background: #f08c00; }
"""


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    if isinstance(value, float):
        return f"{value:.7g}"
    if isinstance(value, list | dict):
        return escape(json.dumps(value, default=str))
    return "" if value is None else escape(str(value))


def table_html(frame: pl.DataFrame, *, table_id: str, max_rows: int = MAX_ROWS) -> str:
    """An HTML table of the first ``max_rows`` rows (says how many were left out)."""
    if frame.is_empty():
        return f'<p id="{escape(table_id)}" class="empty">no rows</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in frame.head(max_rows).iter_rows()
    )
    more = (
        f"<p>{frame.height - max_rows} more rows not shown</p>" if frame.height > max_rows else ""
    )
    return f'<table id="{escape(table_id)}"><tr>{head}</tr>{body}</table>{more}'


def _facts(rows: dict[str, Any], list_id: str) -> str:
    items = "".join(f"<li><b>{escape(k)}</b>: {_cell(v)}</li>" for k, v in rows.items())
    return f'<ul id="{list_id}">{items}</ul>'


def _verdict_html(bundle: ReplayBundle, node_id: str | None) -> str:
    checks = bundle.checks.filter(pl.col("event_id") == node_id)
    if checks.is_empty():
        return "<p>No arrival check for this node.</p>"
    c = checks.row(0, named=True)
    try:
        evidence = json.loads(c["evidence"] or "{}")
    except json.JSONDecodeError:
        evidence = {"evidence": c["evidence"]}
    facts = {k: v for k, v in c.items() if k not in ("evidence", "verdict")}
    return (
        f'<p><span id="verdict" class="verdict {escape(c["verdict"])}">'
        f"{escape(c['verdict'])}</span></p>"
        + _facts(facts, "check")
        + "<h3>Evidence (as recorded by the verifier)</h3>"
        + _facts(evidence if isinstance(evidence, dict) else {"evidence": evidence}, "evidence")
    )


def _sources(bundle: ReplayBundle) -> pl.DataFrame:
    rows = []
    for name, frame in bundle.streams().items():
        src = (
            frame["source"].drop_nulls().unique().sort().to_list()
            if "source" in frame.columns
            else []
        )
        rows.append(
            {
                "stream": name,
                "rows_in_window": frame.height,
                "first": frame["ts"].min() if frame.height else None,
                "last": frame["ts"].max() if frame.height else None,
                "sources": ", ".join(map(str, src)) or "—",
            }
        )
    for name, frame in (
        ("outages", bundle.outages),
        ("cluster_alerts", bundle.alerts),
        ("nearby_tickets", bundle.nearby),
    ):
        rows.append(
            {
                "stream": name,
                "rows_in_window": frame.height,
                "first": None,
                "last": None,
                "sources": "—",
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None)


def offline_map(fig: go.Figure) -> go.Figure:
    """The map's traces on plain lon/lat axes (metric aspect): no tiles and no WebGL worker,
    so the file opens from disk without a network (a tile map would need both)."""
    out = go.Figure()
    lat0 = 0.0
    for tr in fig.data:
        if getattr(tr, "type", "") != "scattermap":
            continue
        marker = tr.marker.to_plotly_json() if tr.marker else {}
        marker.pop("symbol", None)
        out.add_trace(
            go.Scatter(
                x=tr.lon,
                y=tr.lat,
                mode=tr.mode,
                name=tr.name,
                meta=tr.meta,
                fill=tr.fill,
                line=tr.line.to_plotly_json() if tr.line else {},
                marker=marker,
                text=tr.text,
                showlegend=tr.showlegend,
            )
        )
        lat0 = next((v for v in (tr.lat or ()) if v is not None), lat0)
    ratio = 1.0 / max(math.cos(math.radians(lat0)), 1e-6)
    out.update_layout(
        template="plotly_white",
        height=520,
        margin={"l": 50, "r": 10, "t": 10, "b": 40},
        xaxis={"title": "longitude"},
        yaxis={"title": "latitude", "scaleanchor": "x", "scaleratio": ratio},
    )
    return out


def render_evidence_html(
    bundle: ReplayBundle,
    *,
    node_id: str | None,
    cursor: datetime,
    map_figure: go.Figure,
    thresholds: dict[str, Any],
    generated_at: datetime | None = None,
) -> str:
    """The whole evidence file as one string (plotly.js inline; no network needed)."""
    node = bundle.lifecycle.filter(pl.col("event_id") == node_id)
    node_facts = node.row(0, named=True) if node.height else {"event_id": node_id}
    t = bundle.ticket
    states = state_at(
        bundle.streams(), cursor, key_cols=STREAM_KEYS, max_staleness=STREAM_MAX_STALENESS
    )
    latest = "".join(
        f"<h3>{escape(name)} · {escape(s.status)}</h3>"
        + table_html(s.latest, table_id=f"latest-{name}")
        for name, s in states.items()
    )
    map_html = pio.to_html(
        offline_map(map_figure), include_plotlyjs=True, full_html=False, div_id="evidence-map"
    )
    gps_near = (
        bundle.gps.filter(pl.col("ts") <= cursor).tail(MAX_ROWS)
        if bundle.gps.height
        else bundle.gps
    )
    sections = [
        f"<h1>Evidence · ticket {escape(str(t['ticket_id']))} · node "
        f"{escape(str(node_id or '—'))}</h1>",
        _facts(
            {
                "ticket": t["ticket_id"],
                "customer": t["customer_name"],
                "address": t["address"],
                "lat": t["lat"],
                "lon": t["lon"],
                "replay time (cursor)": cursor,
                "window start": bundle.start,
                "window end": bundle.end,
                "generated at": generated_at,
            },
            "summary",
        ),
        "<h2>Node</h2>",
        _facts(node_facts, "node"),
        "<h2>Verdict</h2>",
        _verdict_html(bundle, node_id),
        "<h2>Thresholds in force</h2>",
        _facts(thresholds, "thresholds"),
        "<h2>Sources</h2>",
        table_html(_sources(bundle), table_id="sources"),
        "<h2>Map at the cursor</h2>",
        map_html,
        "<h2>Every stream at the cursor (latest sample at or before T)</h2>",
        latest,
        "<h2>Lifecycle</h2>",
        table_html(bundle.lifecycle, table_id="lifecycle"),
        "<h2>GPS fixes up to the cursor</h2>",
        table_html(gps_near, table_id="gps"),
        "<h2>Outages covering the address</h2>",
        table_html(bundle.outages, table_id="outages"),
        "<h2>Cluster alerts containing the address</h2>",
        table_html(bundle.alerts, table_id="alerts"),
        "<h2>Nearby open tickets</h2>",
        table_html(bundle.nearby, table_id="nearby"),
        "<h2>Weather</h2>",
        table_html(bundle.weather, table_id="weather"),
        "<h2>IoT readings</h2>",
        table_html(bundle.iot, table_id="iot"),
    ]
    title = f"FieldTrace evidence {t['ticket_id']} {node_id or ''}"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "".join(sections)
        + "</body></html>"
    )
