"""Cluster alerts live: the planted refrigerant-leak cluster, created ticket by ticket on the
real NATS, reaches the reference warehouse receiver (real HTTP on 127.0.0.1) within 60 s of
event time after its 20th ticket; the alert equals a batch ``run_alerts`` over the period."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from pipelines.alerts.config import load_config
from pipelines.alerts.receiver import WarehouseReceiver
from pipelines.alerts.runner import run_alerts
from pipelines.live import bus as busmod
from pipelines.live.bus import Bus, make_event
from pipelines.live.processors.loop import run_processors
from pipelines.live.runtime import LiveThread
from pipelines.live.writer import run_writer
from pipelines.store.gateway import Store
from tests.live.conftest import LiveEnv, make_live_settings, wait_for
from tests.pipelines.test_alerts import CENTRE, T0, add_tickets, add_warehouses, box

CONFIG = load_config()
N = 21
SECRET = secrets.token_urlsafe(24)  # made per run; the receiver and the deliverer share it


def lookup(_warehouse_id: str) -> str:
    return SECRET


@pytest.fixture
def receiver() -> Iterator[WarehouseReceiver]:
    with WarehouseReceiver(lookup) as rx:
        yield rx


def _created(i: int) -> object:
    ts = T0 + timedelta(hours=2 * i)
    return make_event(
        f"{busmod.TICKET_PREFIX}created",
        source="/test/ticketing",
        id=f"c{i:02d}",
        subject=f"L{i:02d}",
        time=ts,
        data={
            "actor": "portal",
            "customer_id": f"C{i}",
            "lat": CENTRE[0] + 0.0005 * (i % 5),
            "lon": CENTRE[1],
            "tag": "refrigerant_leak",
            "region": "north",
        },
    )


def test_planted_cluster_order_reaches_the_warehouse_within_60s_event_time(
    tmp_path: Path, nats_url: str, mqtt_url: str, bus_prefix: str, receiver: WarehouseReceiver
) -> None:
    env: LiveEnv = make_live_settings(
        tmp_path, nats_url=nats_url, mqtt_url=mqtt_url, prefix=bus_prefix
    )
    warehouse = ("WH-FAR", CENTRE[0] + 0.5, CENTRE[1], box(CENTRE[0] + 0.3, CENTRE[1], 0.45))
    with Store(env.settings.store_path) as store:
        add_warehouses(store, [(*warehouse, receiver.url("WH-FAR"))])
        live = LiveThread()
        live.add(lambda stop: run_writer(env.settings, store, stop=stop))
        live.add(
            lambda stop: run_processors(
                env.settings, store, stop=stop, config=CONFIG, secrets=lookup
            )
        )
        live.start()
        try:

            async def publish() -> list[dict[str, object]]:
                async with await Bus.connect(env.settings) as bus:
                    await bus.ensure_streams()
                    out = await bus.pull(busmod.OUT_ALL, durable="test-out")
                    for i in range(N):
                        await bus.publish(busmod.IN_TICKETS, _created(i))  # type: ignore[arg-type]
                    await asyncio.to_thread(
                        wait_for, lambda: len(receiver.log.accepted) >= 1, timeout_s=20,
                        what="the order at the warehouse",
                    )  # fmt: skip
                    seen: list[dict[str, object]] = []
                    while not any(e["type"] == busmod.RESTOCK_DELIVERED for e in seen):
                        seen += [json.loads(m.data) for m in await out.fetch(50, timeout=5.0)]
                    return seen

            events = asyncio.run(publish())
        finally:
            live.stop()
        assert live.errors == []
        ordered = [e for e in events if e["type"] == busmod.RESTOCK_ORDERED]
        raised = [e for e in events if e["type"] == busmod.ALERT_RAISED]
        assert len(ordered) == 1
        delivered = [e for e in events if e["type"] == busmod.RESTOCK_DELIVERED]
        assert [e["data"]["order_id"] for e in delivered] == [ordered[0]["data"]["order_id"]]
        assert len(raised) == 1
        twentieth = T0 + timedelta(hours=2 * 19)
        alert = store.query("SELECT alert_id, first_seen, member_count FROM cluster_alerts")
        assert alert.height == 1
        lag = alert["first_seen"][0] - twentieth
        assert timedelta(0) <= lag <= timedelta(seconds=60)
        received = next(iter(receiver.log.accepted.values()))
        assert received.warehouse_id == "WH-FAR"
        live_alerts = alert.select("member_count").to_dicts()

    # batch: the same tickets, one `alerts run` at the end of the period
    with Store(tmp_path / "batch.duckdb") as batch:
        add_warehouses(batch, [(*warehouse, None)])
        add_tickets(
            batch,
            [
                {
                    "ticket_id": f"L{i:02d}", "source": "test", "datum_in": "WGS84",
                    "lat": CENTRE[0] + 0.0005 * (i % 5), "lon": CENTRE[1],
                    "tag": "refrigerant_leak", "tags": ["refrigerant_leak"], "region": "north",
                    "created_ts": T0 + timedelta(hours=2 * i),
                }
                for i in range(N)
            ],
        )  # fmt: skip
        run_alerts(batch, CONFIG, at=T0 + timedelta(hours=2 * (N - 1)))
        assert batch.query("SELECT member_count FROM cluster_alerts").to_dicts() == live_alerts
