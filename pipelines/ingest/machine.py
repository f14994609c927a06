"""The ingest machinery every source plugs into.

One file is one batch, and one batch is one transaction. The stages, in order:

1. ``fingerprint`` – hash the file and the options into the ingest key; a key seen before is a
   no-op, unless ``replace`` asks to swap the earlier batches of the file.
2. ``parse``       – the source module turns the file into canonical columns plus ``_row``.
3. ``coerce``      – cast every column to its type; values that do not cast are quarantined.
4. ``normalize``   – datum → WGS84, times → UTC, H3 cells, derived ids.
5. ``validate``    – the kind's named rules (``pipelines.ingest.rules``), each with a reason.
6. ``write``       – accepted rows (appended, or by a writer a source registered, such as the
   outages' snapshot upsert), quarantined rows and the batch record, in one transaction.

``STAGES`` lists them; ``ingest_file`` visits each once, in order.

Rows read = rows accepted + rows quarantined, always; the batch table enforces it with a CHECK.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import polars_h3 as plh3

from geofence.datum import to_wgs84
from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import QUARANTINE_SCHEMA, IngestOptions, ParsedBatch, WriteJob
from pipelines.ingest.kinds import KindSpec, kind_spec
from pipelines.ingest.rules import DATUM_ALIASES, REJECT_SCHEMA, RuleContext, apply_rules, sorted_on
from pipelines.settings import Settings
from pipelines.store.gateway import Store, Tx

Progress = Callable[[str], None]


@dataclass
class IngestResult:
    kind: str
    path: str
    fmt: str
    batch_id: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    skipped: bool
    reasons: dict[str, int]
    seconds: float
    notes: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    """Batch ids this batch replaced (``--replace``)."""
    details: dict[str, Any] = field(default_factory=dict)
    """What a registered writer reported (e.g. a snapshot's inserted/updated/closed)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- coerce ------------------------------------------------------------------------------
_TRUE = ["true", "1", "yes", "y", "t"]
_FALSE = ["false", "0", "no", "n", "f", ""]


def parse_times(col: pl.Expr, tz: str) -> pl.Expr:
    """Strings with an offset keep it; naive strings are in ``tz``. Result is UTC."""
    norm = col.str.strip_chars().str.replace(r"Z$", "+00:00").str.replace(" ", "T")
    aware = norm.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_zone="UTC", time_unit="us"
    )
    naive = (
        norm.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
        .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
    )
    date_only = (
        norm.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us")
        .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
    )
    return pl.coalesce(aware, naive, date_only)


def _cast_expr(name: str, dtype: pl.DataType, src: pl.DataType, tz: str) -> pl.Expr:
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if src == pl.String:
            return parse_times(col, tz)
        if isinstance(src, pl.Datetime):
            if src.time_zone is None:
                return (
                    col.dt.cast_time_unit("us")
                    .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
                    .dt.convert_time_zone("UTC")
                )
            return col.dt.cast_time_unit("us").dt.convert_time_zone("UTC")
        if src.is_numeric():  # epoch seconds
            return (
                (col.cast(pl.Float64) * 1e6)
                .cast(pl.Int64, strict=False)
                .cast(pl.Datetime("us", "UTC"), strict=False)
            )
        return col.cast(pl.String).pipe(parse_times, tz)
    if isinstance(dtype, pl.List):
        if src == pl.String:
            return (
                col.str.strip_chars()
                .str.split(";")
                .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
            )
        return col.cast(dtype, strict=False)
    if dtype == pl.Boolean and src == pl.String:
        low = col.str.strip_chars().str.to_lowercase()
        return (
            pl.when(low.is_in(_TRUE)).then(True).when(low.is_in(_FALSE)).then(False).otherwise(None)
        )
    if dtype == pl.String:
        return col.cast(pl.String).str.strip_chars().replace("", None)
    if src == pl.String:
        return col.str.strip_chars().cast(dtype, strict=False)
    return col.cast(dtype, strict=False)


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """A column as text (lists joined with ';') for messages and raw records."""
    if isinstance(dtype, pl.List | pl.Array):
        return pl.col(name).cast(pl.List(pl.String)).list.join(";")
    if isinstance(dtype, pl.Struct):
        return pl.col(name).struct.json_encode()
    return pl.col(name).cast(pl.String)


