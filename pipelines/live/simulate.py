"""Replay a generated world through the real receivers, as its senders would.

- technicians' phones post each GPS fix to the OsmAnd receiver (Traccar Client 10.x's form
  POST: ``id, lat, lon, timestamp, accuracy, speed`` in knots, ``bearing, altitude, hdop``);
- the ticketing system posts each ticket event as a structured CloudEvent (a ``created``
  carries the ticket's fields) with its API key;
- IoT devices publish each reading to MQTT ``<prefix>/iot/<device>`` with QoS 1.

Items go out in event-time order, paced at ``speed`` × real time (0 = as fast as the receivers
take them). Like a phone, a sender keeps an item and retries it while the answer is 503 or the
receiver is unreachable, so a bus outage delays data but loses none. With ``shift_to_now`` the
replayed window is moved to end now, and ticket and event ids get a suffix so that a world
already ingested from files can be replayed again as new, live work.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import httpx
import paho.mqtt.client as mqtt
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion

from pipelines.errors import SourceFormatError
from pipelines.live.access import Device, load_access, set_api_key, write_devices
from pipelines.live.osmand import KNOT_MPS
from pipelines.settings import Settings

TICKET_SOURCE = "/fieldtrace/simulator/ticketing"
SIMULATOR_KEY = "simulator"


@dataclass(frozen=True)
class SimulateOptions:
    start: datetime | None = None  # default: the first event of the world
    hours: float = 24.0
    speed: float = 60.0  # 1 = real time, 0 = as fast as possible
    shift_to_now: bool = False
    id_suffix: str = ""
    concurrency: int = 32
    max_retry_s: float = 300.0
    positions: bool = True
    tickets: bool = True
    iot: bool = True


@dataclass(frozen=True)
class Item:
    ts: datetime
    kind: str  # gps | ticket | iot
    payload: dict[str, Any]

    def __lt__(self, other: Item) -> bool:
        return self.ts < other.ts


def _read_world(world: Path, kind: str) -> pl.DataFrame:
    if kind == "gps":
        parts = sorted((world / "gps").glob("part-*.parquet"))
        return pl.concat([pl.read_parquet(p) for p in parts]) if parts else pl.DataFrame()
    if kind == "iot":
        path = world / "iot.parquet"
        return pl.read_parquet(path) if path.exists() else pl.DataFrame()
    path = world / f"{kind}.csv"
    return pl.read_csv(path, infer_schema=False) if path.exists() else pl.DataFrame()


def _utc(frame: pl.DataFrame, col: str) -> pl.DataFrame:
    if frame.schema[col] == pl.String:
        return frame.with_columns(
            pl.col(col).str.to_datetime(time_zone="UTC", strict=False, time_unit="ms")
        )
    return frame.with_columns(pl.col(col).dt.convert_time_zone("UTC"))


def timeline(world: Path, opts: SimulateOptions) -> tuple[list[Item], datetime, datetime]:
    """The items of the replayed window, in event-time order (times already shifted)."""
    if not (world / "manifest.json").exists():
        raise SourceFormatError(f"{world}: not a generated world (no manifest.json)")
    gps = _utc(_read_world(world, "gps"), "ts") if opts.positions else pl.DataFrame()
    events = _utc(_read_world(world, "events"), "ts") if opts.tickets else pl.DataFrame()
    iot = _utc(_read_world(world, "iot"), "ts") if opts.iot else pl.DataFrame()
    starts: list[datetime] = [f["ts"].min() for f in (gps, events, iot) if f.height]  # type: ignore[misc]
    if not starts:
        raise SourceFormatError(f"{world}: nothing to replay")
    start: datetime = opts.start or min(starts)
    end = start + timedelta(hours=opts.hours)
    shift = (datetime.now(UTC) - end) if opts.shift_to_now else timedelta(0)
    sfx = opts.id_suffix

    def window(frame: pl.DataFrame) -> pl.DataFrame:
        if frame.height == 0:
            return frame
        return frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).sort("ts")

    streams: list[Iterator[Item]] = []
    if gps.height:
        streams.append(Item(r["ts"] + shift, "gps", r) for r in window(gps).iter_rows(named=True))
    if events.height:
        tickets = {r["ticket_id"]: r for r in _read_world(world, "tickets").iter_rows(named=True)}
        rows = window(events).iter_rows(named=True)

        def ticket_items() -> Iterator[Item]:
            for r in rows:
                payload = {**r, "ticket": tickets.get(r["ticket_id"]), "suffix": sfx}
                yield Item(r["ts"] + shift, "ticket", payload)

        streams.append(ticket_items())
    if iot.height:
        streams.append(Item(r["ts"] + shift, "iot", r) for r in window(iot).iter_rows(named=True))
    items = list(heapq.merge(*streams))
    return items, start + shift, end + shift


def osmand_form(fix: dict[str, Any], ts: datetime) -> dict[str, str]:
    """A Traccar Client 10.x form body for one fix (speed in knots)."""
    form = {
        "id": fix["technician_id"],
        "lat": repr(fix["lat"]),
        "lon": repr(fix["lon"]),
        "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    for key, col in (
        ("accuracy", "accuracy_m"),
        ("bearing", "heading_deg"),
        ("altitude", "altitude_m"),
        ("hdop", "hdop"),
    ):
        if fix.get(col) is not None:
            form[key] = repr(fix[col])
    if fix.get("speed_mps") is not None:
        form["speed"] = f"{fix['speed_mps'] / KNOT_MPS:.2f}"
    if fix.get("mock_location"):
        form["mock"] = "true"
    return form


def ticket_cloudevent(payload: dict[str, Any], ts: datetime) -> dict[str, Any]:
    """A structured CloudEvent for one ticket event (``created`` carries the ticket)."""
    sfx = payload["suffix"]
    data: dict[str, Any] = {"actor": payload.get("actor"), "note": payload.get("note")}
    ticket = payload.get("ticket")
    if payload["event_type"] == "created" and ticket:
        for key in (
            "external_id",
            "customer_id",
            "customer_name",
            "address",
            "datum",
            "tag",
            "category",
            "priority",
            "region",
            "site_id",
        ):
            if ticket.get(key) not in (None, ""):
                data[key] = ticket[key]
        for key in ("lat", "lon"):
            if ticket.get(key) not in (None, ""):
                data[key] = ticket[key]
        if ticket.get("tags"):
            data["tags"] = [t for t in str(ticket["tags"]).split(";") if t]
    return {
        "specversion": "1.0",
        "id": f"{payload['event_id']}{sfx}",
        "source": TICKET_SOURCE,
        "type": f"fieldtrace.ticket.{payload['event_type']}",
        "subject": f"{payload['ticket_id']}{sfx}",
        "time": ts.isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }


def prepare_access(settings: Settings, world: Path) -> str:
    """Register the world's technicians as OsmAnd devices (device id = technician id) and
    (re)create the simulator's ticketing API key; returns the key (kept in memory only)."""
    access = load_access(settings.devices_file, settings.api_keys_file)
    techs = _read_world(world, "technicians")
    devices = dict(access.devices)
    for tech in techs["technician_id"].to_list() if techs.height else []:
        devices.setdefault(tech, Device(tech, tech))
    write_devices(settings.devices_file, list(devices.values()))
    return set_api_key(settings.api_keys_file, SIMULATOR_KEY, ["fieldtrace.ticket.*"])


