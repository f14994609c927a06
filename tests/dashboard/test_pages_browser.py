"""Real headless Chromium: each page for its role, clicks, filters, write-backs, screenshots."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from selenium.webdriver.common.by import By

from dashboard import create_app
from pipelines.store.gateway import Store
from pipelines.views.analytics import SEGMENTS
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


# No callback in flight and the map's style, sources and tiles loaded.
IDLE_JS = """
if (document.querySelector('[data-dash-is-loading="true"]')) return false;
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
const sub = gd && gd._fullLayout && gd._fullLayout.map && gd._fullLayout.map._subplot;
return Boolean(sub && sub.map && sub.map.loaded());
"""


def _page_idle(dash_duo: Any, graph: str, timeout: float = 10) -> None:
    """Wait until the page's callbacks have landed and the map has finished drawing, so that
    leaving the page does not tear a map down mid-draw (plotly then logs a TypeError)."""
    deadline = time.monotonic() + timeout
    while not dash_duo.driver.execute_script(IDLE_JS, f"#{graph}"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{graph}: still drawing after {timeout} s")
        time.sleep(0.2)
    time.sleep(0.3)  # two animation frames' grace for plotly's own after-draw work


def _shot(dash_duo: Any, artifacts: Path, name: str) -> None:
    time.sleep(1.0)  # let map tiles/markers paint
    dash_duo.driver.save_screenshot(str(artifacts / f"{name}.png"))


def _no_console_errors(dash_duo: Any) -> None:
    assert dash_duo.get_logs() == []


def _store(app: Any) -> Store:
    return app.server.config["FIELDTRACE_CONTEXT"].store  # type: ignore[no-any-return]


def _open_at(store: Store, at: datetime, region: str | None = None) -> int:
    """Tickets open at ``at`` (created by then, latest event by then not 'closed'), counted
    with polars apart from the page's SQL."""
    events = store.query("SELECT ticket_id, event_type, ts FROM ticket_events WHERE ts <= ?", [at])
    latest = events.sort("ts").group_by("ticket_id").agg(pl.col("event_type").last())
    tickets = store.query(
        "SELECT ticket_id, region FROM tickets WHERE lat IS NOT NULL AND created_ts <= ?", [at]
    )
    if region is not None:
        tickets = tickets.filter(pl.col("region") == region)
    return tickets.join(latest, on="ticket_id").filter(pl.col("event_type") != "closed").height


def _busy_moment(store: Store, tz: str) -> datetime:
    """The latest weekday 10:00 local at or before the latest ticket creation (local time)."""
    created = store.scalar("SELECT max(created_ts) FROM tickets").astimezone(ZoneInfo(tz))
    moment = created.replace(hour=10, minute=0, second=0, microsecond=0)
    if moment > created:
        moment -= timedelta(days=1)
    while moment.weekday() >= 5:
        moment -= timedelta(days=1)
    return moment


