"""GPS fixes from GPX, GPSLogger CSV, GeoLife CSV and generic delimited files.

Every parser extracts text values, then builds the canonical columns with vectorized polars
expressions; the shared machinery types, validates and writes them. Accuracy:

* a reported accuracy (metres, 1σ-ish) wins: ``accuracy_source='reported'``;
* otherwise ``accuracy_m = hdop × UERE_M`` with ``accuracy_source='hdop'``;
* ``hdop >= HDOP_UNKNOWN`` (GPSLogger's 99.99 sentinel) means *unknown*: hdop and the derived
  accuracy are null, so the ``missing_accuracy`` rule quarantines the fix unless the user passes
  ``--assume-accuracy-m``.

``technician_id`` comes from a device column when the format has one, else from the declared
device (``IngestOptions.extra['device']``, CLI ``--device``), else from the file stem.

Text files are read with ``pipelines.ingest.sources.text.read_delimited`` (rows with too many fields
are rejected with rule ``parse``, never dropped).
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import QUARANTINE_SCHEMA, IngestOptions, ParsedBatch, empty_rejects
from pipelines.ingest.kinds import KindSpec
from pipelines.ingest.sources import register
from pipelines.ingest.sources.native import apply_column_map
from pipelines.ingest.sources.text import TextTable, iso_text, read_delimited, with_row

UERE_M = 5.0
"""User-equivalent range error (m): accuracy_m = HDOP × UERE_M when only HDOP is given."""
HDOP_UNKNOWN = 99.99
"""GPSLogger/NMEA sentinel: an HDOP this large means the receiver did not know."""
SATELLITES_UNKNOWN = 0
"""GPSLogger writes 0 satellites when it did not record the count (a fix needs >= 3)."""


# -- canonical frame ---------------------------------------------------------------------
def _declared_device(path: Path, opts: IngestOptions) -> str:
    return str(opts.extra.get("device") or path.stem)


def gps_frame(frame: pl.DataFrame, path: Path, opts: IngestOptions, fmt: str) -> pl.DataFrame:
    """Canonical GPS columns from text columns already renamed to canonical names."""
    cols = set(frame.columns)
    txt = {c: pl.col(c).cast(pl.String).str.strip_chars() for c in cols}
    exprs: list[pl.Expr] = [pl.col("_row")]
    for c in (
        "ts",
        "lat",
        "lon",
        "speed_mps",
        "heading_deg",
        "altitude_m",
        "satellites",
        "mock_location",
        "datum",
    ):
        if c in cols:
            exprs.append((iso_text(txt[c]) if c == "ts" else txt[c]).alias(c))
    if "technician_id" in cols:
        exprs.append(txt["technician_id"].alias("technician_id"))
    else:
        exprs.append(pl.lit(_declared_device(path, opts)).alias("technician_id"))
    hdop_num = (
        txt["hdop"].cast(pl.Float64, strict=False) if "hdop" in cols else pl.lit(None, pl.Float64)
    )
    sentinel = hdop_num >= HDOP_UNKNOWN - 1e-9
    if "hdop" in cols:
        exprs.append(pl.when(sentinel).then(None).otherwise(txt["hdop"]).alias("hdop"))
    derived = pl.when((hdop_num > 0) & ~sentinel).then(hdop_num * UERE_M)
    reported = (
        txt["accuracy_m"].replace("", None) if "accuracy_m" in cols else pl.lit(None, pl.String)
    )
    exprs += [
        pl.coalesce(reported, derived.cast(pl.String)).alias("accuracy_m"),
        pl.when(reported.is_not_null())
        .then(pl.lit("reported"))
        .when(derived.is_not_null())
        .then(pl.lit("hdop"))
        .otherwise(None)
        .alias("accuracy_source"),
        pl.lit(opts.source_name or fmt).alias("source"),
    ]
    return frame.select(exprs)


def split_non_finite(frame: pl.DataFrame, path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows whose lat/lon text is NaN or infinite: a number, but not a place (rule not_finite)."""
    checks = []
    for c in ("lat", "lon"):
        num = pl.col(c).str.strip_chars().cast(pl.Float64, strict=False)
        checks.append(pl.when(num.is_nan() | num.is_infinite()).then(pl.lit(c)))
    flagged = frame.with_columns(pl.coalesce(checks).alias("_bad"))
    bad = flagged.filter(pl.col("_bad").is_not_null())
    if bad.height == 0:
        return frame, empty_rejects()
    value = pl.when(pl.col("_bad") == "lat").then(pl.col("lat")).otherwise(pl.col("lon"))
    rejects = bad.select(
        "_row",
        pl.lit("not_finite").alias("rule"),
        pl.col("_bad").alias("field"),
        pl.format(
            "{} row {}: {}={} is not a finite coordinate",
            pl.lit(path.name),
            pl.col("_row"),
            pl.col("_bad"),
            value,
        ).alias("reason"),
        pl.struct(pl.exclude("_row", "_bad")).struct.json_encode().alias("raw"),
    )
    kept = flagged.filter(pl.col("_bad").is_null()).drop("_bad")
    return kept, rejects.cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def _finish(
    frame: pl.DataFrame, rejected: pl.DataFrame, rows_read: int, path: Path, fmt: str
) -> ParsedBatch:
    if "lat" in frame.columns and "lon" in frame.columns:
        frame, bad = split_non_finite(frame, path)
        rejected = pl.concat([rejected, bad])
    return ParsedBatch(frame, rejected, rows_read, fmt)


