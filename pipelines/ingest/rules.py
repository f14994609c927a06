"""Named data-quality rules. Each one returns the rows it rejects, with a field and a reason.

Rules are pure: they read the typed batch frame and a ``RuleContext`` (what the store already
holds that a rule needs) and return ``(_row, rule, field, reason)`` rows. ``ingest.machine``
applies them in the order a kind lists them; a row is rejected by the first rule that fires, so
every quarantined row has exactly one reason and no row is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from geofence.distance import local_distance_m
from pipelines.ingest.kinds import KindSpec
from pipelines.vocabulary import DATUMS, EVENT_TYPES

REJECT_SCHEMA = {"_row": pl.Int64, "rule": pl.String, "field": pl.String, "reason": pl.String}

DATUM_ALIASES: dict[str, str] = {
    "WGS84": "WGS84",
    "WGS-84": "WGS84",
    "EPSG:4326": "WGS84",
    "GCJ02": "GCJ02",
    "GCJ-02": "GCJ02",
    "BD09": "BD09",
    "BD-09": "BD09",
}


@dataclass(frozen=True)
class RuleContext:
    """What rules may consult beyond the batch itself."""

    now: datetime
    earliest: datetime
    future_tolerance: timedelta
    max_speed_mps: float
    existing_keys: pl.DataFrame | None = None
    ticket_created: pl.DataFrame | None = None
    known_sites: frozenset[str] = field(default_factory=frozenset)
    assume_accuracy_m: float | None = None


RuleFn = Callable[[pl.DataFrame, KindSpec, RuleContext], pl.DataFrame]


def _rejects(
    frame: pl.DataFrame, mask: pl.Expr, rule: str, fld: str, reason: pl.Expr
) -> pl.DataFrame:
    return (
        frame.filter(mask)
        .select(
            pl.col("_row"),
            pl.lit(rule).alias("rule"),
            pl.lit(fld).alias("field"),
            reason.cast(pl.String).alias("reason"),
        )
        .cast(REJECT_SCHEMA)  # type: ignore[arg-type]
    )


def _txt(name: str) -> pl.Expr:
    """A column as text for a reason message; missing values read as 'null'."""
    return pl.col(name).cast(pl.String).fill_null("null")


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def projected_coordinates(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    """Numbers in the thousands in lat/lon fields are projected metres or feet, not degrees."""
    if spec.latlon is None:
        return _empty()
    lat, lon = spec.latlon
    mask = (pl.col(lat).abs() > 1000) | (pl.col(lon).abs() > 1000)
    reason = pl.format(
        "{}={}, {}={} look like projected coordinates (metres/feet), expected degrees",
        pl.lit(lat),
        pl.col(lat),
        pl.lit(lon),
        pl.col(lon),
    )
    return _rejects(frame, mask, "projected_coordinates", f"{lat},{lon}", reason)


def lat_lon_range(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    if spec.latlon is None:
        return _empty()
    lat, lon = spec.latlon
    bad_lat = ~pl.col(lat).is_between(-90, 90) | pl.col(lat).is_nan()
    bad_lon = ~pl.col(lon).is_between(-180, 180) | pl.col(lon).is_nan()
    out = [
        _rejects(
            frame,
            bad_lat,
            "lat_lon_range",
            lat,
            pl.format("{}={} is outside [-90, 90]", pl.lit(lat), _txt(lat)),
        ),
        _rejects(
            frame,
            ~bad_lat & bad_lon,
            "lat_lon_range",
            lon,
            pl.format("{}={} is outside [-180, 180]", pl.lit(lon), _txt(lon)),
        ),
    ]
    both_zero = (pl.col(lat) == 0) & (pl.col(lon) == 0)
    out.append(
        _rejects(
            frame,
            both_zero,
            "lat_lon_range",
            f"{lat},{lon}",
            pl.lit("lat=0, lon=0 is the null island placeholder, not a location"),
        )
    )
    return pl.concat(out).unique("_row", keep="first", maintain_order=True)


def time_range(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    out = []
    latest = ctx.now + ctx.future_tolerance
    for col in spec.time_columns:
        too_old = pl.col(col) < ctx.earliest
        too_new = pl.col(col) > latest
        out.append(
            _rejects(
                frame,
                too_old,
                "time_range",
                col,
                pl.format(
                    "{}={} is before {}", pl.lit(col), _txt(col), pl.lit(ctx.earliest.isoformat())
                ),
            )
        )
        out.append(
            _rejects(
                frame,
                too_new,
                "time_range",
                col,
                pl.format(
                    "{}={} is in the future (now {})",
                    pl.lit(col),
                    pl.col(col),
                    pl.lit(ctx.now.isoformat(timespec="seconds")),
                ),
            )
        )
    if not out:
        return _empty()
    return pl.concat(out).unique("_row", keep="first", maintain_order=True)


def unknown_datum(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    known = pl.col("datum").is_in(list(DATUMS))
    reason = pl.format("datum={} is not one of {}", _txt("datum"), pl.lit(", ".join(DATUMS)))
    return _rejects(frame, ~known, "unknown_datum", "datum", reason)


def unknown_event_type(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    reason = pl.format(
        "event_type={} is not one of {}", _txt("event_type"), pl.lit(", ".join(EVENT_TYPES))
    )
    return _rejects(
        frame,
        ~pl.col("event_type").is_in(list(EVENT_TYPES)),
        "unknown_event_type",
        "event_type",
        reason,
    )


def missing_accuracy(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    """Fixes without a usable accuracy cannot support a verdict.

    A missing accuracy is quarantined unless the user assumed one (``normalize`` has filled
    it in then); a reported accuracy that is not a positive finite number of metres is
    quarantined whatever was assumed: an assumption never overrides a reported value."""
    acc = pl.col("accuracy_m")
    missing = acc.is_null() | acc.is_nan()
    unusable = ~missing & (~acc.is_finite() | (acc <= 0))
    hint = (
        "re-ingest with --assume-accuracy-m M --replace to accept"
        if ctx.assume_accuracy_m is None
        else "an assumed accuracy does not replace a reported one"
    )
    return pl.concat(
        [
            _rejects(
                frame,
                missing,
                "missing_accuracy",
                "accuracy_m",
                pl.lit(f"accuracy_m is missing ({hint})"),
            ),
            _rejects(
                frame,
                unusable,
                "missing_accuracy",
                "accuracy_m",
                pl.format(
                    "accuracy_m={} is not a positive finite number of metres ({})",
                    _txt("accuracy_m"),
                    pl.lit(hint),
                ),
            ),
        ]
    )


def not_finite(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    mask = ~pl.col("value").is_finite()
    return _rejects(
        frame,
        mask,
        "not_finite",
        "value",
        pl.format("value={} is not a finite number", _txt("value")),
    )


def bad_geometry(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    import shapely

    col = "geom_wkt" if "geom_wkt" in spec.columns else "coverage_wkt"
    wkt = frame.get_column(col)
    present = wkt.is_not_null().to_numpy()
    geoms = shapely.from_wkt(wkt.fill_null("POINT EMPTY").to_numpy(), on_invalid="ignore")
    ok = np.array([g is not None for g in geoms]) & ~shapely.is_empty(geoms)
    ok &= shapely.is_valid(geoms) | ~ok
    bad = present & ~ok
    return _rejects(
        frame.with_columns(pl.Series("_bad", bad)),
        pl.col("_bad"),
        "bad_geometry",
        col,
        pl.format("{} is not a valid WKT geometry", pl.lit(col)),
    )


def unknown_site(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    mask = ~pl.col("site_id").is_in(sorted(ctx.known_sites))
    return _rejects(
        frame,
        mask,
        "unknown_site",
        "site_id",
        pl.format("site_id={} has no uwb_sites entry (ingest the site first)", _txt("site_id")),
    )


def sorted_on(frame: pl.DataFrame, key: list[str]) -> bool:
    """True when rows are in ascending key order (lexicographic), checked in one pass."""
    if frame.height < 2 or any(frame.schema[k] == pl.Null for k in key):
        return frame.height < 2
    ordered: pl.Expr = pl.lit(True)
    for k in reversed(key):
        cur, prev = pl.col(k), pl.col(k).shift(1)
        ordered = (cur > prev) | ((cur == prev) & ordered)
    return bool(frame.select(ordered.slice(1).all()).item())


def _repeats(frame: pl.DataFrame, key: list[str]) -> pl.Expr:
    """Rows whose key equals an earlier row's. Sorted input (the usual case for fixes) needs
    only a comparison with the previous row; otherwise a hash of the key."""
    if sorted_on(frame, key):
        same = pl.lit(True)
        for k in key:
            same = same & (pl.col(k) == pl.col(k).shift(1))
        return same.fill_null(False)
    return pl.struct(key).is_first_distinct().not_()


def duplicate(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    """Rows whose key repeats within the batch, or already exists in the store."""
    key = list(spec.key)
    in_batch = frame.select("_row", *key).filter(_repeats(frame, key))
    out = [
        _rejects(
            frame.filter(pl.col("_row").is_in(in_batch["_row"].implode())),
            pl.lit(True),
            "duplicate",
            ",".join(key),
            pl.format("{} repeats an earlier row of this file", pl.lit("+".join(key))),
        )
    ]
    if ctx.existing_keys is not None and ctx.existing_keys.height:
        existing = ctx.existing_keys.select(key).cast(frame.select(key).schema)
        hit = frame.join(existing, on=key, how="semi")
        out.append(
            _rejects(
                hit,
                pl.lit(True),
                "duplicate",
                ",".join(key),
                pl.format("{} is already in the store", pl.lit("+".join(key))),
            )
        )
    return pl.concat(out).unique("_row", keep="first", maintain_order=True)


def closed_before_created(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    """A closing event earlier than its ticket's creation is impossible."""
    created = (
        frame.filter(pl.col("event_type") == "created")
        .group_by("ticket_id")
        .agg(pl.col("ts").min().alias("_created"))
    )
    if ctx.ticket_created is not None and ctx.ticket_created.height:
        created = (
            pl.concat(
                [
                    created,
                    ctx.ticket_created.select(
                        "ticket_id",
                        pl.col("_created").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
                    ),
                ]
            )
            .group_by("ticket_id")
            .agg(pl.col("_created").min())
        )
    closing = frame.filter(pl.col("event_type").is_in(["closed", "completed"])).join(
        created, on="ticket_id", how="inner"
    )
    mask = pl.col("ts") < pl.col("_created")
    reason = pl.format(
        "{} at {} is before the ticket was created at {}",
        _txt("event_type"),
        pl.col("ts"),
        pl.col("_created"),
    )
    return _rejects(closing, mask, "closed_before_created", "ts", reason)


