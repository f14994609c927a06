"""Ticket detail figures: the lifecycle next to what GPS says physically happened."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import plotly.graph_objects as go
import polars as pl
from dash import html

from dashboard.figures.status import empty_figure

STATUS_COLOUR = "#14213d"
PHYSICAL_COLOUR = "#2b8a3e"
LABEL_LEVELS = 6  # labels that would overlap stack on up to this many heights
_LEVEL_PX = 15
_FIRST_PX = 16
_CHAR_PX = 6.5  # 11 px font: average label character width
_PLOT_PX = 1250  # typical plot width of the timeline on the ticket page


def label_levels(
    ts: list[datetime],
    texts: list[str],
    *,
    width_px: float = _PLOT_PX,
    levels: int = LABEL_LEVELS,
    bounds: tuple[datetime, datetime] | None = None,
) -> list[int]:
    """Height level (0 = nearest the lane) per label so labels do not overlap. Pure.

    Greedy in time order: each label takes the lowest level where its estimated extent in
    pixels clears every label already placed there (the top level when none does).
    """
    if not ts:
        return []
    t0, t1 = bounds or (min(ts), max(ts))
    span = max((t1 - t0).total_seconds(), 1.0)
    placed: list[list[tuple[float, float]]] = [[] for _ in range(levels)]
    out: list[int] = []
    for t, text in zip(ts, texts, strict=True):
        x = (t - t0).total_seconds() / span * width_px
        half = (len(text) * _CHAR_PX) / 2 + 4
        lo, hi = x - half, x + half
        level = next(
            (i for i, row in enumerate(placed) if all(hi <= a or lo >= b for a, b in row)),
            levels - 1,
        )
        placed[level].append((lo, hi))
        out.append(level)
    return out


def _labels(
    ts: list[datetime],
    texts: list[str],
    lane: str,
    *,
    up: bool,
    bounds: tuple[datetime, datetime],
) -> list[dict[str, Any]]:
    """Staggered annotations with leader lines above (``up``) or below a lane."""
    sign = -1 if up else 1
    return [
        {
            "x": t,
            "y": lane,
            "text": text,
            "showarrow": True,
            "arrowhead": 0,
            "arrowwidth": 1,
            "arrowcolor": "#adb5bd",
            "ax": 0,
            "ay": sign * (_FIRST_PX + _LEVEL_PX * level),
            "font": {"size": 11},
            "bgcolor": "rgba(255,255,255,.85)",
        }
        for t, text, level in zip(ts, texts, label_levels(ts, texts, bounds=bounds), strict=True)
    ]


def timeline_figure(events: pl.DataFrame, physical: pl.DataFrame) -> go.Figure:
    """Two lanes on one time axis: status nodes (top) and GPS-derived events (bottom).

    Labels are staggered on leader lines (status above its lane, physical below) so events
    minutes apart stay readable; hovering a node gives its name, time and actor. Dotted
    connectors pair a status 'arrived'/'departed' with its physical counterpart so the
    status-vs-physical lag is visible.
    """
    if events.height == 0:
        return empty_figure("No lifecycle events for this ticket")
    fig = go.Figure()
    ts = events["ts"].to_list()
    kinds = events["event_type"].to_list()
    actors = events["actor"].fill_null("—").to_list()
    fig.add_trace(
        go.Scatter(
            x=ts,
            y=["status"] * events.height,
            mode="lines+markers",
            meta="status",
            marker={"size": 12, "color": STATUS_COLOUR},
            line={"color": "#adb5bd"},
            name="lifecycle status",
            hovertext=[
                f"{k} · {t:%Y-%m-%d %H:%M:%S} · {a}"
                for k, t, a in zip(kinds, ts, actors, strict=True)
            ],
            hoverinfo="text",
        )
    )
    pts = physical["ts"].to_list() if physical.height else []
    bounds = (min(ts + pts), max(ts + pts))
    annotations = _labels(ts, kinds, "status", up=True, bounds=bounds)
    if physical.height:
        pkinds = physical["event"].to_list()
        fig.add_trace(
            go.Scatter(
                x=pts,
                y=["physical"] * physical.height,
                mode="lines+markers",
                meta="physical",
                name="physical (GPS)",
                marker={"size": 12, "color": PHYSICAL_COLOUR, "symbol": "diamond"},
                line={"color": "#b2f2bb"},
                hovertext=[
                    f"{k} · {t:%Y-%m-%d %H:%M:%S}" for k, t in zip(pkinds, pts, strict=True)
                ],
                hoverinfo="text",
            )
        )
        annotations += _labels(pts, pkinds, "physical", up=False, bounds=bounds)
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
        height=380,
        margin={"l": 10, "r": 10, "t": 36, "b": 10},
        yaxis={
            "categoryorder": "array",
            "categoryarray": ["physical", "status"],
            "title": None,
            "range": [-1.1, 2.7],
            "fixedrange": True,
        },
        legend={"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
        title={"text": "Lifecycle vs physical events (UTC)", "font": {"size": 14}},
        annotations=annotations,
        hovermode="closest",
    )
    return fig


# Arrival-check evidence as readable rows (ticket page and replay verdict panel).
_FACTS: tuple[tuple[str, str], ...] = (
    ("reason", "reason"),
    ("p_within_radius", "P(within 5 m)"),
    ("p_on_site", "P(on site)"),
    ("decided_by", "decided by"),
    ("distance_m", "distance"),
    ("accuracy_m", "accuracy"),
    ("n_fixes", "fixes"),
    ("status_lag_s", "status lag"),
    ("rule_version", "rule version"),
)


def format_value(key: str, value: Any) -> str:
    """One evidence value by what its key says it is. Pure.

    Coordinates to 6 decimals, metres to 0.1 m, seconds and timestamps to whole seconds.
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and key.endswith("_ts"):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, int | float):
        if key.startswith("p_"):
            return f"{100 * value:.1f} %"
        if key.endswith(("_lat", "_lon")) or key in ("lat", "lon"):
            return f"{value:.6f}"
        if key.endswith("_m"):
            return f"{value:.1f} m"
        if key.endswith("_s") or key.endswith("_ts"):
            return f"{value:.0f} s"
        if isinstance(value, float):
            return f"{value:g}" if abs(value) >= 1e-3 else f"{value:.2e}"
        return str(value)
    return str(value)


