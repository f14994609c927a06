"""OsmAnd decoding as Traccar decodes it: a table of Traccar's own test payloads (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipelines.errors import EventFormatError
from pipelines.live.osmand import KNOT_MPS, OsmAndRequest, decode

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
CLIENT9 = {
    "location": {
        "timestamp": "2025-06-15T13:45:12.862Z",
        "coords": {
            "latitude": 37.4219983,
            "longitude": -122.084,
            "accuracy": 5,
            "speed": 0,
            "heading": -1,
            "altitude": 5,
        },
        "is_moving": False,
        "odometer": 0,
        "event": "motionchange",
        "battery": {"level": 1, "is_charging": False},
        "activity": {"type": "still"},
        "extras": {},
    },
    "device_id": "48241179",
}
CLIENT9_MOVING = {
    "location": {
        "event": "motionchange",
        "is_moving": False,
        "timestamp": "2021-07-21T08:06:34.444Z",
        "coords": {
            "latitude": -6.1148096,
            "longitude": 106.6837015,
            "accuracy": 3.8,
            "speed": 18.67,
            "heading": 63,
            "altitude": 35.7,
        },
        "battery": {"is_charging": False, "level": 0.79},
        "extras": {},
    },
    "device_id": "8737767034",
}
CLIENT9_MOCK = {
    "location": {
        "extras": {},
        "mock": True,
        "coords": {
            "speed": -1,
            "longitude": -122.406417,
            "latitude": 37.785834,
            "accuracy": 5,
            "altitude": 0,
            "heading": -1,
        },
        "timestamp": "2025-05-09T04:11:30.579Z",
    },
    "device_id": "658765",
}

# (name, query, content type, body, expected fields of the one fix)
VALID = [
    (
        "query iso timestamp",
        "id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0"
        "&altitude=224.0&speed=0.0",
        "",
        b"",
        {
            "device_id": "902064",
            "lat": 42.06288,
            "lon": -88.23412,
            "hdop": 6.0,
            "altitude_m": 224.0,
            "speed_mps": 0.0,
            "ts": datetime(2016, 1, 27, 18, 55, 47, tzinfo=UTC),
        },
    ),
    (
        "query epoch ms",
        "id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0",
        "",
        b"",
        {"ts": datetime(2015, 9, 12, 14, 38, 6, 579000, tzinfo=UTC)},
    ),
    (
        "query local 'yyyy-MM-dd HH:mm:ss' in the server zone",
        "lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&speed=0.0"
        "&id=353861053849681",
        "",
        b"",
        {"device_id": "353861053849681", "ts": datetime(2014, 6, 4, 7, 10, 11, tzinfo=UTC)},
    ),
    (
        "query epoch s, bearing",
        "id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0&altitude=0"
        "&hdop=0.0",
        "",
        b"",
        {"ts": datetime(2013, 8, 22, 13, 14, 27, tzinfo=UTC), "heading_deg": 0.0},
    ),
    (
        "query deviceid, heading, no timestamp = now",
        "lat=60.0&lon=30.0&speed=0.0&heading=0.0&vacc=0&hacc=0&altitude=0&deviceid=123456",
        "",
        b"",
        {"device_id": "123456", "ts": NOW},
    ),
    (
        "query location=lat,lon",
        "id=123456&timestamp=1377177267&location=60.0,30.0",
        "",
        b"",
        {"lat": 60.0, "lon": 30.0},
    ),
    (
        "query speed in knots",
        "id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571"
        "&bearing=7.19889788244&speed=40&ignition=true&rpm=933&fuel=24",
        "",
        b"",
        {"speed_mps": pytest.approx(40 * KNOT_MPS), "heading_deg": pytest.approx(7.19889788244)},
    ),
    (
        "form POST (Traccar Client 10.x), knots, accuracy, token attribute",
        "",
        FORM,
        b"id=dev1&lat=31.2304&lon=121.4737&timestamp=1764590400&accuracy=4.5&altitude=12"
        b"&speed=3.89&bearing=90&batt=80&charge=false&token=abc",
        {"accuracy_m": 4.5, "speed_mps": pytest.approx(3.89 * KNOT_MPS), "token": "abc"},
    ),
    (
        "JSON Traccar Client 9.x, m/s, heading -1 ignored",
        "",
        JSON,
        json.dumps(CLIENT9).encode(),
        {
            "device_id": "48241179",
            "lat": 37.4219983,
            "lon": -122.084,
            "accuracy_m": 5.0,
            "speed_mps": 0.0,
            "heading_deg": None,
            "altitude_m": 5.0,
            "ts": datetime(2025, 6, 15, 13, 45, 12, 862000, tzinfo=UTC),
        },
    ),
    (
        "JSON Traccar Client 9.x moving: speed stays m/s",
        "",
        JSON,
        json.dumps(CLIENT9_MOVING).encode(),
        {"speed_mps": 18.67, "heading_deg": 63.0, "accuracy_m": 3.8},
    ),
    (
        "JSON mock location, speed -1 ignored",
        "",
        JSON,
        json.dumps(CLIENT9_MOCK).encode(),
        {"mock_location": True, "speed_mps": None},
    ),
]


@pytest.mark.parametrize(
    ("name", "query", "ctype", "body", "expected"), VALID, ids=[v[0] for v in VALID]
)
def test_traccar_payloads_decode_with_their_units(
    name: str, query: str, ctype: str, body: bytes, expected: dict[str, object]
) -> None:
    fixes, _ = decode(OsmAndRequest(query, ctype, body), tz="Europe/Luxembourg", now=NOW)
    assert len(fixes) == 1
    for field, value in expected.items():
        assert getattr(fixes[0], field) == value, field


def test_client10_upload_json_array_is_a_batch_in_knots() -> None:
    body = json.dumps(
        [
            {"id": "dev1", "lat": 31.1, "lon": 121.1, "timestamp": 1764590400, "speed": 10},
            {"id": "dev1", "lat": 31.2, "lon": 121.2, "timestamp": 1764590401, "speed": 0},
        ]
    ).encode()
    fixes, is_json = decode(OsmAndRequest("", JSON, body), tz="UTC", now=NOW)
    assert is_json
    assert [f.lat for f in fixes] == [31.1, 31.2]
    assert fixes[0].speed_mps == pytest.approx(10 * KNOT_MPS)


MALFORMED = [
    ("no id", "timestamp=1377177267&lat=60.0&lon=30.0", "", b"", "id is missing"),
    ("lat not a number", "id=1&lat=north&lon=30", "", b"", "lat='north'"),
    ("bad location", "id=1&location=60.0", "", b"", "location='60.0'"),
    ("bad timestamp", "id=1&lat=1&lon=1&timestamp=yesterday", "", b"", "timestamp='yesterday'"),
    ("speed text", "id=1&lat=1&lon=1&speed=fast", "", b"", "speed='fast'"),
    ("empty request", "", "", b"", "no query string"),
    ("JSON not JSON", "", JSON, b"{oops", "not valid JSON"),
    ("JSON without coords", "", JSON, b'{"device_id": "1", "location": {}}', "location.coords"),
    (
        "JSON bad ISO",
        "",
        JSON,
        b'{"device_id":"1","location":{"timestamp":"noon","coords":{"latitude":1,"longitude":1}}}',
        "location.timestamp='noon'",
    ),
    ("JSON array of non-objects", "", JSON, b"[1, 2]", "body[0]"),
]


@pytest.mark.parametrize(
    ("name", "query", "ctype", "body", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_requests_name_the_field(
    name: str, query: str, ctype: str, body: bytes, message: str
) -> None:
    with pytest.raises(EventFormatError, match=None) as info:
        decode(OsmAndRequest(query, ctype, body), tz="UTC", now=NOW)
    assert message in str(info.value)


def test_columnar_batch_decoding_equals_the_row_decoder() -> None:
    from pipelines.live.osmand import decode_array_columnar

    items = [
        {
            "id": "dev1",
            "lat": 31.1,
            "lon": 121.1,
            "timestamp": 1764590400,
            "speed": 10,
            "accuracy": 4.5,
            "bearing": 90,
            "altitude": 12,
        },
        {"id": "dev2", "lat": 31.2, "lon": 121.2, "timestamp": 1764590401123, "speed": 0},
    ]
    rows, _ = decode(OsmAndRequest("", JSON, json.dumps(items).encode()), tz="UTC", now=NOW)
    frame = decode_array_columnar(json.dumps(items).encode())
    for fix, col in zip(rows, frame.iter_rows(named=True), strict=True):
        assert (fix.device_id, fix.ts) == (col["device_id"], col["ts"])
        for name in (
            "lat",
            "lon",
            "accuracy_m",
            "speed_mps",
            "heading_deg",
            "altitude_m",
            "hdop",
        ):
            assert getattr(fix, name) == pytest.approx(col[name]), name


@pytest.mark.parametrize(
    "items",
    [
        [{"id": "d", "lat": "north", "lon": 1, "timestamp": 1}],  # the row decoder names lat
        [{"id": "d", "lat": 1, "lon": 1, "timestamp": "2026-01-01T00:00:00Z"}],  # ISO text
        [{"id": "d", "location": "1,2", "timestamp": 1}],
        [{"lat": 1, "lon": 1, "timestamp": 1}],  # no id
    ],
)
def test_columnar_batch_leaves_odd_shapes_to_the_row_decoder(items: list[object]) -> None:
    from pipelines.live.osmand import NotVectorizableError, decode_array_columnar

    with pytest.raises(NotVectorizableError):
        decode_array_columnar(json.dumps(items).encode())
