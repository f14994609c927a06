"""Basemap datum: a point lands on the same tile pixel on GCJ-02 / BD-09 tiles as on OSM.

A tile source draws a physical place at the web-mercator pixel of *its* datum's coordinates
of that place. The reference pairs below are the published examples of the ``coordtransform``
library (wandergis/coordTransform_py README), independent of ``geofence.datum``:

* WGS84 (39.915, 116.404) is GCJ-02 (39.91640428150164, 116.41024449916938);
* GCJ-02 (39.90865673957631, 116.39762729119315) is BD-09 (39.915, 116.404).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest

from dashboard.figures.maps import (
    Basemap,
    arrival_figure,
    cells_figure,
    dispatch_figure,
    project,
    to_basemap,
)
from dashboard.figures.replay import playback_samples
from geofence.datum import gcj02_to_wgs84
from pipelines.errors import SettingsError
from pipelines.settings import load_settings
from pipelines.views.replay import ReplayBundle

ZOOM = 18.0
OSM = Basemap("open-street-map", None, "WGS84")
AMAP = Basemap(
    "white-bg",
    "https://webrd01.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}",
    "GCJ02",
)
BAIDU = Basemap("white-bg", "http://tiles.local/baidu/{z}/{x}/{y}.png", "BD09")

WGS_PLACE = (39.915, 116.404)
GCJ_OF_PLACE = (39.91640428150164, 116.41024449916938)
GCJ_PLACE_2 = (39.90865673957631, 116.39762729119315)
BD_OF_PLACE_2 = (39.915, 116.404)


def pixel(lat: float, lon: float, zoom: float = ZOOM) -> tuple[float, float]:
    """Web-mercator pixel of (lat, lon) on 512-px tiles (MapLibre's world at ``zoom``)."""
    size = 512 * 2**zoom
    x = (lon + 180) / 360 * size
    s = math.sin(math.radians(lat))
    y = (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * size
    return x, y


def _marker(fig: Any, meta: str) -> tuple[float, float]:
    data = fig["data"] if isinstance(fig, dict) else fig.to_plotly_json()["data"]
    tr = next(t for t in data if t.get("meta") == meta)
    return float(tr["lat"][0]), float(tr["lon"][0])


def _px_apart(a: tuple[float, float], b: tuple[float, float]) -> float:
    (ax, ay), (bx, by) = pixel(*a), pixel(*b)
    return math.hypot(ax - bx, ay - by)


def _arrival(place: tuple[float, float], basemap: Basemap) -> Any:
    return arrival_figure(
        customer=place, fixes=pl.DataFrame(), stop=place, radius_m=5.0, basemap=basemap
    )


@pytest.mark.parametrize(
    ("wgs", "on_tiles", "basemap"),
    [
        (WGS_PLACE, GCJ_OF_PLACE, AMAP),
        (tuple(float(v) for v in gcj02_to_wgs84(*GCJ_PLACE_2)), BD_OF_PLACE_2, BAIDU),
    ],
    ids=["amap-gcj02", "baidu-bd09"],
)
def test_a_place_lands_on_the_same_pixel_as_on_osm(
    wgs: tuple[float, float], on_tiles: tuple[float, float], basemap: Basemap
) -> None:
    osm = _marker(_arrival(wgs, OSM), "customer")
    china = _marker(_arrival(wgs, basemap), "customer")
    # On OSM the marker sits on the place's OSM pixel; on the China tiles on its pixel there.
    assert _px_apart(osm, wgs) < 0.5
    assert _px_apart(china, on_tiles) < 1.0
    # Without the conversion the marker would be hundreds of pixels off the place.
    assert _px_apart(wgs, on_tiles) > 500
    # The map centre moves with the points.
    fig = _arrival(wgs, basemap).to_plotly_json()
    centre = fig["layout"]["map"]["center"]
    assert _px_apart((centre["lat"], centre["lon"]), on_tiles) < 2.0


def test_every_drawn_coordinate_moves_and_gaps_stay() -> None:
    cells = ["8831aa50c1fffff", "8831aa50c3fffff"]
    fig = cells_figure(cells, [3, 5], AMAP).to_plotly_json()
    wgs = cells_figure(cells, [3, 5], OSM).to_plotly_json()
    ring = fig["data"][0]["geojson"]["features"][0]["geometry"]["coordinates"][0][0]
    ring0 = wgs["data"][0]["geojson"]["features"][0]["geometry"]["coordinates"][0][0]
    assert ring == [project([ring0[1]], [ring0[0]], "GCJ02")[1][0], ring[1]]
    assert _px_apart((ring[1], ring[0]), (ring0[1], ring0[0])) > 500
    outline = next(t for t in fig["data"] if t["type"] == "scattermap")
    assert None in outline["lat"]  # line breaks kept
    lat, lon = project([WGS_PLACE[0], None], [WGS_PLACE[1], None], "GCJ02")
    assert lat[1] is None
    assert lon[1] is None
    assert (lat[0], lon[0]) == pytest.approx(GCJ_OF_PLACE, abs=1e-7)


def test_wgs84_basemap_leaves_the_figure_alone() -> None:
    fig = _arrival(WGS_PLACE, OSM)
    assert to_basemap(fig, OSM) is fig


def test_dispatch_map_converts_its_points() -> None:
    tickets = pl.DataFrame(
        {"ticket_id": ["T1"], "lat": [WGS_PLACE[0]], "lon": [WGS_PLACE[1]], "sla_ratio": [0.1]}
    ).with_columns(n=pl.lit(1))
    techs = pl.DataFrame(
        {"technician_id": ["K1"], "ticket_id": [None], "lat": [WGS_PLACE[0]]},
        schema_overrides={"ticket_id": pl.String},
    ).with_columns(lon=pl.lit(WGS_PLACE[1]), tech_status=pl.lit("idle"))
    common: dict[str, Any] = {
        "technicians": techs,
        "tickets": tickets,
        "aggregated": False,
        "geofences": pl.DataFrame(),
        "hexes": pl.DataFrame(),
        "alerts": pl.DataFrame(),
        "visible": {"tickets", "technicians"},
        "radius_m": 5.0,
    }
    osm = dispatch_figure(**common, basemap=OSM)
    amap = dispatch_figure(**common, basemap=AMAP)
    for meta in ("tickets", "technicians"):
        assert _px_apart(_marker(osm, meta), WGS_PLACE) < 1.0
        assert _px_apart(_marker(amap, meta), GCJ_OF_PLACE) < 1.0


def test_replay_playback_positions_are_in_the_basemap_datum() -> None:
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    gps = pl.DataFrame(
        {
            "technician_id": ["K1"],
            "ts": [t0],
            "lat": [WGS_PLACE[0]],
            "lon": [WGS_PLACE[1]],
            "accuracy_m": [4.0],
        }
    )
    empty = pl.DataFrame()
    bundle = ReplayBundle(
        ticket={"ticket_id": "T1"},
        at=t0,
        start=t0,
        end=t0,
        lifecycle=pl.DataFrame({"ts": [t0], "event_id": ["E1"]}),
        checks=empty,
        gps=gps,
        uwb_site=None,
        uwb=empty,
        weather=empty,
        outages=empty,
        devices=empty,
        iot=empty,
        vibration=empty,
        nearby=empty,
        alerts=empty,
        technicians=("K1",),
    )
    wgs = playback_samples(bundle)
    gcj = playback_samples(bundle, datum="GCJ02")
    assert _px_apart((wgs["gps"]["lat"][0], wgs["gps"]["lon"][0]), WGS_PLACE) < 1.0
    assert _px_apart((gcj["gps"]["lat"][0], gcj["gps"]["lon"][0]), GCJ_OF_PLACE) < 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("WGS84", "WGS84"), ("gcj-02", "GCJ02"), ("BD09", "BD09"), ("bd-09", "BD09")],
)
def test_basemap_datum_setting(value: str, expected: str) -> None:
    assert load_settings(basemap_datum=value).basemap_datum == expected


def test_unknown_basemap_datum_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match=r"(?i)basemap_datum"):
        load_settings(basemap_datum="EPSG:3857")
