"""The status page on the demo world, in a real browser: it shows what the store holds."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard import create_app
from pipelines.store.gateway import Store


@pytest.mark.browser
def test_status_page_shows_demo_counts_and_quarantine_chart(
    dash_duo, demo_world, demo_app_settings, artifacts
) -> None:  # type: ignore[no-untyped-def]
    _, manifest = demo_world
    settings = demo_app_settings
    with Store(settings.store_path) as store:
        counts = store.table_counts()
    dash_duo.start_server(create_app(settings))
    dash_duo.wait_for_element("#status-counts .card", timeout=20)
    cards = {
        el.find_element("css selector", ".card-label").get_attribute(
            "textContent"
        ): el.find_element("css selector", ".card-value").get_attribute("textContent")
        for el in dash_duo.find_elements("#status-counts .card")
    }
    for table in ("tickets", "ticket_events", "gps_fixes", "quarantine"):
        assert cards[table] == f"{counts[table]:,}"
    expected_quarantine = sum(k["quarantined"] for k in manifest["expected"].values())
    assert counts["quarantine"] == expected_quarantine
    # The quarantine chart draws one bar per (kind, rule) with a quarantined row.
    dash_duo.wait_for_element("#status-quarantine-chart .js-plotly-plot", timeout=20)
    bars: Any = dash_duo.driver.execute_script(
        "const g = document.querySelector('#status-quarantine-chart .js-plotly-plot');"
        "return g.data.reduce((n, t) => n + t.y.length, 0);"
    )
    rules = {r for k in manifest["expected"].values() for r, n in k["rules"].items() if n}
    assert bars >= len(rules) > 0
    dash_duo.driver.save_screenshot(str(artifacts / "status-demo.png"))
    assert dash_duo.get_logs() == []
