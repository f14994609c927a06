"""``fieldtrace fetch ...``: pull HTTP feeds and ingest them (mounted by ``cli.main``).

Each response is checked whole (valid JSON, the expected shape) before anything is written,
then saved under ``<data_dir>/feeds/`` (temp file + rename) and ingested from that file, so the
store never holds half a response and the file hash makes a repeated fetch add nothing.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console

from cli.common import open_store, settings, zone
from pipelines.errors import FetchError, FieldTraceError, SourceFormatError
from pipelines.ingest.contract import IngestOptions
from pipelines.ingest.machine import IngestResult, ingest_file
from pipelines.ingest.sources.http import FeedClient, cache_key, write_atomic
from pipelines.ingest.sources.outages import SnapshotResult, merge_outage_snapshot
from pipelines.ingest.sources.weather import decode_body
from pipelines.settings import Settings
from pipelines.store.gateway import Store

FORECAST_URL = "https://api.open-meteo.com/v1/forecast"
ARCHIVE_URL = "https://archive-api.open-meteo.com/v1/archive"
HOURLY = "temperature_2m,precipitation,wind_speed_10m,weather_code"

fetch_app = typer.Typer(
    name="fetch", help="Fetch HTTP feeds (weather, outages) and ingest them.", no_args_is_help=True
)
console = Console(stderr=True)


def fetch_weather(
    store: Store,
    settings: Settings,
    *,
    lat: float,
    lon: float,
    start: date,
    end: date,
    archive: bool = False,
    base_url: str | None = None,
    client: FeedClient | None = None,
) -> IngestResult:
    """Fetch hourly Open-Meteo weather (times in GMT) and ingest it as kind ``weather``."""
    url = base_url or (ARCHIVE_URL if archive else FORECAST_URL)
    params = {
        "latitude": lat,
        "longitude": lon,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "hourly": HOURLY,
        "timezone": "GMT",
    }
    own = client is None
    client = client or FeedClient(settings)
    try:
        fetched = client.get(url, params)
    finally:
        if own:
            client.close()
    try:
        decode_body(fetched.body.decode("utf-8", errors="replace"), f"GET {url}")
    except SourceFormatError as exc:
        raise FetchError(str(exc)) from exc
    endpoint = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or "forecast"
    path = (
        Path(settings.data_dir)
        / "feeds"
        / "weather"
        / (f"openmeteo-{endpoint}-{cache_key('GET', url, params)[:16]}.json")
    )
    write_atomic(path, fetched.body)
    return ingest_file(
        store,
        "weather",
        path,
        settings,
        IngestOptions(fmt="openmeteo", source_name=f"open-meteo/{endpoint}"),
    )


def poll_outages(
    store: Store,
    settings: Settings,
    *,
    url: str,
    polls: int = 1,
    interval_s: float = 60.0,
    source: str | None = None,
    client: FeedClient | None = None,
    tz: str | None = None,
) -> list[SnapshotResult]:
    """Poll a GeoJSON outage feed ``polls`` times, merging each snapshot (upsert + close)."""
    own = client is None
    client = client or FeedClient(settings)
    results: list[SnapshotResult] = []
    opts = IngestOptions(fmt="geojson", tz=tz, source_name=source or urlsplit(url).netloc)
    try:
        for i in range(polls):
            polled_at = datetime.now(UTC)
            fetched = client.get(url, use_cache=False)
            payload = json.loads(fetched.body)
            if not (isinstance(payload, dict) and isinstance(payload.get("features"), list)):
                raise FetchError(f"GET {url}: expected GeoJSON FeatureCollection")
            path = (
                Path(settings.data_dir)
                / "feeds"
                / "outages"
                / (f"snapshot-{polled_at:%Y%m%dT%H%M%S%f}.geojson")
            )
            write_atomic(path, fetched.body)
            results.append(merge_outage_snapshot(store, path, settings, opts, polled_at))
            if i + 1 < polls:
                time.sleep(interval_s)
    finally:
        if own:
            client.close()
    return results


def _store_and_settings() -> tuple[Store, Settings]:
    s = settings()
    return open_store(s), s


@fetch_app.command("weather")
def weather_cmd(
    lat: Annotated[float, typer.Option(min=-90, max=90, help="Latitude (degrees).")],
    lon: Annotated[float, typer.Option(min=-180, max=180, help="Longitude (degrees).")],
    start: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First day.")],
    end: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last day.")],
    archive: Annotated[bool, typer.Option(help="Use the historical archive API.")] = False,
    base_url: Annotated[str | None, typer.Option(help="Override the API URL.")] = None,
) -> None:
    """Fetch hourly Open-Meteo weather for a point and ingest it."""
    if end < start:
        raise typer.BadParameter(f"--to {end:%Y-%m-%d} is before --from {start:%Y-%m-%d}")
    try:
        store, s = _store_and_settings()
        with store:
            r = fetch_weather(
                store,
                s,
                lat=lat,
                lon=lon,
                start=start.date(),
                end=end.date(),
                archive=archive,
                base_url=base_url,
            )
    except FieldTraceError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(
        f"weather: read {r.rows_read:,} = accepted {r.rows_accepted:,} + quarantined "
        f"{r.rows_quarantined:,}" + (" (already ingested)" if r.skipped else "")
    )


@fetch_app.command("outages")
def outages_cmd(
    url: Annotated[str, typer.Option(help="GeoJSON FeatureCollection feed URL.")],
    polls: Annotated[int, typer.Option(min=1, help="How many snapshots to take.")] = 1,
    interval: Annotated[float, typer.Option(min=0, help="Seconds between polls.")] = 60.0,
    source: Annotated[str | None, typer.Option(help="Source name (default: URL host).")] = None,
    tz: Annotated[str | None, typer.Option(help="Zone of naive feed times.", callback=zone)] = None,
) -> None:
    """Poll an outage feed; outages merge by id and close when a snapshot drops them."""
    try:
        store, s = _store_and_settings()
        with store:
            results = poll_outages(
                store, s, url=url, polls=polls, interval_s=interval, source=source, tz=tz
            )
    except FieldTraceError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    for r in results:
        console.print(
            f"snapshot {r.snapshot_ts:%Y-%m-%d %H:%M:%S}: read {r.rows_read}, new "
            f"{r.inserted}, updated {r.updated}, closed {r.closed}, quarantined "
            f"{r.quarantined}" + (" (same as before)" if r.skipped else "")
        )
