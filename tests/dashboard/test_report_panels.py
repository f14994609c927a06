"""The analytics page's trend-report panels on the demo world, in a real browser: the figure
table, the breakdowns and the Gi* hot-spot map (drawn on a GCJ-02 basemap)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dashboard import create_app
from dashboard.figures.maps import cell_outline, project
from pipelines.store.gateway import Store
from pipelines.views import report as views

TRACES_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data) return null;
return gd.data.map(t => ({meta: t.meta, type: t.type, n: (t.y || t.lat || t.locations || []).length,
                          lat: t.lat ? t.lat.slice(0, 3) : null, y0: t.y ? t.y[0] : null}));
"""


def _traces(dash_duo: Any, graph: str, want: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        got = dash_duo.driver.execute_script(TRACES_JS, f"#{graph}") or []
        if len(got) >= want:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{graph}: {len(got)} traces, wanted {want}")


@pytest.mark.browser
def test_report_panels_show_figures_causes_and_hot_spots(
    dash_duo, demo_app_settings, artifacts
) -> None:  # type: ignore[no-untyped-def]
    settings = demo_app_settings
    gcj = settings.model_copy(update={"basemap_datum": "GCJ02"})
    with Store(settings.store_path, read_only=True) as store:
        table = views.report_table(views.report_breakdowns(store))
        gi = views.revisit_hotspots(store)
    dash_duo.start_server(create_app(gcj))
    dash_duo.wait_for_page(f"{dash_duo.server.url}/analytics")
    dash_duo.wait_for_element("#analytics-report-table tbody tr", timeout=30)
    rows = dash_duo.find_elements("#analytics-report-table tbody tr")
    assert [r.get_attribute("data-figure") for r in rows] == table["figure"].to_list()
    idle = next(r for r in rows if r.get_attribute("data-figure") == "accept → depart idle")
    assert "region: south" in idle.text
    assert f"{table['value'][1]:.2f} h" in idle.text
    # The breakdowns: one bar panel per figure, the cause's bar in red.
    bars = _traces(dash_duo, "analytics-report-breakdowns", 4)
    assert sorted(t["meta"] for t in bars) == sorted(f"report:{f}" for f in table["figure"])
    colours = dash_duo.driver.execute_script(
        "const gd = document.querySelector('#analytics-report-breakdowns .js-plotly-plot');"
        "return gd.data.map(t => t.marker.color);"
    )
    assert all("#e03131" in c for c in colours)
    # The hot-spot map: every study cell, hot cells outlined, in GCJ-02 like the tiles.
    layers = {t["meta"]: t for t in _traces(dash_duo, "analytics-hotspots", 2)}
    assert layers["hotspots"]["n"] == gi.height
    hot = gi.filter(gi["hot"])
    assert hot.height > 0
    dash_duo.wait_for_element("#analytics-hotspots .maplibregl-canvas", timeout=20)
    outline_lat = layers["hot-cells"]["lat"][0]
    wgs_lat, wgs_lon = cell_outline(hot["cell_id"].to_list())
    expected = project(wgs_lat[:1], wgs_lon[:1], "GCJ02")[0][0]
    assert outline_lat == pytest.approx(expected, abs=1e-6)
    assert abs(outline_lat - wgs_lat[0]) > 1e-4  # converted, not drawn in WGS84
    dash_duo.driver.execute_script(
        "document.querySelector('#analytics-report-table').scrollIntoView();"
    )
    time.sleep(1.5)  # let the map paint
    dash_duo.driver.save_screenshot(str(artifacts / "analytics-report-panels.png"))
    # A user filters by region: the journey panels update, the report panels stay.
    before = _traces(dash_duo, "analytics-segments", 5)
    dash_duo.select_dcc_dropdown("#analytics-region", value="south")
    deadline = time.monotonic() + 30
    while _traces(dash_duo, "analytics-segments", 1) == before and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _traces(dash_duo, "analytics-segments", 1) != before
    assert len(dash_duo.find_elements("#analytics-report-table tbody tr")) == 4
    assert dash_duo.get_logs() == []
