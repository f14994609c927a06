"""Real headless Chromium: each page for its role, clicks, filters, write-backs, screenshots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from selenium.webdriver.common.by import By

from dashboard import create_app
from tests.dashboard.conftest import PASSWORDS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

POINTS_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data) return -1;
return gd.data.filter(t => t.meta === arguments[1])
              .reduce((n, t) => n + (t.lat || t.x || t.locations || t.y || []).length, 0);
"""


CLOSEST_TICKET_JS = """
const gd = document.querySelector('#dispatch-map .js-plotly-plot');
const m = gd._fullLayout.map._subplot.map;
const r = m.getCanvas().getBoundingClientRect();
let best = null;
gd.data.forEach(t => { if (t.meta !== 'tickets') return;
  t.lat.forEach((lat, j) => { const p = m.project([t.lon[j], lat]);
    const d = Math.hypot(p.x - r.width / 2, p.y - r.height / 2);
    if (!best || d < best[3]) best = [Math.round(p.x - r.width / 2),
                                      Math.round(p.y - r.height / 2), t.customdata[j][1], d,
                                      gd.data.indexOf(t), j];
  }); });
return best;
"""


CLICK_JS = """
const gd = document.querySelector('#dispatch-map .js-plotly-plot');
gd.emit('plotly_click', {points: [{curveNumber: arguments[0], pointNumber: arguments[1]}]});
"""


# Every segment row draws a box: its q1..q3 sits inside its own x-axis view and the box path
# has a height on screen.
SEGMENT_BOXES_JS = """
const gd = document.querySelector('#analytics-segments .js-plotly-plot');
if (!gd || !gd._fullData) return null;
const boxes = Array.from(gd.querySelectorAll('.boxlayer .trace.boxes path.box'));
return gd._fullData.filter(t => t.meta === 'segments').map((t, i) => {
  const ax = gd._fullLayout[t.xaxis.replace('x', 'xaxis')];
  const r = boxes[i] ? boxes[i].getBBox() : {height: 0};
  return [t.y[0], ax.range[0] <= t.q1[0] && t.q3[0] <= ax.range[1], r.height];
});
"""


def _open_tickets(dash_duo: Any, want: int, timeout: float = 15) -> int:
    """Wait until the map draws ``want`` ticket points; return what it drew."""
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        n = dash_duo.driver.execute_script(POINTS_JS, "#dispatch-map", "tickets")
        if n == want:
            break
        time.sleep(0.2)
    return int(n)


def _login(dash_duo: Any, user: str, next_path: str) -> None:
    dash_duo.driver.get(f"{dash_duo.server.url}/login?next={quote(next_path)}")
    dash_duo.find_element("#login-username").send_keys(user)
    dash_duo.find_element("#login-password").send_keys(PASSWORDS[user])
    dash_duo.find_element("#login-submit").click()
    dash_duo.wait_for_element("#page-content", timeout=10)


def _points(dash_duo: Any, graph: str, meta: str, *, at_least: int = 1, timeout: float = 15) -> int:
    """Wait until the rendered plotly graph holds ≥ ``at_least`` points of layer ``meta``."""
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        n = dash_duo.driver.execute_script(POINTS_JS, f"#{graph}", meta)
        if n >= at_least:
            return int(n)
        time.sleep(0.2)
    raise AssertionError(f"{graph}: layer {meta} has {n} points, wanted ≥ {at_least}")


def _map_canvas_ready(dash_duo: Any, graph: str) -> None:
    dash_duo.wait_for_element(f"#{graph} .maplibregl-canvas", timeout=15)


def _shot(dash_duo: Any, artifacts: Path, name: str) -> None:
    time.sleep(1.0)  # let map tiles/markers paint
    dash_duo.driver.save_screenshot(str(artifacts / f"{name}.png"))


def _no_console_errors(dash_duo: Any) -> None:
    assert dash_duo.get_logs() == []


