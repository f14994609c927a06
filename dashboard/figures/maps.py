"""Map figures (plotly 7 ``Scattermap`` / ``Choroplethmap``). Pure: frames in, figures out."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import h3
import numpy as np
import plotly.graph_objects as go
import polars as pl

from dashboard.figures.alerts import short_summary
from geofence.datum import from_wgs84, normalize_datum
from pipelines.settings import Settings

Figure = TypeVar("Figure", go.Figure, dict[str, Any])

TECH_COLOURS = {
    "idle": "#1971c2",
    "assigned": "#7048e8",
    "en route": "#f08c00",
    "on site": "#2b8a3e",
    "offline": "#868e96",
}
SLA_BUCKETS = (
    ("within SLA", 0.0, 0.5, "#2b8a3e"),
    ("nearing SLA", 0.5, 1.0, "#f08c00"),
    ("SLA breached", 1.0, math.inf, "#e03131"),
)
_TECH_HOVER = "technician %{customdata[1]} · %{customdata[2]}<extra></extra>"
LAYERS = ("technicians", "tickets", "geofences", "hexagons", "alerts")
_EARTH_M_PER_DEG = 111_320.0
_FIT_PX = 380  # the extent should fill about this many pixels of the map


@dataclass(frozen=True)
class Basemap:
    """Map style from settings; ``tiles_url`` (XYZ raster) draws over a blank style.

    ``datum`` is the tiles' datum (WGS84, GCJ02 or BD09): ``to_basemap`` converts every
    coordinate a map figure draws from WGS84 into it, so points line up on AMap, Tencent
    (GCJ-02) and Baidu (BD-09) tiles.
    """

    style: str = "white-bg"
    tiles_url: str | None = None
    datum: str = "WGS84"

    @classmethod
    def from_settings(cls, settings: Settings) -> Basemap:
        return cls(settings.basemap_style, settings.basemap_tiles_url, settings.basemap_datum)


_MAP_POINT_TRACES = ("scattermap", "densitymap")


def project(
    lat: Sequence[float | None], lon: Sequence[float | None], datum: str
) -> tuple[list[float | None], list[float | None]]:
    """WGS84 points to the basemap's datum; ``None`` gaps (line breaks) stay. Pure."""
    if normalize_datum(datum) == "WGS84" or len(lat) == 0:
        return list(lat), list(lon)
    la = np.array([np.nan if v is None else v for v in lat], dtype=np.float64)
    lo = np.array([np.nan if v is None else v for v in lon], dtype=np.float64)
    ok = np.isfinite(la) & np.isfinite(lo)
    out_la, out_lo = la.copy(), lo.copy()
    if ok.any():
        out_la[ok], out_lo[ok] = from_wgs84(la[ok], lo[ok], datum)
    return (
        [round(float(v), 7) if k else None for v, k in zip(out_la, ok, strict=True)],
        [round(float(v), 7) if k else None for v, k in zip(out_lo, ok, strict=True)],
    )


def _project_geojson(geo: Any, datum: str) -> Any:
    """A GeoJSON object with every ``[lon, lat]`` position converted. Pure."""
    if isinstance(geo, dict):
        out = dict(geo)
        if "coordinates" in out:
            out["coordinates"] = _project_positions(out["coordinates"], datum)
        for key in ("features", "geometry", "geometries"):
            if key in out and out[key] is not None:
                out[key] = _project_geojson(out[key], datum)
        return out
    if isinstance(geo, list | tuple):
        return [_project_geojson(g, datum) for g in geo]
    return geo


def _project_positions(coords: Any, datum: str) -> Any:
    if len(coords) and isinstance(coords[0], int | float):
        lat, lon = project([coords[1]], [coords[0]], datum)
        return [lon[0], lat[0], *coords[2:]]
    return [_project_positions(c, datum) for c in coords]


