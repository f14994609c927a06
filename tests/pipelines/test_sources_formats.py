"""Source formats on small built files: quirks, tables of pure helpers, exact reasons."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import shapely

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import IngestOptions
from pipelines.ingest.machine import ingest_file
from pipelines.ingest.sources import formats_for
from pipelines.ingest.sources.gps import UERE_M, generic_mapping
from pipelines.ingest.sources.outages import buffered_point_wkt
from pipelines.ingest.sources.text import iso_text
from pipelines.ingest.sources.tickets import slugify
from pipelines.settings import load_settings
from pipelines.store.gateway import Store

SETTINGS = load_settings()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ft.duckdb")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def make_gpslogger(rows: list[tuple[str, str, str]], count_line: bool = True) -> str:
    """rows of (time, accuracy, hdop) at a fixed place, GPSLogger layout."""
    head = "time,lat,lon,elevation,accuracy,bearing,speed,satellites,provider,hdop,annotation"
    lines = [f"{t},60.38,5.22,50,{acc},0,0,0,gps,{hdop}," for t, acc, hdop in rows]
    return (f"{len(rows)}\n" if count_line else "") + "\n".join([head, *lines]) + "\n"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("gps", {"gpx", "gpslogger", "geolife", "generic"}),
        ("tickets", {"open311", "socrata"}),
        ("events", {"open311", "socrata"}),
        ("uwb_positions", {"local", "ranges"}),
        ("uwb_sites", {"site"}),
        ("weather", {"openmeteo"}),
        ("outages", {"geojson"}),
        ("vibration", {"vibration_csv", "mat"}),
    ],
)
def test_formats_are_registered(kind: str, expected: set[str]) -> None:
    assert expected <= set(formats_for(kind))


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Noise - Vehicle", "noise-vehicle"),
        ("PAINT - PLASTER", "paint-plaster"),
        ("  ", None),
        (None, None),
    ],
)
def test_slugify(text: str | None, slug: str | None) -> None:
    assert slugify(text) == slug


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (
            ["Latitude", "Longitude", "Timestamp", "Vehicle"],
            {"lat": "Latitude", "lon": "Longitude", "ts": "Timestamp", "technician_id": "Vehicle"},
        ),
        (
            ["X", "Y", "t", "tracker", "id"],
            {"lat": "Y", "lon": "X", "ts": "t", "technician_id": "tracker"},
        ),
        (
            ["lat", "lng", "datetime", "hdop"],
            {"lat": "lat", "lon": "lng", "ts": "datetime", "hdop": "hdop"},
        ),
    ],
)
def test_generic_column_names(columns: list[str], expected: dict[str, str]) -> None:
    assert generic_mapping(columns) == expected


@pytest.mark.parametrize(
    ("raw", "tidy"),
    [
        ("2008-12-11 04:42:14+00", "2008-12-11 04:42:14+00:00"),
        ("2022-08-15 9:42:24.766", "2022-08-15 09:42:24.766"),
        (" 2024-01-01T00:00Z ", "2024-01-01T00:00Z"),
    ],
)
def test_iso_text(raw: str, tidy: str) -> None:
    assert pl.select(iso_text(pl.lit(raw))).item() == tidy


def test_gpslogger_count_line_sentinel_and_hdop_accuracy(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path / "ride.csv",
        make_gpslogger(
            [
                ("2017-08-13T08:52:26Z", "", "99.99"),  # sentinel, no accuracy → quarantined
                ("2017-08-13T08:53:26Z", "", "1.2"),  # accuracy from HDOP
                ("2017-08-13T08:54:26Z", "7.5", "2.0"),  # reported accuracy wins
            ]
        ),
    )
    r = ingest_file(store, "gps", path, SETTINGS, IngestOptions(fmt="gpslogger"))
    assert (r.rows_read, r.rows_accepted, r.reasons) == (3, 2, {"missing_accuracy": 1})
    got = store.query(
        "SELECT technician_id, accuracy_m, accuracy_source FROM gps_fixes ORDER BY ts"
    ).rows()
    assert got == [("ride", pytest.approx(1.2 * UERE_M), "hdop"), ("ride", 7.5, "reported")]


def test_ragged_line_is_quarantined_not_dropped(store: Store, tmp_path: Path) -> None:
    text = make_gpslogger([("2017-08-13T08:52:26Z", "5", "1"), ("2017-08-13T08:53:26Z", "5", "1")])
    text = text.replace("gps,1,\n", "gps,1,,extra,fields\n", 1)
    r = ingest_file(
        store,
        "gps",
        write(tmp_path / "r.csv", text),
        SETTINGS,
        IngestOptions(fmt="gpslogger", extra={"device": "d1"}),
    )
    assert (r.rows_read, r.rows_accepted, r.reasons) == (2, 1, {"parse": 1})
    reason = store.scalar("SELECT reason FROM quarantine")
    assert reason.startswith("r.csv row 1: 13 fields, expected 11")


def test_generic_epoch_seconds_and_column_override(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path / "g.tsv",
        "unit\tepoch\tnorth\teast\tacc\n"
        "v1\t1700000000\t30.1\t120.1\t4\nv1\t1700000005\t30.1001\t120.1\t4\n",
    )
    opts = IngestOptions(
        fmt="generic",
        columns={
            "technician_id": "unit",
            "ts": "epoch",
            "lat": "north",
            "lon": "east",
            "accuracy_m": "acc",
        },
    )
    r = ingest_file(store, "gps", path, SETTINGS, opts)
    assert (r.rows_read, r.rows_accepted) == (2, 2)
    assert store.query("SELECT min(ts) AS t FROM gps_fixes").item().timestamp() == 1700000000


def test_generic_without_coordinates_says_which(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "x.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(SourceFormatError, match="cannot tell which column is lat, lon, ts"):
        ingest_file(store, "gps", path, SETTINGS, IngestOptions(fmt="generic"))


def test_uwb_local_headerless_with_summary_and_empty_cells(store: Store, tmp_path: Path) -> None:
    site = write(
        tmp_path / "site.yaml",
        "site_id: s1\norigin: {lat: 22.7, lon: 114.2}\n"
        "rotation_deg: 0\nanchors: [{id: A0, x_m: 0, y_m: 0, z_m: 2}]\n",
    )
    ingest_file(store, "uwb_sites", site, SETTINGS, IngestOptions(fmt="site"))
    path = write(
        tmp_path / "pos.csv",
        "T0,2024-01-01T00:00:00Z,1.0,2.0,0.5\n"
        "T0,2024-01-01T00:00:01Z,,2.1,0.5\nT0,2024-01-01T00:00:02Z,1.2,2.2,0.5\n"
        "mean,,1.1,2.1\n",
    )
    r = ingest_file(
        store,
        "uwb_positions",
        path,
        SETTINGS,
        IngestOptions(fmt="local", extra={"site_file": str(site)}),
    )
    assert (r.rows_read, r.rows_accepted) == (4, 2)
    assert r.reasons == {"summary_row": 1, "missing_required": 1}
    assert store.scalar("SELECT count(lat) FROM uwb_positions") == 2


def test_uwb_ranges_needs_a_site_file(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "2024-01-01 9:00:00,1,2,3,4\n")
    with pytest.raises(SourceFormatError, match="--site-file"):
        ingest_file(store, "uwb_positions", path, SETTINGS, IngestOptions(fmt="ranges"))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ." + b"\0" * 200, "v7.3"),
        (b"this is not a mat file at all" + b"\0" * 200, "not a MATLAB 5 .mat file"),
    ],
)
def test_unreadable_mat_files_fail_and_write_nothing(
    store: Store, tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "v.mat"
    path.write_bytes(content)
    opts = IngestOptions(fmt="mat", extra={"device": "pump-1", "sample_rate_hz": 12000.0})
    with pytest.raises(SourceFormatError, match=expected):
        ingest_file(store, "vibration", path, SETTINGS, opts)
    assert store.count("ingest_batches") == 0


def test_openmeteo_length_mismatch_is_quarantined(store: Store, tmp_path: Path) -> None:
    body = {
        "latitude": 52.5,
        "longitude": 13.4,
        "utc_offset_seconds": 3600,
        "hourly_units": {"temperature_2m": "°C"},
        "hourly": {"time": ["2024-01-01T01:00", "2024-01-01T02:00"], "temperature_2m": [1.5]},
    }
    r = ingest_file(
        store,
        "weather",
        write(tmp_path / "w.json", json.dumps(body)),
        SETTINGS,
        IngestOptions(fmt="openmeteo"),
    )
    assert (r.rows_read, r.rows_accepted, r.reasons) == (2, 1, {"parse": 1})
    ts = store.query("SELECT ts FROM weather_obs").item()
    assert ts.isoformat() == "2024-01-01T00:00:00+00:00"  # declared +1 h offset removed


@pytest.mark.parametrize(
    "body", ["not json", '{"error": true, "reason": "bad latitude"}', "[1, 2]"]
)
def test_openmeteo_bad_bodies_fail_whole(store: Store, tmp_path: Path, body: str) -> None:
    with pytest.raises(SourceFormatError):
        ingest_file(
            store,
            "weather",
            write(tmp_path / "w.json", body),
            SETTINGS,
            IngestOptions(fmt="openmeteo"),
        )
    assert store.count("ingest_batches") == 0


@pytest.mark.parametrize("radius_m", [50.0, 500.0])
def test_point_radius_is_buffered_in_metres(radius_m: float) -> None:
    poly = shapely.from_wkt(buffered_point_wkt(-80.6, 35.1, radius_m))
    _, miny, _, maxy = poly.bounds
    assert (maxy - miny) * 111_000 == pytest.approx(2 * radius_m, rel=0.01)
    assert poly.is_valid


def test_vibration_channel_with_nan_is_quarantined_whole(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path / "v.csv",
        "sample,time_s,DE_g,FE_g\n0,0.0,0.1,0.2\n1,0.001,nan,0.3\n2,0.002,0.2,0.1\n",
    )
    r = ingest_file(
        store,
        "vibration",
        path,
        SETTINGS,
        IngestOptions(fmt="vibration_csv", extra={"start_ts": "2024-01-01T00:00:00Z"}),
    )
    assert (r.rows_read, r.rows_accepted, r.reasons) == (2, 1, {"not_finite": 1})
    got = store.query("SELECT channel, sample_rate_hz, samples FROM vibration_series").row(0)
    assert got == ("FE_g", pytest.approx(1000.0), [0.2, 0.3, 0.1])


# -- text edge cases: encoding, ragged rows, header, blank lines, delimiter -----------------------
HEADER = "technician_id,ts,lat,lon,accuracy_m\n"


def fix_line(i: int, tech: str = "t1", extra: str = "") -> str:
    return f"{tech},2026-10-05T02:00:{i:02d}Z,30.27,120.15,5{extra}\n"


@pytest.mark.parametrize(("fmt", "name"), [(None, "gps.csv"), ("generic", "gps.txt")])
@pytest.mark.parametrize("encoding", [None, "latin-1"])
def test_latin1_ids_are_decoded_not_replaced(
    store: Store, tmp_path: Path, fmt: str | None, name: str, encoding: str | None
) -> None:
    path = tmp_path / name
    path.write_bytes((HEADER + fix_line(0, "tech-Müller")).encode("latin-1"))
    opts = IngestOptions(fmt=fmt, encoding=encoding)
    result = ingest_file(store, "gps", path, SETTINGS, opts)
    assert store.scalar("SELECT technician_id FROM gps_fixes") == "tech-Müller"
    assert "\ufffd" not in store.scalar("SELECT technician_id FROM gps_fixes")
    # Detected: the result says so; named: nothing to say.
    assert bool(result.notes) is (encoding is None)


def test_latin1_jsonl_is_decoded(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "gps.jsonl"
    row = {"technician_id": "tëch", "ts": "2026-10-05T02:00:00Z", "lat": 30.27, "lon": 120.15}
    path.write_bytes(json.dumps({**row, "accuracy_m": 5}, ensure_ascii=False).encode("latin-1"))
    ingest_file(store, "gps", path, SETTINGS, IngestOptions(encoding="latin-1"))
    assert store.scalar("SELECT technician_id FROM gps_fixes") == "tëch"


def test_named_encoding_that_does_not_fit_names_the_byte(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "gps.csv"
    path.write_bytes((HEADER + fix_line(0, "t\xe9")).encode("latin-1"))
    with pytest.raises(SourceFormatError, match=r"gps.csv: byte \d+ \(0xe9\) is not valid utf-8"):
        ingest_file(store, "gps", path, SETTINGS, IngestOptions(encoding="utf-8"))


@pytest.mark.parametrize("fmt", [None, "generic"])
def test_ragged_row_names_file_row_and_column(
    store: Store, tmp_path: Path, fmt: str | None
) -> None:
    path = write(
        tmp_path / "ragged.csv", HEADER + fix_line(0) + fix_line(5, extra=",9") + fix_line(9)
    )
    result = ingest_file(store, "gps", path, SETTINGS, IngestOptions(fmt=fmt))
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (3, 2, 1)
    rule, row, reason = store.query("SELECT rule, row_number, reason FROM quarantine").row(0)
    assert (rule, row) == ("parse", 2)
    assert "ragged.csv row 2" in reason
    assert "column 6" in reason


@pytest.mark.parametrize("fmt", [None, "generic"])
def test_duplicated_header_column_is_an_error_naming_it(
    store: Store, tmp_path: Path, fmt: str | None
) -> None:
    path = write(tmp_path / "dup.csv", "technician_id,ts,lat,lon,lat,accuracy_m\n"
                 "t1,2026-10-05T02:00:00Z,30.27,120.15,31.0,5\n")  # fmt: skip
    with pytest.raises(SourceFormatError, match=r"dup.csv: the header names column 'lat' twice"):
        ingest_file(store, "gps", path, SETTINGS, IngestOptions(fmt=fmt))
    assert store.count("ingest_batches") == 0


@pytest.mark.parametrize("tail", ["\n\n\n", "\r\n\r\n", "\n   \n"])
def test_blank_trailing_lines_are_not_rows(store: Store, tmp_path: Path, tail: str) -> None:
    path = write(tmp_path / "blank.csv", HEADER + fix_line(0) + fix_line(5) + tail)
    result = ingest_file(store, "gps", path, SETTINGS)
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (2, 2, 0)


def test_row_of_empty_fields_is_still_a_row(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "empty.csv", HEADER + fix_line(0) + ",,,,\n")
    result = ingest_file(store, "gps", path, SETTINGS)
    assert (result.rows_read, result.rows_quarantined) == (2, 1)


def test_wrong_delimiter_names_the_file_and_the_delimiter(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "semi.csv", HEADER.replace(",", ";") + fix_line(0).replace(",", ";"))
    with pytest.raises(SourceFormatError) as info:
        ingest_file(store, "gps", path, SETTINGS)
    assert str(path) in str(info.value)
    assert "is the delimiter ';'" in str(info.value)
    result = ingest_file(store, "gps", path, SETTINGS, IngestOptions(extra={"delimiter": ";"}))
    assert result.rows_accepted == 1


def test_outage_snapshots_go_through_the_ingest_machine(store: Store, tmp_path: Path) -> None:
    """A snapshot is a batch of the one machine: keyed, quarantined, written by its writer."""
    import inspect
    from datetime import UTC, datetime

    from pipelines.ingest.sources import outages

    def snapshot(features: list[dict[str, object]]) -> str:
        return json.dumps({"type": "FeatureCollection", "features": features})

    def feature(fid: str, lon: float) -> dict[str, object]:
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, 30.27]},
            "properties": {"id": fid, "start": "2026-10-05T01:00:00Z", "radius_m": 200},
        }

    bad = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]},
           "properties": {"id": "x", "radius_m": -4}}  # fmt: skip
    one = write(tmp_path / "s1.geojson", snapshot([feature("a", 120.15), feature("b", 120.2), bad]))
    two = write(tmp_path / "s2.geojson", snapshot([feature("a", 120.16)]))
    opts = IngestOptions(source_name="feed")
    t1, t2 = datetime(2026, 10, 5, 2, tzinfo=UTC), datetime(2026, 10, 5, 3, tzinfo=UTC)
    r1 = outages.merge_outage_snapshot(store, one, SETTINGS, opts, t1)
    r2 = outages.merge_outage_snapshot(store, two, SETTINGS, opts, t2)
    again = outages.merge_outage_snapshot(store, two, SETTINGS, opts, t2)
    assert (r1.inserted, r1.quarantined, r2.updated, r2.closed) == (2, 1, 1, 1)
    assert again.skipped
    assert store.query("SELECT outage_id, end_ts FROM outages ORDER BY 1").rows() == [
        ("a", None),
        ("b", t2),
    ]
    assert store.scalar("SELECT count(*) FROM ingest_batches WHERE ingest_key <> file_hash") == 2
    assert "transaction(" not in inspect.getsource(outages)  # the machine's write stage owns it


def test_311_feed_writes_tickets_and_events_and_replaces_both(store: Store, tmp_path: Path) -> None:
    from pipelines.ingest.sources.tickets import ingest_ticket_feed

    head = "unique_key,created_date,closed_date,complaint_type,latitude,longitude,agency\n"
    rows = [
        "1,2026-10-01T08:00:00,2026-10-01T12:00:00,Noise,40.71,-74.00,NYPD\n",
        "2,2026-10-02T08:00:00,,Heat,40.72,-74.01,HPD\n",
    ]
    path = write(tmp_path / "feed.csv", head + "".join(rows))
    opts = IngestOptions(fmt="socrata", tz="UTC")
    first = ingest_ticket_feed(store, path, SETTINGS, opts)
    assert (first.tickets.rows_accepted, first.events.rows_accepted) == (2, 3)
    assert ingest_ticket_feed(store, path, SETTINGS, opts).tickets.skipped
    write(path, head + rows[0])  # the corrected export: one request
    again = ingest_ticket_feed(store, path, SETTINGS, opts, replace=True)
    assert again.tickets.replaced == [first.tickets.batch_id]
    assert again.events.replaced == [first.events.batch_id]
    assert (store.count("tickets"), store.count("ticket_events")) == (1, 2)
    assert store.count("ingest_batches") == 2
