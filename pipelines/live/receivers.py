"""The live receivers: they parse, publish to the bus, and answer. No business logic.

- ``OsmAndApp``: Traccar's OsmAnd protocol on ``osmand_port`` (any path, any method), a bare
  ASGI callable because it is the hot path (see ``bench/bench_live.py``).
- ``events_app``: CloudEvents over HTTP at ``POST /api/v1/events`` on ``events_port``
  (structured, binary, batch), each request authorised by an API key scoped to event types;
  ``GET /api/v1/status`` shows the counters.
- ``MqttIntake``: IoT readings from MQTT (QoS 1, persistent session); a message is acked to
  the broker only after JetStream acked its publish.

Every 2xx is sent after the JetStream ack; while the bus is down the answer is 503 (and MQTT
messages stay unacked), so senders keep their buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import uvicorn
from cloudevents.core.v1.event import CloudEvent
from paho.mqtt.enums import CallbackAPIVersion
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.errors import BusError, EventFormatError
from pipelines.live import bus as busmod
from pipelines.live.access import Access, AccessCache, Device, sha256_hex
from pipelines.live.bus import Bus
from pipelines.live.cloudevents_in import read_http, read_mqtt, route
from pipelines.live.osmand import (
    NotVectorizableError,
    OsmAndFix,
    OsmAndRequest,
    decode,
    decode_array_columnar,
    positions_json,
)
from pipelines.settings import Settings

log = logging.getLogger("fieldtrace.live")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 8 * 1024 * 1024
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


class Stats(Counter[str]):
    """Counters shown at /api/v1/status: accepted, unknown_device, unauthorized, ..."""


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise EventFormatError(f"body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Send, status: int, text: str = "") -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": _TEXT})
    await send({"type": "http.response.body", "body": body})


def position_event(
    fixes: list[OsmAndFix], devices: dict[str, Device], body: bytes = b""
) -> CloudEvent:
    """One ``fieldtrace.position`` event, or a ``.position.batch`` for several fixes (its id
    is the SHA-1 of the request body, so a re-sent batch is the same event)."""
    first = fixes[0]
    technician = devices[first.device_id].technician_id
    if len(fixes) == 1:
        return busmod.make_event(
            busmod.POSITION,
            source=f"osmand/{first.device_id}",
            id=str(first.epoch_ms),
            subject=technician,
            time=first.ts,
            data=first.data(technician),
        )
    positions = [f.data(devices[f.device_id].technician_id) for f in fixes]
    raw = body or json.dumps(positions, sort_keys=True).encode()
    digest = hashlib.sha1(raw).hexdigest()
    return busmod.make_event(
        busmod.POSITION_BATCH,
        source=f"osmand/{first.device_id}",
        id=digest,
        subject=technician,
        time=max(f.ts for f in fixes),
        data={"positions": positions},
    )


class OsmAndApp:
    """ASGI app of the OsmAnd receiver (answers like Traccar: 200 with an empty body)."""

    def __init__(
        self, bus: Bus, access: AccessCache, *, tz: str, stats: Stats | None = None
    ) -> None:
        self.bus = bus
        self.access = access
        self.tz = tz
        self.stats = stats if stats is not None else Stats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        content_type = ""
        header_token = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"x-device-token":
                header_token = value.decode("latin-1")
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                header_token = value[7:].decode("latin-1").strip()
        try:
            body = await _read_body(receive)
            if body[:1] == b"[" and content_type.startswith("application/json"):
                event = self._columnar_batch(body)
                if isinstance(event, tuple):
                    await _answer(send, *event)
                    return
                if event is not None:
                    await self._publish(send, event, 0)
                    return
            request = OsmAndRequest(scope["query_string"].decode("latin-1"), content_type, body)
            fixes, is_json = decode(request, tz=self.tz, now=datetime.now(UTC))
        except EventFormatError as exc:
            self.stats["malformed"] += 1
            await _answer(send, 400, str(exc))
            return
        access = self.access.get()
        status, text = self._admit(access, fixes, header_token, is_json)
        if status != 200:
            await _answer(send, status, text)
            return
        await self._publish(send, position_event(fixes, access.devices, body), len(fixes))

    async def _publish(self, send: Send, event: CloudEvent, positions: int) -> None:
        try:
            await self.bus.publish(busmod.IN_GPS, event)
        except BusError:
            self.stats["bus_unavailable"] += 1
            await _answer(send, 503, "bus unavailable, retry later")
            return
        self.stats["positions"] += positions
        await _answer(send, 200)

    def _columnar_batch(self, body: bytes) -> CloudEvent | tuple[int, str] | None:
        """The hot path of batched positions (Traccar Client 10.x ``uploadJson``): decoded
        column-wise. None hands the request to the row decoder (odd shapes, bad values,
        devices with tokens), which names the field of an error."""
        try:
            frame = decode_array_columnar(body)
        except NotVectorizableError:
            return None
        access = self.access.get()
        ids = frame.get_column("device_id").unique().to_list()
        unknown = sorted(d for d in ids if d not in access.devices)
        if unknown:
            self.stats["unknown_device"] += 1
            return 404, f"osmand: id={unknown[0]} is not a known device"
        if any(access.devices[d].token_sha256 is not None for d in ids):
            return None
        technicians = {d: access.devices[d].technician_id for d in ids}
        first = str(frame.get_column("device_id")[0])
        self.stats["positions_batched"] += frame.height
        return busmod.make_event(
            busmod.POSITION_BATCH,
            source=f"osmand/{first}",
            id=hashlib.sha1(body).hexdigest(),
            subject=technicians[first],
            time=frame.get_column("ts").max(),  # type: ignore[arg-type]
            data=positions_json(frame, technicians),
        )

    def _admit(
        self, access: Access, fixes: list[OsmAndFix], header_token: str | None, is_json: bool
    ) -> tuple[int, str]:
        for fix in fixes:
            device = access.devices.get(fix.device_id)
            if device is None:
                self.stats["unknown_device"] += 1
                return (
                    404 if is_json else 400
                ), f"osmand: id={fix.device_id} is not a known device"
            if device.token_sha256 is not None:
                token = fix.token or header_token
                if token is None or sha256_hex(token) != device.token_sha256:
                    self.stats["unauthorized"] += 1
                    return 401, f"osmand: id={fix.device_id}: token missing or wrong"
        return 200, ""


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _api_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def events_app(bus: Bus, access: AccessCache, stats: Stats | None = None) -> Starlette:
    """The CloudEvents receiver (``POST /api/v1/events``) and its counters."""
    counters = stats if stats is not None else Stats()

    async def post_events(request: Request) -> Response:
        key = access.get().key_for(_api_key(request))
        if key is None:
            counters["unauthorized"] += 1
            return JSONResponse({"error": "Authorization: a valid API key is required"}, 401)
        try:
            body = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            events = read_http(headers, body)
            routes = [route(e) for e in events]
        except EventFormatError as exc:
            counters["malformed"] += 1
            return JSONResponse({"error": str(exc)}, 400)
        refused = [e.get_type() for e in events if not key.allows(e.get_type())]
        if refused:
            counters["forbidden"] += 1
            return JSONResponse(
                {"error": f"type={refused[0]} is not allowed for API key {key.name}"}, 403
            )
        try:
            acks = await asyncio.gather(
                *(bus.publish(s, e) for s, e in zip(routes, events, strict=True))
            )
        except BusError:
            counters["bus_unavailable"] += 1
            return JSONResponse({"error": "bus unavailable, retry later"}, 503)
        duplicates = sum(1 for a in acks if a.duplicate)
        counters["events"] += len(events) - duplicates
        counters["duplicates"] += duplicates
        return JSONResponse({"accepted": len(events), "duplicates": duplicates}, 202)

    async def status(request: Request) -> Response:
        return JSONResponse({"bus_connected": bus.connected, "counters": dict(counters)})

    return Starlette(
        routes=[
            Route("/api/v1/events", post_events, methods=["POST"]),
            Route("/api/v1/status", status, methods=["GET"]),
        ]
    )


class MqttIntake:
    """IoT readings from MQTT topic ``<prefix>/iot/<device id>`` onto the bus.

    QoS 1 with a persistent session (``clean_session=False``, a fixed client id), and manual
    acks: the broker sees the PUBACK only after JetStream acked the publish, so a reading is
    never lost between broker and bus. A malformed payload is counted, logged and acked.
    """

    def __init__(
        self, bus: Bus, url: str, *, client_id: str, topic_prefix: str, stats: Stats
    ) -> None:
        self.bus = bus
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 1883
        self.topic_prefix = topic_prefix
        self.stats = stats
        self.loop: asyncio.AbstractEventLoop | None = None
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            manual_ack=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        client.subscribe(f"{self.topic_prefix}/iot/#", qos=1)
        self.stats["mqtt_subscribed"] = 1
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self._forward(msg), self.loop)

    async def _forward(self, msg: mqtt.MQTTMessage) -> None:
        device_id = msg.topic.rsplit("/", 1)[-1]
        try:
            event = read_mqtt(msg.topic, bytes(msg.payload), device_id=device_id)
            subject = route(event)
        except EventFormatError as exc:
            self.stats["mqtt_malformed"] += 1
            log.warning("%s", exc)
            self.client.ack(msg.mid, msg.qos)
            return
        while True:
            try:
                await self.bus.publish(subject, event)
                break
            except BusError:
                self.stats["mqtt_bus_retry"] += 1
                await asyncio.sleep(0.5)
        self.stats["mqtt_readings"] += 1
        self.client.ack(msg.mid, msg.qos)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    async def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _server(app: Any, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="none",
        http="httptools",
        backlog=2048,
        timeout_graceful_shutdown=1,
        proxy_headers=False,  # phones talk to the receiver directly; no X-Forwarded-* work
        server_header=False,
    )
    return _Server(config)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to its host process (serve, tests)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_receivers(
    settings: Settings,
    *,
    stop: asyncio.Event,
    mqtt_enabled: bool = True,
    ready: Callable[[], None] | None = None,
) -> Stats:
    """Run the OsmAnd and CloudEvents receivers (and the MQTT intake) until ``stop`` is set."""
    access = AccessCache(settings.devices_file, settings.api_keys_file)
    stats = Stats()
    bus = await Bus.connect(settings)
    await bus.ensure_streams()
    servers = [
        _server(
            OsmAndApp(bus, access, tz=settings.timezone, stats=stats),
            settings.receiver_host,
            settings.osmand_port,
        ),
        _server(events_app(bus, access, stats), settings.receiver_host, settings.events_port),
    ]
    intake = None
    if mqtt_enabled:
        intake = MqttIntake(
            bus,
            settings.mqtt_url,
            client_id=f"{settings.bus_prefix}-intake",
            topic_prefix=settings.bus_prefix,
            stats=stats,
        )
        await intake.start()
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.02)
    if ready is not None:
        ready()
    await stop.wait()
    for s in servers:
        s.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.gather(*tasks)
    if intake is not None:
        await intake.stop()
    await bus.close()
    return stats
