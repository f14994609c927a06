"""Figures and readable text of the alerts page. Pure: rows and frames in, text/figures out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
import polars as pl

from dashboard.figures.status import empty_figure

_DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class Explanation:
    """A cluster alert's explanation made readable: one summary, hourly counts, the raw text."""

    summary: str
    counts_by_hour: list[tuple[str, int]] = field(default_factory=list)
    raw: str = ""


def _when(value: Any, tz: str) -> str:
    """A timestamp (datetime or ISO text) as local minutes; other values as they are."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        local = value.astimezone(ZoneInfo(tz)) if value.tzinfo else value
        return f"{local:%Y-%m-%d %H:%M}"
    return "—" if value is None else str(value)


def recurrence_text(days: float | None) -> str:
    """Expected recurrence interval in words: days below a year, else years. Pure."""
    if days is None:
        return "unknown"
    if days < _DAYS_PER_YEAR:
        return f"{days:.3g} days"
    years = days / _DAYS_PER_YEAR
    return f"{years:,.0f} years" if years < 1e6 else f"{years:.1e} years"


def explain_alert(alert: dict[str, Any], tz: str) -> Explanation:
    """Summary sentence for a ``cluster_alerts`` row whose explanation is JSON (or plain text).

    "32 tickets in 12 cells within 72 h (rule: more than 19, version 2026.10-1); expected 1.4
    → p = 6.0e-18 (recurrence ≈ …); first seen …, last updated …; trend steady".
    """
    text = alert.get("explanation") or ""
    try:
        e = json.loads(text)
    except (TypeError, ValueError):
        e = None
    if not isinstance(e, dict):
        return Explanation(summary=str(text), raw=str(text))
    rule: dict[str, Any] = e["rule"] if isinstance(e.get("rule"), dict) else {}
    baseline: dict[str, Any] = e["baseline"] if isinstance(e.get("baseline"), dict) else {}
    cells = e.get("member_cells") or []
    window_h = rule.get("window_h")
    parts = [
        f"{e.get('member_count')} tickets in {len(cells)} cells"
        + (f" within {window_h:g} h" if isinstance(window_h, int | float) else "")
        + f" (rule: more than {rule.get('more_than', '?')}, version "
        f"{rule.get('version')})"
    ]
    expected, p_value = baseline.get("expected"), e.get("p_value")
    if isinstance(expected, int | float) and isinstance(p_value, int | float):
        parts.append(
            f"expected {expected:.1f} → p = {p_value:.1e} "
            f"(recurrence ≈ {recurrence_text(e.get('recurrence_days'))})"
        )
    parts.append(
        f"first seen {_when(e.get('first_seen'), tz)}, "
        f"last updated {_when(e.get('last_updated'), tz)} ({tz})"
    )
    parts.append(f"trend {e.get('trend')}")
    hourly = [
        (_when(c.get("hour"), tz), int(c.get("count", 0)))
        for c in e.get("counts_by_hour") or []
        if isinstance(c, dict)
    ]
    return Explanation(
        summary="; ".join(parts),
        counts_by_hour=hourly,
        raw=json.dumps(e, indent=2, ensure_ascii=False),
    )


def short_summary(explanation: str) -> str:
    """One line for a map hover: the first clause of the summary. Pure."""
    summary = explain_alert({"explanation": explanation}, "UTC").summary
    return summary.split(";")[0][:200]


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
        title=f"{tag}: member tickets per day",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        yaxis_title="tickets",
        xaxis={"tickformat": "%b %d", "dtick": 86_400_000},
    )
    return fig