def speed_jump(frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext) -> pl.DataFrame:
    """A fix reached and left faster than ``max_speed_mps`` is a spike, not a journey."""
    ordered = frame.select("_row", "technician_id", "ts", "lat", "lon")
    if not sorted_on(ordered, ["technician_id", "ts"]):
        ordered = ordered.sort("technician_id", "ts")
    lat = ordered["lat"].to_numpy()
    lon = ordered["lon"].to_numpy()
    same = (
        (ordered["technician_id"] == ordered["technician_id"].shift(1)).fill_null(False).to_numpy()
    )
    dt_s = ordered["ts"].diff().dt.total_microseconds().fill_null(0).to_numpy() / 1e6
    step_m = np.zeros(len(lat))
    if len(lat) > 1:
        step_m[1:] = local_distance_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        speed_in = np.where(same & (dt_s > 0), step_m / np.maximum(dt_s, 1e-9), 0.0)
    speed_out = np.zeros(len(lat))
    speed_out[:-1] = np.where(same[1:], speed_in[1:], 0.0)
    has_next = np.zeros(len(lat), dtype=bool)
    has_next[:-1] = same[1:]
    spike = (speed_in > ctx.max_speed_mps) & ((speed_out > ctx.max_speed_mps) | ~has_next)
    flagged = ordered.with_columns(pl.Series("_spike", spike), pl.Series("_v", speed_in))
    reason = pl.format(
        "lat,lon jump: implied speed {} m/s from the previous fix exceeds {} m/s",
        pl.col("_v").round(1),
        pl.lit(ctx.max_speed_mps),
    )
    return _rejects(flagged, pl.col("_spike"), "speed_jump", "lat,lon", reason)


RULES: dict[str, RuleFn] = {
    "projected_coordinates": projected_coordinates,
    "lat_lon_range": lat_lon_range,
    "time_range": time_range,
    "unknown_datum": unknown_datum,
    "unknown_event_type": unknown_event_type,
    "missing_accuracy": missing_accuracy,
    "not_finite": not_finite,
    "bad_geometry": bad_geometry,
    "unknown_site": unknown_site,
    "duplicate": duplicate,
    "closed_before_created": closed_before_created,
    "speed_jump": speed_jump,
}


def apply_rules(
    frame: pl.DataFrame, spec: KindSpec, ctx: RuleContext
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run the kind's rules in order; returns (accepted, rejected rows with reasons)."""
    rejected: list[pl.DataFrame] = []
    for name in spec.rules:
        if frame.height == 0:
            break
        hits = RULES[name](frame, spec, ctx)
        if hits.height:
            rejected.append(hits)
            frame = frame.filter(~pl.col("_row").is_in(hits["_row"].implode()))
    out = pl.concat(rejected) if rejected else _empty()
    return frame, out


def default_now() -> datetime:
    return datetime.now(UTC)
