"""A message that is not a usable CloudEvent is set aside, acked, and stops nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from cloudevents.core.v1.event import CloudEvent
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from pipelines.edge.events import TYPE_TICKET, EventError, make_event
from pipelines.edge.natsd import NatsServer, ServerSpec, free_port
from pipelines.edge.streams import connect, drain_batch, durable_pull, publish_event
from pipelines.edge.writer import write_events
from pipelines.store.gateway import Store

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_poison_messages_are_set_aside_and_the_good_ones_written(tmp_path: Path) -> None:
    spec = ServerSpec("solo", "solo", tmp_path / "js", free_port(), free_port())
    server = NatsServer(spec, tmp_path / "run").start()
    store = Store(tmp_path / "s.duckdb")
    good = make_event(
        type_="fieldtrace.iot.readings",
        source="fieldtrace/edge/s1",
        id_="r1",
        time=T0,
        data={
            "readings": [
                {
                    "device_id": "d",
                    "ts": "2026-03-02T08:00:00Z",
                    "metric": "t",
                    "value": 1.0,
                    "unit": None,
                }
            ]
        },
    )
    broken = make_event(type_=TYPE_TICKET, source="x", id_="t1", time=T0, data={"no": "ticket"})
    bad: list[str] = []

    async def scenario() -> int:
        nc = await connect(spec.client_url, name="poison")
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="P", subjects=["p.>"]))
            await js.publish("p.raw", b"not an event")
            await publish_event(js, "p.ticket", broken)
            await publish_event(js, "p.iot", good)
            sub = await durable_pull(js, "P", "w")

            async def write(events: list[CloudEvent]) -> None:
                write_events(store, events, received_at=T0)

            async def on_bad(msg: Msg, exc: EventError) -> None:
                bad.append(str(exc))

            moved = await drain_batch(sub, write, batch=10, on_bad=on_bad)
            assert await drain_batch(sub, write, batch=10, on_bad=on_bad) == 0  # all acked
            return moved
        finally:
            await nc.close()

    try:
        assert asyncio.run(scenario()) == 3
    finally:
        server.stop()
    assert store.count("iot_readings") == 1
    assert len(bad) == 2
    assert "p.raw seq 1: not a CloudEvents" in bad[0]
    assert "p.ticket seq 2: data unusable" in bad[1]
    store.close()