def test_dispatch_map_filters_and_click_opens_ticket(dash_duo, settings, artifacts) -> None:  # type: ignore[no-untyped-def]
    dash_duo.start_server(create_app(settings), navigate=False)
    _login(dash_duo, "dispatch", "/dispatch")
    _map_canvas_ready(dash_duo, "dispatch-map")
    # The test store is historical (its clock is weeks before the wall clock): the board opens
    # on the latest weekday 10:00 local, Mon 5 Oct 10:00 (02:00 UTC), before T-100, T-101 and
    # T-2 were created and before any technician had a fix.
    dash_duo.wait_for_contains_text("#dispatch-at-label", "Mon 05 Oct 2026 10:00", timeout=10)
    assert _open_tickets(dash_duo, 18) == 18
    assert dash_duo.find_element("#dispatch-open-count").text == "18"
    assert _points(dash_duo, "dispatch-map", "hexagons") >= 2
    assert _points(dash_duo, "dispatch-map", "alerts") >= 2  # both alerts active by then
    # the test store's one check is an arrival-v1 VERIFIED: read as AT_DOOR
    dash_duo.wait_for_contains_text(
        "[data-kpi='arrival on site'] .card-value", "100 % (100 % at door)"
    )
    _shot(dash_duo, artifacts, "dispatch-as-of-default")

    # "latest": the data clock, 3 more open tickets and all four technicians.
    dash_duo.find_element("#dispatch-at-latest").click()
    assert _open_tickets(dash_duo, 21) == 21
    all_tickets = 21
    assert _points(dash_duo, "dispatch-map", "technicians") == 4
    dash_duo.wait_for_contains_text("#dispatch-at-label", "latest: the data clock")
    assert "at=latest" in dash_duo.driver.current_url
    _shot(dash_duo, artifacts, "dispatch")

    # An explicit moment in the URL: before any ticket existed nothing is open.
    dash_duo.driver.get(f"{dash_duo.server.url}/dispatch?at=2026-09-20T10:00")
    dash_duo.wait_for_contains_text("#dispatch-note", "0 open tickets", timeout=10)
    dash_duo.driver.get(f"{dash_duo.server.url}/dispatch?at=latest")
    _map_canvas_ready(dash_duo, "dispatch-map")
    assert _open_tickets(dash_duo, 21) == 21

    # Filter: region south only -> fewer ticket points, and the URL keeps the filter.
    dash_duo.select_dcc_dropdown("#dispatch-region", "south")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        n = dash_duo.driver.execute_script(POINTS_JS, "#dispatch-map", "tickets")
        if 0 < n < all_tickets:
            break
        time.sleep(0.2)
    assert n == 8
    assert "region=south" in dash_duo.driver.current_url
    _shot(dash_duo, artifacts, "dispatch-south")

    # Reload: the filter comes back from the URL.
    dash_duo.driver.refresh()
    _map_canvas_ready(dash_duo, "dispatch-map")
    assert _points(dash_duo, "dispatch-map", "tickets", at_least=8) == 8

    # Click a ticket point: plotly's own plotly_click event for the point nearest the centre
    # (maplibre hover does not fire from synthetic WebDriver pointer moves in headless mode).
    dash_duo.driver.get(f"{dash_duo.server.url}/dispatch?region=north&layers=tickets")
    _map_canvas_ready(dash_duo, "dispatch-map")
    _points(dash_duo, "dispatch-map", "tickets")
    # The resolved as-of moment is written to the URL once; let that land before clicking.
    deadline = time.monotonic() + 10
    while "at=" not in dash_duo.driver.current_url and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "at=2026-10-05T10%3A00" in dash_duo.driver.current_url
    xy = dash_duo.driver.execute_script(CLOSEST_TICKET_JS)
    dash_duo.driver.execute_script(CLICK_JS, xy[4], xy[5])
    dash_duo.wait_for_contains_text("#ticket-header", f"Ticket {xy[2]}", timeout=10)
    assert f"/ticket?id={xy[2]}" in dash_duo.driver.current_url
    _no_console_errors(dash_duo)


def test_ticket_detail_shows_arrival_evidence_and_checklist(
    dash_duo,
    settings,  # type: ignore[no-untyped-def]
    artifacts,
) -> None:
    dash_duo.start_server(create_app(settings), navigate=False)
    _login(dash_duo, "dispatch", "/ticket?id=T-1")
    dash_duo.wait_for_text_to_equal("#arrival-verdict", "AT_DOOR", timeout=10)  # v1 VERIFIED
    evidence = dash_duo.find_element("#arrival-evidence").text
    assert "distance: 2.1 m" in evidence  # the fact, not repeated as evidence distance_m
    assert "distance_m" not in evidence
    assert "stop_lat: 30.291000" in evidence
    _map_canvas_ready(dash_duo, "ticket-arrival-map")
    assert _points(dash_duo, "ticket-arrival-map", "fixes") >= 5
    assert _points(dash_duo, "ticket-arrival-map", "stop") == 1
    assert _points(dash_duo, "ticket-timeline", "physical") == 3  # departed, arrived, left
    _shot(dash_duo, artifacts, "ticket-T-1")

    dash_duo.driver.get(f"{dash_duo.server.url}/ticket?id=T-2")
    dash_duo.wait_for_element("#checklist-items", timeout=10)
    rules = [
        e.get_attribute("data-rule")
        for e in dash_duo.driver.find_elements(By.CSS_SELECTOR, "#checklist-items .check-item")
    ]
    assert rules == ["iot_vibration_band", "active_outage", "heavy_rain", "earlier_parts_revisit"]
    assert "compressor relay" in dash_duo.find_element("#checklist-items").text
    dash_duo.wait_for_contains_text("#arrival-empty", "Not verified yet")
    _shot(dash_duo, artifacts, "ticket-T-2")
    _no_console_errors(dash_duo)


