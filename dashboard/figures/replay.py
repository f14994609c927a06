"""Replay figures and the playback payload. Pure: bundle / frames in, figures / dicts out.

Dynamic traces carry a ``meta`` the browser's ``replay.js`` rewrites at each cursor move:
``trail`` / ``position`` / ``accuracy`` on the map (``name`` = technician), ``uwb-trail`` /
``uwb-pos`` on the floor plan, and the ``cursor`` shape on the timeline and IoT charts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import plotly.graph_objects as go
import polars as pl
import shapely

from dashboard.figures.maps import (
    Basemap,
    cell_outline,
    center_zoom,
    circle,
    map_layout,
    project,
    rings,
    to_basemap,
)
from dashboard.figures.status import empty_figure
from geofence.replay_state import REPLAY_TS_COL, state_at, states_at
from pipelines.views.replay import STREAM_KEYS, STREAM_MAX_STALENESS, ReplayBundle

TECH_COLOURS: Final = ("#e8590c", "#7048e8", "#0c8599", "#c2255c", "#2f9e44")
VERDICT_COLOURS: Final = {
    "AT_DOOR": "#2b8a3e",
    "ON_SITE": "#74b816",
    "INCONCLUSIVE": "#f08c00",
    "REJECTED": "#e03131",
}
_COLS: Final = {
    "gps": ("technician_id", "lat", "lon", "accuracy_m"),
    "uwb": ("tag_id", "x_m", "y_m"),
    "weather": ("variable", "value", "unit"),
    "iot": ("device_id", "metric", "value", "unit"),
}


def as_utc(t: datetime) -> datetime:
    """Naive times are UTC; aware ones are converted."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def plot_time(t: datetime) -> str:
    """Plotly date axes ignore zones: every time is drawn as naive UTC text."""
    return as_utc(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def times(series: pl.Series) -> list[str]:
    return series.dt.replace_time_zone(None).dt.strftime("%Y-%m-%d %H:%M:%S%.3f").to_list()


def cursor_shape(t: datetime) -> dict[str, Any]:
    x = plot_time(t)
    return {
        "type": "line",
        "x0": x,
        "x1": x,
        "xref": "x",
        "yref": "paper",
        "y0": 0,
        "y1": 1,
        "line": {"color": "#e03131", "width": 2},
        "name": "cursor",
    }


def timeline_figure(
    nodes: pl.DataFrame, *, selected: str | None, cursor: datetime, start: datetime, end: datetime
) -> go.Figure:
    """Lifecycle nodes on one lane; click a node to seek. Arrivals are coloured by verdict."""
    if nodes.is_empty():
        return empty_figure("No lifecycle events for this ticket")
    colours = [VERDICT_COLOURS.get(v or "", "#14213d") for v in nodes["verdict"]]
    fig = go.Figure(
        go.Scatter(
            x=times(nodes["ts"]),
            y=[0] * nodes.height,
            mode="markers+text",
            meta="nodes",
            text=nodes["event_type"].to_list(),
            textposition="top center",
            name="lifecycle",
            marker={"size": 14, "color": colours, "line": {"width": 1, "color": "white"}},
            customdata=nodes.select("event_id", "event_type").rows(),
            hovertemplate="%{customdata[1]} · %{x}<extra>%{customdata[0]}</extra>",
        )
    )
    sel = nodes.filter(pl.col("event_id") == selected)
    if sel.height:
        fig.add_trace(
            go.Scatter(
                x=times(sel["ts"]),
                y=[0],
                mode="markers",
                meta="selected",
                marker={
                    "size": 24,
                    "color": "rgba(0,0,0,0)",
                    "line": {"width": 3, "color": "#1c7ed6"},
                },
                hoverinfo="skip",
                name="selected node",
            )
        )
    band = {
        "type": "rect",
        "x0": plot_time(start),
        "x1": plot_time(end),
        "xref": "x",
        "yref": "paper",
        "y0": 0,
        "y1": 1,
        "fillcolor": "rgba(28,126,214,.08)",
        "line": {"width": 0},
        "name": "window",
    }
    fig.update_layout(
        template="plotly_white",
        height=150,
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 10, "b": 30},
        clickmode="event",
        yaxis={"visible": False, "range": [-1, 1.6]},
        shapes=[band, cursor_shape(cursor)],
        uirevision="timeline",
    )
    return fig


