"""Replay page: request parsing, playback samples, the CWRU spectrum figure, evidence export and
a real-browser run over the demo generator's planted false arrival (click node, play, deep
link, export), all on the store the real writers built (``tests/dashboard/conftest.py``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from dashboard import create_app
from dashboard import pages as page_registry
from dashboard import replay_ids as rid
from dashboard.context import AppContext
from dashboard.figures.maps import Basemap
from dashboard.figures.replay import downsample, playback_samples
from dashboard.pages.replay import export_view, parse_request, spectrum_view
from geofence.replay_state import state_at
from pipelines.settings import Settings, load_settings
from pipelines.store.gateway import Store
from pipelines.views.replay import replay_bundle
from tests.dashboard.conftest import StoreIds, settings_for
from tests.dashboard.helpers import call
from tests.pipelines.test_replay import T0


@dataclass(frozen=True)
class FalseArrival:
    """The generator's planted false arrival, as the built store holds it."""

    ticket: str
    event: str  # the 'arrived' event
    technician: str
    node: int  # the event's place on the ticket's timeline
    first_event: str
    first_ts: datetime
    arrived_ts: datetime
    customer: tuple[float, float]


def false_arrival(store: Store, ids: StoreIds) -> FalseArrival:
    events = store.query(
        "SELECT event_id, ts FROM ticket_events WHERE ticket_id = ? ORDER BY ts, event_id",
        [ids.false_arrival_ticket],
    )
    node = events["event_id"].to_list().index(ids.false_arrival_event)
    lat, lon = store.query(
        "SELECT lat, lon FROM tickets WHERE ticket_id = ?", [ids.false_arrival_ticket]
    ).row(0)
    return FalseArrival(
        ticket=ids.false_arrival_ticket,
        event=ids.false_arrival_event,
        technician=ids.false_arrival_technician,
        node=node,
        first_event=events["event_id"][0],
        first_ts=events["ts"][0].astimezone(UTC),
        arrived_ts=events["ts"][node].astimezone(UTC),
        customer=(lat, lon),
    )


@pytest.fixture
def replay_settings(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    if "dashboard.pages.replay" not in page_registry.PAGE_MODULES:
        monkeypatch.setattr(
            page_registry, "PAGE_MODULES", (*page_registry.PAGE_MODULES, "dashboard.pages.replay")
        )
    return settings_for(store_root, auth_mode="open")


@pytest.fixture
def planted(replay_settings: Settings, ids: StoreIds) -> FalseArrival:
    with Store(replay_settings.store_path) as store:
        return false_arrival(store, ids)


def _shown(t: datetime) -> str:
    """A moment as the replay page shows it."""
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d} UTC"


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("", {"ticket": None, "node": None, "t": None, "window_min": 30}),
        (
            "?ticket=T-1&node=E-4&t=2026-01-01T00:00:00Z&w=60",
            {"ticket": "T-1", "node": "E-4", "t": "2026-01-01T00:00:00Z", "window_min": 60},
        ),
        ("?ticket=T-1&w=7", {"ticket": "T-1", "node": None, "t": None, "window_min": 30}),
        ("?ticket=T-1&w=abc", {"ticket": "T-1", "node": None, "t": None, "window_min": 30}),
    ],
)
def test_parse_request(search: str, expected: dict[str, Any]) -> None:
    assert parse_request(search) == expected


def test_downsample_keeps_latest_at_or_before_per_key() -> None:
    ts = [T0 + timedelta(seconds=s) for s in range(3600)]
    frame = pl.DataFrame({"ts": ts * 2, "k": ["a"] * 3600 + ["b"] * 3600, "v": list(range(7200))})
    small = downsample(frame, T0, T0 + timedelta(hours=1), keys=("k",), max_points=500)
    assert small.height <= 500
    for probe in (T0, T0 + timedelta(minutes=17), T0 + timedelta(hours=1)):
        # On the grid the value shown is the original's latest-at-or-before; between grid
        # points it is never newer than the original.
        got = state_at({"s": small}, probe, key_cols={"s": ("k",)})["s"].latest
        want = state_at({"s": frame}, probe, key_cols={"s": ("k",)})["s"].latest
        assert (got["v"] <= want["v"]).all()
        assert got["k"].to_list() == ["a", "b"]


