"""Live-ingest fixtures: settings of one test (own prefix, ports, store, devices, keys) and a
running receivers + writer stack on the real NATS, Mosquitto and HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.live.access import Device, add_api_key, sha256_hex, write_devices
from pipelines.live.runtime import LiveThread, start_live
from pipelines.settings import Settings, load_settings
from pipelines.store.gateway import Store
from tests.fixtures.services import free_port

DEVICE_TOKEN = "s3cret-device-token"


@dataclass
class LiveEnv:
    settings: Settings
    ticket_key: str
    iot_key: str

    @property
    def osmand(self) -> str:
        return f"http://127.0.0.1:{self.settings.osmand_port}"

    @property
    def events(self) -> str:
        return f"http://127.0.0.1:{self.settings.events_port}/api/v1/events"


def make_live_settings(
    root: Path, *, nats_url: str, mqtt_url: str, prefix: str, **overrides: object
) -> LiveEnv:
    devices = root / "devices.toml"
    write_devices(
        devices,
        [
            Device("dev1", "T1"),
            Device("dev2", "T2"),
            Device("48241179", "T3"),
            Device("tok1", "T4", sha256_hex(DEVICE_TOKEN)),
        ],
    )
    keys = root / "api_keys.toml"
    ticket_key = add_api_key(keys, "ticketing", ["fieldtrace.ticket.*"])
    iot_key = add_api_key(keys, "iot", ["fieldtrace.iot.*"])
    values: dict[str, object] = {
        "store_path": root / "live.duckdb",
        "data_dir": root,
        "users_file": root / "users.toml",
        "devices_file": devices,
        "api_keys_file": keys,
        "bus_url": nats_url,
        "bus_prefix": prefix,
        "mqtt_url": mqtt_url,
        "osmand_port": free_port(),
        "events_port": free_port(),
        "writer_max_batch_s": 0.2,
        "timezone": "UTC",
    }
    values.update(overrides)
    return LiveEnv(load_settings(**values), ticket_key, iot_key)


@pytest.fixture
def live_env(tmp_path: Path, nats_url: str, mqtt_url: str, bus_prefix: str) -> LiveEnv:
    return make_live_settings(tmp_path, nats_url=nats_url, mqtt_url=mqtt_url, prefix=bus_prefix)


@pytest.fixture
def live_store(live_env: LiveEnv) -> Iterator[Store]:
    with Store(live_env.settings.store_path) as store:
        yield store


@pytest.fixture
def live_stack(live_env: LiveEnv, live_store: Store) -> Iterator[LiveThread]:
    """Receivers (OsmAnd, CloudEvents, MQTT) and the writer, running until the test ends."""
    live = start_live(live_env.settings, live_store)
    yield live
    live.stop()
    assert live.errors == []


def wait_for(check: Callable[[], bool], *, timeout_s: float = 8.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds (bounded; fails the test with ``what`` otherwise)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