def _polygon_lines(wkts: list[str]) -> tuple[list[float | None], list[float | None]]:
    lats: list[float | None] = []
    lons: list[float | None] = []
    for geom in shapely.from_wkt(wkts):
        for poly in getattr(geom, "geoms", [geom]):
            xy = np.asarray(poly.exterior.coords)
            lons += [*xy[:, 0].round(6).tolist(), None]
            lats += [*xy[:, 1].round(6).tolist(), None]
    return lats, lons


def _dynamic_map_traces(gps_state: pl.DataFrame, techs: list[str]) -> list[go.Scattermap]:
    """Trail, accuracy ring and position per technician for the samples up to the cursor."""
    traces: list[go.Scattermap] = []
    for i, tech in enumerate(techs):
        colour = TECH_COLOURS[i % len(TECH_COLOURS)]
        mine = gps_state.filter(pl.col("technician_id") == tech)
        last = mine.tail(1)
        rlat, rlon = (
            rings(
                last["lat"].to_list(),
                last["lon"].to_list(),
                last["accuracy_m"].fill_null(0.0).to_list(),
            )
            if last.height
            else ([], [])
        )
        traces += [
            go.Scattermap(
                lat=mine["lat"].to_list(),
                lon=mine["lon"].to_list(),
                meta="trail",
                name=tech,
                mode="lines+markers",
                line={"color": colour, "width": 3},
                marker={"size": 4, "color": colour},
                hoverinfo="skip",
            ),
            go.Scattermap(
                lat=rlat,
                lon=rlon,
                meta="accuracy",
                name=tech,
                mode="lines",
                line={"color": colour, "width": 1},
                showlegend=False,
                hoverinfo="skip",
            ),
            go.Scattermap(
                lat=last["lat"].to_list(),
                lon=last["lon"].to_list(),
                meta="position",
                name=tech,
                mode="markers",
                marker={"size": 14, "color": colour},
                showlegend=False,
                hovertemplate=f"{tech}<extra></extra>",
            ),
        ]
    return traces


def map_figure(
    bundle: ReplayBundle, cursor: datetime, *, radius_m: float, basemap: Basemap
) -> go.Figure:
    """Customer geofence, outage overlay, alerts, nearby tickets and GPS trails up to ``cursor``."""
    t = bundle.ticket
    fig = go.Figure()
    lats: list[float] = []
    lons: list[float] = []
    if bundle.outages.height:
        olat, olon = _polygon_lines(bundle.outages["geom_wkt"].to_list())
        fig.add_trace(
            go.Scattermap(
                lat=olat,
                lon=olon,
                mode="lines",
                fill="toself",
                meta="outage",
                name="outage covering address",
                line={"color": "#862e9c", "width": 2},
                fillcolor="rgba(134,46,156,.12)",
                hoverinfo="name",
            )
        )
    if bundle.alerts.height:
        alat: list[float | None] = []
        alon: list[float | None] = []
        for cells in bundle.alerts["member_cells"].to_list():  # one outline per alert
            la, lo = cell_outline(sorted(set(cells)))
            alat += la
            alon += lo
        fig.add_trace(
            go.Scattermap(
                lat=alat, lon=alon, mode="lines", meta="alert", name="cluster alert",
                line={"color": "#c92a2a", "width": 1},
            )
        )  # fmt: skip
    if bundle.nearby.height:
        fig.add_trace(
            go.Scattermap(
                lat=bundle.nearby["lat"].to_list(),
                lon=bundle.nearby["lon"].to_list(),
                mode="markers",
                meta="nearby",
                name="nearby open tickets",
                marker={"size": 8, "color": "#868e96"},
                text=bundle.nearby["ticket_id"].to_list(),
                hoverinfo="text",
            )
        )
    if t["lat"] is not None:
        clat, clon = circle(t["lat"], t["lon"], radius_m, 48)
        fig.add_trace(
            go.Scattermap(
                lat=clat,
                lon=clon,
                mode="lines",
                fill="toself",
                meta="geofence",
                name=f"{radius_m:g} m geofence",
                line={"color": "#1c7ed6", "width": 2},
            )
        )
        fig.add_trace(
            go.Scattermap(
                lat=[t["lat"]],
                lon=[t["lon"]],
                mode="markers",
                meta="customer",
                name="customer",
                marker={"size": 10, "color": "#1c7ed6"},
            )
        )
        lats += [t["lat"]]
        lons += [t["lon"]]
    gps = bundle.gps
    if gps.height:
        first: datetime = gps["ts"].min()  # type: ignore[assignment]
        trail = max(timedelta(0), cursor - first)
        state = state_at({"gps": gps}, cursor, trail=trail, key_cols={"gps": ("technician_id",)})[
            "gps"
        ]
        for tr in _dynamic_map_traces(state.trail, list(bundle.technicians)):
            fig.add_trace(tr)
        lats += gps["lat"].to_list()
        lons += gps["lon"].to_list()
    center, zoom = center_zoom(lats, lons, max_zoom=17)
    fig.update_layout(**map_layout(basemap, center, zoom, height=460, uirevision="replay-map"))
    return to_basemap(fig, basemap)


