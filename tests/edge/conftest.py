"""Edge test kit: a hub nats-server, an edge node process, the hub sync in a thread, builders.

Every server is a real nats-server on free loopback ports with its store under tmp_path;
every process is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from geofence.spectrum import SKF_6205_2RS, fault_frequencies_hz
from pipelines.edge.hub import HubConfig, HubSync
from pipelines.edge.natsd import NatsServer, free_port
from pipelines.edge.streams import connect
from pipelines.settings import load_settings
from pipelines.store.gateway import Store

FS_HZ = 12_000.0
RPM = 1797.0
FIELDTRACE = str(Path(sys.executable).parent / "fieldtrace")


def wait_for(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


# --------------------------------------------------------------------------- builders


def make_fault_record(
    device_id: str, start: datetime, band: str | None, *, seed: int = 1
) -> dict[str, Any]:
    """1 s of 12 kHz drive-end vibration: impacts at ``band``'s fault rate, or plain noise."""
    t = np.arange(int(FS_HZ)) / FS_HZ
    rng = np.random.default_rng(seed)
    if band is None:
        x = rng.normal(0, 0.3, t.size)
    else:
        rate = fault_frequencies_hz(RPM, SKF_6205_2RS).as_mapping()[band]
        phase = np.mod(t, 1.0 / rate)
        x = np.exp(-phase * 800.0) * np.sin(2 * np.pi * 3000.0 * phase)
        x = x + rng.normal(0, 0.05, t.size)
    return {
        "device_id": device_id,
        "start_ts": start.isoformat(),
        "sample_rate_hz": FS_HZ,
        "rpm": RPM,
        "samples": [round(float(v), 5) for v in x],
        "lat": 55.0,
        "lon": 8.0,
    }


def make_readings(start: datetime, n: int, *, devices: int = 3) -> list[dict[str, Any]]:
    """``n`` readings one second apart, in event-time order, round-robin over ``devices``."""
    return [
        {
            "device_id": f"temp-{i % devices}",
            "ts": (start + timedelta(seconds=i)).isoformat(),
            "metric": "temperature",
            "value": 20.0 + (i % 100) / 10,
            "unit": "C",
        }
        for i in range(n)
    ]


# --------------------------------------------------------------------------- processes


@dataclass
class EdgeProc:
    site: str
    hub_leaf_url: str
    data_dir: Path
    nats_port: int
    mqtt_port: int
    http_port: int
    monitor_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> EdgeProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "edge.log").open("ab")
        self.proc = subprocess.Popen(
            [
                FIELDTRACE,
                "edge",
                "--site",
                self.site,
                "--hub",
                self.hub_leaf_url,
                "--data-dir",
                str(self.data_dir),
                "--nats-port",
                str(self.nats_port),
                "--mqtt-port",
                str(self.mqtt_port),
                "--http-port",
                str(self.http_port),
                "--monitor-port",
                str(self.monitor_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "160"},
        )
        log.close()
        wait_for(self.ready, timeout_s=30, what=f"edge {self.site} HTTP intake")
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"edge exited: {(self.data_dir / 'edge.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.http}/api/v1/status", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.http}/api/v1/status", timeout=5).json())

    def post(self, kind: str, body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.http}/api/v1/intake/{kind}",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class HubRunner:
    """``HubSync`` on its own event loop in a thread, against one hub store."""

    def __init__(self, store: Store, url: str, *, prefix: str = "fieldtrace") -> None:
        self.sync = HubSync(store, load_settings(), prefix=prefix)
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def body() -> None:
            nc = await connect(self.url, name="test-hub-sync")
            try:
                await self.sync.run(nc)
            finally:
                await nc.close()

        try:
            self.loop.run_until_complete(body())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> HubRunner:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.sync.stop)
        self.thread.join(timeout=15)
        if self.error is not None:
            raise self.error


@dataclass
class Site:
    hub: NatsServer
    hub_config: HubConfig
    store: Store
    runner: HubRunner
    edge: EdgeProc

    def edge_dispatch(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.edge.http}/api/v1/dispatch", timeout=5)
        return list(response.json()["dispatch"])


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A hub (nats-server + sync into its own store) and one edge node process, site s1."""
    config = HubConfig(data_dir=tmp_path / "hub")
    hub = NatsServer(config.server_spec(), tmp_path / "hub" / "run").start()
    store = Store(tmp_path / "hub.duckdb")
    runner = HubRunner(store, hub.spec.client_url).start()
    edge = EdgeProc(
        site="s1",
        hub_leaf_url=config.leaf_url,
        data_dir=tmp_path / "edge",
        nats_port=free_port(),
        mqtt_port=free_port(),
        http_port=free_port(),
        monitor_port=free_port(),
    )
    try:
        edge.start()
        wait_for(lambda: edge.status()["hub_registered"], timeout_s=20, what="hub stream")
        yield Site(hub, config, store, runner, edge)
    finally:
        edge.stop()
        runner.stop()
        hub.stop()
        store.close()


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