def _project_trace(trace: dict[str, Any], datum: str) -> None:
    kind = trace.get("type")
    if kind in _MAP_POINT_TRACES and trace.get("lat") is not None:
        trace["lat"], trace["lon"] = project(list(trace["lat"]), list(trace["lon"]), datum)
    elif kind == "choroplethmap" and trace.get("geojson") is not None:
        trace["geojson"] = _project_geojson(trace["geojson"], datum)


def to_basemap(fig: Figure, basemap: Basemap) -> Figure:
    """Every drawn coordinate (point and line traces, choropleth outlines, the map centre)
    from WGS84 into ``basemap.datum``; the figure itself when the datum is WGS84.

    Works on a ``go.Figure`` or a figure dict; returns the same kind.
    """
    if normalize_datum(basemap.datum) == "WGS84":
        return fig
    as_dict = fig if isinstance(fig, dict) else fig.to_plotly_json()
    data = [dict(tr) for tr in as_dict.get("data", [])]
    for tr in data:
        _project_trace(tr, basemap.datum)
    layout = dict(as_dict.get("layout", {}))
    map_cfg = dict(layout.get("map") or {})
    centre = map_cfg.get("center")
    if centre and centre.get("lat") is not None:
        lat, lon = project([centre["lat"]], [centre["lon"]], basemap.datum)
        map_cfg["center"] = {**centre, "lat": lat[0], "lon": lon[0]}
        layout["map"] = map_cfg
    out = {**as_dict, "data": data, "layout": layout}
    return out if isinstance(fig, dict) else go.Figure(out)


def circle(lat: float, lon: float, radius_m: float, n: int = 24) -> tuple[list[float], list[float]]:
    """A closed ring of ``n`` points ``radius_m`` around (lat, lon), equirectangular."""
    dlat = radius_m / _EARTH_M_PER_DEG
    dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
    angles = [2 * math.pi * i / n for i in range(n + 1)]
    return (
        [round(lat + dlat * math.sin(a), 7) for a in angles],
        [round(lon + dlon * math.cos(a), 7) for a in angles],
    )


def rings(
    lats: list[float], lons: list[float], radii_m: list[float], n: int = 16
) -> tuple[list[float | None], list[float | None]]:
    """Many circles in one trace, separated by None."""
    out_lat: list[float | None] = []
    out_lon: list[float | None] = []
    for lat, lon, r in zip(lats, lons, radii_m, strict=True):
        cl, co = circle(lat, lon, r, n)
        out_lat += [*cl, None]
        out_lon += [*co, None]
    return out_lat, out_lon


def center_zoom(
    lats: list[float], lons: list[float], *, max_zoom: float = 19.0
) -> tuple[dict[str, float], float]:
    """Centre of the bounding box and a zoom that fits it (web-mercator rule of thumb)."""
    lats = [x for x in lats if x is not None]
    lons = [x for x in lons if x is not None]
    if not lats:
        return {"lat": 0.0, "lon": 0.0}, 1.0
    lat0, lat1, lon0, lon1 = min(lats), max(lats), min(lons), max(lons)
    span = max(lat1 - lat0, (lon1 - lon0) * math.cos(math.radians((lat0 + lat1) / 2)), 1e-6)
    zoom = min(max_zoom, max(1.0, math.log2(_FIT_PX * 360 / (512 * span))))
    return {"lat": (lat0 + lat1) / 2, "lon": (lon0 + lon1) / 2}, round(zoom, 2)


def map_layout(
    basemap: Basemap,
    center: dict[str, float],
    zoom: float,
    *,
    height: int = 560,
    uirevision: str | None = None,
) -> dict[str, Any]:
    """``layout.map`` with an explicit centre; self-hosted tiles become a raster layer."""
    map_cfg: dict[str, Any] = {"style": basemap.style, "center": center, "zoom": zoom}
    if basemap.tiles_url:
        map_cfg["style"] = "white-bg"
        map_cfg["layers"] = [
            {"below": "traces", "sourcetype": "raster", "source": [basemap.tiles_url]}
        ]
    return {
        "map": map_cfg,
        "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
        "height": height,
        "uirevision": uirevision,
        "legend": {"x": 0.01, "y": 0.99, "bgcolor": "rgba(255,255,255,.85)"},
    }


