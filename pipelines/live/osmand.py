"""Traccar's OsmAnd protocol, decoded the way Traccar's ``OsmAndProtocolDecoder`` does (pure).

Shapes (chosen as Traccar chooses them):

1. ``Content-Type: application/json``: the Traccar Client 9.x body (``device_id``,
   ``location.timestamp``, ``location.coords.{latitude, longitude, accuracy, speed, heading,
   altitude}``, ``is_moving``, ``event``, ``battery.level`` 0..1, ``mock``, ``extras``) with
   speed in **m/s**; or the Traccar Client 10.x ``uploadJson`` array of flat objects (the form
   keys below, speed in knots).
2. Otherwise the URI query string (GET or POST), and if it is empty the body as a form.
   Keys: ``id``/``deviceid``, ``timestamp`` (epoch s if < 2^31, else ms; ISO 8601 if it holds
   a ``T``; else ``yyyy-MM-dd HH:mm:ss`` in the server's zone; missing = now), ``lat``/``lon``
   or ``location=lat,lon``, ``speed`` in **knots**, ``bearing``/``heading``, ``altitude``,
   ``accuracy``, ``hdop``, ``batt``, ``mock``; anything else is an attribute.

A value that does not parse raises ``EventFormatError`` naming the field (the receiver answers
400 with it). Range checks are not done here: the rows go through the ingest rules, and a
rejected row is quarantined with its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import polars as pl

from pipelines.errors import EventFormatError

KNOT_MPS = 1852.0 / 3600.0
_INT31 = 2**31 - 1
TOKEN_KEYS = ("token", "device_token")


@dataclass(slots=True)
class OsmAndFix:
    """One decoded position, before the device is mapped to its technician."""

    device_id: str
    ts: datetime
    lat: float | None
    lon: float | None
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    altitude_m: float | None = None
    hdop: float | None = None
    mock_location: bool | None = None
    token: str | None = None

    def data(self, technician_id: str) -> dict[str, Any]:
        """The ``data`` of a ``fieldtrace.position`` event (the gps kind's columns)."""
        return {
            "technician_id": technician_id,
            "ts": self.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "lat": self.lat,
            "lon": self.lon,
            "accuracy_m": self.accuracy_m,
            "speed_mps": self.speed_mps,
            "heading_deg": self.heading_deg,
            "altitude_m": self.altitude_m,
            "hdop": self.hdop,
            "mock_location": self.mock_location,
            "datum": "WGS84",
            "source": "osmand",
        }

    @property
    def epoch_ms(self) -> int:
        return int(self.ts.timestamp() * 1000)


@dataclass(frozen=True)
class OsmAndRequest:
    """What the decoder needs of an HTTP request."""

    query: str
    content_type: str
    body: bytes


def _float(value: object, field: str) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EventFormatError(f"osmand: {field}={value!r} is not a number") from None
    return out


def _opt_float(value: object, field: str) -> float | None:
    if value is None or value == "":
        return None
    return _float(value, field)


def parse_timestamp(value: str | int | float | None, *, tz: str, now: datetime) -> datetime:
    """Traccar's rules: epoch s (< 2^31) or ms; ISO 8601 with ``T``; else local time."""
    if value is None or value == "":
        return now
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is not None:
        millis = number * 1000 if number < _INT31 else number
        try:
            return datetime.fromtimestamp(millis / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise EventFormatError(f"osmand: timestamp={text} is out of range") from None
    try:
        if "T" in text:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
        else:
            parsed = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(tz))
    except ValueError:
        raise EventFormatError(
            f"osmand: timestamp={text!r} is not epoch s/ms, ISO 8601 or yyyy-MM-dd HH:mm:ss"
        ) from None
    return parsed.astimezone(UTC)


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if value is None:
        return None
    text = str(value).strip().lower()
    return True if text in ("true", "1") else False if text in ("false", "0") else None


def from_params(params: dict[str, str], *, tz: str, now: datetime, knots: bool = True) -> OsmAndFix:
    """One fix from the query / form / flat-JSON keys (speed in knots unless told)."""
    device = params.get("id") or params.get("deviceid")
    if not device:
        raise EventFormatError("osmand: id is missing (the device identifier)")
    lat = _opt_float(params.get("lat"), "lat")
    lon = _opt_float(params.get("lon"), "lon")
    if "location" in params:
        parts = str(params["location"]).split(",")
        if len(parts) != 2:
            raise EventFormatError(f"osmand: location={params['location']!r} is not 'lat,lon'")
        lat, lon = _float(parts[0], "location"), _float(parts[1], "location")
    speed = _opt_float(params.get("speed"), "speed")
    heading = params.get("bearing", params.get("heading"))
    return OsmAndFix(
        device_id=str(device),
        ts=parse_timestamp(params.get("timestamp"), tz=tz, now=now),
        lat=lat,
        lon=lon,
        accuracy_m=_opt_float(params.get("accuracy"), "accuracy"),
        speed_mps=None if speed is None else (speed * KNOT_MPS if knots else speed),
        heading_deg=_opt_float(heading, "bearing"),
        altitude_m=_opt_float(params.get("altitude"), "altitude"),
        hdop=_opt_float(params.get("hdop"), "hdop"),
        mock_location=_bool(params.get("mock")),
        token=next((str(params[k]) for k in TOKEN_KEYS if params.get(k)), None),
    )


def from_client_json(body: dict[str, Any], *, now: datetime) -> OsmAndFix:
    """One fix from the Traccar Client 9.x JSON body (speed in m/s; negatives ignored)."""
    device = body.get("device_id")
    if not device:
        raise EventFormatError("osmand: device_id is missing")
    location = body.get("location")
    if not isinstance(location, dict):
        raise EventFormatError("osmand: location is missing or not an object")
    coords = location.get("coords")
    if not isinstance(coords, dict):
        raise EventFormatError("osmand: location.coords is missing or not an object")
    ts_value = location.get("timestamp")
    if ts_value is None:
        ts = now
    else:
        try:
            ts = datetime.fromisoformat(str(ts_value).replace("Z", "+00:00"))
        except ValueError:
            raise EventFormatError(
                f"osmand: location.timestamp={ts_value!r} is not ISO 8601"
            ) from None
        ts = (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)
    speed = _opt_float(coords.get("speed"), "location.coords.speed")
    heading = _opt_float(coords.get("heading"), "location.coords.heading")
    extras = location.get("extras") if isinstance(location.get("extras"), dict) else {}
    token = body.get("token") or (extras or {}).get("token")
    return OsmAndFix(
        device_id=str(device),
        ts=ts,
        lat=_opt_float(coords.get("latitude"), "location.coords.latitude"),
        lon=_opt_float(coords.get("longitude"), "location.coords.longitude"),
        accuracy_m=_opt_float(coords.get("accuracy"), "location.coords.accuracy"),
        speed_mps=None if speed is None or speed < 0 else speed,
        heading_deg=None if heading is None or heading < 0 else heading,
        altitude_m=_opt_float(coords.get("altitude"), "location.coords.altitude"),
        mock_location=_bool(location.get("mock")),
        token=None if token is None else str(token),
    )


def parse_params(text: str) -> dict[str, str]:
    """Query or form keys. Plain ``k=v&k=v`` text (what trackers send) is split directly;
    anything percent- or plus-encoded goes through ``urllib.parse.parse_qsl``."""
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    out: dict[str, str] = {}
    for pair in text.split("&"):
        if pair:
            key, _, value = pair.partition("=")
            out[key] = value
    return out


def decode(request: OsmAndRequest, *, tz: str, now: datetime) -> tuple[list[OsmAndFix], bool]:
    """All fixes of one request, and whether it was the JSON shape (which answers 404, not
    400, for an unknown device, as Traccar does)."""
    if request.content_type.split(";")[0].strip().lower() == "application/json":
        try:
            body = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventFormatError(f"osmand: body is not valid JSON: {exc}") from None
        if isinstance(body, list):
            fixes = []
            for i, item in enumerate(body):
                if not isinstance(item, dict):
                    raise EventFormatError(f"osmand: body[{i}] is not an object")
                fixes.append(
                    from_params({k: v for k, v in item.items() if v is not None}, tz=tz, now=now)
                )
            return fixes, True
        if not isinstance(body, dict):
            raise EventFormatError("osmand: JSON body is not an object or an array")
        if "location" in body:
            return [from_client_json(body, now=now)], True
        return [from_params(body, tz=tz, now=now)], True
    text = request.query
    if not text:
        try:
            text = request.body.decode("ascii")
        except UnicodeDecodeError:
            raise EventFormatError("osmand: form body is not ASCII url-encoding") from None
    params = parse_params(text)
    if not params:
        raise EventFormatError("osmand: no query string and no form body (id, lat, lon)")
    return [from_params(params, tz=tz, now=now)], False


class NotVectorizableError(EventFormatError):
    """The batch has something the columnar path leaves to the row-by-row decoder (text
    timestamps, ``location=``, unparseable values: the row decoder names the field)."""


_FLOAT_KEYS = {
    "lat": "lat",
    "lon": "lon",
    "accuracy": "accuracy_m",
    "altitude": "altitude_m",
    "hdop": "hdop",
}


def decode_array_columnar(body: bytes) -> pl.DataFrame:
    """A Traccar Client 10.x ``uploadJson`` array decoded column-wise (the hot path of
    batched positions): columns ``device_id, ts, lat, lon, accuracy_m, speed_mps,
    heading_deg, altitude_m, hdop``, speed converted from knots. Raises ``NotVectorizableError``
    when the row decoder must look (it gives the exact error, or handles the rare shape)."""
    try:
        raw = pl.read_json(body)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise NotVectorizableError(str(exc)) from None
    if raw.height == 0 or "location" in raw.columns or "timestamp" not in raw.columns:
        raise NotVectorizableError("shape")
    device = "id" if "id" in raw.columns else "deviceid" if "deviceid" in raw.columns else None
    if device is None or not raw.schema["timestamp"].is_integer():
        raise NotVectorizableError("id or timestamp")
    cols: list[pl.Expr] = [pl.col(device).cast(pl.String).alias("device_id")]
    for key, name in _FLOAT_KEYS.items():
        if key in raw.columns:
            if not (raw.schema[key].is_numeric() or raw.schema[key] == pl.Null):
                raise NotVectorizableError(key)
            cols.append(pl.col(key).cast(pl.Float64).alias(name))
        else:
            cols.append(pl.lit(None, pl.Float64).alias(name))
    heading = "bearing" if "bearing" in raw.columns else "heading"
    for key, name, factor in (("speed", "speed_mps", KNOT_MPS), (heading, "heading_deg", 1.0)):
        if key in raw.columns:
            if not (raw.schema[key].is_numeric() or raw.schema[key] == pl.Null):
                raise NotVectorizableError(key)
            cols.append((pl.col(key).cast(pl.Float64) * factor).alias(name))
        else:
            cols.append(pl.lit(None, pl.Float64).alias(name))
    stamp = pl.col("timestamp").cast(pl.Int64)
    millis = pl.when(stamp < _INT31).then(stamp * 1000).otherwise(stamp)
    cols.append(millis.cast(pl.Datetime("ms", "UTC")).alias("ts"))
    out = raw.select(cols)
    if out.get_column("device_id").null_count() or out.get_column("lat").null_count():
        raise NotVectorizableError("missing id or lat")
    return out


def positions_json(frame: pl.DataFrame, technicians: dict[str, str]) -> bytes:
    """The ``data`` of a ``fieldtrace.position.batch`` event: a JSON array of the gps kind's
    rows, written by polars."""
    return (
        frame.select(
            pl.col("device_id")
            .replace_strict(technicians, return_dtype=pl.String)
            .alias("technician_id"),
            pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").alias("ts"),
            "lat",
            "lon",
            "accuracy_m",
            "speed_mps",
            "heading_deg",
            "altitude_m",
            "hdop",
            pl.lit("WGS84").alias("datum"),
            pl.lit("osmand").alias("source"),
        )
        .write_json()
        .encode()
    )