def _batch(
    table: TextTable, path: Path, opts: IngestOptions, fmt: str, mapping: dict[str, str]
) -> ParsedBatch:
    frame = apply_column_map(table.frame, {**mapping, **opts.columns}, path)
    batch = _finish(gps_frame(frame, path, opts, fmt), table.rejected, table.rows_read, path, fmt)
    batch.notes = table.notes
    return batch


# -- GPX ---------------------------------------------------------------------------------
_GPX_FIELDS = {
    "ele": "altitude_m",
    "time": "ts",
    "hdop": "hdop",
    "sat": "satellites",
    "speed": "speed_mps",
    "course": "heading_deg",
}


def _local(tag: str) -> str:
    return tag[tag.rfind("}") + 1 :]


def read_gpx(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    """GPX 1.0/1.1 track and route points (``trkpt``/``rtept``; waypoints are not fixes)."""
    cols: dict[str, list[str | None]] = {c: [] for c in ("lat", "lon", *_GPX_FIELDS.values())}
    try:
        events = ET.iterparse(path, events=("start", "end"))
        _, root = next(events)
        if _local(root.tag) != "gpx":
            raise SourceFormatError(f"{path}: expected a GPX document, found <{_local(root.tag)}>")
        for event, elem in events:
            if event != "end" or _local(elem.tag) not in ("trkpt", "rtept"):
                continue
            cols["lat"].append(elem.get("lat"))
            cols["lon"].append(elem.get("lon"))
            found = dict.fromkeys(_GPX_FIELDS.values())
            for child in elem.iter():
                canon = _GPX_FIELDS.get(_local(child.tag))
                if canon is not None and found[canon] is None:
                    found[canon] = child.text
            for canon, value in found.items():
                cols[canon].append(value)
            elem.clear()
            root.clear()
    except (ET.ParseError, StopIteration) as exc:
        raise SourceFormatError(f"{path}: not well-formed GPX XML: {exc}") from exc
    frame = with_row(pl.DataFrame(cols, schema=dict.fromkeys(cols, pl.String)))
    fmt = "gpx"
    return _finish(gps_frame(frame, path, opts, fmt), empty_rejects(), frame.height, path, fmt)


# -- GPSLogger CSV -----------------------------------------------------------------------
GPSLOGGER_COLUMNS = {
    "ts": "time",
    "lat": "lat",
    "lon": "lon",
    "altitude_m": "elevation",
    "accuracy_m": "accuracy",
    "heading_deg": "bearing",
    "speed_mps": "speed",
    "satellites": "satellites",
    "hdop": "hdop",
}


def _count_line(path: Path) -> int:
    """1 when the file starts with GPSLogger's row-count line (a lone integer), else 0."""
    with path.open("rb") as fh:
        first = fh.readline().strip()
    return 1 if first.isdigit() else 0


def read_gpslogger(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    table = read_delimited(path, skip_lines=_count_line(path), encoding=opts.encoding)
    missing = [c for c in ("time", "lat", "lon") if c not in table.frame.columns]
    if missing:
        raise SourceFormatError(
            f"{path}: GPSLogger CSV lacks column(s) {', '.join(missing)}; "
            f"expected {','.join(GPSLOGGER_COLUMNS.values())},..."
        )
    mapping = {k: v for k, v in GPSLOGGER_COLUMNS.items() if v in table.frame.columns}
    batch = _batch(table, path, opts, "gpslogger", mapping)
    if "satellites" in batch.frame.columns:
        sats = pl.col("satellites")
        batch.frame = batch.frame.with_columns(
            pl.when(sats == str(SATELLITES_UNKNOWN)).then(None).otherwise(sats).alias("satellites")
        )
    return batch


# -- GeoLife -----------------------------------------------------------------------------
def read_geolife(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    """GeoLife-style ``X;Y;...;tracker;t`` (lon, lat, user id, time with a ``+00`` offset)."""
    table = read_delimited(
        path, delimiter=str(opts.extra.get("delimiter", ";")), encoding=opts.encoding
    )
    names = set(table.frame.columns)
    if not {"X", "Y", "t"} <= names:
        raise SourceFormatError(
            f"{path}: GeoLife CSV needs columns X;Y;t (lon;lat;time), found "
            f"{';'.join(table.frame.columns)}"
        )
    mapping = {"lon": "X", "lat": "Y", "ts": "t"}
    if "tracker" in names:
        mapping["technician_id"] = "tracker"
    return _batch(table, path, opts, "geolife", mapping)


# -- generic -----------------------------------------------------------------------------
GENERIC_ALIASES: dict[str, tuple[str, ...]] = {
    "lat": ("lat", "latitude", "y"),
    "lon": ("lon", "lng", "long", "longitude", "x"),
    "ts": ("ts", "time", "timestamp", "t", "datetime", "date_time", "utc"),
    "technician_id": (
        "technician_id",
        "device",
        "device_id",
        "vehicle",
        "vehicle_id",
        "tracker",
        "trajectory",
        "trajectory_id",
        "id",
    ),
    "accuracy_m": ("accuracy_m", "accuracy", "acc", "horizontal_accuracy"),
    "hdop": ("hdop",),
    "altitude_m": ("altitude_m", "altitude", "elevation", "ele", "alt"),
    "speed_mps": ("speed_mps", "speed"),
    "heading_deg": ("heading_deg", "heading", "bearing", "course"),
    "satellites": ("satellites", "sat", "sats"),
}


def sniff_delimiter(path: Path) -> str:
    with path.open("rb") as fh:
        sample = fh.read(65536).decode("utf-8", errors="replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def generic_mapping(columns: list[str]) -> dict[str, str]:
    lower = {c.strip().lower(): c for c in columns}
    mapping: dict[str, str] = {}
    for canon, aliases in GENERIC_ALIASES.items():
        hit = next((lower[a] for a in aliases if a in lower), None)
        if hit is not None and hit not in mapping.values():
            mapping[canon] = hit
    return mapping


def _epoch_to_iso(frame: pl.DataFrame) -> pl.DataFrame:
    """A time column of bare numbers is epoch seconds (or milliseconds above 1e11)."""
    if "ts" not in frame.columns or frame.height == 0:
        return frame
    num = pl.col("ts").cast(pl.Float64, strict=False)
    numeric = frame.select(num.is_not_null().all() & pl.col("ts").is_not_null().any()).item()
    if not numeric:
        return frame
    micros = (
        pl.when(num.abs() > 1e11).then(num * 1e3).otherwise(num * 1e6).cast(pl.Int64, strict=False)
    )
    return frame.with_columns(
        micros.cast(pl.Datetime("us", "UTC")).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").alias("ts")
    )


def read_generic(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    delimiter = str(opts.extra.get("delimiter") or sniff_delimiter(path))
    table = read_delimited(path, delimiter=delimiter, encoding=opts.encoding)
    mapping = generic_mapping(table.frame.columns)
    mapping = {k: v for k, v in mapping.items() if v not in opts.columns.values()}
    for canon in opts.columns:
        mapping.pop(canon, None)
    missing = [c for c in ("lat", "lon", "ts") if c not in mapping and c not in opts.columns]
    if missing:
        raise SourceFormatError(
            f"{path}: cannot tell which column is {', '.join(missing)} among "
            f"{delimiter.join(table.frame.columns)[:300]}; pass --columns canon=source"
        )
    batch = _batch(table, path, opts, "generic", mapping)
    batch.frame = _epoch_to_iso(batch.frame)
    return batch


register("gps", "gpx", read_gpx)
register("gps", "gpslogger", read_gpslogger)
register("gps", "geolife", read_geolife)
register("gps", "generic", read_generic)