def _delimiter_hint(columns: list[str]) -> str:
    """When the header came out as one column holding another delimiter, say which."""
    names = [c for c in columns if c != "_row"]
    if len(names) != 1:
        return ""
    found = next((d for d in (";", "\t", "|", ",") if d in names[0]), None)
    if found is None:
        return ""
    shown = "tab" if found == "\t" else found
    return f"; the header is one column {names[0][:80]!r}: is the delimiter {shown!r}?"


def coerce(
    frame: pl.DataFrame, spec: KindSpec, tz: str, origin: str = "input"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast to the kind's types; a value that is present but does not cast is quarantined.

    A float that is NaN or infinite is not a measurement: a required one is quarantined as
    ``not_finite``, an optional NaN reads as missing, an optional infinity is quarantined."""
    missing = [c for c in spec.required if c not in frame.columns]
    if missing:
        found = ", ".join(c for c in frame.columns if c != "_row")[:300]
        raise SourceFormatError(
            f"{origin}: missing required column(s) {', '.join(missing)} for kind {spec.name}; "
            f"found {found or 'no columns'}{_delimiter_hint(frame.columns)}"
        )
    present = [c for c in spec.columns if c in frame.columns]
    casts = [_cast_expr(c, spec.columns[c], frame.schema[c], tz).alias(c) for c in present]
    typed = frame.select(pl.col("_row"), *casts)
    rejects: list[pl.DataFrame] = []
    for c in present:
        if frame.schema[c] == spec.columns[c]:
            continue  # already typed (Parquet): nothing can fail to cast
        raw_present = pl.col(c).is_not_null()
        if frame.schema[c] == pl.String:
            raw_present &= pl.col(c).str.strip_chars() != ""
        bad = frame.select(
            "_row", _as_text(c, frame.schema[c]).alias("_v"), raw_present.alias("_p")
        )
        bad = bad.with_columns(typed.get_column(c).is_null().alias("_n")).filter(
            pl.col("_p") & pl.col("_n")
        )
        if bad.height:
            kind = str(spec.columns[c]).lower()
            rejects.append(
                bad.select(
                    "_row",
                    pl.lit("type").alias("rule"),
                    pl.lit(c).alias("field"),
                    pl.format(
                        "{}={} is not a valid {}", pl.lit(c), pl.col("_v"), pl.lit(kind)
                    ).alias("reason"),
                )
            )
    for c in present:
        if spec.columns[c] == pl.Float64:
            required = c in spec.required
            bad_value = pl.col(c).is_infinite() | (pl.col(c).is_nan() if required else False)
            rejects.append(
                typed.filter(bad_value).select(
                    "_row",
                    pl.lit("not_finite").alias("rule"),
                    pl.lit(c).alias("field"),
                    pl.format("{}={} is not a finite number", pl.lit(c), pl.col(c)).alias("reason"),
                )
            )
            if not required:
                typed = typed.with_columns(pl.col(c).fill_nan(None))
    for c in spec.required:
        rejects.append(
            typed.filter(pl.col(c).is_null()).select(
                "_row",
                pl.lit("missing_required").alias("rule"),
                pl.lit(c).alias("field"),
                pl.lit(f"{c} is required but empty").alias("reason"),
            )
        )
    rej = (
        pl.concat([r.cast(REJECT_SCHEMA) for r in rejects]).unique(  # type: ignore[arg-type]
            "_row", keep="first", maintain_order=True
        )
        if rejects
        else pl.DataFrame(schema=REJECT_SCHEMA)
    )
    typed = typed.filter(~pl.col("_row").is_in(rej["_row"].implode()))
    for c, dtype in spec.columns.items():
        if c not in typed.columns:
            typed = typed.with_columns(pl.lit(None, dtype=dtype).alias(c))
    return typed, rej


# -- normalize ---------------------------------------------------------------------------
def _stable_id(*cols: str) -> pl.Expr:
    return (
        pl.concat_str([pl.col(c).cast(pl.String) for c in cols], separator="|")
        .hash()
        .cast(pl.String)
    )


def normalize(
    frame: pl.DataFrame, spec: KindSpec, opts: IngestOptions, settings: Settings, store: Store
) -> pl.DataFrame:
    """Datum to WGS84, derived columns and ids. Runs on typed rows only."""
    if spec.has_datum:
        declared = (opts.datum or "WGS84").upper()
        frame = frame.with_columns(
            pl.col("datum").fill_null(declared).str.to_uppercase().replace(DATUM_ALIASES)
        )
    if spec.name == "tickets" or (
        spec.name == "gps" and not bool((frame.get_column("datum") == "WGS84").all())
    ):
        frame = _to_wgs84(frame)
    if spec.name == "tickets":
        frame = frame.with_columns(
            pl.col("source").fill_null(opts.source_name or "fieldtrace"),
            pl.when(pl.col("tags").is_null() & pl.col("tag").is_not_null())
            .then(pl.concat_list(pl.col("tag")))
            .otherwise(pl.col("tags"))
            .alias("tags"),
        ).with_columns(pl.col("tag").fill_null(pl.col("tags").list.first()))
    elif spec.name == "events":
        frame = frame.with_columns(
            pl.col("event_id").fill_null(_stable_id("ticket_id", "event_type", "ts", "actor")),
            pl.col("source").fill_null(opts.source_name or "fieldtrace"),
        )
    elif spec.name == "gps":
        acc_src = pl.when(pl.col("accuracy_m").is_not_null()).then(
            pl.col("accuracy_source").fill_null("reported")
        )
        frame = frame.with_columns(
            acc_src.otherwise(
                pl.lit("assumed" if opts.assume_accuracy_m is not None else None)
            ).alias("accuracy_source"),
            pl.col("accuracy_m")
            if opts.assume_accuracy_m is None
            else pl.col("accuracy_m").fill_null(opts.assume_accuracy_m),
            pl.col("source").fill_null(opts.source_name or "fieldtrace"),
        )
    elif spec.name == "uwb_positions":
        frame = _uwb_to_wgs84(frame, store)
    elif spec.name == "weather" or spec.name == "outages":
        frame = frame.with_columns(pl.col("source").fill_null(opts.source_name or "fieldtrace"))
    return frame


def _to_wgs84(frame: pl.DataFrame) -> pl.DataFrame:
    lat = frame["lat"].to_numpy().astype(np.float64, copy=True)
    lon = frame["lon"].to_numpy().astype(np.float64, copy=True)
    datum = frame["datum"].to_numpy()
    out_lat, out_lon = lat.copy(), lon.copy()
    for name in ("GCJ02", "BD09"):
        sel = (datum == name) & np.isfinite(lat) & np.isfinite(lon)
        if sel.any():
            out_lat[sel], out_lon[sel] = to_wgs84(lat[sel], lon[sel], name)
    return frame.with_columns(
        pl.col("lat").alias("lat_in"),
        pl.col("lon").alias("lon_in"),
        pl.Series("lat", out_lat).fill_nan(None),
        pl.Series("lon", out_lon).fill_nan(None),
    )


def _uwb_to_wgs84(frame: pl.DataFrame, store: Store) -> pl.DataFrame:
    from geofence.uwb import SiteFrame, local_to_wgs84

    sites = store.query(
        "SELECT site_id, origin_lat, origin_lon, origin_alt_m, rotation_deg FROM uwb_sites"
    )
    parts = []
    for site in sites.iter_rows(named=True):
        part = frame.filter(pl.col("site_id") == site["site_id"])
        if part.height == 0:
            continue
        sf = SiteFrame(
            site["origin_lat"],
            site["origin_lon"],
            site["origin_alt_m"] or 0.0,
            site["rotation_deg"],
        )
        lat, lon = local_to_wgs84(part["x_m"].to_numpy(), part["y_m"].to_numpy(), sf)
        parts.append(part.with_columns(pl.Series("lat", lat), pl.Series("lon", lon)))
    rest = frame.filter(~pl.col("site_id").is_in(sites["site_id"].implode()))
    return pl.concat([*parts, rest]) if parts else frame


# -- write -------------------------------------------------------------------------------
def _table_frame(
    frame: pl.DataFrame, spec: KindSpec, batch_id: str, settings: Settings
) -> pl.DataFrame:
    out = frame.drop("_row")
    if spec.has_datum:
        out = out.rename({"datum": "datum_in"})
    if spec.name == "tickets":
        out = out.with_columns(
            plh3.latlng_to_cell("lat", "lon", 7).alias("h3_r7"),
            plh3.latlng_to_cell("lat", "lon", 9).alias("h3_r9"),
        )
    elif spec.name == "gps":
        out = out.drop("lat_in", "lon_in", strict=False)
        if not sorted_on(out, ["technician_id", "ts"]):
            out = out.sort("technician_id", "ts")
    elif spec.name == "outages":
        out = _with_bbox(out)
    return out


WRITE_CHUNK_ROWS = 1_000_000


def _with_cells(chunk: pl.DataFrame, spec: KindSpec, settings: Settings) -> pl.DataFrame:
    """Per-chunk derived columns (the H3 cell of each fix)."""
    if spec.name == "gps":
        return chunk.with_columns(
            plh3.latlng_to_cell("lat", "lon", settings.h3_resolution).alias("h3")
        )
    return chunk


def _write_rows(
    tx: Tx, spec: KindSpec, table: pl.DataFrame, settings: Settings, batch_id: str
) -> None:
    """Insert in chunks inside the batch's transaction: derived columns and the Arrow copy
    exist for one chunk at a time, which bounds peak memory on large files."""
    for start in range(0, table.height, WRITE_CHUNK_ROWS):
        chunk = _with_cells(table.slice(start, WRITE_CHUNK_ROWS), spec, settings)
        rows, constants = _split_constants(chunk)
        tx.insert_frame(spec.table, rows, {**constants, "batch_id": batch_id})


def _split_constants(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, object]]:
    """Drop all-null columns and move text columns holding one value on every row out of the
    frame (they are bound as parameters): both are costly to ship through Arrow."""
    constants: dict[str, object] = {}
    empty = [
        c
        for c in frame.columns
        if frame.height and frame.get_column(c).null_count() == frame.height
    ]
    frame = frame.drop(empty)  # all-null columns: the table's NULL default fills them
    for name, dtype in frame.schema.items():
        if dtype != pl.String or frame.height == 0:
            continue
        col = frame.get_column(name)
        first = col[0]
        if first is not None and col.null_count() == 0 and bool((col == first).all()):
            constants[name] = first
    return frame.drop(list(constants)), constants


def _with_bbox(frame: pl.DataFrame) -> pl.DataFrame:
    import shapely

    geoms = shapely.from_wkt(frame["geom_wkt"].to_numpy())
    bounds = shapely.bounds(geoms)
    return frame.with_columns(
        pl.Series("min_lon", bounds[:, 0]),
        pl.Series("min_lat", bounds[:, 1]),
        pl.Series("max_lon", bounds[:, 2]),
        pl.Series("max_lat", bounds[:, 3]),
        pl.col("start_ts").alias("first_seen"),
        pl.col("start_ts").alias("last_seen"),
    )


def _raw_json(source: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    cols = [c for c in source.columns if c != "_row"]
    picked = source.filter(pl.col("_row").is_in(rows.implode()))
    if not cols:
        return picked.select("_row", pl.lit(None, pl.String).alias("raw"))
    return picked.select(
        "_row",
        pl.struct([_as_text(c, source.schema[c]).alias(c) for c in cols])
        .struct.json_encode()
        .alias("raw"),
    )


def _context(run: Run, frame: pl.DataFrame) -> RuleContext:
    spec, store, th = run.spec, run.store, run.settings.thresholds
    existing = None
    if "duplicate" in spec.rules and run.opts.write == "append" and frame.height:
        key = list(spec.key)
        on = " AND ".join(f't."{k}" = b."{k}"' for k in key)
        cols = ", ".join(f'b."{k}"' for k in key)
        if store.scalar(f"SELECT count(*) > 0 FROM (SELECT 1 FROM {spec.table} LIMIT 1)"):
            existing = store.query_frames(
                f"SELECT {cols} FROM batch_keys b JOIN {spec.table} t ON {on} "
                "WHERE coalesce(t.batch_id, '') NOT IN (SELECT unnest(?::VARCHAR[]))",
                {"batch_keys": frame.select(key)},
                [run.replaced],
            )
    created = None
    if spec.name == "events":
        ids = frame["ticket_id"].unique().to_list()
        created = store.query(
            "SELECT ticket_id, min(ts) AS _created FROM ticket_events "
            "WHERE event_type = 'created' AND ticket_id IN (SELECT unnest(?)) "
            "AND coalesce(batch_id, '') NOT IN (SELECT unnest(?::VARCHAR[])) GROUP BY ticket_id",
            [ids, run.replaced],
        )
    sites: frozenset[str] = frozenset()
    if spec.name == "uwb_positions":
        sites = frozenset(store.query("SELECT site_id FROM uwb_sites")["site_id"].to_list())
    return RuleContext(
        now=datetime.now(UTC),
        earliest=datetime(th.earliest_valid_year, 1, 1, tzinfo=UTC),
        future_tolerance=timedelta(seconds=th.future_tolerance_s),
        max_speed_mps=th.max_speed_mps,
        existing_keys=existing,
        ticket_created=created,
        known_sites=sites,
        assume_accuracy_m=run.opts.assume_accuracy_m,
    )


def _fault_pause_in_write() -> None:
    """Fault injection for the kill -9 test: pause inside the open write transaction."""
    pause = os.environ.get("FIELDTRACE_FAULT_PAUSE_IN_WRITE_S")
    if pause:
        print("fault-injection: paused inside write transaction", file=sys.stderr, flush=True)
        time.sleep(float(pause))


# -- the machine -------------------------------------------------------------------------
@dataclass
class Run:
    """One file's way through the stages: what each stage hands the next."""

    store: Store
    spec: KindSpec
    path: Path
    settings: Settings
    opts: IngestOptions
    replace: bool
    observed_at: datetime | None
    t0: float = field(default_factory=time.perf_counter)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    digest: str = ""
    key: str = ""
    replaced: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parsed: ParsedBatch | None = None
    frame: pl.DataFrame = field(default_factory=pl.DataFrame)
    rejected: list[pl.DataFrame] = field(default_factory=list)
    laps: dict[str, float] = field(default_factory=dict)
    result: IngestResult | None = None

    @property
    def tz(self) -> str:
        return self.opts.tz or self.settings.timezone


def ingest_key(digest: str, spec: KindSpec, opts: IngestOptions, settings: Settings) -> str:
    """The batch's idempotency key: the file's bytes and everything that changes the result
    (declared options, the effective zone, the thresholds rules use, the H3 resolution)."""
    th = settings.thresholds
    material = {
        "file": digest,
        "kind": spec.name,
        "options": json.loads(opts.to_json()),
        "tz": opts.tz or settings.timezone,
        "rules": [th.earliest_valid_year, th.future_tolerance_s, th.max_speed_mps],
        "h3": settings.h3_resolution,
    }
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(run: Run) -> None:
    """Hash file and options; a key seen before is a no-op unless ``replace`` was asked."""
    run.digest = file_hash(run.path)
    run.key = ingest_key(run.digest, run.spec, run.opts, run.settings)
    earlier = run.store.query(
        "SELECT batch_id, format, rows_read, ingest_key, file_hash, options FROM ingest_batches "
        "WHERE kind = ? AND (ingest_key = ? OR file_hash = ? OR path IN (?, ?) "
        "OR (ingest_key = file_hash AND file_hash = ? AND coalesce(options, '{}') = ?)) "
        "ORDER BY started_at",
        [
            run.spec.name,
            run.key,
            run.digest,
            str(run.path),
            str(run.path.resolve()),
            run.digest,
            run.opts.to_json(),
        ],
    )
    legacy = (pl.col("ingest_key") == pl.col("file_hash")) & (  # stored before keys had options
        pl.col("options").fill_null("{}") == run.opts.to_json()
    )
    same = earlier.filter((pl.col("ingest_key") == run.key) | legacy)
    if run.replace:
        run.replaced = earlier["batch_id"].to_list()
    elif same.height:
        row = same.row(0, named=True)
        run.result = IngestResult(
            run.spec.name,
            str(run.path),
            row["format"],
            row["batch_id"],
            row["rows_read"],
            0,
            0,
            True,
            {},
            time.perf_counter() - run.t0,
        )
    elif earlier.height:
        ids = ", ".join(earlier["batch_id"].to_list())
        run.notes.append(
            f"{run.path}: earlier batch(es) {ids} of this file are kept (other options or "
            "content); --replace swaps them"
        )


def parse(run: Run) -> None:
    from pipelines.ingest.sources import parse_file

    run.parsed = parse_file(run.path, run.spec, run.opts)
    run.notes += run.parsed.notes
    run.rejected.append(run.parsed.rejected.cast(QUARANTINE_SCHEMA))  # type: ignore[arg-type]
    run.laps["parse"] = time.perf_counter()


def coerce_stage(run: Run) -> None:
    assert run.parsed is not None
    run.frame, rejected = coerce(run.parsed.frame, run.spec, run.tz, str(run.path))
    run.rejected.append(_with_raw(run, rejected))


def normalize_stage(run: Run) -> None:
    run.frame = normalize(run.frame, run.spec, run.opts, run.settings, run.store)


def validate(run: Run) -> None:
    run.frame, rejected = apply_rules(run.frame, run.spec, _context(run, run.frame))
    run.rejected.append(_with_raw(run, rejected))
    run.laps["validate"] = time.perf_counter()


def _with_raw(run: Run, rejected: pl.DataFrame) -> pl.DataFrame:
    assert run.parsed is not None
    raw = _raw_json(run.parsed.frame, rejected["_row"])
    return rejected.join(raw, on="_row", how="left").cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def write(run: Run) -> None:
    """Accepted rows, quarantined rows and the batch record in one transaction; with
    ``replace``, the earlier batches of the file leave in the same transaction."""
    from pipelines.ingest.batches import delete_batch_rows

    assert run.parsed is not None
    spec, accepted, fmt = run.spec, run.frame, run.parsed.fmt
    quarantined = pl.concat(run.rejected)
    rows_read = run.parsed.rows_read
    if rows_read != accepted.height + quarantined.height:
        raise SourceFormatError(
            f"{run.path}: internal count mismatch: read {rows_read}, accepted "
            f"{accepted.height}, quarantined {quarantined.height}"
        )
    batch_id = f"{spec.name}-{run.started:%Y%m%dT%H%M%S}-{run.key[:10]}"
    table = _table_frame(accepted, spec, batch_id, run.settings)
    qrows = quarantined.select(
        pl.lit(batch_id).alias("batch_id"),
        pl.lit(spec.name).alias("kind"),
        pl.lit(str(run.path)).alias("source_path"),
        pl.col("_row").alias("row_number"),
        "rule",
        "field",
        "reason",
        "raw",
        pl.lit(datetime.now(UTC)).dt.convert_time_zone("UTC").alias("quarantined_at"),
    )
    details: dict[str, Any] = {}
    options = json.loads(run.opts.to_json())
    if run.notes:
        options["notes"] = run.notes

    def write_batch(tx: Tx) -> None:  # repeatable: retried whole if it loses a race
        for old in run.replaced:
            delete_batch_rows(tx, spec.name, old)
        if run.opts.write == "append":
            _write_rows(tx, spec, table, run.settings, batch_id)
        else:
            from pipelines.ingest.sources import writer_for

            job = WriteJob(
                spec.name, spec.table, table, batch_id, run.opts.source_name, run.started,
                run.observed_at,
            )  # fmt: skip
            details.clear()  # a retried attempt starts afresh
            details.update(writer_for(spec.name, run.opts.write)(tx, job))
            options.update(details)
        tx.insert_frame("quarantine", qrows)
        _fault_pause_in_write()
        t_write = time.perf_counter()
        t_parse = run.laps["parse"]
        t_validate = run.laps["validate"]
        tx.execute(
            f"INSERT INTO ingest_batches ({', '.join(BATCH_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in BATCH_COLUMNS)})",
            (
                batch_id, spec.name, fmt, str(run.path), run.digest, run.key,
                rows_read, accepted.height, quarantined.height, run.started, datetime.now(UTC),
                t_parse - run.t0, t_validate - t_parse, t_write - t_validate,
                json.dumps(options, default=str, sort_keys=True),
            ),
        )  # fmt: skip

    run.store.atomic(write_batch)
    reasons = {str(k): int(v) for k, v in quarantined.group_by("rule").len().iter_rows()}
    run.result = IngestResult(
        spec.name, str(run.path), run.parsed.fmt, batch_id, rows_read, accepted.height,
        quarantined.height, False, reasons, time.perf_counter() - run.t0, run.notes,
        run.replaced, details,
    )  # fmt: skip


BATCH_COLUMNS = (
    "batch_id", "kind", "format", "path", "file_hash", "ingest_key", "rows_read",
    "rows_accepted", "rows_quarantined", "started_at", "finished_at", "parse_s", "validate_s",
    "write_s", "options",
)  # fmt: skip

Stage = Callable[[Run], None]

STAGES: tuple[tuple[str, Stage], ...] = (
    ("fingerprint", fingerprint),  # file + options -> key; a key seen before ends the run
    ("parse", parse),  # the source's parser: canonical columns + _row, parse rejects
    ("coerce", coerce_stage),  # types; a value that does not cast is quarantined
    ("normalize", normalize_stage),  # datum -> WGS84, times -> UTC, derived ids
    ("validate", validate),  # the kind's named rules, each with a reason
    ("write", write),  # rows + quarantine + batch record (+ replaced batches): one transaction
)


def validate_parsed(
    store: Store,
    spec: KindSpec,
    parsed: ParsedBatch,
    settings: Settings,
    opts: IngestOptions,
    say: Progress | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stages coerce, normalize and validate of a batch parsed elsewhere (a live
    micro-batch): returns (accepted rows, quarantined rows with ``QUARANTINE_SCHEMA``)."""
    run = Run(store, spec, Path(parsed.fmt), settings, opts, False, None)
    run.parsed = parsed
    run.rejected.append(parsed.rejected.cast(QUARANTINE_SCHEMA))  # type: ignore[arg-type]
    for name, stage in STAGES:
        if name in ("coerce", "normalize", "validate"):
            (say or (lambda _msg: None))(name)
            stage(run)
    return run.frame, pl.concat(run.rejected)


def write_accepted(
    tx: Tx, spec: KindSpec, accepted: pl.DataFrame, settings: Settings, batch_id: str
) -> None:
    """Stage write of the accepted rows (inside the caller's transaction)."""
    _write_rows(tx, spec, _table_frame(accepted, spec, batch_id, settings), settings, batch_id)


def ingest_file(
    store: Store,
    kind: str,
    path: Path,
    settings: Settings,
    opts: IngestOptions | None = None,
    progress: Progress | None = None,
    *,
    replace: bool = False,
    observed_at: datetime | None = None,
) -> IngestResult:
    """Ingest one file as one batch (one transaction): each of ``STAGES`` once, in order."""
    spec = kind_spec(kind)
    path = Path(path)
    if not path.is_file():
        raise SourceFormatError(f"{path}: no such file")
    run = Run(store, spec, path, settings, opts or IngestOptions(), replace, observed_at)
    say = progress or (lambda _msg: None)
    # One ingest of a kind at a time per store: the already-ingested check and the key rules
    # then see every earlier batch. On DuckLake (no PRIMARY KEY / UNIQUE in the catalog) this
    # PostgreSQL advisory lock is what keeps keys unique across processes.
    with store.writer_lock(f"ingest:{spec.name}"):
        for name, stage in STAGES:
            say(name)
            stage(run)
            if run.result is not None:
                return run.result
    raise AssertionError("the write stage always sets the result")
