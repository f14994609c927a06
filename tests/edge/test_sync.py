"""Edge sync against real nats-servers: outage, kill -9, duplicates, dispatch mirror."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest

from tests.edge.conftest import (
    Site,
    make_fault_record,
    make_readings,
    now_utc,
    wait_for,
)

N_READINGS = 10_000
BATCH = 500
MQTT_READINGS = 100
PLANTED = [("brg-1", "BPFI"), ("brg-2", "BPFO"), ("brg-3", "BPFI")]


def _mqtt_publish(port: int, topic: str, payloads: list[bytes]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-device")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()


def _plant(site: Site, *, kill_after_half: bool) -> None:
    """3 faults + 1 healthy record, 10,000 readings (9,900 HTTP in batches, 100 MQTT)."""
    start = now_utc() - timedelta(hours=3)
    for i, (device, band) in enumerate(PLANTED):
        assert (
            site.edge.post(
                "vib", make_fault_record(device, start + timedelta(minutes=i), band)
            ).status_code
            == 202
        )
    assert site.edge.post("vib", make_fault_record("brg-4", start, None)).status_code == 202
    readings = make_readings(start, N_READINGS)
    http_part, mqtt_part = (
        readings[: N_READINGS - MQTT_READINGS],
        readings[N_READINGS - MQTT_READINGS :],
    )
    batches = [http_part[i : i + BATCH] for i in range(0, len(http_part), BATCH)]
    for i, batch in enumerate(batches):
        assert site.edge.post("iot", batch).status_code == 202
        if kill_after_half and i == len(batches) // 2:
            site.edge.kill9()
            site.edge.start()
            # the client never saw the ack of the batch in flight: it sends it again
            assert site.edge.post("iot", batch).json()["duplicate"] is True
    # a phone-style retry of an earlier batch, after the fact: absorbed
    assert site.edge.post("iot", batches[0]).json()["duplicate"] is True
    _mqtt_publish(
        site.edge.mqtt_port,
        "fieldtrace/intake/s1/iot",
        [json.dumps(r).encode() for r in mqtt_part] + [b'{"device_id": "temp-0", "ts": "soon"}'],
    )
    bad = site.edge.post("iot", [{"device_id": "temp-0", "ts": 1, "metric": "t", "value": "hot"}])
    assert bad.status_code == 400
    assert "value='hot'" in bad.json()["error"]


def _assert_hub_complete(site: Site) -> None:
    store = site.store
    wait_for(
        lambda: store.count("iot_readings") >= N_READINGS and store.count("edge_tickets") >= 3,
        timeout_s=60,
        what="hub caught up",
    )
    readings = store.query("SELECT device_id, ts FROM iot_readings ORDER BY rowid")
    assert readings.height == N_READINGS
    assert readings["ts"].n_unique() == N_READINGS
    for _, rows in readings.group_by("device_id"):  # written in event-time order per device
        assert rows["ts"].is_sorted()
    tickets = store.query(
        "SELECT t.ticket_id, t.source, t.site_id, o.band, o.rule, o.rule_version, o.evidence "
        "FROM tickets t JOIN edge_tickets o USING (ticket_id) ORDER BY t.created_ts"
    )
    assert tickets.height == 3
    assert store.count("tickets") == 3
    assert tickets["band"].to_list() == [b for _, b in PLANTED]
    assert set(tickets["source"]) == {"fieldtrace/edge/s1"}
    assert set(tickets["rule"]) == {"bearing_band_energy"}
    evidence = json.loads(tickets["evidence"][0])
    assert evidence["crossed"] == ["BPFI"]
    assert len(evidence["spectrum"]["freq_hz"]) > 100
    assert store.count("vibration_series") == 3
    created = store.query("SELECT ts FROM ticket_events WHERE event_type = 'created'")
    assert created.height == 3


OUTAGE_S = float(os.environ.get("FIELDTRACE_EDGE_OUTAGE_S", "3"))


def _outage(site: Site, outage_s: float, *, kill: bool) -> None:
    import time

    site.hub.stop()
    t0 = time.monotonic()
    _plant(site, kill_after_half=kill)
    wait_for(
        lambda: site.edge.status()["held_readings"] == N_READINGS,
        timeout_s=60,
        what="the edge's own store to hold every reading",
    )
    wait_for(lambda: site.edge.status()["held_quarantined"] == 1, timeout_s=10, what="quarantine")
    # the intake acknowledges its last message just after the store holds it
    wait_for(
        lambda: (
            (site.edge.status()["held_tickets"], site.edge.status()["intake_pending"]) == (3, 0)
        ),
        timeout_s=10,
        what="the edge to hold 3 tickets with nothing pending at its intake",
    )
    assert site.store.count("edge_tickets") == 0  # nothing reached the hub during the cut
    time.sleep(max(0.0, outage_s - (time.monotonic() - t0)))
    site.hub.start()
    t_back = time.monotonic()
    _assert_hub_complete(site)
    print(
        f"\noutage {outage_s:.0f} s: hub complete {time.monotonic() - t_back:.1f} s after restart"
    )


def _dispatch_first_ticket(site: Site) -> None:
    """The hub dispatches a synced edge ticket; the site learns who is coming (mirror)."""
    import asyncio

    from pipelines.edge.hub import publish_dispatch
    from pipelines.edge.streams import connect

    ticket_id = site.store.query("SELECT min(ticket_id) AS t FROM edge_tickets")["t"][0]

    async def decide() -> None:
        nc = await connect(site.hub.spec.client_url, name="dispatcher")
        try:
            js = nc.jetstream()
            await publish_dispatch(
                js, "fieldtrace", site="s1", ticket_id=ticket_id, technician_id="tech-9"
            )
            await publish_dispatch(
                js, "fieldtrace", site="s2", ticket_id="OTHER", technician_id="tech-1"
            )
        finally:
            await nc.close()

    asyncio.run(decide())
    wait_for(lambda: bool(site.edge_dispatch()), timeout_s=15, what="dispatch at the edge")
    rows = site.edge_dispatch()
    assert [(r["ticket_id"], r["event_type"], r["technician_id"]) for r in rows] == [
        (ticket_id, "assigned", "tech-9")
    ]


@pytest.mark.slow  # real hub + edge processes: ~45 s on the shared 2-core machine
def test_kill9_of_the_edge_during_the_outage_loses_and_doubles_nothing(site: Site) -> None:
    _outage(site, OUTAGE_S, kill=True)
    wait_for(
        lambda: (
            site.store.query("SELECT backlog, link_state FROM edge_links").rows() == [(0, "up")]
        ),
        timeout_s=15,
        what="link up with no backlog",
    )
    _dispatch_first_ticket(site)


@pytest.mark.slow
def test_sixty_second_outage(site: Site) -> None:
    _outage(site, 60.0, kill=False)
