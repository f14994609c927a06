"""Live mode of the dispatch page, in real headless Chromium: a technician moves on the map
without a reload when the writer commits a newer fix; the ticker lists verdicts and alerts."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import h3
import polars as pl
import pytest

from dashboard import create_app
from pipelines.store.gateway import Store
from tests.dashboard.test_pages_browser import _login, _map_canvas_ready, _points

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TECH_LAT_JS = """
const gd = document.querySelector('#dispatch-map .js-plotly-plot');
if (!gd || !gd.data) return null;
for (const t of gd.data) { if (t.meta !== 'technicians') continue;
  const j = t.customdata.findIndex(c => c[1] === arguments[0]);
  if (j >= 0) return [t.lat[j], t.lon[j]]; }
return null;
"""


def _add_fix(store: Store, tech: str, lat: float, lon: float) -> None:
    """A fix one minute after the newest in the store, as the live writer commits it."""
    newest = store.scalar("SELECT max(ts) FROM gps_fixes")
    row = {
        "technician_id": tech,
        "ts": newest + timedelta(minutes=1),
        "lat": lat,
        "lon": lon,
        "accuracy_m": 5.0,
        "speed_mps": 8.0,
        "datum_in": "WGS84",
        "h3": h3.str_to_int(h3.latlng_to_cell(lat, lon, 9)),
    }
    with store.transaction() as tx:
        tx.insert_frame("gps_fixes", pl.DataFrame([row]).cast({"h3": pl.UInt64}))


def test_a_technician_moves_on_the_live_map_without_a_reload(dash_duo, settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    store = app.server.config["FIELDTRACE_CONTEXT"].store
    technicians = store.scalar("SELECT count(DISTINCT technician_id) FROM gps_fixes")
    tech = store.scalar("SELECT technician_id FROM gps_fixes ORDER BY ts DESC LIMIT 1")
    dash_duo.start_server(app, navigate=False)
    _login(dash_duo, "dispatch", "/dispatch?mode=live")
    _map_canvas_ready(dash_duo, "dispatch-map")
    assert _points(dash_duo, "dispatch-map", "technicians", at_least=technicians) == technicians
    dash_duo.wait_for_contains_text("#dispatch-ticker", "verdict", timeout=10)
    dash_duo.driver.execute_script("window.__sameDocument = true;")
    before: Any = dash_duo.driver.execute_script(TECH_LAT_JS, tech)
    assert before is not None
    target = (round(before[0] + 0.01, 5), round(before[1] + 0.01, 5))
    with Store(settings.store_path) as store:
        _add_fix(store, tech, *target)
    deadline = time.monotonic() + 10
    now: Any = before
    while time.monotonic() < deadline:
        now = dash_duo.driver.execute_script(TECH_LAT_JS, tech)
        if now == list(target):
            break
        time.sleep(0.1)
    assert now == list(target)
    assert dash_duo.driver.execute_script("return window.__sameDocument === true;")
    assert dash_duo.get_logs() == []
