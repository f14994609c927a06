"""Faults, bounded in time and cleaned up by process id: a writer SIGKILLed mid-batch, and the
bus stopped while phones send. Nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from pipelines.live import bus as busmod
from pipelines.live.bus import Bus
from pipelines.live.runtime import start_live
from pipelines.settings import Settings
from pipelines.store.gateway import Store
from tests.fixtures.services import ChildService
from tests.live.conftest import LiveEnv, make_live_settings, wait_for

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
REPO = Path(__file__).resolve().parents[2]


def _position(i: int) -> busmod.CloudEvent:
    ts = BASE + timedelta(seconds=i)
    return busmod.make_event(
        busmod.POSITION,
        source="osmand/dev1",
        id=str(int(ts.timestamp() * 1000)),
        subject="T1",
        time=ts,
        data={
            "technician_id": "T1",
            "ts": ts.isoformat(),
            "lat": 31.23 + i * 1e-6,
            "lon": 121.47,
            "accuracy_m": 5.0,
            "source": "osmand",
        },
    )


async def _publish(settings: Settings, indices: range) -> None:
    bus = await Bus.connect(settings)
    await bus.ensure_streams()
    for i in indices:
        await bus.publish(busmod.IN_GPS, _position(i))
    await bus.close()


async def _consumer_idle(settings: Settings) -> bool:
    bus = await Bus.connect(settings)
    try:
        info = await bus.js.consumer_info(bus.names.stream_in, f"{settings.bus_prefix}-writer")
        return info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await bus.close()


def _writer_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDTRACE_")}
    env.update(
        FIELDTRACE_STORE_PATH=str(settings.store_path),
        FIELDTRACE_DATA_DIR=str(settings.data_dir),
        FIELDTRACE_BUS_URL=settings.bus_url,
        FIELDTRACE_BUS_PREFIX=settings.bus_prefix,
        FIELDTRACE_WRITER_MAX_BATCH_MSGS="25",
        FIELDTRACE_WRITER_MAX_BATCH_S="0.2",
        FIELDTRACE_WRITER_ACK_WAIT_S="1",
        FIELDTRACE_TIMEZONE="UTC",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


def _start_writer(settings: Settings, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.live", "writer"],
        cwd=settings.data_dir,
        env=_writer_env(settings, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_writer_sigkilled_mid_batch_five_times_loses_and_doubles_nothing(
    tmp_path: Path, nats_url: str, mqtt_url: str, bus_prefix: str
) -> None:
    env = make_live_settings(tmp_path, nats_url=nats_url, mqtt_url=mqtt_url, prefix=bus_prefix)
    settings = env.settings
    Store(settings.store_path).close()  # migrated before the writers race to open it
    per_round, rounds = 40, 5
    killed_in_tx = 0
    for r in range(rounds):
        asyncio.run(_publish(settings, range(r * per_round, (r + 1) * per_round)))
        writer = _start_writer(settings, FIELDTRACE_FAULT_PAUSE_IN_WRITE_S="0.3")
        try:
            pauses = 0
            assert writer.stderr is not None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # kill inside the (r % 2 + 1)-th transaction
                line = writer.stderr.readline()
                if not line:
                    break
                if "paused inside write transaction" in line:
                    pauses += 1
                    if pauses == r % 2 + 1:
                        os.kill(writer.pid, signal.SIGKILL)
                        killed_in_tx += 1
                        break
        finally:
            if writer.poll() is None:
                os.kill(writer.pid, signal.SIGKILL)
            writer.wait(10)
        assert writer.returncode == -signal.SIGKILL
    assert killed_in_tx == rounds
    final = _start_writer(settings)
    try:
        wait_for(lambda: asyncio.run(_consumer_idle(settings)), timeout_s=20, what="drained")
    finally:
        os.kill(final.pid, signal.SIGTERM)
        final.wait(10)
    with Store(settings.store_path) as store:
        total = per_round * rounds
        assert store.count("gps_fixes") == total
        assert store.scalar("SELECT count(DISTINCT ts) FROM gps_fixes") == total
        assert store.scalar("SELECT count(*) FROM bus_messages") == total
        assert store.count("quarantine") == 0


@pytest.fixture
def bus_env(tmp_path: Path, owned_nats: ChildService, mqtt_url: str, make_prefix) -> LiveEnv:  # type: ignore[no-untyped-def]
    return make_live_settings(
        tmp_path,
        nats_url=f"nats://127.0.0.1:{owned_nats.port}",
        mqtt_url=mqtt_url,
        prefix=make_prefix(),
        bus_timeout_s=0.5,
    )


def test_bus_stopped_while_phones_send_gives_503_then_nothing_lost_or_doubled(
    bus_env: LiveEnv, owned_nats: ChildService
) -> None:
    settings = bus_env.settings
    n, outage_s = 120, 3.0
    statuses: list[int] = []
    with Store(settings.store_path) as store:
        live = start_live(settings, store, mqtt_enabled=False)
        try:
            outage = threading.Timer(0.0, lambda: None)

            def bus_outage() -> None:
                owned_nats.stop()
                time.sleep(outage_s)
                owned_nats.start()

            with httpx.Client(timeout=5) as http:
                for i in range(n):  # a phone: it keeps a fix until it gets a 2xx
                    if i == n // 3:
                        outage = threading.Thread(target=bus_outage)
                        outage.start()
                    ts = int((BASE + timedelta(seconds=i)).timestamp())
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        status = http.get(
                            f"{bus_env.osmand}/?id=dev1&lat={31.23 + i * 1e-6}&lon=121.47"
                            f"&accuracy=5&timestamp={ts}"
                        ).status_code
                        statuses.append(status)
                        if status == 200:
                            break
                        time.sleep(0.1)
            outage.join(20)
            wait_for(lambda: store.count("gps_fixes") == n, timeout_s=20, what=f"{n} fixes")
        finally:
            live.stop()
        assert store.count("gps_fixes") == n
        assert store.scalar("SELECT count(DISTINCT ts) FROM gps_fixes") == n
        assert store.count("quarantine") == 0
    assert statuses.count(503) > 0
    assert set(statuses) == {200, 503}