def test_warehouse_acknowledges_an_order_and_it_persists(
    dash_duo,
    settings,  # type: ignore[no-untyped-def]
    artifacts,
) -> None:
    app = create_app(settings)
    dash_duo.start_server(app, navigate=False)
    _login(dash_duo, "wh-north", "/alerts")
    dash_duo.wait_for_element("#orders-table", timeout=10)
    table = dash_duo.find_element("#orders-table").text
    assert "O-N1" in table
    assert "O-S1" not in table
    assert len(dash_duo.driver.find_elements(By.CSS_SELECTOR, ".alert-item")) == 1
    assert _points(dash_duo, "alerts-map", "cells") >= 2
    assert "Dispatch" not in dash_duo.find_element("#nav").text
    _shot(dash_duo, artifacts, "alerts-warehouse")

    dash_duo.find_element('button[id*=\'"action":"acknowledge"\']').click()
    dash_duo.wait_for_contains_text("#alerts-message", "acknowledged by wh-north", timeout=10)
    dash_duo.wait_for_text_to_equal("[data-order='O-N1']", "acknowledged")
    dash_duo.driver.refresh()
    dash_duo.wait_for_text_to_equal("[data-order='O-N1']", "acknowledged", timeout=10)
    store = app.server.config["FIELDTRACE_CONTEXT"].store
    audit = store.query("SELECT actor, action, object_id FROM audit_log")
    assert audit.rows() == [("wh-north", "order_acknowledged", "O-N1")]

    # Editing the URL to another warehouse's alert shows nothing of it.
    dash_duo.driver.get(f"{dash_duo.server.url}/alerts?alert=A-2")
    dash_duo.wait_for_contains_text("#alerts-detail", "not in your scope", timeout=10)
    assert "O-S2" not in dash_duo.find_element("#page-content").text
    _no_console_errors(dash_duo)


def test_analytics_and_status_pages_render_pictures(dash_duo, settings, artifacts) -> None:  # type: ignore[no-untyped-def]
    dash_duo.start_server(create_app(settings), navigate=False)
    _login(dash_duo, "analyst", "/analytics")
    dash_duo.wait_for_element("#analytics-segments .js-plotly-plot", timeout=10)
    assert _points(dash_duo, "analytics-segments", "segments") == 6
    boxes = dash_duo.driver.execute_script(SEGMENT_BOXES_JS)
    assert len(boxes) == 6
    for name, inside, height in boxes:
        assert inside, f"{name}: its box lies outside its axis view"
        assert height > 5, f"{name}: no box drawn"
    assert _points(dash_duo, "analytics-technicians", "technicians") == 2
    assert _points(dash_duo, "analytics-verdicts", "verdicts") == 1
    assert _points(dash_duo, "analytics-lag", "lag") == 1
    # the reliability panel: the test store's only check is an unlabelled arrival-v1 verdict
    dash_duo.wait_for_contains_text("#analytics-reliability", "no labelled arrivals", timeout=10)
    _shot(dash_duo, artifacts, "analytics")
    dash_duo.find_element("#nav-alerts").click()
    dash_duo.wait_for_element("#orders-table", timeout=10)
    assert "O-S1" in dash_duo.find_element("#orders-table").text  # analysts see all warehouses
    _shot(dash_duo, artifacts, "alerts-analyst")
    dash_duo.find_element("#nav-status").click()
    dash_duo.wait_for_element("#status-counts .card", timeout=10)
    _no_console_errors(dash_duo)


def test_empty_store_shows_empty_states(dash_duo, empty_settings, artifacts) -> None:  # type: ignore[no-untyped-def]
    dash_duo.start_server(create_app(empty_settings), navigate=False)
    _login(dash_duo, "dispatch", "/alerts")
    dash_duo.wait_for_contains_text("#alerts-empty", "No cluster alerts yet", timeout=10)
    dash_duo.find_element("#nav-dispatch").click()
    dash_duo.wait_for_contains_text(
        "[data-kpi='arrival on site'] .card-value", "not computed yet", timeout=10
    )
    _shot(dash_duo, artifacts, "dispatch-empty")
    _no_console_errors(dash_duo)


def test_login_page_in_browser(dash_duo, settings, artifacts) -> None:  # type: ignore[no-untyped-def]
    dash_duo.start_server(create_app(settings), navigate=False)
    dash_duo.driver.get(f"{dash_duo.server.url}/dispatch")
    dash_duo.wait_for_element("#login-form", timeout=10)
    assert "/login?next=/dispatch" in dash_duo.driver.current_url
    _shot(dash_duo, artifacts, "login")