class Simulator:
    """Sends a timeline through the receivers (see the module doc)."""

    def __init__(self, settings: Settings, api_key: str, opts: SimulateOptions) -> None:
        self.settings = settings
        self.api_key = api_key
        self.opts = opts
        self.counts: Counter[str] = Counter()
        host = "127.0.0.1" if settings.receiver_host in ("0.0.0.0", "") else settings.receiver_host
        self.osmand_url = f"http://{host}:{settings.osmand_port}/"
        self.events_url = f"http://{host}:{settings.events_port}/api/v1/events"
        self.mqtt: mqtt.Client | None = None

    def _start_mqtt(self) -> None:
        broker = urlparse(self.settings.mqtt_url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{self.settings.bus_prefix}-simulator"
        )
        client.connect(broker.hostname or "127.0.0.1", broker.port or 1883)
        client.loop_start()
        self.mqtt = client

    async def _send(self, http: httpx.AsyncClient, item: Item) -> None:
        if item.kind == "iot":
            assert self.mqtt is not None
            r = item.payload
            body = {
                "ts": item.ts.isoformat(),
                "metric": r["metric"],
                "value": r["value"],
                "unit": r.get("unit"),
            }
            info = self.mqtt.publish(
                f"{self.settings.bus_prefix}/iot/{r['device_id']}", json.dumps(body), qos=1
            )
            await asyncio.to_thread(info.wait_for_publish, self.opts.max_retry_s)
            self.counts["iot"] += 1
            return
        deadline = time.monotonic() + self.opts.max_retry_s
        while True:
            try:
                if item.kind == "gps":
                    answer = await http.post(
                        self.osmand_url,
                        content=urlencode(osmand_form(item.payload, item.ts)),
                        headers={"content-type": "application/x-www-form-urlencoded"},
                    )
                else:
                    answer = await http.post(
                        self.events_url,
                        content=json.dumps(ticket_cloudevent(item.payload, item.ts)),
                        headers={
                            "content-type": "application/cloudevents+json",
                            "authorization": f"Bearer {self.api_key}",
                        },
                    )
                status = answer.status_code
            except httpx.TransportError:
                status = 0
            if status < 500 and status != 0:
                self.counts[f"{item.kind}_{status}"] += 1
                return
            self.counts[f"{item.kind}_retry_{status}"] += 1
            if time.monotonic() > deadline:
                self.counts[f"{item.kind}_gave_up"] += 1
                return
            await asyncio.sleep(0.5)

    async def run(self, items: list[Item]) -> Counter[str]:
        if self.opts.iot and any(i.kind == "iot" for i in items):
            self._start_mqtt()
        gate = asyncio.Semaphore(self.opts.concurrency)
        limits = httpx.Limits(max_connections=self.opts.concurrency)
        t0 = time.monotonic()
        first = items[0].ts if items else datetime.now(UTC)

        async def one(item: Item) -> None:
            try:
                await self._send(http, item)
            finally:
                gate.release()

        async with httpx.AsyncClient(timeout=10, limits=limits) as http:
            tasks: set[asyncio.Task[None]] = set()
            for item in items:
                if self.opts.speed > 0:
                    due = t0 + (item.ts - first).total_seconds() / self.opts.speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await gate.acquire()
                task = asyncio.create_task(one(item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        if self.mqtt is not None:
            self.mqtt.loop_stop()
            self.mqtt.disconnect()
        return self.counts


def simulate(settings: Settings, world: Path, opts: SimulateOptions) -> Counter[str]:
    """Replay ``world`` through the receivers (blocking); returns what was sent and answered."""
    items, _, _ = timeline(world, opts)
    key = prepare_access(settings, world)
    return asyncio.run(Simulator(settings, key, opts).run(items))
