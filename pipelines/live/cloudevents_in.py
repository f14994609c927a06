"""CloudEvents arriving over HTTP or MQTT: read them (with the SDK) and route them (pure).

HTTP modes (``bindings/http-protocol-binding.md``):

- **structured**: ``Content-Type: application/cloudevents+json``, the event is the body;
- **binary**: attributes in ``ce-*`` headers, the body is ``data``;
- **batch**: ``application/cloudevents-batch+json``, a JSON array of structured events (the SDK
  has no batch reader, so the array is split and each element read with ``JSONFormat``).

Routing checks only what the bus needs (a FieldTrace input type, the subject);
everything about the values is left to the ingest rules, which quarantine with a reason.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from pipelines.errors import EventFormatError
from pipelines.live import bus

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
MAX_BATCH = 10_000
_JSON = JSONFormat()


def _read_one(raw: bytes, where: str) -> CloudEvent:
    try:
        event = _JSON.read(CloudEvent, raw)
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise EventFormatError(f"{where}: {_describe(exc)}") from None
    assert isinstance(event, CloudEvent)
    return event


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.replace("\n", " ")


def read_http(headers: dict[str, str], body: bytes) -> list[CloudEvent]:
    """The events of one HTTP request, in any of the three modes (headers lower-cased)."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == BATCH_CONTENT_TYPE:
        try:
            items = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventFormatError(f"batch: body is not valid JSON: {exc}") from None
        if not isinstance(items, list):
            raise EventFormatError("batch: body must be a JSON array of events")
        if len(items) > MAX_BATCH:
            raise EventFormatError(f"batch: {len(items)} events exceed the limit of {MAX_BATCH}")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise EventFormatError(f"batch[{i}]: not a JSON object")
            out.append(_read_one(json.dumps(item).encode(), f"batch[{i}]"))
        return out
    is_binary = any(k.startswith("ce-") for k in headers)
    if not is_binary and content_type != "application/cloudevents+json":
        raise EventFormatError(
            f"content-type={content_type or 'none'}: expected application/cloudevents+json, "
            f"{BATCH_CONTENT_TYPE}, or ce-* headers (binary mode)"
        )
    if not is_binary:
        return [_read_one(body, "structured")]
    try:
        event = from_http(HTTPMessage(headers=headers, body=body), _JSON, CloudEvent)
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise EventFormatError(f"binary: {_describe(exc)}") from None
    assert isinstance(event, CloudEvent)
    return [event]


def read_mqtt(topic: str, payload: bytes, *, device_id: str) -> CloudEvent:
    """An IoT message: a structured CloudEvent, or a plain JSON reading wrapped into one."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventFormatError(f"mqtt {topic}: payload is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise EventFormatError(f"mqtt {topic}: payload must be a JSON object")
    if "specversion" in body:
        return _read_one(payload, f"mqtt {topic}")
    ts = body.get("ts")
    if not ts:
        raise EventFormatError(f"mqtt {topic}: ts is missing (the reading's time)")
    metric = body.get("metric", "readings")
    data = {k: v for k, v in body.items() if k not in ("ts", "id", "device_id")}
    rid = str(body.get("id") or f"{ts}/{metric}")
    try:
        time = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        raise EventFormatError(f"mqtt {topic}: ts={ts!r} is not ISO 8601") from None
    return bus.make_event(
        bus.IOT_READING,
        source=f"mqtt/{device_id}",
        id=rid,
        subject=str(body.get("device_id") or device_id),
        time=time,
        data=data,
    )


def route(event: CloudEvent) -> str:
    """The IN subject (relative) of an input event; EventFormatError names what is wrong."""
    etype = event.get_type()
    if etype in (bus.POSITION, bus.POSITION_BATCH):
        data = event.get_data()
        if not isinstance(data, dict):
            raise EventFormatError(f"event {event.get_id()}: data must be a JSON object")
        if etype == bus.POSITION_BATCH and not isinstance(data.get("positions"), list):
            raise EventFormatError(f"event {event.get_id()}: data.positions must be an array")
        return bus.IN_GPS
    if etype.startswith(bus.TICKET_PREFIX):
        _need_subject_and_time(event, "the ticket id")
        return bus.IN_TICKETS
    if etype == bus.IOT_READING:
        _need_subject_and_time(event, "the device id")
        data = event.get_data()
        if not isinstance(data, dict):
            raise EventFormatError(f"event {event.get_id()}: data must be a JSON object")
        return bus.IN_IOT
    raise EventFormatError(
        f"event {event.get_id()}: type={etype!r} is not a FieldTrace input type "
        f"({bus.POSITION}, {bus.POSITION_BATCH}, {bus.TICKET_PREFIX}<event>, {bus.IOT_READING})"
    )


def _need_subject_and_time(event: CloudEvent, subject_is: str) -> None:
    """The subject names the ticket or device. ``time`` is the event time; the SDK sets it to
    the time of receipt when a sender leaves it out."""
    if not event.get_subject():
        raise EventFormatError(f"event {event.get_id()}: subject is missing ({subject_is})")


def data_dict(event: CloudEvent) -> dict[str, Any]:
    data = event.get_data()
    return data if isinstance(data, dict) else {}
