"""Open-Meteo forecast and archive responses → long weather rows.

Accepted files: the JSON body of ``/v1/forecast``, ``/v1/archive`` (and model endpoints such as
``/v1/dwd-icon``), or a VCR YAML cassette whose ``response.body.string`` is that JSON (one row
set per recorded interaction).

Each block (``hourly``, ``minutely_15``, ``daily``, ``current``) becomes rows
``(grid_lat, grid_lon, ts, variable, value, unit)``; the variable of a non-hourly block is
prefixed, e.g. ``daily.precipitation_sum``, so that hourly and daily values at the same instant
never share a key. ``source`` is ``--source-name``, else ``open-meteo/<endpoint>`` for a
cassette (so ``forecast`` and ``dwd-icon`` runs for the same cell stay apart), else
``open-meteo``. Units come from the block's ``*_units`` map. ``grid_lat``/``grid_lon`` are
the grid-snapped coordinates the server returned (not the requested ones).

Times: Open-Meteo writes local times without a suffix and declares the zone in ``timezone`` and
``utc_offset_seconds``. **The declared offset wins**: it is the offset the server used to render
these strings, whatever the named zone's rules say for that date (the archive fixture declares
7200 s for Amsterdam in January). ``ts = local − utc_offset_seconds``, written with ``Z``, so
``--tz`` does not apply. One row per (time, variable); a value array shorter or longer than its
``time`` array is quarantined (rule ``parse``) position by position.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl
import yaml

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import QUARANTINE_SCHEMA, IngestOptions, ParsedBatch
from pipelines.ingest.kinds import KindSpec
from pipelines.ingest.sources import register
from pipelines.ingest.sources.text import clean_json

BLOCKS = ("hourly", "minutely_15", "daily", "current")
SOURCE = "open-meteo"


def decode_body(text: str, origin: str) -> dict[str, Any]:
    """Parse one Open-Meteo JSON body; an error body or non-JSON is a SourceFormatError."""
    try:
        body = clean_json(json.loads(text))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SourceFormatError(
            f"{origin}: Open-Meteo body is not valid JSON (truncated?): {exc} ({len(text)} chars)"
        ) from exc
    if not isinstance(body, dict):
        raise SourceFormatError(
            f"{origin}: expected an Open-Meteo JSON object, found {type(body).__name__}"
        )
    if body.get("error"):
        raise SourceFormatError(f"{origin}: Open-Meteo error: {body.get('reason', body)}")
    if "latitude" not in body or "longitude" not in body:
        raise SourceFormatError(f"{origin}: expected Open-Meteo fields latitude/longitude")
    return body


def bodies(path: Path) -> list[dict[str, Any]]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix.lower() in (".yml", ".yaml") or text.lstrip().startswith("---"):
        try:
            cassette = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SourceFormatError(f"{path}: VCR cassette is not valid YAML: {exc}") from exc
        found = cassette.get("http_interactions") if isinstance(cassette, dict) else None
        if not isinstance(found, list):
            raise SourceFormatError(f"{path}: expected a VCR cassette with http_interactions")
        out = []
        for i, inter in enumerate(found, start=1):
            try:
                body = inter["response"]["body"]["string"]
            except (KeyError, TypeError) as exc:
                raise SourceFormatError(f"{path}: interaction {i} has no response body") from exc
            decoded = decode_body(str(body), f"{path} interaction {i}")
            decoded.setdefault("_endpoint", _endpoint(inter))
            out.append(decoded)
        return out
    return [decode_body(text, str(path))]


def _endpoint(interaction: Any) -> str | None:
    """``forecast``, ``dwd-icon``, ``archive``... from a recorded request URI."""
    try:
        uri = str(interaction["request"]["uri"])
    except (KeyError, TypeError):
        return None
    return urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1] or None


def _local_to_utc(text: Any, offset: timedelta) -> str | None:
    """``2023-11-13T00:00`` at the declared offset → ISO UTC; unparseable text passes through."""
    if text is None:
        return None
    raw = str(text)
    try:
        local = datetime.fromisoformat(raw)
    except ValueError:
        return raw
    if local.tzinfo is not None:
        return local.isoformat()
    return (local - offset).isoformat() + "Z"


def _num(value: Any) -> Any:
    return None if value is None else str(value) if not isinstance(value, bool) else str(int(value))


def long_rows(
    body: dict[str, Any], source: str, origin: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows and parse rejects of one body, in block/variable/time order (no ``_row`` yet)."""
    offset = timedelta(seconds=float(body.get("utc_offset_seconds") or 0))
    lat, lon = _num(body.get("latitude")), _num(body.get("longitude"))
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for block in BLOCKS:
        data = body.get(block)
        if not isinstance(data, dict):
            continue
        units = body.get(f"{block}_units") or {}
        times = data.get("time")
        scalar = not isinstance(times, list)
        times_l: list[Any] = times if isinstance(times, list) else [times]
        stamps = [_local_to_utc(t, offset) for t in times_l]
        for var, values in data.items():
            if var in ("time", "interval"):
                continue
            name = var if block == "hourly" else f"{block}.{var}"
            vals = [values] if scalar else values if isinstance(values, list) else [values]
            unit = units.get(var) if isinstance(units, dict) else None
            for i in range(max(len(vals), len(stamps))):
                if i >= len(vals) or i >= len(stamps):
                    bad.append(
                        {
                            "rule": "parse",
                            "field": name,
                            "raw": json.dumps({"variable": name, "index": i}),
                            "reason": f"{origin}: {name}[{i}] has no matching "
                            f"{'value' if i >= len(vals) else 'time'} "
                            f"({len(vals)} values, {len(stamps)} times)",
                        }
                    )
                    continue
                rows.append(
                    {
                        "grid_lat": lat,
                        "grid_lon": lon,
                        "ts": stamps[i],
                        "variable": name,
                        "value": _num(vals[i]),
                        "unit": None if unit is None else str(unit),
                        "source": source,
                    }
                )
    return rows, bad


def read_openmeteo(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    source = opts.source_name or SOURCE
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for i, body in enumerate(bodies(path), start=1):
        endpoint = body.get("_endpoint")
        src = source if opts.source_name or not endpoint else f"{SOURCE}/{endpoint}"
        r, b = long_rows(body, src, f"{path.name} body {i}")
        rows += r
        bad += b
    cols = ("grid_lat", "grid_lon", "ts", "variable", "value", "unit", "source")
    frame = (
        pl.DataFrame(rows, schema=dict.fromkeys(cols, pl.String))
        .with_row_index("_row", offset=1)
        .with_columns(pl.col("_row").cast(pl.Int64))
    )
    rejects = pl.DataFrame(
        [{**b, "_row": frame.height + n} for n, b in enumerate(bad, start=1)],
        schema=QUARANTINE_SCHEMA,
    )
    return ParsedBatch(frame, rejects, frame.height + rejects.height, "openmeteo")


register("weather", "openmeteo", read_openmeteo)