def test_playback_samples_are_compact_and_cover_the_window(
    replay_settings: Settings, planted: FalseArrival
) -> None:
    with Store(replay_settings.store_path, read_only=True) as store:
        bundle = replay_bundle(store, planted.ticket, planted.arrived_ts)
    samples = playback_samples(bundle, max_points=100)
    start = planted.arrived_ts - timedelta(minutes=30)
    assert samples["start_ms"] == int(start.timestamp() * 1000)
    assert 0 < len(samples["gps"]["t"]) <= 100
    assert samples["gps"]["t"] == sorted(samples["gps"]["t"])
    assert planted.event in samples["events"]["event_id"]
    assert samples["technicians"] == [planted.technician]


@pytest.mark.realdata
def test_spectrum_figure_marks_bpfi_on_a_cwru_inner_race_slice(
    realdata: Path, store_root: Path, ids: StoreIds
) -> None:
    samples = pl.read_csv(realdata / "cwru_bearing_12k_slices" / "IR007_0_X105_first1s.csv")
    path = store_root / "fieldtrace.duckdb"
    with Store(path) as store:
        at_visit = store.scalar(
            "SELECT min(ts) FROM ticket_events WHERE ticket_id = ? AND event_type = 'arrived'",
            [ids.checklist_ticket],
        )
    # a real bearing recording, filed as a series of the vibration-fault customer's device
    with Store(path) as store, store.transaction() as tx:
        tx.insert_frame(
            "vibration_series",
            pl.DataFrame(
                {
                    "series_id": ["V-IR007"],
                    "device_id": [ids.vibration_device],
                    "start_ts": [at_visit - timedelta(minutes=10)],
                    "sample_rate_hz": [12_000.0],
                    "rpm": [1797.0],
                    "channel": ["DE"],
                    "samples": [samples["DE_g"].to_list()],
                }
            ),
        )
    ctx = AppContext(load_settings(store_path=path, auth_mode="open"))
    bundle = replay_bundle(ctx.store, ids.checklist_ticket, at_visit)
    assert bundle.vibration["series_id"].to_list() == ["V-IR007"]
    fig, style = spectrum_view(ctx, bundle)
    assert style == {}
    peaks = next(t for t in fig.data if t.meta == "peaks")
    bpfi = [x for x, m in zip(peaks.x, peaks.text, strict=True) if m == "BPFI"]
    assert bpfi
    assert abs(bpfi[0] - 162.2) < 2.0


def test_export_button_returns_a_self_contained_html_file(
    replay_settings: Settings, planted: FalseArrival
) -> None:
    app = create_app(replay_settings)
    client = app.server.test_client()
    req = {"ticket": planted.ticket, "node": planted.event, "t": None, "window_min": 30}
    resp = call(
        client,
        app,
        rid.DOWNLOAD,
        [(rid.EXPORT, "n_clicks", 1)],
        [(rid.REQUEST, "data", req), (rid.SLIDER, "value", 1800.0)],
    )
    assert resp.status_code == 200
    out = resp.get_json()["response"][rid.DOWNLOAD]["data"]
    assert out["filename"] == f"evidence-{planted.ticket}-{planted.event}.html"
    html = out["content"]
    assert planted.event in html
    assert "REJECTED" in html
    assert "reject_margin_k" in html
    assert "<script src=" not in html
    assert len(html) > 1_000_000


# ----------------------------------------------------------------------------- browser

CLICK_NODE_JS = """
const gd = document.querySelector('#replay-timeline .js-plotly-plot');
const i = gd.data.findIndex(t => t.meta === 'nodes');
const j = gd.data[i].customdata.findIndex(c => c[0] === arguments[0]);
gd.emit('plotly_click', {points: [{curveNumber: i, pointNumber: j}]});
return j;
"""
TRAIL_END_JS = """
const gd = document.querySelector('#replay-map .js-plotly-plot');
if (!gd || !gd.data) return null;
const t = gd.data.find(t => t.meta === 'trail');
return t && t.lat.length ? [t.lat[t.lat.length - 1], t.lon[t.lon.length - 1], t.lat.length]
                         : null;
"""
SELECTED_JS = """
const gd = document.querySelector('#replay-timeline .js-plotly-plot');
const t = gd && gd.data.find(t => t.meta === 'selected');
return t ? t.x[0] : null;
"""


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = (a[0] - b[0]) * 111_320.0
    dlon = (a[1] - b[1]) * 111_320.0 * math.cos(math.radians(b[0]))
    return math.hypot(dlat, dlon)


