"""The FieldTrace event bus: CloudEvents 1.0 on NATS JetStream (see docs/EVENTS.md).

Two streams, named from the ``bus_prefix`` setting (``fieldtrace`` → ``FIELDTRACE_IN``):

- ``<PREFIX>_IN``  holds ``<prefix>.in.>``: what the receivers accepted (positions, ticket
  events, IoT readings). The writers consume it into the store.
- ``<PREFIX>_OUT`` holds ``<prefix>.out.>``: what FieldTrace derives (verdicts, geofence
  events, alerts, orders). Any system may subscribe.

Every message is one CloudEvent in the NATS binding's structured mode: the event's JSON (the
SDK's ``JSONFormat``) as payload, ``content-type: application/cloudevents+json``; a message in
binary mode (``ce-*`` headers) is read too. ``Nats-Msg-Id`` is
``source + " " + id``, so a re-sent event inside ``bus_duplicate_window_s`` is not stored
twice (its PubAck says ``duplicate``). A publish counts only once JetStream has acked it.

Usage::

    async with await Bus.connect(settings) as bus:
        await bus.ensure_streams()
        event = make_event(POSITION, source="osmand/dev1", id="1718459112000", data={...})
        await bus.publish(IN_GPS, event)
        sub = await bus.pull(IN_ALL, durable="writer")
        for msg in await sub.fetch(100, timeout=1.0):
            event = decode(msg)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import nats
import nats.errors
import nats.js.errors
from cloudevents.core.bindings.http import HTTPMessage, from_binary, to_binary
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, PubAck, StorageType, StreamConfig

from pipelines.errors import BusError, EventFormatError
from pipelines.settings import Settings

# -- event types (CloudEvents `type`) ---------------------------------------------------
POSITION = "fieldtrace.position"  # data: one fix (technician_id, ts, lat, lon, ...)
POSITION_BATCH = "fieldtrace.position.batch"  # data: {"positions": [fix, ...]}
TICKET_PREFIX = "fieldtrace.ticket."  # + an event type of pipelines.schema.EVENT_TYPES
IOT_READING = "fieldtrace.iot.reading"  # subject: device id; data: metric, value, unit
# Outputs (published by the processors)
ARRIVAL_VERDICT = "fieldtrace.arrival.verdict"
GEOFENCE_ENTER = "fieldtrace.geofence.enter"
GEOFENCE_EXIT = "fieldtrace.geofence.exit"
GEOFENCE_DWELL = "fieldtrace.geofence.dwell"
ARRIVED_AUTO = "fieldtrace.geofence.arrived_auto"
ALERT_RAISED = "fieldtrace.alert.raised"
ALERT_UPDATED = "fieldtrace.alert.updated"
RESTOCK_ORDERED = "fieldtrace.restock.ordered"
RESTOCK_DELIVERED = "fieldtrace.restock.delivered"
RESTOCK_ACKNOWLEDGED = "fieldtrace.restock.acknowledged"

# -- subjects, relative to the prefix ---------------------------------------------------
IN_GPS = "in.gps"
IN_TICKETS = "in.tickets"
IN_IOT = "in.iot"
IN_ALL = "in.>"
OUT_VERDICTS = "out.verdicts"
OUT_GEOFENCE = "out.geofence"
OUT_ALERTS = "out.alerts"
OUT_RESTOCK = "out.restock"
OUT_ALL = "out.>"

_JSON = JSONFormat()
MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True)
class BusNames:
    """Stream and subject names derived from one prefix (tests use their own)."""

    prefix: str = "fieldtrace"

    def subject(self, relative: str) -> str:
        return f"{self.prefix}.{relative}"

    @property
    def stream_in(self) -> str:
        return re.sub(r"[^A-Z0-9_]", "_", self.prefix.upper()) + "_IN"

    @property
    def stream_out(self) -> str:
        return re.sub(r"[^A-Z0-9_]", "_", self.prefix.upper()) + "_OUT"


def make_event(
    type_: str,
    *,
    source: str,
    id: str,
    data: Mapping[str, Any] | bytes | None,
    subject: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """A CloudEvent 1.0 with JSON data (a mapping, or JSON text already encoded as bytes);
    ``source`` + ``id`` identify it on the bus."""
    attributes: dict[str, Any] = {
        "type": type_,
        "source": source,
        "id": id,
        "datacontenttype": "application/json",
    }
    if subject is not None:
        attributes["subject"] = subject
    if time is not None:
        attributes["time"] = time
    if data is None or isinstance(data, bytes):
        return CloudEvent(attributes=attributes, data=data)
    return CloudEvent(attributes=attributes, data=dict(data))


def msg_id(event: CloudEvent) -> str:
    """The de-duplication key: CloudEvents identify an event by source + id."""
    return f"{event.get_source()} {event.get_id()}"


def encode(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """NATS headers and payload: structured mode (the event's JSON), or binary mode (``ce-*``
    headers, the JSON data as payload) when the data is already encoded JSON bytes, which
    spares re-encoding a large batch. ``Nats-Msg-Id`` is set either way."""
    if isinstance(event.get_data(), bytes):
        message = to_binary(event, _JSON)
        headers = dict(message.headers)
        headers[MSG_ID_HEADER] = msg_id(event)
        return headers, message.body
    headers = {"content-type": _JSON.CONTENT_TYPE, MSG_ID_HEADER: msg_id(event)}
    return headers, _JSON.write(event)


def decode(msg: Msg) -> CloudEvent:
    """The CloudEvent carried by a NATS message: structured JSON, or binary ``ce-*`` headers
    (both are the NATS binding's modes; FieldTrace publishes structured)."""
    headers = {k.lower(): v for k, v in (msg.headers or {}).items()}
    try:
        if any(k.startswith("ce-") for k in headers):
            event = from_binary(HTTPMessage(headers=headers, body=msg.data), _JSON, CloudEvent)
        else:
            event = _JSON.read(CloudEvent, msg.data)
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        text = str(exc).replace("\n", " ")
        raise EventFormatError(f"bus message on {msg.subject}: not a CloudEvent: {text}") from exc
    assert isinstance(event, CloudEvent)
    return event


class Bus:
    """One NATS connection with its JetStream context; use ``Bus.connect``."""

    def __init__(
        self, nc: NatsClient, names: BusNames, *, duplicate_window_s: float, timeout_s: float
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=timeout_s)
        self.names = names
        self.duplicate_window_s = duplicate_window_s
        self.timeout_s = timeout_s

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        *,
        url: str | None = None,
        prefix: str | None = None,
        connect_timeout_s: float = 2.0,
    ) -> Bus:
        """Connect (reconnecting forever afterwards); raises BusError if unreachable now."""
        target = url or settings.bus_url
        try:
            nc = await nats.connect(
                target,
                connect_timeout=connect_timeout_s,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"bus_url={target}: cannot connect to NATS: {exc!r}") from exc
        return cls(
            nc,
            BusNames(prefix or settings.bus_prefix),
            duplicate_window_s=settings.bus_duplicate_window_s,
            timeout_s=settings.bus_timeout_s,
        )

    async def ensure_streams(self) -> None:
        """Create (or update) the IN and OUT streams; idempotent."""
        for name, subject in (
            (self.names.stream_in, IN_ALL),
            (self.names.stream_out, OUT_ALL),
        ):
            config = StreamConfig(
                name=name,
                subjects=[self.names.subject(subject)],
                storage=StorageType.FILE,
                duplicate_window=self.duplicate_window_s,
            )
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self.js.update_stream(config)
            except (nats.errors.Error, TimeoutError) as exc:
                raise BusError(f"stream {name}: cannot create: {exc!r}") from exc

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def publish(self, relative_subject: str, event: CloudEvent) -> PubAck:
        """Publish and wait for the JetStream ack; raises BusError when there is none."""
        if not self.nc.is_connected:
            raise BusError(f"bus_url: not connected (publishing {event.get_type()})")
        headers, body = encode(event)
        try:
            return await self.js.publish(
                self.names.subject(relative_subject), body, headers=headers, timeout=self.timeout_s
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"publish {event.get_type()}: no JetStream ack: {exc!r}") from exc

    async def pull(
        self,
        relative_subject: str,
        *,
        durable: str,
        ack_wait_s: float = 30.0,
        max_ack_pending: int = 20_000,
    ) -> JetStreamContext.PullSubscription:
        """A durable pull consumer: its position survives restarts; unacked messages return
        after ``ack_wait_s``."""
        subject = self.names.subject(relative_subject)
        stream = self.names.stream_out if relative_subject.startswith("out.") else None
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait_s, max_ack_pending=max_ack_pending
        )
        try:
            return await self.js.pull_subscribe(
                subject,
                durable=durable,
                stream=stream or self.names.stream_in,
                config=config,
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"consumer {durable} on {subject}: {exc!r}") from exc

    async def close(self) -> None:
        """Flush what was published (acks included) and close."""
        if self.nc.is_closed:
            return
        if self.nc.is_connected:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self.nc.flush(timeout=1)
        await self.nc.close()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