def downsample(
    frame: pl.DataFrame, start: datetime, end: datetime, *, keys: tuple[str, ...], max_points: int
) -> pl.DataFrame:
    """At most about ``max_points`` rows: raw when small, else the latest-at-or-before sample per
    key on a uniform grid over ``[start, end]`` (``states_at``), repeats dropped."""
    if frame.height <= max_points:
        return frame.sort("ts")
    n_keys = max(1, frame.select(keys).n_unique()) if keys else 1
    n_grid = max(2, max_points // n_keys)
    step = (end - start) / (n_grid - 1)
    grid = [start + i * step for i in range(n_grid)]
    sampled = states_at({"s": frame}, grid, key_cols={"s": keys} if keys else None)["s"]
    sampled = sampled.drop(REPLAY_TS_COL, "staleness_s", "stale")
    seed = frame.filter(pl.col("ts") < start)
    return pl.concat([seed, sampled]).unique(maintain_order=True).sort("ts")


def _epoch_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def playback_samples(
    bundle: ReplayBundle, *, max_points: int = 5_000, datum: str = "WGS84"
) -> dict[str, Any]:
    """Compact per-stream lists the browser replays from (epoch ms + the drawn columns).

    GPS positions are in the basemap's ``datum`` (the browser draws them as they are)."""
    out: dict[str, Any] = {
        "start_ms": _epoch_ms(bundle.start),
        "end_ms": _epoch_ms(bundle.end),
        "max_staleness_s": {k: v.total_seconds() for k, v in STREAM_MAX_STALENESS.items()},
        "keys": {k: list(v) for k, v in STREAM_KEYS.items()},
        "technicians": list(bundle.technicians),
    }
    for name, frame in bundle.streams().items():
        if frame.is_empty():
            out[name] = {"t": [], **{c: [] for c in _COLS[name]}}
            continue
        small = downsample(
            frame, bundle.start, bundle.end, keys=STREAM_KEYS[name], max_points=max_points
        )
        out[name] = {
            "t": small["ts"].dt.epoch("ms").to_list(),
            **{
                c: (small[c].round(7) if small[c].dtype.is_float() else small[c]).to_list()
                for c in _COLS[name]
            },
        }
    gps = out.get("gps")
    if gps and gps["lat"]:
        gps["lat"], gps["lon"] = project(gps["lat"], gps["lon"], datum)
    nodes = bundle.lifecycle
    out["events"] = {
        "t": nodes["ts"].dt.epoch("ms").to_list(),
        "event_id": nodes["event_id"].to_list(),
    }
    return out