def test_dispatch_map_filters_and_click_opens_ticket(dash_duo, settings, artifacts) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    store = _store(app)
    busy = _busy_moment(store, settings.timezone)
    clock = store.scalar("SELECT max(ts) FROM ticket_events")
    at_busy, at_latest = _open_at(store, busy), _open_at(store, clock)
    # the region with the most open tickets at the busy moment that still leaves some out
    regions = store.query("SELECT DISTINCT region FROM tickets ORDER BY region")["region"]
    in_region, region = max((_open_at(store, busy, r), r) for r in regions)
    assert 0 < in_region < at_busy
    technicians = store.scalar(
        "SELECT count(DISTINCT technician_id) FROM gps_fixes WHERE ts <= ?", [clock]
    )
    active_alerts = store.scalar(
        "SELECT count(*) FROM cluster_alerts WHERE first_seen <= ? "
        "AND (closed_at IS NULL OR closed_at >= ?)",
        [busy, busy],
    )
    verdicts = store.query("SELECT a.verdict FROM arrival_checks a JOIN tickets USING (ticket_id)")
    at_door = (verdicts["verdict"] == "AT_DOOR").mean()
    confirmed = verdicts["verdict"].is_in(["AT_DOOR", "ON_SITE"]).mean()
    before_any = store.scalar("SELECT min(created_ts) FROM tickets") - timedelta(days=1)

    dash_duo.start_server(app, navigate=False)
    _login(dash_duo, "dispatch", "/dispatch")
    _map_canvas_ready(dash_duo, "dispatch-map")
    # The built store is historical (its clock is weeks before the wall clock): the board
    # opens on the latest weekday 10:00 local before the latest ticket was created.
    dash_duo.wait_for_contains_text("#dispatch-at-label", f"{busy:%a %d %b %Y %H:%M}", timeout=10)
    assert _open_tickets(dash_duo, at_busy) == at_busy
    assert dash_duo.find_element("#dispatch-open-count").text == str(at_busy)
    assert _points(dash_duo, "dispatch-map", "hexagons") >= 2
    assert active_alerts > 0
    assert _points(dash_duo, "dispatch-map", "alerts") >= active_alerts
    dash_duo.wait_for_contains_text(
        "[data-kpi='arrival on site'] .card-value",
        f"{100 * confirmed:.0f} % ({100 * at_door:.0f} % at door)",
    )
    _shot(dash_duo, artifacts, "dispatch-as-of-default")

    # "latest": the data clock, with every technician that has a fix by then.
    dash_duo.find_element("#dispatch-at-latest").click()
    dash_duo.wait_for_contains_text("#dispatch-note", f"{at_latest} open tickets", timeout=10)
    assert _points(dash_duo, "dispatch-map", "technicians", at_least=technicians) == technicians
    dash_duo.wait_for_contains_text("#dispatch-at-label", "latest: the data clock")
    assert "at=latest" in dash_duo.driver.current_url
    _shot(dash_duo, artifacts, "dispatch")

    # An explicit moment in the URL: before any ticket existed nothing is open.
    local_before = before_any.astimezone(ZoneInfo(settings.timezone))
    dash_duo.driver.get(f"{dash_duo.server.url}/dispatch?at={local_before:%Y-%m-%dT%H:%M}")
    dash_duo.wait_for_contains_text("#dispatch-note", "0 open tickets", timeout=10)
    dash_duo.driver.get(f"{dash_duo.server.url}/dispatch")
    _map_canvas_ready(dash_duo, "dispatch-map")
    assert _open_tickets(dash_duo, at_busy) == at_busy

    # Filter one region -> that region's open tickets only, and the URL keeps the filter.
    dash_duo.select_dcc_dropdown("#dispatch-region", region)
    assert _open_tickets(dash_duo, in_region, timeout=10) == in_region
    assert f"region={region}" in dash_duo.driver.current_url
    _shot(dash_duo, artifacts, "dispatch-region")

    # Reload: the filter comes back from the URL.
    dash_duo.driver.refresh()
    _map_canvas_ready(dash_duo, "dispatch-map")
    assert _points(dash_duo, "dispatch-map", "tickets", at_least=in_region) == in_region

    # Click a ticket point: plotly's own plotly_click event for the point nearest the centre
    # (maplibre hover does not fire from synthetic WebDriver pointer moves in headless mode).
    dash_duo.driver.get(f"{dash_duo.server.url}/dispatch?region={region}&layers=tickets")
    _map_canvas_ready(dash_duo, "dispatch-map")
    _points(dash_duo, "dispatch-map", "tickets")
    # The resolved as-of moment is written to the URL once; let that land before clicking.
    deadline = time.monotonic() + 10
    while "at=" not in dash_duo.driver.current_url and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"at={busy:%Y-%m-%dT%H}%3A00" in dash_duo.driver.current_url
    _page_idle(dash_duo, "dispatch-map")
    xy = dash_duo.driver.execute_script(CLOSEST_TICKET_JS)
    dash_duo.driver.execute_script(CLICK_JS, xy[4], xy[5])
    dash_duo.wait_for_contains_text("#ticket-header", f"Ticket {xy[2]}", timeout=10)
    assert f"/ticket?id={xy[2]}" in dash_duo.driver.current_url
    _no_console_errors(dash_duo)


def _checklist_rules(dash_duo: Any) -> list[str]:
    dash_duo.wait_for_element("#checklist-items", timeout=10)
    return [
        e.get_attribute("data-rule")
        for e in dash_duo.driver.find_elements(By.CSS_SELECTOR, "#checklist-items .check-item")
    ]


def test_ticket_detail_shows_arrival_evidence_and_checklist(
    dash_duo,
    settings,  # type: ignore[no-untyped-def]
    ids,
    artifacts,
) -> None:
    app = create_app(settings)
    check = (
        _store(app)
        .query(
            "SELECT distance_m, evidence FROM arrival_checks WHERE ticket_id = ? "
            "ORDER BY event_ts LIMIT 1",
            [ids.at_door_ticket],
        )
        .row(0, named=True)
    )
    evidence_doc = json.loads(check["evidence"])
    dash_duo.start_server(app, navigate=False)
    _login(dash_duo, "dispatch", f"/ticket?id={ids.at_door_ticket}")
    dash_duo.wait_for_text_to_equal("#arrival-verdict", "AT_DOOR", timeout=10)
    evidence = dash_duo.find_element("#arrival-evidence").text
    # the fact, not repeated as evidence distance_m
    assert f"distance: {check['distance_m']:.1f} m" in evidence
    assert not [line for line in evidence.splitlines() if line.startswith("distance_m")]
    assert f"stop_centroid_lat: {evidence_doc['stop_centroid_lat']:.6f}" in evidence
    _map_canvas_ready(dash_duo, "ticket-arrival-map")
    assert _points(dash_duo, "ticket-arrival-map", "fixes") >= 5
    assert _points(dash_duo, "ticket-arrival-map", "stop") == 1
    assert _points(dash_duo, "ticket-timeline", "physical") == 3  # departed, arrived, left
    _shot(dash_duo, artifacts, "ticket-at-door")

    # The generator's planted false arrival: the technician tapped 'arrived' far away.
    dash_duo.driver.get(f"{dash_duo.server.url}/ticket?id={ids.false_arrival_ticket}")
    dash_duo.wait_for_text_to_equal("#arrival-verdict", "REJECTED", timeout=10)

    # The generator's vibration-fault ticket: the checklist names the device's vibration.
    dash_duo.driver.get(f"{dash_duo.server.url}/ticket?id={ids.checklist_ticket}")
    assert "iot_vibration_band" in _checklist_rules(dash_duo)
    _shot(dash_duo, artifacts, "ticket-checklist")
    _no_console_errors(dash_duo)


