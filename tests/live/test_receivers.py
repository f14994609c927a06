"""Receivers end to end on real NATS, Mosquitto and HTTP on 127.0.0.1: each OsmAnd shape with
its units, the CloudEvents modes, API keys and device tokens, MQTT, and the ingest rules."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipelines.live.osmand import KNOT_MPS
from pipelines.live.runtime import LiveThread
from pipelines.store.gateway import Store
from tests.live.conftest import DEVICE_TOKEN, LiveEnv, wait_for

pytestmark = pytest.mark.usefixtures("live_stack")

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _epoch(offset_s: int) -> int:
    return int((BASE + timedelta(seconds=offset_s)).timestamp())


def _fix_rows(store: Store) -> list[dict[str, object]]:
    return store.query(
        "SELECT technician_id, ts, lat, lon, accuracy_m, speed_mps, heading_deg, source "
        "FROM gps_fixes ORDER BY technician_id, ts"
    ).to_dicts()


def test_every_osmand_shape_is_stored_once_with_its_units(
    live_env: LiveEnv, live_store: Store
) -> None:
    url = live_env.osmand
    q = "id=dev1&lat=31.2300&lon=121.4700&accuracy=5&speed=10&bearing=90&timestamp={}"
    with httpx.Client(timeout=5) as http:
        answers = [
            http.get(f"{url}/?{q.format(_epoch(0))}"),
            http.post(f"{url}/?{q.format(_epoch(10))}"),
            http.post(
                url,
                content=q.format(_epoch(20)).encode(),
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            http.post(
                url,
                json={
                    "device_id": "dev1",
                    "location": {
                        "timestamp": (BASE + timedelta(seconds=30)).isoformat(),
                        "coords": {
                            "latitude": 31.2301,
                            "longitude": 121.4701,
                            "accuracy": 4,
                            "speed": 10,
                            "heading": -1,
                            "altitude": 5,
                        },
                        "is_moving": True,
                        "event": "motionchange",
                        "battery": {"level": 0.5, "is_charging": False},
                    },
                },
            ),
            http.post(
                url,
                json=[
                    {
                        "id": "dev2",
                        "lat": 31.24,
                        "lon": 121.48,
                        "timestamp": _epoch(40),
                        "accuracy": 6,
                        "speed": 10,
                    },
                    {
                        "id": "dev2",
                        "lat": 31.2401,
                        "lon": 121.4801,
                        "timestamp": _epoch(50),
                        "accuracy": 6,
                        "speed": 0,
                    },
                ],
            ),
        ]
    assert [a.status_code for a in answers] == [200] * 5
    assert all(a.text == "" for a in answers)
    wait_for(lambda: live_store.count("gps_fixes") == 6, what="6 fixes stored")
    rows = _fix_rows(live_store)
    t1 = [r for r in rows if r["technician_id"] == "T1"]
    # knots in the query and form shapes, m/s in the JSON body
    assert [r["speed_mps"] for r in t1] == pytest.approx([10 * KNOT_MPS] * 3 + [10.0])
    assert [r["heading_deg"] for r in t1] == [90.0, 90.0, 90.0, None]
    assert [r["ts"] for r in t1] == [BASE + timedelta(seconds=s) for s in (0, 10, 20, 30)]
    assert {r["source"] for r in rows} == {"osmand"}
    assert live_store.count("quarantine") == 0


def test_unknown_device_is_refused_and_counted(live_env: LiveEnv) -> None:
    with httpx.Client(timeout=5) as http:
        query = http.get(f"{live_env.osmand}/?id=nobody&lat=1&lon=1&timestamp={_epoch(0)}")
        body = http.post(
            live_env.osmand,
            json={"device_id": "nobody", "location": {"coords": {"latitude": 1, "longitude": 1}}},
        )
        status = http.get(live_env.events.replace("/events", "/status")).json()
    assert (query.status_code, body.status_code) == (400, 404)  # as Traccar answers
    assert "id=nobody" in query.text
    assert status["counters"]["unknown_device"] == 2


def test_device_token_is_enforced_from_attribute_or_header(
    live_env: LiveEnv, live_store: Store
) -> None:
    q = f"{live_env.osmand}/?id=tok1&lat=31.2&lon=121.4&accuracy=5&timestamp="
    with httpx.Client(timeout=5) as http:
        missing = http.get(q + str(_epoch(0)))
        wrong = http.get(q + f"{_epoch(1)}&token=guess")
        attribute = http.get(q + f"{_epoch(2)}&token={DEVICE_TOKEN}")
        header = http.get(q + str(_epoch(3)), headers={"X-Device-Token": DEVICE_TOKEN})
    assert [r.status_code for r in (missing, wrong, attribute, header)] == [401, 401, 200, 200]
    wait_for(lambda: live_store.count("gps_fixes") == 2, what="2 authorised fixes")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("id=dev1&lat=north&lon=1", "lat='north'"),
        ("id=dev1&lat=1&lon=1&timestamp=soon", "timestamp='soon'"),
        ("lat=1&lon=1", "id is missing"),
    ],
)
def test_malformed_osmand_request_gets_400_naming_the_field(
    live_env: LiveEnv, query: str, field: str
) -> None:
    answer = httpx.get(f"{live_env.osmand}/?{query}", timeout=5)
    assert answer.status_code == 400
    assert field in answer.text


def test_rows_failing_the_ingest_rules_are_quarantined_with_their_reason(
    live_env: LiveEnv, live_store: Store
) -> None:
    with httpx.Client(timeout=5) as http:
        out_of_range = http.get(
            f"{live_env.osmand}/?id=dev1&lat=123.4&lon=121&accuracy=5&timestamp={_epoch(0)}"
        )
        no_accuracy = http.get(f"{live_env.osmand}/?id=dev1&lat=31&lon=121&timestamp={_epoch(5)}")
    assert (out_of_range.status_code, no_accuracy.status_code) == (200, 200)
    wait_for(lambda: live_store.count("quarantine") == 2, what="2 quarantined rows")
    q = live_store.query("SELECT rule, field, reason, source_path FROM quarantine ORDER BY rule")
    assert q["rule"].to_list() == ["lat_lon_range", "missing_accuracy"]
    assert "lat=123.4 is outside [-90, 90]" in q["reason"][0]
    assert q["source_path"][0].startswith("bus osmand/dev1 ")
    assert live_store.count("gps_fixes") == 0


def test_duplicate_out_of_order_and_late_posts_are_each_stored_once(
    live_env: LiveEnv, live_store: Store
) -> None:
    def post(offset_s: int) -> int:
        return httpx.get(
            f"{live_env.osmand}/?id=dev1&lat={31.23 + offset_s * 1e-6}&lon=121.47&accuracy=5"
            f"&timestamp={_epoch(offset_s)}",
            timeout=5,
        ).status_code

    assert [post(s) for s in (0, 60, 60, 30, 60)] == [200] * 5  # duplicate, out of order
    wait_for(lambda: live_store.count("gps_fixes") == 3, what="3 distinct fixes")
    assert post(-600) == 200  # 10 minutes late
    assert post(0) == 200  # and a retry of the first
    wait_for(lambda: live_store.count("gps_fixes") == 4, what="the late fix")
    ts = live_store.query("SELECT ts FROM gps_fixes ORDER BY ts")["ts"].to_list()
    assert ts == [BASE + timedelta(seconds=s) for s in (-600, 0, 30, 60)]  # event time
    assert live_store.count("quarantine") == 0
    assert live_store.scalar("SELECT count(*) FROM bus_messages") == 4


def _ce(event_type: str, subject: str, **data: object) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/ticketing/test",
        "type": event_type,
        "subject": subject,
        "time": (BASE + timedelta(minutes=5)).isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }


def test_cloudevents_structured_binary_and_batch(live_env: LiveEnv, live_store: Store) -> None:
    auth = {"Authorization": f"Bearer {live_env.ticket_key}"}
    created = _ce(
        "fieldtrace.ticket.created",
        "TK1",
        customer_id="C1",
        lat=31.2,
        lon=121.4,
        tags=["hvac", "r32"],
        region="east",
    )
    with httpx.Client(timeout=5) as http:
        structured = http.post(
            live_env.events,
            content=json.dumps(created),
            headers={**auth, "content-type": "application/cloudevents+json"},
        )
        binary = http.post(
            live_env.events,
            content=json.dumps({"actor": "dispatcher"}),
            headers={
                **auth,
                "content-type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": "evt-assign-1",
                "ce-source": "/ticketing/test",
                "ce-type": "fieldtrace.ticket.assigned",
                "ce-subject": "TK1",
                "ce-time": (BASE + timedelta(minutes=6)).isoformat(),
            },
        )
        batch = http.post(
            live_env.events,
            content=json.dumps(
                [
                    _ce("fieldtrace.ticket.departed", "TK1"),
                    _ce("fieldtrace.ticket.arrived", "TK1", actor="T1"),
                ]
            ),
            headers={**auth, "content-type": "application/cloudevents-batch+json"},
        )
        again = http.post(  # a re-send keeps its id: not stored twice
            live_env.events,
            content=json.dumps(created),
            headers={**auth, "content-type": "application/cloudevents+json"},
        )
    assert [r.status_code for r in (structured, binary, batch, again)] == [202] * 4
    assert again.json() == {"accepted": 1, "duplicates": 1}
    wait_for(lambda: live_store.count("ticket_events") == 4, what="4 ticket events")
    assert live_store.count("tickets") == 1
    ticket = live_store.query("SELECT * FROM tickets").row(0, named=True)
    assert (ticket["ticket_id"], ticket["tags"], ticket["source"]) == (
        "TK1",
        ["hvac", "r32"],
        "/ticketing/test",
    )
    types = live_store.query("SELECT event_type FROM ticket_events ORDER BY event_type")
    assert types["event_type"].to_list() == ["arrived", "assigned", "created", "departed"]


@pytest.mark.parametrize(
    ("headers", "body", "status", "says"),
    [
        ({}, _ce("fieldtrace.ticket.created", "TK9"), 401, "API key"),
        ({"key": "iot"}, _ce("fieldtrace.ticket.created", "TK9"), 403, "fieldtrace.ticket.created"),
        (
            {"key": "ticket"},
            {**_ce("fieldtrace.ticket.created", "TK9"), "source": None},
            400,
            "source",
        ),
        ({"key": "ticket"}, _ce("com.example.other", "TK9"), 400, "type='com.example.other'"),
        (
            {"key": "ticket"},
            {k: v for k, v in _ce("fieldtrace.ticket.arrived", "X").items() if k != "subject"},
            400,
            "subject is missing",
        ),
    ],
)
def test_cloudevents_refusals_name_the_reason(
    live_env: LiveEnv, headers: dict[str, str], body: dict[str, object], status: int, says: str
) -> None:
    key = {"ticket": live_env.ticket_key, "iot": live_env.iot_key}.get(headers.get("key", ""))
    answer = httpx.post(
        live_env.events,
        content=json.dumps(body),
        headers={
            "content-type": "application/cloudevents+json",
            **({"X-API-Key": key} if key else {}),
        },
        timeout=5,
    )
    assert answer.status_code == status
    assert says in answer.json()["error"]


def test_mqtt_readings_reach_the_store(
    live_env: LiveEnv, live_store: Store, live_stack: LiveThread
) -> None:
    from urllib.parse import urlparse

    broker = urlparse(live_env.settings.mqtt_url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{live_env.settings.bus_prefix}-dev"
    )
    client.connect(broker.hostname or "127.0.0.1", broker.port or 1883)
    client.loop_start()
    topic = f"{live_env.settings.bus_prefix}/iot/fridge-7"
    ts = (BASE + timedelta(minutes=1)).isoformat()
    wait_for(lambda: _subscribed(live_env), what="MQTT intake subscribed")
    infos = [
        client.publish(
            topic, json.dumps({"ts": ts, "metric": "temp_c", "value": 4.5, "unit": "C"}), qos=1
        ),
        client.publish(
            topic, json.dumps({"ts": ts, "metric": "temp_c", "value": 4.5, "unit": "C"}), qos=1
        ),
        client.publish(topic, b"not json", qos=1),
    ]
    for info in infos:
        info.wait_for_publish(5)
    wait_for(lambda: live_store.count("iot_readings") == 1, what="1 reading")
    client.loop_stop()
    client.disconnect()
    row = live_store.query("SELECT device_id, metric, value FROM iot_readings").row(0)
    assert row == ("fridge-7", "temp_c", 4.5)


def _subscribed(live_env: LiveEnv) -> bool:
    status = httpx.get(live_env.events.replace("/events", "/status"), timeout=5).json()
    return bool(status["counters"].get("mqtt_subscribed"))


def test_a_message_that_is_not_a_cloudevent_does_not_stop_the_writer(
    live_env: LiveEnv, live_store: Store
) -> None:
    import asyncio

    import nats

    async def publish_raw() -> None:
        nc = await nats.connect(live_env.settings.bus_url)
        await nc.jetstream().publish(f"{live_env.settings.bus_prefix}.in.gps", b'{"id": 1}')
        await nc.close()

    asyncio.run(publish_raw())
    answer = httpx.get(
        f"{live_env.osmand}/?id=dev1&lat=31.2&lon=121.4&accuracy=5&timestamp={_epoch(0)}",
        timeout=5,
    )
    assert answer.status_code == 200
    wait_for(lambda: live_store.count("gps_fixes") == 1, what="the fix after the stray message")