@functools.lru_cache(maxsize=200_000)
def _cell_ring(cell: str) -> list[list[float]]:
    """Closed GeoJSON ring of one cell (cached: the same cells recur on every refresh)."""
    ring = [[round(lon, 5), round(lat, 5)] for lat, lon in h3.cell_to_boundary(cell)]
    return [*ring, ring[0]]


def cells_geojson(cells: list[str]) -> dict[str, Any]:
    """H3 cells (hex strings) as a GeoJSON FeatureCollection with ``id`` = cell."""
    features = [
        {
            "type": "Feature",
            "id": cell,
            "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [_cell_ring(cell)]},
        }
        for cell in cells
    ]
    return {"type": "FeatureCollection", "features": features}


def cell_outline(cells: list[str]) -> tuple[list[float | None], list[float | None]]:
    """Outer boundary of a set of cells as line coordinates (None between polygons)."""
    lats: list[float | None] = []
    lons: list[float | None] = []
    if not cells:
        return lats, lons
    shape = h3.cells_to_geo(cells)
    polys = shape["coordinates"] if shape["type"] == "MultiPolygon" else [shape["coordinates"]]
    for poly in polys:
        for ring in poly[:1]:
            lons += [round(p[0], 6) for p in ring] + [None]
            lats += [round(p[1], 6) for p in ring] + [None]
    return lats, lons


def _hex_id(value: Any) -> str:
    return value if isinstance(value, str) else h3.int_to_str(int(value))


def dispatch_figure(
    *,
    technicians: pl.DataFrame,
    tickets: pl.DataFrame,
    aggregated: bool,
    geofences: pl.DataFrame,
    hexes: pl.DataFrame,
    alerts: pl.DataFrame,
    visible: set[str],
    basemap: Basemap,
    radius_m: float,
) -> dict[str, Any]:
    """The dispatch map: one trace per layer/category; ``meta`` names the layer.

    Returned as a plain figure dict: plotly's per-element validation of ~10k points and a
    GeoJSON of hexagons costs seconds, and Dash serializes the dict as is.
    """
    traces: list[dict[str, Any]] = []
    if "hexagons" in visible and hexes.height:
        cells = [_hex_id(c) for c in hexes["h3_r7"].to_list()]
        traces.append(
            {
                "type": "choroplethmap",
                "geojson": cells_geojson(cells),
                "locations": cells,
                "z": hexes["n"].to_list(),
                "text": hexes["tag"].to_list(),
                "colorscale": "Purples",
                "marker": {"opacity": 0.45, "line": {"width": 0.5}},
                "showscale": False,
                "name": "ticket density (H3 r7)",
                "meta": "hexagons",
                "hovertemplate": "%{z} open tickets · top tag %{text}<extra></extra>",
            }
        )
    if "alerts" in visible:
        for row in alerts.iter_rows(named=True):
            lat, lon = cell_outline(list(row["member_cells"]))
            traces.append(
                {
                    "type": "scattermap",
                    "lat": lat,
                    "lon": lon,
                    "mode": "lines",
                    "line": {"width": 3, "color": "#c92a2a"},
                    "name": f"alert {row['tag']} ({row['member_count']})",
                    "meta": "alerts",
                    "hovertext": short_summary(row["explanation"]),
                    "hoverinfo": "text",
                    "showlegend": False,
                }
            )
    if "geofences" in visible and geofences.height:
        lat, lon = rings(
            geofences["lat"].to_list(),
            geofences["lon"].to_list(),
            [radius_m] * geofences.height,
            n=12,
        )
        traces.append(
            {
                "type": "scattermap",
                "lat": lat,
                "lon": lon,
                "mode": "lines",
                "fill": "toself",
                "line": {"width": 1, "color": "#1c7ed6"},
                "meta": "geofences",
                "name": f"customer geofence ({radius_m:g} m)",
                "hoverinfo": "skip",
            }
        )
    if "tickets" in visible and tickets.height:
        for label, lo, hi, colour in SLA_BUCKETS:
            part = tickets.filter((pl.col("sla_ratio") >= lo) & (pl.col("sla_ratio") < hi))
            if part.height == 0:
                continue
            size = (
                (part["n"].cast(pl.Float64).sqrt() * 4 + 6).clip(upper_bound=30).to_list()
                if aggregated
                else 9
            )
            traces.append(
                {
                    "type": "scattermap",
                    "lat": part["lat"].round(5).to_list(),
                    "lon": part["lon"].round(5).to_list(),
                    "mode": "markers",
                    "marker": {"size": size, "color": colour, "opacity": 0.85},
                    "customdata": [
                        ["t", t, n] for t, n in zip(part["ticket_id"], part["n"], strict=True)
                    ],
                    "hovertemplate": (
                        "%{customdata[2]} tickets · worst %{customdata[1]}<extra></extra>"
                        if aggregated
                        else "ticket %{customdata[1]}<extra></extra>"
                    ),
                    "name": f"tickets: {label}",
                    "meta": "tickets",
                }
            )
    if "technicians" in visible and technicians.height:
        for status, colour in TECH_COLOURS.items():
            part = technicians.filter(pl.col("tech_status") == status)
            if part.height == 0:
                continue
            traces.append(
                {
                    "type": "scattermap",
                    "lat": part["lat"].round(5).to_list(),
                    "lon": part["lon"].round(5).to_list(),
                    "mode": "markers",
                    "marker": {"size": 11, "color": colour, "symbol": "circle"},
                    "customdata": [
                        ["k", tid, tk or ""]
                        for tid, tk in zip(part["technician_id"], part["ticket_id"], strict=True)
                    ],
                    "hovertemplate": _TECH_HOVER,
                    "name": f"technician: {status}",
                    "meta": "technicians",
                }
            )
    lats = tickets["lat"].to_list() + technicians["lat"].to_list()
    lons = tickets["lon"].to_list() + technicians["lon"].to_list()
    center, zoom = center_zoom(lats, lons, max_zoom=16)
    figure = {"data": traces, "layout": map_layout(basemap, center, zoom, uirevision="dispatch")}
    return to_basemap(figure, basemap)


