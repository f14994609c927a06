"""HTTP feeds against a real local server: retries, Retry-After, timeouts, truncated bodies,
the response cache, and that a failed fetch writes nothing."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cli.fetch import fetch_weather, poll_outages
from pipelines.errors import FetchError
from pipelines.ingest.sources.http import FeedClient
from pipelines.settings import Settings, load_settings
from pipelines.store.gateway import Store

TIMEOUT_S = 0.5


def make_weather_body(temps: tuple[float, ...] = (5.8, 5.5, 5.1)) -> bytes:
    return json.dumps(
        {
            "latitude": 52.52,
            "longitude": 13.419998,
            "utc_offset_seconds": 0,
            "timezone": "GMT",
            "hourly_units": {"time": "iso8601", "temperature_2m": "°C"},
            "hourly": {
                "time": [f"2024-01-01T0{i}:00" for i in range(len(temps))],
                "temperature_2m": list(temps),
            },
        }
    ).encode()


def make_outages(ids: list[str]) -> bytes:
    return json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [-80.6, 35.1]},
                    "properties": {
                        "outage_id": i,
                        "StartTime": "2024-01-01T10:00:00Z",
                        "radius_m": 300,
                        "CustomersAffected": 10,
                    },
                }
                for i in ids
            ],
        }
    ).encode()


class Handler(BaseHTTPRequestHandler):
    """Serves ``script[path]``: a list of responses consumed one per request."""

    script: ClassVar[dict[str, list[dict[str, Any]]]] = {}
    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        Handler.hits[path] = Handler.hits.get(path, 0) + 1
        queue = Handler.script.get(path) or [{"status": 404, "body": b"{}"}]
        step = queue.pop(0) if len(queue) > 1 else queue[0]
        if step.get("sleep"):
            time.sleep(step["sleep"])
        body: bytes = step.get("body", b"")
        self.send_response(step.get("status", 200))
        for k, v in step.get("headers", {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(step.get("length", len(body))))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)
        if step.get("length"):
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    Handler.script.clear()
    Handler.hits.clear()
    return load_settings(
        http_timeout_s=TIMEOUT_S,
        http_retries=2,
        data_dir=tmp_path / "data",
        http_cache_dir=tmp_path / "cache",
    )


SLEPT: list[float] = []


def client(settings: Settings) -> FeedClient:
    """A client whose waits are recorded (and kept short), so tests assert them, not the clock."""
    SLEPT.clear()

    def sleep(seconds: float) -> None:
        SLEPT.append(seconds)
        time.sleep(min(seconds, 0.05))

    return FeedClient(settings, backoff_base_s=0.01, max_backoff_s=1.5, sleep=sleep)


OK = {"status": 200, "body": make_weather_body()}
# (name, scripted responses before success or failure, expected outcome, hits)
CASES = [
    ("500 then ok", [{"status": 500, "body": b"oops"}, OK], "ok", 2),
    (
        "429 with Retry-After then ok",
        [{"status": 429, "headers": {"Retry-After": "1"}}, OK],
        "ok",
        2,
    ),
    ("timeout then ok", [{"sleep": TIMEOUT_S * 3, **OK}, OK], "ok", 2),
    ("always 503", [{"status": 503, "body": b"down"}], "HTTP 503", 3),
    (
        "always truncated",
        [{"status": 200, "body": b'{"latitude": 52.5', "length": 400}],
        "truncated",
        3,
    ),
    ("invalid JSON", [{"status": 200, "body": b"<html>not json</html>"}], "not valid JSON", 1),
    ("404 fails at once", [{"status": 404, "body": b"{}"}], "HTTP 404", 1),
]


@pytest.mark.parametrize(("name", "script", "outcome", "hits"), CASES, ids=[c[0] for c in CASES])
def test_client_retries_then_succeeds_or_fails_clearly(
    server: str,
    settings: Settings,
    name: str,
    script: list[dict[str, Any]],
    outcome: str,
    hits: int,
) -> None:
    Handler.script["/v1/forecast"] = [dict(s) for s in script]
    with client(settings) as c:
        if outcome == "ok":
            assert json.loads(c.get(f"{server}/v1/forecast").body)["latitude"] == 52.52
        else:
            with pytest.raises(FetchError, match=outcome):
                c.get(f"{server}/v1/forecast")
    assert Handler.hits["/v1/forecast"] == hits
    if "Retry-After" in name:
        assert SLEPT == [1.0]  # the server's Retry-After, not the client's own backoff


def test_cache_serves_a_repeat_request_without_the_network(server: str, settings: Settings) -> None:
    Handler.script["/v1/forecast"] = [OK]
    with client(settings) as c:
        first = c.get(f"{server}/v1/forecast", {"b": 2, "a": 1})
        again = c.get(f"{server}/v1/forecast", {"a": 1, "b": 2})
    assert not first.from_cache
    assert again.from_cache
    assert again.body == first.body
    assert Handler.hits["/v1/forecast"] == 1


def test_fetch_weather_ingests_and_refetch_adds_nothing(
    server: str, settings: Settings, tmp_path: Path
) -> None:
    Handler.script["/v1/forecast"] = [OK]
    store = Store(tmp_path / "ft.duckdb")
    args = {
        "lat": 52.52,
        "lon": 13.41,
        "start": date(2024, 1, 1),
        "end": date(2024, 1, 1),
        "base_url": f"{server}/v1/forecast",
    }
    with client(settings) as c:
        r = fetch_weather(store, settings, client=c, **args)
        again = fetch_weather(store, settings, client=c, **args)
    assert (r.rows_read, r.rows_accepted) == (3, 3)
    assert again.skipped
    assert store.count("weather_obs") == 3


def test_failed_fetch_writes_nothing(server: str, settings: Settings, tmp_path: Path) -> None:
    Handler.script["/v1/forecast"] = [{"status": 200, "body": b'{"latitude": 5', "length": 999}]
    store = Store(tmp_path / "ft.duckdb")
    with client(settings) as c, pytest.raises(FetchError, match="truncated"):
        fetch_weather(
            store,
            settings,
            client=c,
            lat=1.0,
            lon=2.0,
            start=date(2024, 1, 1),
            end=date(2024, 1, 1),
            base_url=f"{server}/v1/forecast",
        )
    assert store.count("weather_obs") == 0
    assert store.count("ingest_batches") == 0
    assert not any((tmp_path / "cache").glob("*"))
    assert not (tmp_path / "data" / "feeds").exists()


def test_polled_outages_merge_and_close(server: str, settings: Settings, tmp_path: Path) -> None:
    Handler.script["/outages"] = [
        {"body": make_outages(["a", "b"])},
        {"body": make_outages(["b", "c"])},
    ]
    store = Store(tmp_path / "ft.duckdb")
    with client(settings) as c:
        results = poll_outages(
            store,
            settings,
            url=f"{server}/outages",
            polls=2,
            interval_s=0,
            source="test-feed",
            client=c,
        )
    assert [(r.inserted, r.updated, r.closed) for r in results] == [(2, 0, 0), (1, 1, 1)]
    rows = store.query(
        "SELECT outage_id, end_ts IS NOT NULL AS ended, geom_wkt FROM outages ORDER BY outage_id"
    )
    assert rows["ended"].to_list() == [True, False, False]
    assert rows["geom_wkt"][0].startswith("POLYGON")


def test_polled_non_geojson_fails_and_writes_nothing(
    server: str, settings: Settings, tmp_path: Path
) -> None:
    Handler.script["/outages"] = [{"body": b'{"rows": []}'}]
    store = Store(tmp_path / "ft.duckdb")
    with client(settings) as c, pytest.raises(FetchError, match="FeatureCollection"):
        poll_outages(store, settings, url=f"{server}/outages", client=c)
    assert store.count("outages") == 0
