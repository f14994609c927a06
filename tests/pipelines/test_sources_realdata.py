"""Every source on the real datasets of ../shared/realdata: counts reconcile, quirks land in
quarantine for the reason PROVENANCE.md gives, and a second ingest adds nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import IngestOptions
from pipelines.ingest.machine import IngestResult, ingest_file
from pipelines.ingest.sources.outages import merge_outage_snapshot
from pipelines.ingest.sources.tickets import ingest_ticket_feed
from pipelines.settings import load_settings
from pipelines.store.gateway import Store

pytestmark = pytest.mark.realdata
SETTINGS = load_settings()

# CUHK-SZ anchors (metres, site frame) from the dataset's README, and an assumed WGS84 origin.
CUHK_ANCHORS = [
    ("A0", -3.4203, 3.0053, 1.0442),
    ("A1", 0.0016, 3.0110, 1.0446),
    ("A2", 3.6056, 2.9795, 1.0463),
    ("A3", 3.6011, -0.0008, 1.0422),
    ("A4", 3.5674, -3.0087, 1.0443),
    ("A5", -0.0072, -2.9652, 1.0444),
    ("A6", -3.4673, -2.9587, 1.0445),
    ("A7", -3.4858, -0.0098, 1.0457),
]


def make_site_file(path: Path, **over: Any) -> Path:
    site = {
        "site_id": "cuhksz-lab",
        "name": "CUHK-SZ lab",
        "origin": {"lat": 22.6975, "lon": 114.2104},
        "rotation_deg": 0.0,
        "tag_height_m": 0.97,
        "anchors": [{"id": a, "x_m": x, "y_m": y, "z_m": z} for a, x, y, z in CUHK_ANCHORS],
        "tags": ["T0", "T1", "T2"],
        **over,
    }
    path.write_text(json.dumps(site))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ft.duckdb")


def _check(r: IngestResult, read: int, accepted: int, reasons: dict[str, int]) -> None:
    assert r.rows_read == r.rows_accepted + r.rows_quarantined
    assert (r.rows_read, r.rows_accepted, r.reasons) == (read, accepted, reasons)


# (file, kind, format, options, read, accepted, quarantined by rule)
CASES = [
    ("bergen_gpslogger_bike/short.csv", "gps", "gpslogger", {}, 19, 19, {}),
    ("bergen_gpslogger_bike/long.csv", "gps", "gpslogger", {}, 111, 111, {}),
    ("bergen_gpslogger_bike/vm.csv", "gps", "gpslogger", {}, 423, 423, {}),
    ("bergen_gpslogger_bike/20170813.gpx", "gps", "gpx", {}, 111, 97, {"missing_accuracy": 14}),
    ("bergen_gpslogger_bike/vm.gpx", "gps", "gpx", {}, 418, 366, {"missing_accuracy": 52}),
    ("gpxpy_test_tracks/Mojstrovka.gpx", "gps", "gpx", {}, 184, 0, {"time_range": 184}),
    (
        "gpxpy_test_tracks/gpxmerge_2017-12-24_with_hdop.gpx",
        "gps",
        "gpx",
        {},
        186,
        183,
        {"missing_accuracy": 3},
    ),
    (
        "gpxpy_test_tracks/korita-zbevnica.gpx",
        "gps",
        "gpx",
        {"assume_accuracy_m": 10.0},
        871,
        513,
        {"missing_required": 358},
    ),
    ("geolife_small/geolife_small.csv", "gps", "geolife", {}, 5908, 0, {"missing_accuracy": 5908}),
    ("weather_openmeteo_vcr/general.yml", "weather", "openmeteo", {}, 464, 464, {}),
    (
        "weather_openmeteo_archive/historical_weather.json",
        "weather",
        "openmeteo",
        {},
        13,
        0,
        {"time_range": 13},
    ),
    (
        "cwru_bearing_12k_slices/IR007_0_X105_first1s.csv",
        "vibration",
        "vibration_csv",
        {"extra": {"sample_rate_hz": 12000, "device": "cwru-de", "rpm": 1797}},
        3,
        3,
        {},
    ),
    (
        "cwru_bearing_12k_slices/IR007_0_full_original.mat",
        "vibration",
        "mat",
        {"extra": {"sample_rate_hz": 12000, "device": "cwru-de"}},
        3,
        3,
        {},
    ),
]


@pytest.mark.parametrize(
    ("rel", "kind", "fmt", "opts", "read", "accepted", "reasons"),
    CASES,
    ids=[c[0].split("/")[-1] for c in CASES],
)
def test_real_file_reconciles_and_is_idempotent(
    realdata: Path,
    store: Store,
    rel: str,
    kind: str,
    fmt: str,
    opts: dict[str, Any],
    read: int,
    accepted: int,
    reasons: dict[str, int],
) -> None:
    options = IngestOptions(fmt=fmt, **opts)
    _check(ingest_file(store, kind, realdata / rel, SETTINGS, options), read, accepted, reasons)
    again = ingest_file(store, kind, realdata / rel, SETTINGS, options)
    assert again.skipped
    assert again.rows_accepted == 0
    n = store.scalar("SELECT count(*) FROM quarantine")
    assert n == read - accepted


def test_gpslogger_hdop_sentinel_is_unknown_not_a_value(realdata: Path, store: Store) -> None:
    ingest_file(
        store,
        "gps",
        realdata / "bergen_gpslogger_bike/long.csv",
        SETTINGS,
        IngestOptions(fmt="gpslogger"),
    )
    got = store.query(
        "SELECT count(*) FILTER (WHERE hdop IS NULL) AS unknown, "
        "count(*) FILTER (WHERE hdop >= 99) AS sentinel, "
        "count(*) FILTER (WHERE satellites = 0) AS zero_sats FROM gps_fixes"
    )
    assert got.row(0) == (14, 0, 0)


def test_gpx_hdop_becomes_accuracy_with_uere(realdata: Path, store: Store) -> None:
    ingest_file(
        store,
        "gps",
        realdata / "gpxpy_test_tracks/gpxmerge_2017-12-24_with_hdop.gpx",
        SETTINGS,
        IngestOptions(fmt="gpx"),
    )
    row = store.query(
        "SELECT hdop, accuracy_m, accuracy_source FROM gps_fixes ORDER BY ts LIMIT 1"
    ).row(0)
    assert row == (1.4, pytest.approx(7.0), "hdop")


def test_geolife_generic_with_assumed_accuracy(realdata: Path, store: Store) -> None:
    r = ingest_file(
        store,
        "gps",
        realdata / "geolife_small/geolife_small.csv",
        SETTINGS,
        IngestOptions(fmt="generic", assume_accuracy_m=10.0),
    )
    assert r.rows_read == 5908 == r.rows_accepted + r.rows_quarantined
    assert set(r.reasons) <= {"speed_jump", "duplicate"}
    users = store.query("SELECT DISTINCT technician_id FROM gps_fixes ORDER BY 1")
    assert users["technician_id"].to_list() == ["0", "19", "2"]
    first = store.query("SELECT min(ts) AS t FROM gps_fixes").item()
    assert first == datetime(2008, 12, 11, 4, 42, 14, tzinfo=UTC)  # "+00" offset honoured


# (file, format, tz, tickets read/accepted/reasons, events read/accepted/reasons)
TICKET_CASES = [
    (
        "nyc311_sample/nyc311_1000.csv",
        "socrata",
        "America/New_York",
        (1000, 1000, {}),
        (1986, 1976, {"closed_before_created": 10}),
    ),
    (
        "nyc311_sample/nyc311_socrata_fhrw-4uyv.json",
        "socrata",
        "America/New_York",
        (1000, 1000, {}),
        (1982, 1975, {"closed_before_created": 6, "time_range": 1}),
    ),
    (
        "nola311_sample/nola311_tickets.json",
        "socrata",
        "America/Chicago",
        (100, 91, {"projected_coordinates": 9}),
        (168, 150, {"unknown_ticket": 18}),
    ),
    (
        "chicago311_open311/chicago_open311_requests.json",
        "open311",
        None,
        (50, 50, {}),
        (99, 99, {}),
    ),
]


@pytest.mark.parametrize(
    ("rel", "fmt", "tz", "tickets", "events"),
    TICKET_CASES,
    ids=[c[0].split("/")[-1] for c in TICKET_CASES],
)
def test_ticket_feed_writes_tickets_and_events(
    realdata: Path,
    store: Store,
    rel: str,
    fmt: str,
    tz: str | None,
    tickets: tuple[int, int, dict[str, int]],
    events: tuple[int, int, dict[str, int]],
) -> None:
    opts = IngestOptions(fmt=fmt, tz=tz, source_name=rel.split("/")[0])
    result = ingest_ticket_feed(store, realdata / rel, SETTINGS, opts)
    _check(result.tickets, *tickets)
    _check(result.events, *events)
    orphans = store.scalar(
        "SELECT count(*) FROM ticket_events e ANTI JOIN tickets t USING (ticket_id)"
    )
    assert orphans == 0
    again = ingest_ticket_feed(store, realdata / rel, SETTINGS, opts)
    assert again.tickets.skipped
    assert again.events.skipped
    assert store.count("tickets") == tickets[1]


def test_nola_projected_values_are_quarantined_with_reason(realdata: Path, store: Store) -> None:
    ingest_ticket_feed(
        store,
        realdata / "nola311_sample/nola311_tickets.json",
        SETTINGS,
        IngestOptions(fmt="socrata", tz="America/Chicago"),
    )
    reasons = store.query("SELECT DISTINCT reason FROM quarantine WHERE kind = 'tickets'")
    assert "look like projected coordinates" in reasons["reason"][0]
    assert "530187.70942" in reasons["reason"][0]


def test_uwb_ranges_multilaterate_cuhksz(realdata: Path, store: Store, tmp_path: Path) -> None:
    site = make_site_file(tmp_path / "site.json")
    r_site = ingest_file(store, "uwb_sites", site, SETTINGS, IngestOptions(fmt="site"))
    assert (r_site.rows_read, r_site.rows_accepted) == (1, 1)
    opts = IngestOptions(fmt="ranges", extra={"site_file": str(site)})
    path = realdata / "uwb_indoor_cuhksz/UWB_dynamic_exp_fast.csv"
    _check(ingest_file(store, "uwb_positions", path, SETTINGS, opts), 13481 * 3, 13481 * 3, {})
    got = store.query(
        "SELECT count(*) AS n, min(n_anchors) AS least, quantile_cont(abs(x_m), 0.99) AS x, "
        "quantile_cont(abs(y_m), 0.99) AS y, count(lat) AS with_lat FROM uwb_positions"
    ).row(0)
    assert got[0] == 40443
    assert got[1] >= 4
    assert got[2] < 3.0
    assert got[3] < 2.6
    assert got[4] == 40443
    assert ingest_file(store, "uwb_positions", path, SETTINGS, opts).skipped


def test_openmeteo_archive_declared_offset_wins(realdata: Path, store: Store) -> None:
    old_ok = load_settings(thresholds={"earliest_valid_year": 1900})
    r = ingest_file(
        store,
        "weather",
        realdata / "weather_openmeteo_archive/historical_weather.json",
        old_ok,
        IngestOptions(fmt="openmeteo"),
    )
    assert (r.rows_read, r.rows_accepted) == (13, 13)
    first = store.query(
        "SELECT ts, value, unit FROM weather_obs WHERE variable = "
        "'temperature_2m' ORDER BY ts LIMIT 1"
    ).row(0)
    assert first == (datetime(1953, 1, 30, 22, tzinfo=UTC), 5.8, "°C")


def test_union_outage_snapshots_merge_and_close(realdata: Path, store: Store) -> None:
    folder = realdata / "union_power_outages_nc"
    opts = IngestOptions(fmt="geojson", tz="America/New_York", source_name="union-power")
    steps = [
        ("outages_initial_aug2018.geojson", datetime(2018, 9, 1, tzinfo=UTC), 139, 0, 0),
        ("outages_head_outages30Day2.geojson", datetime(2018, 9, 18, tzinfo=UTC), 282, 34, 105),
        ("outages_head_outages30Day.geojson", datetime(2018, 10, 16, tzinfo=UTC), 241, 98, 218),
    ]
    for name, at, new, updated, closed in steps:
        r = merge_outage_snapshot(store, folder / name, SETTINGS, opts, at)
        assert (r.inserted, r.updated, r.closed, r.quarantined) == (new, updated, closed, 0)
        assert r.rows_read == r.inserted + r.updated + r.quarantined
    got = store.query(
        "SELECT count(*) AS n, count(end_ts) AS ended, "
        "count(*) FILTER (WHERE end_ts = TIMESTAMPTZ '2018-10-16 00:00:00+00') "
        "AS by_last FROM outages"
    ).row(0)
    assert got == (662, 323, 218)
    again = merge_outage_snapshot(store, folder / steps[-1][0], SETTINGS, opts)
    assert again.skipped
    assert store.count("outages") == 662


def test_overlapping_snapshot_plain_ingest_quarantines_duplicates(
    realdata: Path, store: Store
) -> None:
    folder = realdata / "union_power_outages_nc"
    opts = IngestOptions(fmt="geojson", tz="America/New_York")
    ingest_file(store, "outages", folder / "outages_head_outages30Day2.geojson", SETTINGS, opts)
    r = ingest_file(store, "outages", folder / "outages_head_outages30Day.geojson", SETTINGS, opts)
    _check(r, 339, 241, {"duplicate": 98})


def test_csv_is_not_geojson(realdata: Path, store: Store) -> None:
    path = realdata / "psnh_town_outages_2014/psnh_outage_by_town.csv"
    with pytest.raises(SourceFormatError, match="expected GeoJSON FeatureCollection"):
        ingest_file(store, "outages", path, SETTINGS, IngestOptions(fmt="geojson"))
    assert store.count("outages") == 0
    assert store.count("ingest_batches") == 0


def test_cwru_mat_reads_rpm_and_header_date(realdata: Path, store: Store) -> None:
    ingest_file(
        store,
        "vibration",
        realdata / "cwru_bearing_12k_slices/IR007_0_full_original.mat",
        SETTINGS,
        IngestOptions(fmt="mat", tz="UTC", extra={"sample_rate_hz": 12000}),
    )
    got = store.query(
        "SELECT channel, rpm, len(samples) AS n, start_ts FROM vibration_series ORDER BY channel"
    )
    assert got["channel"].to_list() == ["X105_BA_time", "X105_DE_time", "X105_FE_time"]
    assert set(got["rpm"]) == {1797.0}
    assert set(got["n"]) == {121265}
    assert got["start_ts"][0].year == 2000


def test_nyc_channel_becomes_the_ticket_channel(realdata: Path, store: Store) -> None:
    path = realdata / "nyc311_sample/nyc311_socrata_fhrw-4uyv.json"
    ingest_ticket_feed(store, path, SETTINGS, IngestOptions(fmt="socrata", tz="America/New_York"))
    got = store.query("SELECT channel, count(*) AS n FROM tickets GROUP BY 1 ORDER BY 1")
    records = json.loads(path.read_text(encoding="utf-8"))
    raw = (
        pl.DataFrame({"channel": [r.get("open_data_channel_type") for r in records]})
        .group_by(pl.col("channel").str.to_lowercase())
        .len("n")
    )
    assert dict(got.iter_rows()) == dict(raw.iter_rows())
    assert "phone" in dict(got.iter_rows())
    assert store.scalar("SELECT count(*) FROM tickets WHERE reported_ts IS NOT NULL") == 0
