"""Pure parts of the edge: intake payloads (good and malformed), CloudEvents, the idempotent
writer and the dashboard queries over what it wrote. No NATS needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from dashboard.figures.edge import evidence_spectrum_figure
from geofence.bearing import evaluate_bearing
from geofence.spectrum import SKF_6205_2RS
from pipelines.edge.events import (
    TYPE_TICKET,
    EventError,
    IntakeError,
    Names,
    content_id,
    decode,
    encode,
    fixes_event,
    parse_fixes,
    parse_readings,
    parse_ts,
    parse_vibration,
    readings_event,
    ticket_event,
)
from pipelines.edge.hub import write_links
from pipelines.edge.natsd import EdgeConfigError, ServerSpec, server_config
from pipelines.edge.writer import write_events
from pipelines.store.gateway import Store
from pipelines.views.edge import origin_summary, site_links, ticket_origin
from tests.edge.conftest import make_fault_record

NAMES = Names("fieldtrace", "s1")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-02T08:00:00Z", T0),
        ("2026-03-02T09:00:00+01:00", T0),
        ("2026-03-02T08:00:00", T0),
        (1772438400, T0),
        (1772438400000, T0),
    ],
)
def test_parse_ts_shapes(value: object, expected: datetime) -> None:
    assert parse_ts(value, "x") == expected


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        ("iot", b"not json", "body is not JSON"),
        ("iot", b"[1]", "item 0: int, expected an object"),
        (
            "iot",
            b'{"device_id": "d", "ts": "yesterday", "metric": "t", "value": 1}',
            "ts='yesterday'",
        ),
        ("iot", b'{"device_id": "d", "ts": 1, "metric": "t", "value": "hot"}', "value='hot'"),
        ("iot", b'{"device_id": "", "ts": 1, "metric": "t", "value": 1}', "device_id=''"),
        ("gps", b'{"technician_id": "t", "ts": 1, "lat": 91, "lon": 0}', "lat=91.0"),
        ("vib", b'{"device_id": "d", "start_ts": 1, "samples": [1, 2]}', "expected >= 64"),
        ("vib", b"[{}, {}]", "2 records, expected one"),
    ],
)
def test_malformed_intake_names_the_field(kind: str, body: bytes, message: str) -> None:
    parse = {"iot": parse_readings, "gps": parse_fixes, "vib": parse_vibration}[kind]
    with pytest.raises(IntakeError, match=message) as info:
        parse(body, f"POST /api/v1/intake/{kind}")
    assert isinstance(info.value, ValueError)
    assert f"/intake/{kind}" in str(info.value)


def test_bad_names_and_config() -> None:
    with pytest.raises(EdgeConfigError, match="site 'S 1'"):
        _ = Names("fieldtrace", "S 1").domain
    spec = ServerSpec("hub", "hub", Path("/x"), 1, 2, leaf_listen_port=3)
    text = server_config(spec)
    assert 'domain: "hub"' in text
    assert 'listen: "127.0.0.1:3"' in text
    with pytest.raises(EdgeConfigError, match=r"domain 'a\.b'"):
        server_config(ServerSpec("x", "a.b", Path("/x"), 1, 2))


def test_decode_rejects_non_cloudevents() -> None:
    with pytest.raises(EventError, match="not a CloudEvents"):
        decode(b'{"hello": 1}', "subj seq 1")


def _batch() -> list:  # type: ignore[type-arg]
    readings = parse_readings(
        json.dumps(
            [
                {
                    "device_id": "d1",
                    "ts": (T0 + timedelta(seconds=i)).isoformat(),
                    "metric": "t",
                    "value": float(i),
                }
                for i in range(5)
            ]
        ).encode(),
        "test",
    )
    fixes = parse_fixes(b'[{"technician_id": "t1", "ts": 1772438400, "lat": 55, "lon": 8}]', "t")
    record = parse_vibration(json.dumps(make_fault_record("brg-1", T0, "BPFO")).encode(), "t")
    verdict = evaluate_bearing(
        record.samples, sample_rate_hz=record.sample_rate_hz, rpm=record.rpm, geometry=SKF_6205_2RS
    )
    assert verdict.band == "BPFO"
    return [
        readings_event(NAMES, readings, content_id("iot", b"r")),
        fixes_event(NAMES, fixes, content_id("gps", b"f")),
        ticket_event(NAMES, record, verdict.evidence(), verdict.band),
    ]


def test_events_round_trip_with_msg_id() -> None:
    events = _batch()
    payload, headers = encode(events[2])
    back = decode(payload, "t")
    assert back.get_type() == TYPE_TICKET
    assert back.get_source() == "fieldtrace/edge/s1"
    assert headers["Nats-Msg-Id"] == f"fieldtrace/edge/s1/{back.get_id()}"
    assert back.get_time() == T0  # event time kept


def test_writer_is_idempotent_and_views_show_the_origin(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    events = [decode(encode(e)[0], "t") for e in _batch()]
    first = write_events(store, events, received_at=T0)
    again = write_events(store, events, received_at=T0)
    assert (first.readings, first.fixes, first.tickets) == (5, 1, 1)
    assert (again.readings, again.fixes, again.tickets) == (0, 0, 0)
    assert store.count("iot_readings") == 5
    assert store.count("vibration_series") == 1
    ticket_id = store.scalar("SELECT ticket_id FROM tickets")
    origin = ticket_origin(store, ticket_id)
    assert origin is not None
    assert origin["band"] == "BPFO"
    assert "edge site s1" in origin_summary(origin)
    figure = evidence_spectrum_figure(origin)
    assert len(figure.layout.shapes) == 3  # BPFI, BPFO, BSF lines
    assert ticket_origin(store, "nope") is None
    now = datetime.now(UTC)
    link = {
        "site": "s1",
        "domain": "edge-s1",
        "stream": "SITE_S1",
        "link_state": "up",
        "source_active_s": 0.2,
        "backlog": 0,
        "messages_synced": 3,
        "last_sync_at": now,
        "last_event_ts": T0,
        "error": None,
        "updated_at": now,
    }
    write_links(store, pl.DataFrame([link]))
    write_links(store, pl.DataFrame([{**link, "link_state": "down", "last_sync_at": None}]))
    links = site_links(store)
    assert links.select("site", "link_state").rows() == [("s1", "down")]
    assert links["last_sync_utc"][0] is not None  # an unknown last sync keeps the stored one
    store.close()


def test_ticket_page_origin_block_for_an_edge_ticket(tmp_path: Path) -> None:
    from dashboard.context import AppContext
    from dashboard.pages.ticket import _origin_block
    from pipelines.settings import load_settings

    ctx = AppContext(load_settings(store_path=tmp_path / "s.duckdb"))
    write_events(ctx.store, [decode(encode(e)[0], "t") for e in _batch()], received_at=T0)
    ticket_id = ctx.store.scalar("SELECT ticket_id FROM tickets")
    summary, graph = _origin_block(ctx, ticket_id)
    assert "created at edge site s1" in summary.children
    assert graph.figure.layout.title.text == "Edge evidence: bearing_band_energy@1"
    assert _origin_block(ctx, "not-an-edge-ticket") == []
    ctx.store.close()
