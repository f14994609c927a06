"""Edge and hub events: subjects, stream names, intake parsing and CloudEvents in and out.

Pure functions (bytes / dicts in, frames / CloudEvents out); the bus I/O lives in ``node`` and
``hub``. Every event is a CloudEvents 1.0 structured-JSON message built and read with the
``cloudevents`` SDK; its ``Nats-Msg-Id`` is ``source/id`` and its id is derived from content,
so a re-sent intake message or a replayed rule evaluation de-duplicates on the bus.

Subjects (``P`` is the bus prefix, ``S`` the site):

=============================  ==========================  ==================================
subject                        stream (domain)             what
=============================  ==========================  ==================================
``P.intake.S.{iot,gps,vib}``   ``EDGE_S_INTAKE`` (edge)    raw device messages (HTTP, MQTT)
``P.edge.S.iot.readings``      ``EDGE_S`` (edge)           readings as CloudEvents
``P.edge.S.gps.fixes``         ``EDGE_S``                  GPS fixes as CloudEvents
``P.edge.S.ticket.created``    ``EDGE_S``                  tickets from the local rules
(sourced)                      ``SITE_S`` (hub)            ``EDGE_S`` sourced into the hub
``P.dispatch.S.<status>``      ``DISPATCH`` (hub)          dispatch decisions for site S
(mirrored)                     ``DISPATCH_S`` (edge)       mirror of ``DISPATCH`` for S
``P.hub.arrival.verdict``      ``HUB_VERDICTS`` (hub)      verdicts, a raised version each
=============================  ==========================  ==================================
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

import polars as pl
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from pipelines.edge.natsd import EdgeConfigError, EdgeError

_SITE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
_FORMAT: Final = JSONFormat()

TYPE_READINGS: Final = "fieldtrace.iot.readings"
TYPE_FIXES: Final = "fieldtrace.gps.fixes"
TYPE_TICKET: Final = "fieldtrace.ticket.created"
TYPE_DISPATCH: Final = "fieldtrace.dispatch"
TYPE_VERDICT: Final = "fieldtrace.arrival.verdict"
INTAKE_KINDS: Final = ("iot", "gps", "vib")
DISPATCH_STATUSES: Final = ("assigned", "accepted", "departed")

READING_SCHEMA: Final[dict[str, pl.DataType]] = {
    "device_id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "metric": pl.String(),
    "value": pl.Float64(),
    "unit": pl.String(),
}
FIX_SCHEMA: Final[dict[str, pl.DataType]] = {
    "technician_id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "lat": pl.Float64(),
    "lon": pl.Float64(),
    "accuracy_m": pl.Float64(),
    "speed_mps": pl.Float64(),
}


class IntakeError(EdgeError, ValueError):
    """A device message is malformed; the message names the item, the field and the value."""


class EventError(EdgeError, ValueError):
    """A bus message is not a CloudEvent FieldTrace can read."""


def check_site(site: str) -> str:
    if not _SITE.match(site):
        raise EdgeConfigError(f"site {site!r}: expected 1-31 of [a-z0-9-], starting alphanumeric")
    return site


@dataclass(frozen=True)
class Names:
    """Subjects, streams and domains of one site under one bus prefix."""

    prefix: str
    site: str
    hub_domain: str = "hub"

    @property
    def tag(self) -> str:
        return check_site(self.site).upper().replace("-", "_")

    @property
    def domain(self) -> str:
        return f"edge-{check_site(self.site)}"

    @property
    def source(self) -> str:
        """CloudEvents ``source`` of everything this edge creates."""
        return f"fieldtrace/edge/{self.site}"

    def intake(self, kind: str) -> str:
        return f"{self.prefix}.intake.{self.site}.{kind}"

    def edge(self, what: str) -> str:
        return f"{self.prefix}.edge.{self.site}.{what}"

    def dispatch(self, status: str) -> str:
        return f"{self.prefix}.dispatch.{self.site}.{status}"

    @property
    def intake_stream(self) -> str:
        return f"EDGE_{self.tag}_INTAKE"

    @property
    def edge_stream(self) -> str:
        return f"EDGE_{self.tag}"

    @property
    def hub_stream(self) -> str:
        return f"SITE_{self.tag}"

    @property
    def dispatch_mirror(self) -> str:
        return f"DISPATCH_{self.tag}"

    @property
    def edge_api(self) -> str:
        return f"$JS.{self.domain}.API"

    @property
    def hub_api(self) -> str:
        return f"$JS.{self.hub_domain}.API"


HUB_SOURCE: Final = "fieldtrace/hub"
DISPATCH_STREAM: Final = "DISPATCH"
VERDICT_STREAM: Final = "HUB_VERDICTS"


def verdict_subject(prefix: str) -> str:
    return f"{prefix}.hub.arrival.verdict"


# --------------------------------------------------------------------------- intake parsing


def parse_ts(value: object, where: str) -> datetime:
    """ISO 8601 (``Z`` or offset; naive means UTC) or epoch seconds / milliseconds."""
    if isinstance(value, bool):
        raise IntakeError(f"{where}: ts={value!r}, expected ISO 8601 or epoch seconds/ms")
    if isinstance(value, int | float) and math.isfinite(value):
        seconds = value / 1000.0 if abs(value) >= 2**31 else float(value)
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise IntakeError(f"{where}: ts={value!r}, expected ISO 8601 or epoch seconds/ms")


def _number(item: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> float:
    value = item.get(key)
    if value is None and not required:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise IntakeError(f"{where}: {key}={value!r}, expected a finite number")
    return float(value)


def _text(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise IntakeError(f"{where}: {key}={value!r}, expected a non-empty string")
    return value


def _items(body: bytes, source: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntakeError(f"{source}: body is not JSON ({exc})") from exc
    items = data if isinstance(data, list) else [data]
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise IntakeError(f"{source} item {i}: {type(item).__name__}, expected an object")
    return items


def parse_readings(body: bytes, source: str) -> pl.DataFrame:
    """IoT readings: one object or a list of ``{device_id, ts, metric, value, unit?}``."""
    rows = []
    for i, item in enumerate(_items(body, source)):
        where = f"{source} item {i}"
        unit = item.get("unit")
        rows.append(
            {
                "device_id": _text(item, "device_id", where),
                "ts": parse_ts(item.get("ts"), where),
                "metric": _text(item, "metric", where),
                "value": _number(item, "value", where),
                "unit": unit if isinstance(unit, str) else None,
            }
        )
    return pl.DataFrame(rows, schema=READING_SCHEMA)


def parse_fixes(body: bytes, source: str) -> pl.DataFrame:
    """GPS fixes: ``{technician_id, ts, lat, lon, accuracy_m?, speed_mps?}`` (WGS84)."""
    rows = []
    for i, item in enumerate(_items(body, source)):
        where = f"{source} item {i}"
        lat, lon = _number(item, "lat", where), _number(item, "lon", where)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise IntakeError(f"{where}: lat={lat}, lon={lon}, expected WGS84 degrees")
        rows.append(
            {
                "technician_id": _text(item, "technician_id", where),
                "ts": parse_ts(item.get("ts"), where),
                "lat": lat,
                "lon": lon,
                "accuracy_m": _number(item, "accuracy_m", where, required=False),
                "speed_mps": _number(item, "speed_mps", where, required=False),
            }
        )
    return pl.DataFrame(rows, schema=FIX_SCHEMA).fill_nan(None)


@dataclass(frozen=True)
class VibrationRecord:
    device_id: str
    start_ts: datetime
    sample_rate_hz: float
    rpm: float
    samples: list[float]
    lat: float | None
    lon: float | None
    customer_id: str | None

    @property
    def series_id(self) -> str:
        return f"{self.device_id}@{self.start_ts.strftime('%Y%m%dT%H%M%S.%fZ')}"


def parse_vibration(body: bytes, source: str) -> VibrationRecord:
    """One raw vibration record: ``{device_id, start_ts, sample_rate_hz, rpm, samples}``."""
    items = _items(body, source)
    if len(items) != 1:
        raise IntakeError(f"{source}: {len(items)} records, expected one vibration record")
    item, where = items[0], f"{source} item 0"
    samples = item.get("samples")
    if not isinstance(samples, list) or len(samples) < 64:
        raise IntakeError(f"{where}: samples has {type(samples).__name__}, expected >= 64 values")
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in samples):
        raise IntakeError(f"{where}: samples holds a value that is not a finite number")
    rate = _number(item, "sample_rate_hz", where)
    rpm = _number(item, "rpm", where)
    if rate <= 0 or rpm <= 0:
        raise IntakeError(f"{where}: sample_rate_hz={rate}, rpm={rpm}, expected > 0")
    lat = item.get("lat")
    lon = item.get("lon")
    customer = item.get("customer_id")
    return VibrationRecord(
        device_id=_text(item, "device_id", where),
        start_ts=parse_ts(item.get("start_ts"), where),
        sample_rate_hz=rate,
        rpm=rpm,
        samples=[float(v) for v in samples],
        lat=float(lat) if isinstance(lat, int | float) else None,
        lon=float(lon) if isinstance(lon, int | float) else None,
        customer_id=customer if isinstance(customer, str) else None,
    )


# --------------------------------------------------------------------------- CloudEvents


def content_id(kind: str, body: bytes) -> str:
    """A stable id for a device message: the same bytes re-sent get the same id."""
    return f"{kind}-{hashlib.sha256(body).hexdigest()[:32]}"


def make_event(
    *,
    type_: str,
    source: str,
    id_: str,
    time: datetime,
    data: dict[str, Any],
    subject: str | None = None,
    extensions: Mapping[str, str] | None = None,
) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": id_,
        "source": source,
        "type": type_,
        "specversion": "1.0",
        "time": time,
        "datacontenttype": "application/json",
    }
    if subject is not None:
        attributes["subject"] = subject
    attributes.update(extensions or {})
    return CloudEvent(attributes=attributes, data=data)


def encode(event: CloudEvent) -> tuple[bytes, dict[str, str]]:
    """Structured JSON payload and the ``Nats-Msg-Id`` header (``source/id``)."""
    return _FORMAT.write(event), {"Nats-Msg-Id": f"{event.get_source()}/{event.get_id()}"}


def decode(payload: bytes, where: str) -> CloudEvent:
    try:
        event = cast(CloudEvent, _FORMAT.read(CloudEvent, payload))
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise EventError(f"{where}: not a CloudEvents 1.0 JSON event ({exc})") from exc
    if not isinstance(event.get_data(), dict):
        raise EventError(f"{where}: event {event.get_id()} has no JSON object as data")
    return event


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")).to_dicts()


def readings_event(names: Names, frame: pl.DataFrame, id_: str) -> CloudEvent:
    return make_event(
        type_=TYPE_READINGS,
        source=names.source,
        id_=id_,
        time=frame["ts"].min(),  # type: ignore[arg-type]
        data={"site": names.site, "readings": _rows(frame)},
    )


def fixes_event(names: Names, frame: pl.DataFrame, id_: str) -> CloudEvent:
    return make_event(
        type_=TYPE_FIXES,
        source=names.source,
        id_=id_,
        time=frame["ts"].min(),  # type: ignore[arg-type]
        data={"site": names.site, "fixes": _rows(frame)},
    )


def ticket_event(
    names: Names, record: VibrationRecord, evidence: dict[str, Any], band: str
) -> CloudEvent:
    """``ticket.created`` at the edge: origin, rule + version, band values, spectrum, record."""
    ticket_id = f"EDGE-{names.site}-{record.device_id}-{record.start_ts:%Y%m%dT%H%M%S}-{band}"
    data = {
        "ticket": {
            "ticket_id": ticket_id,
            "site_id": names.site,
            "customer_id": record.customer_id,
            "lat": record.lat,
            "lon": record.lon,
            "category": "bearing_fault",
            "tag": f"bearing_{band.lower()}",
            "priority": "high",
            "created_ts": record.start_ts.isoformat(),
        },
        "origin": {"site": names.site, "source": names.source},
        "device_id": record.device_id,
        "band": band,
        "rule": evidence["rule"],
        "rule_version": evidence["rule_version"],
        "band_values": {
            "peak_ratio": evidence["peak_ratio"],
            "windows_over": evidence["windows_over"],
            "fault_hz": evidence["fault_hz"],
        },
        "evidence": evidence,
        "vibration": {
            "series_id": record.series_id,
            "device_id": record.device_id,
            "start_ts": record.start_ts.isoformat(),
            "sample_rate_hz": record.sample_rate_hz,
            "rpm": record.rpm,
            "samples": record.samples,
        },
    }
    return make_event(
        type_=TYPE_TICKET,
        source=names.source,
        id_=f"ticket.created-{ticket_id}",
        time=record.start_ts,
        data=data,
        subject=ticket_id,
    )


def dispatch_event(
    *, site: str, ticket_id: str, technician_id: str, status: str, ts: datetime
) -> CloudEvent:
    if status not in DISPATCH_STATUSES:
        raise EventError(f"dispatch status={status!r}, expected one of {DISPATCH_STATUSES}")
    return make_event(
        type_=f"{TYPE_DISPATCH}.{status}",
        source=HUB_SOURCE,
        id_=f"dispatch-{ticket_id}-{status}-{technician_id}",
        time=ts,
        data={"site": site, "ticket_id": ticket_id, "technician_id": technician_id},
        subject=ticket_id,
    )


def verdict_event(row: Mapping[str, Any], *, version: int, trigger: str) -> CloudEvent:
    """An arrival verdict, ``version`` raised on every correction (``verdictversion``)."""
    return make_event(
        type_=TYPE_VERDICT,
        source=HUB_SOURCE,
        id_=f"verdict-{row['event_id']}-v{version}",
        time=row["ts"],
        data={
            "event_id": row["event_id"],
            "ticket_id": row["ticket_id"],
            "technician_id": row["technician_id"],
            "verdict": row["verdict"],
            "reason": row["reason"],
            "version": version,
            "rule_version": row["rule_version"],
            "trigger": trigger,
        },
        subject=row["ticket_id"],
        extensions={"verdictversion": str(version)},
    )


def event_frames(events: Iterable[CloudEvent]) -> dict[str, pl.DataFrame]:
    """Readings and fixes of a batch of events as two frames (event time kept)."""
    readings: list[dict[str, Any]] = []
    fixes: list[dict[str, Any]] = []
    for event in events:
        data = cast(dict[str, Any], event.get_data())
        if event.get_type() == TYPE_READINGS:
            readings.extend(data["readings"])
        elif event.get_type() == TYPE_FIXES:
            fixes.extend(data["fixes"])
    return {
        "readings": _frame(readings, READING_SCHEMA),
        "fixes": _frame(fixes, FIX_SCHEMA),
    }


def _frame(rows: list[dict[str, Any]], schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    raw: dict[str, pl.DataType] = {k: (pl.String() if k == "ts" else v) for k, v in schema.items()}
    frame = pl.DataFrame(rows, schema=raw) if rows else pl.DataFrame(schema=raw)
    return frame.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us"))
