"""The processors on the real NATS (own prefix per test), beside the real writer: a planted
false arrival gets its REJECTED verdict within the window + 5 s of event time, and a post
10 min late re-evaluates it with a raised version."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines.live import bus as busmod
from pipelines.live.bus import Bus, make_event
from pipelines.live.processors.loop import run_processors
from pipelines.live.runtime import LiveThread
from pipelines.live.writer import run_writer
from pipelines.store.gateway import Store
from tests.live.conftest import LiveEnv, make_live_settings, wait_for

T0 = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
DOOR = (30.2500, 120.1500)
FAR = (30.2550, 120.1500)  # about 550 m north


@pytest.fixture
def proc_env(tmp_path: Path, nats_url: str, mqtt_url: str, bus_prefix: str) -> LiveEnv:
    return make_live_settings(tmp_path, nats_url=nats_url, mqtt_url=mqtt_url, prefix=bus_prefix)


@pytest.fixture
def running(proc_env: LiveEnv) -> Iterator[Store]:
    with Store(proc_env.settings.store_path) as store:
        live = LiveThread()
        live.add(lambda stop: run_writer(proc_env.settings, store, stop=stop))
        live.add(lambda stop: run_processors(proc_env.settings, store, stop=stop))
        live.start()
        yield store
        live.stop()
        assert live.errors == []


def _fix(tech: str, ts: datetime, at: tuple[float, float]) -> Any:
    return make_event(
        busmod.POSITION,
        source=f"osmand/{tech}",
        id=str(int(ts.timestamp() * 1000)),
        subject=tech,
        time=ts,
        data={
            "technician_id": tech,
            "ts": ts.isoformat(),
            "lat": at[0],
            "lon": at[1] + 1e-7 * (int(ts.timestamp()) % 97),  # never 5 identical fixes
            "accuracy_m": 4.0,
            "speed_mps": 0.0,
        },
    )


def _ticket(kind: str, ts: datetime, data: dict[str, Any]) -> Any:
    return make_event(
        f"{busmod.TICKET_PREFIX}{kind}",
        source="/test/ticketing",
        id=f"TK1-{kind}",
        subject="TK1",
        time=ts,
        data=data,
    )


class Run:
    def __init__(self, env: LiveEnv) -> None:
        self.env = env

    async def main(self, store: Store) -> dict[str, Any]:
        s = self.env.settings
        result: dict[str, Any] = {}
        async with await Bus.connect(s) as bus:
            await bus.ensure_streams()
            sub = await bus.pull(busmod.OUT_VERDICTS, durable="test-subscriber")
            geo = await bus.pull(busmod.OUT_GEOFENCE, durable="test-geofence")
            created = {"customer_id": "C1", "lat": DOOR[0], "lon": DOOR[1], "region": "north"}
            await bus.publish(
                busmod.IN_TICKETS, _ticket("created", T0 - timedelta(hours=1), created)
            )
            await asyncio.to_thread(
                wait_for, lambda: store.count("tickets") == 1, what="the ticket committed"
            )
            for i in range(-30, -6):  # 550 m away, every 10 s (then a minute without)
                await bus.publish(busmod.IN_GPS, _fix("T1", T0 + timedelta(seconds=10 * i), FAR))
            await bus.publish(busmod.IN_TICKETS, _ticket("arrived", T0, {"actor": "T1"}))

            async def verdicts(timeout: float) -> list[dict[str, Any]]:
                try:
                    got = await sub.fetch(10, timeout=timeout)
                except TimeoutError:
                    return []
                for m in got:
                    await m.ack()
                return [json.loads(m.data) for m in got]

            for i in range(1, 30):
                ts = T0 + timedelta(seconds=10 * i)
                await bus.publish(busmod.IN_GPS, _fix("T1", ts, FAR))
                got = await verdicts(0.05 if i < 11 else 1.5)
                if got:
                    result["first"], result["watermark_at_receipt"] = got, ts
                    break
            # fixes up to 10 min after, then the door fixes of T0-20 s, posted 10 min late
            for i in range(31, 61):
                await bus.publish(busmod.IN_GPS, _fix("T1", T0 + timedelta(seconds=10 * i), FAR))
            result["between"] = await verdicts(0.5)
            for i in range(-6, 0):  # in the gap: at the door
                await bus.publish(
                    busmod.IN_GPS, _fix("T1", T0 + timedelta(seconds=10 * i + 5), DOOR)
                )
            late: list[dict[str, Any]] = []  # versions until one uses all the door fixes
            deadline = asyncio.get_running_loop().time() + 8.0
            while asyncio.get_running_loop().time() < deadline and not (
                late and late[-1]["data"]["verdict"] != "REJECTED"
            ):
                late += await verdicts(1.0)
            result["late"] = late
            try:
                result["geofence"] = [json.loads(m.data) for m in await geo.fetch(10, timeout=2.0)]
            except TimeoutError:
                result["geofence"] = []
        return result


def test_planted_false_arrival_rejected_in_window_and_late_post_raises_version(
    proc_env: LiveEnv, running: Store
) -> None:
    result = asyncio.run(Run(proc_env).main(running))
    first = result["first"]
    assert [(e["type"], e["data"]["verdict"], e["data"]["version"]) for e in first] == [
        ("fieldtrace.arrival.verdict", "REJECTED", 1)
    ]
    assert first[0]["subject"] == "TK1"
    # received before the positions' event time passed the window + 5 s
    assert result["watermark_at_receipt"] <= T0 + timedelta(minutes=2, seconds=5)
    late = [e["data"] for e in result["late"]]
    assert late
    assert late[-1]["version"] > max(e["data"]["version"] for e in first + result["between"])
    assert late[-1]["trigger"] in ("late", "widened")
    assert late[-1]["verdict"] != "REJECTED"
    # the late door fixes: the technician entered the ticket's fence, stopped at the door
    # (arrived_auto) and left again, all in event time
    geofence = [(e["type"].rsplit(".", 1)[-1], e["subject"]) for e in result["geofence"]]
    assert geofence == [("enter", "TK1"), ("arrived_auto", "TK1"), ("exit", "TK1")]
    wait_for(lambda: running.count("live_outputs") == 3, what="geofence events stored")
    sql = "SELECT verdict FROM arrival_checks WHERE event_id = 'TK1-arrived'"
    wait_for(
        lambda: running.query(sql)["verdict"].to_list() == [late[-1]["verdict"]],
        what="the latest version in arrival_checks",
    )