def test_warehouse_acknowledges_an_order_and_it_persists(
    dash_duo,
    settings,  # type: ignore[no-untyped-def]
    ids,
    artifacts,
) -> None:
    app = create_app(settings)
    store = _store(app)
    own_alerts = store.scalar(
        "SELECT count(DISTINCT alert_id) FROM restock_orders WHERE warehouse_id = ?",
        [ids.sent_warehouse],
    )
    dash_duo.start_server(app, navigate=False)
    _login(dash_duo, "wh-sent", "/alerts")
    dash_duo.wait_for_element("#orders-table", timeout=10)
    table = dash_duo.find_element("#orders-table").text
    assert ids.sent_order in table
    assert ids.open_order not in table
    assert len(dash_duo.driver.find_elements(By.CSS_SELECTOR, ".alert-item")) == own_alerts
    assert _points(dash_duo, "alerts-map", "cells") >= 1
    assert "Dispatch" not in dash_duo.find_element("#nav").text
    _shot(dash_duo, artifacts, "alerts-warehouse")

    button = f'button[id*=\'"action":"acknowledge"\'][id*=\'"order":"{ids.sent_order}"\']'
    dash_duo.find_element(button).click()
    dash_duo.wait_for_contains_text("#alerts-message", "acknowledged by wh-sent", timeout=10)
    dash_duo.wait_for_text_to_equal(f"[data-order='{ids.sent_order}']", "acknowledged")
    dash_duo.driver.refresh()
    dash_duo.wait_for_text_to_equal(f"[data-order='{ids.sent_order}']", "acknowledged", timeout=10)
    audit = store.query(
        "SELECT actor, action, object_id FROM audit_log WHERE actor = ?", ["wh-sent"]
    )
    assert audit.rows() == [("wh-sent", "order_acknowledged", ids.sent_order)]

    # Editing the URL to another warehouse's alert shows nothing of it.
    dash_duo.driver.get(f"{dash_duo.server.url}/alerts?alert={ids.open_alert}")
    dash_duo.wait_for_contains_text("#alerts-detail", "not in your scope", timeout=10)
    assert ids.open_order not in dash_duo.find_element("#page-content").text
    _no_console_errors(dash_duo)


def test_analytics_and_status_pages_render_pictures(dash_duo, settings, ids, artifacts) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    store = _store(app)
    technicians = store.scalar("SELECT count(*) FROM technicians")
    day_verdicts = store.scalar(
        "SELECT count(*) FROM (SELECT DISTINCT a.event_ts::DATE, a.verdict "
        "FROM arrival_checks a JOIN tickets USING (ticket_id))"
    )
    lag_bins = store.scalar(
        "SELECT count(DISTINCT greatest(-60, least(60, floor(a.status_lag_s / 60)))) "
        "FROM arrival_checks a JOIN tickets USING (ticket_id) WHERE a.status_lag_s IS NOT NULL"
    )
    dash_duo.start_server(app, navigate=False)
    _login(dash_duo, "analyst", "/analytics")
    dash_duo.wait_for_element("#analytics-segments .js-plotly-plot", timeout=10)
    assert _points(dash_duo, "analytics-segments", "segments") == len(SEGMENTS)
    boxes = dash_duo.driver.execute_script(SEGMENT_BOXES_JS)
    assert len(boxes) == len(SEGMENTS)
    for name, inside, height in boxes:
        assert inside, f"{name}: its box lies outside its axis view"
        assert height > 5, f"{name}: no box drawn"
    assert _points(dash_duo, "analytics-technicians", "technicians") == technicians
    assert _points(dash_duo, "analytics-verdicts", "verdicts") == day_verdicts
    assert _points(dash_duo, "analytics-lag", "lag") == lag_bins
    # the reliability panel: the built store's arrivals carry the generator's truth labels
    assert _points(dash_duo, "analytics-reliability", "reliability") >= 1
    _shot(dash_duo, artifacts, "analytics")
    dash_duo.find_element("#nav-alerts").click()
    dash_duo.wait_for_element("#orders-table", timeout=10)
    # analysts see every warehouse's orders
    for alert_id, order_id in ((ids.sent_alert, ids.sent_order), (ids.open_alert, ids.open_order)):
        dash_duo.driver.get(f"{dash_duo.server.url}/alerts?alert={alert_id}")
        dash_duo.wait_for_contains_text("#orders-table", order_id, timeout=10)
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