def arrival_zoom(lat: float, focus_m: float, *, height_px: int, margin: float = 2.5) -> float:
    """Zoom at which ``margin`` × ``focus_m`` either side of the centre fits ``height_px``."""
    m_per_px_z0 = 2 * math.pi * 6_378_137 / 512 * math.cos(math.radians(lat))  # 512 px tiles
    span_m = max(2 * margin * focus_m, 1.0)
    return round(min(21.0, max(1.0, math.log2(m_per_px_z0 * height_px / span_m))), 2)


@dataclass(frozen=True)
class DecisiveFix:
    """The fix the arrival verdict rests on (from the check's evidence)."""

    lat: float
    lon: float
    label: str
    distance_m: float | None = None


def arrival_figure(
    *,
    customer: tuple[float, float] | None,
    fixes: pl.DataFrame,
    stop: tuple[float, float] | None,
    radius_m: float,
    basemap: Basemap,
    decisive: DecisiveFix | None = None,
    min_focus_m: float = 25.0,
) -> go.Figure:
    """Arrival evidence around the customer: the radius circle, the fixes near the arrival
    with their accuracy circles, the stop centroid and the decisive fix.

    Centred on the customer and zoomed so about 2.5 × max(decisive distance, ``min_focus_m``)
    fits either side, so a 5 m circle stays visible.
    """
    height = 380
    fig = go.Figure()
    lats: list[float] = []
    lons: list[float] = []
    if customer is not None:
        clat, clon = circle(customer[0], customer[1], radius_m, 48)
        fig.add_trace(
            go.Scattermap(
                lat=clat,
                lon=clon,
                mode="lines",
                fill="toself",
                line={"color": "#1c7ed6", "width": 2},
                meta="geofence",
                name=f"{radius_m:g} m around customer",
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scattermap(
                lat=[customer[0]],
                lon=[customer[1]],
                mode="markers",
                marker={"size": 12, "color": "#1c7ed6"},
                meta="customer",
                name="customer",
            )
        )
        lats += clat
        lons += clon
    if fixes.height:
        acc = fixes["accuracy_m"].fill_null(0.0).to_list()
        rlat, rlon = rings(fixes["lat"].to_list(), fixes["lon"].to_list(), acc, n=16)
        fig.add_trace(
            go.Scattermap(
                lat=rlat,
                lon=rlon,
                mode="lines",
                line={"color": "rgba(240,140,0,.6)", "width": 1},
                meta="accuracy",
                name="fix accuracy",
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scattermap(
                lat=fixes["lat"].to_list(),
                lon=fixes["lon"].to_list(),
                mode="markers",
                marker={"size": 8, "color": "#f08c00"},
                meta="fixes",
                name="GPS fixes (±5 min)",
                text=[f"{t:%H:%M:%S} ±{a:.1f} m" for t, a in zip(fixes["ts"], acc, strict=True)],
                hoverinfo="text",
            )
        )
        lats += fixes["lat"].to_list()
        lons += fixes["lon"].to_list()
    if stop is not None:
        fig.add_trace(
            go.Scattermap(
                lat=[stop[0]],
                lon=[stop[1]],
                mode="markers",
                marker={"size": 15, "color": "#2b8a3e"},
                meta="stop",
                name="stop centroid",
            )
        )
        lats.append(stop[0])
        lons.append(stop[1])
    if decisive is not None:
        fig.add_trace(
            # No map text: symbol labels need glyphs from a font server (offline: console
            # errors). The label goes in the legend, the hover and a corner note instead.
            go.Scattermap(
                lat=[decisive.lat],
                lon=[decisive.lon],
                mode="markers",
                marker={"size": 14, "color": "#c92a2a"},
                text=[decisive.label],
                meta="decisive",
                name=decisive.label,
                hoverinfo="text",
            )
        )
        fig.add_annotation(
            text=f"● {decisive.label}",
            xref="paper",
            yref="paper",
            x=0.99,
            y=0.01,
            xanchor="right",
            yanchor="bottom",
            showarrow=False,
            font={"color": "#c92a2a", "size": 12},
            bgcolor="rgba(255,255,255,.85)",
        )
    if customer is not None:
        focus = max(min_focus_m, (decisive.distance_m or 0.0) if decisive else 0.0)
        center = {"lat": customer[0], "lon": customer[1]}
        zoom = arrival_zoom(customer[0], focus, height_px=height)
    else:
        center, zoom = center_zoom(lats, lons, max_zoom=20)
    fig.update_layout(**map_layout(basemap, center, zoom, height=height))
    return to_basemap(fig, basemap)


def cells_figure(cells: list[str], counts: list[int] | None, basemap: Basemap) -> go.Figure:
    """Member cells of one cluster alert, shaded by member tickets per cell."""
    fig = go.Figure()
    if cells:
        z = counts if counts is not None else [1] * len(cells)
        fig.add_trace(
            go.Choroplethmap(
                geojson=cells_geojson(cells),
                locations=cells,
                z=z,
                colorscale="Reds",
                marker={"opacity": 0.55},
                showscale=False,
                meta="cells",
                name="member cells",
                hovertemplate="%{location}: %{z}<extra></extra>",
            )
        )
        lat, lon = cell_outline(cells)
        fig.add_trace(
            go.Scattermap(
                lat=lat,
                lon=lon,
                mode="lines",
                meta="outline",
                line={"color": "#c92a2a", "width": 2},
                name="cluster",
            )
        )
        center, zoom = center_zoom(
            [x for x in lat if x is not None], [x for x in lon if x is not None], max_zoom=15
        )
    else:
        center, zoom = {"lat": 0.0, "lon": 0.0}, 1.0
    fig.update_layout(**map_layout(basemap, center, zoom, height=320))
    fig.update_layout(showlegend=False)
    return to_basemap(fig, basemap)