def _wait(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out; last value {value!r}")


def _trail_end_after(dash_duo: Any, ts_text: str) -> list[float]:
    dash_duo.wait_for_text_to_equal(f"#{rid.TIME}", ts_text, timeout=10)
    return list(_wait(lambda: dash_duo.driver.execute_script(TRAIL_END_JS)))


@pytest.mark.browser
@pytest.mark.slow
def test_false_arrival_replay_in_the_browser(dash_duo, replay_settings, planted, artifacts) -> None:  # type: ignore[no-untyped-def]
    p = planted
    dash_duo.start_server(create_app(replay_settings), navigate=False)
    base = dash_duo.server.url
    dash_duo.driver.get(f"{base}/replay?ticket={p.ticket}&node={p.first_event}")
    dash_duo.wait_for_text_to_equal(f"#{rid.TIME}", _shown(p.first_ts), timeout=15)

    # Click the 'arrived' node: every panel jumps to the tap.
    assert dash_duo.driver.execute_script(CLICK_NODE_JS, p.event) == p.node
    lat, lon, n = _trail_end_after(dash_duo, _shown(p.arrived_ts))
    dash_duo.wait_for_text_to_equal(f"#{rid.VERDICT_BADGE}", "REJECTED", timeout=10)
    # the generator parks a false arrival 150-400 m from the customer
    assert 150 <= _metres((lat, lon), p.customer) <= 400 + 25, _metres((lat, lon), p.customer)
    assert n > 10
    assert f"node={p.event}" in dash_duo.driver.current_url
    tapped = p.arrived_ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    _wait(lambda: f"t={tapped.replace(':', '%3A')}" in dash_duo.driver.current_url)
    events = dash_duo.find_elements(f"#{rid.EVENTS} li")
    assert [e.value_of_css_property("opacity") for e in events][p.node : p.node + 2] == [
        "1",
        "0.35",
    ]
    dash_duo.wait_for_element(f"#{rid.MAP} .maplibregl-canvas", timeout=15)
    time.sleep(1.0)
    dash_duo.driver.save_screenshot(str(artifacts / "replay.png"))

    # Play at 60×: the cursor advances by true elapsed time, then pause.
    dash_duo.find_element(f"#{rid.SPEED} input[value='60']").click()
    started = time.monotonic()
    dash_duo.find_element(f"#{rid.PLAY}").click()
    time.sleep(2.0)
    dash_duo.find_element(f"#{rid.PLAY}").click()

    def settled() -> str | None:  # the browser has handled the pause: the clock stands still
        before = dash_duo.find_element(f"#{rid.TIME}").text
        time.sleep(0.5)
        return before if dash_duo.find_element(f"#{rid.TIME}").text == before else None

    paused = _wait(settled)
    elapsed_s = time.monotonic() - started
    # Data time advanced by true elapsed time x 60, bounded by the wall time the browser could
    # have played (play click to a standing clock), so a loaded machine cannot fail it.
    advanced_s = (
        datetime.strptime(paused, "%Y-%m-%d %H:%M:%S.%f UTC").replace(tzinfo=UTC) - p.arrived_ts
    ).total_seconds()
    assert 60.0 <= advanced_s <= 60.0 * elapsed_s + 15.0, (paused, elapsed_s)

    # The deep link (ticket, node, t) reproduces the view.
    def moved_link() -> str | None:
        url = str(dash_duo.driver.current_url)
        want = "t=" + paused.replace(" UTC", "Z").replace(" ", "T").replace(":", "%3A")
        return url if want in url else None

    link = _wait(moved_link)
    dash_duo.driver.get(link)
    dash_duo.wait_for_text_to_equal(f"#{rid.TIME}", paused, timeout=15)
    dash_duo.wait_for_text_to_equal(f"#{rid.VERDICT_BADGE}", "REJECTED", timeout=10)
    assert _wait(lambda: dash_duo.driver.execute_script(SELECTED_JS)).startswith(
        f"{p.arrived_ts:%Y-%m-%d %H:%M:%S}"
    )
    assert dash_duo.get_logs() == []

    # Evidence export opens offline in the browser with the node's data.
    export = export_view(
        AppContext(replay_settings),
        parse_request(f"?ticket={p.ticket}&node={p.event}"),
        None,
        Basemap("white-bg"),
    )
    out = artifacts / "evidence.html"
    out.write_text(export["content"])
    dash_duo.driver.get(out.as_uri())
    dash_duo.wait_for_element("#evidence-map.js-plotly-plot", timeout=10)
    body = dash_duo.driver.find_element("tag name", "body").text
    assert p.event in body
    assert "REJECTED" in body
    assert p.technician in body
    assert dash_duo.get_logs() == []