def thresholds_items(value: Any) -> list[str]:
    """A thresholds mapping (or its JSON text) as compact ``name value`` items. Pure."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    if not isinstance(value, dict):
        return [str(value)]
    return [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()]


def evidence_rows(check: dict[str, Any], evidence: Any) -> list[tuple[str, str | list[str]]]:
    """(label, text) rows: the check's facts, then evidence keys the facts do not repeat.

    ``thresholds`` comes back as a list of items; None values are left out. Pure.
    """
    rows: list[tuple[str, str | list[str]]] = []
    shown: set[str] = set()
    for key, label in _FACTS:
        value = check.get(key)
        if value is None and isinstance(evidence, dict):
            value = evidence.get(key)
        if value is not None:
            rows.append((label, format_value(key, value)))
            shown.add(key)
    if not isinstance(evidence, dict):
        return [*rows, ("evidence", str(evidence))]
    for key, value in evidence.items():
        if key in shown or value is None:
            continue
        if key == "thresholds":
            rows.append((key, thresholds_items(value)))
        elif isinstance(value, dict | list):
            rows.append((key, json.dumps(value, separators=(", ", ": "), default=str)))
        else:
            rows.append((key, format_value(key, value)))
    return rows


def evidence_list(rows: list[tuple[str, str | list[str]]]) -> html.Ul:
    """Evidence rows as a list; a thresholds row becomes a compact inline list."""
    return html.Ul(
        [
            html.Li(
                [
                    html.B(f"{label}: "),
                    html.Ul([html.Li(x) for x in text], className="thresholds")
                    if isinstance(text, list)
                    else text,
                ]
            )
            for label, text in rows
        ]
    )
