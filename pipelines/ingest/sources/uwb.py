"""UWB sites and tag positions: site files, local-frame positions and raw anchor ranges.

Site file (YAML or JSON), ingested as kind ``uwb_sites`` (format ``site``) and also read by the
``ranges`` format through ``IngestOptions.extra['site_file']`` (CLI ``--site-file``)::

    site_id: lab-1
    name: CUHK-SZ motion-capture lab
    origin: {lat: 22.6975, lon: 114.2104, alt_m: 0}   # or origin_lat / origin_lon keys
    rotation_deg: 0            # bearing of the site +y axis, clockwise from north
    tag_height_m: 0.97         # optional: solve in 2D at this height (coplanar anchors)
    range_bias_m: 0.0          # optional antenna-delay correction
    range_order: anchor_major  # columns a0-t0, a0-t1, ..., a1-t0 (or tag_major)
    anchors: [{id: A0, x_m: -3.42, y_m: 3.01, z_m: 1.04}, ...]
    tags: [T0, T1, T2]

``local``: CSV ``[site_id,]tag_id,ts,x,y[,z]`` in metres, with or without a header.
``ranges``: CSV ``ts, r_1 ... r_(anchors×tags)`` with or without a header; each line gives one
row per tag, positioned by ``geofence.uwb.multilaterate``. Row numbers are per (line, tag):
``_row = (line - 1) × n_tags + tag + 1``. Empty cells are missing ranges. Quarantined at parse:
``summary_row`` (trailing lines whose time is not a time), ``range_value`` (a range that is not a
non-negative number), ``uwb_solve`` (too few ranges or degenerate geometry for that tag).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from geofence.uwb import REASON_HIGH_RESIDUAL, REASON_OK, multilaterate
from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import QUARANTINE_SCHEMA, IngestOptions, ParsedBatch, empty_rejects
from pipelines.ingest.kinds import KindSpec
from pipelines.ingest.machine import parse_times
from pipelines.ingest.sources import register
from pipelines.ingest.sources.text import iso_text, read_delimited

_NUMERIC = r"^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


def load_site(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError as exc:
        raise SourceFormatError(f"{path}: site file is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SourceFormatError(f"{path}: expected a site mapping (site_id, origin, anchors)")
    return data


def _site_row(site: dict[str, Any]) -> dict[str, str | None]:
    origin = site.get("origin") if isinstance(site.get("origin"), dict) else {}
    assert isinstance(origin, dict)

    def pick(*keys: str) -> str | None:
        for key in keys:
            for src in (site, origin):
                if src.get(key) is not None:
                    return str(src[key])
        return None

    anchors = site.get("anchors")
    return {
        "site_id": pick("site_id", "id"),
        "name": pick("name"),
        "origin_lat": pick("origin_lat", "lat"),
        "origin_lon": pick("origin_lon", "lon"),
        "origin_alt_m": pick("origin_alt_m", "alt_m"),
        "rotation_deg": pick("rotation_deg") or "0",
        "anchors": json.dumps(anchors) if anchors else None,
        "targets": json.dumps(site.get("tags")) if site.get("tags") is not None else None,
    }


def read_site(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    row = _site_row(load_site(path))
    frame = pl.DataFrame([row], schema=dict.fromkeys(row, pl.String)).with_columns(
        pl.lit(1, pl.Int64).alias("_row")
    )
    return ParsedBatch(frame, empty_rejects(), 1, "site")


def _anchors(site: dict[str, Any], path: Path) -> tuple[list[str], np.ndarray]:
    anchors = site.get("anchors")
    if not isinstance(anchors, list) or len(anchors) < 3:
        raise SourceFormatError(f"{path}: site file needs a list of >= 3 anchors with x_m,y_m,z_m")
    try:
        xyz = np.array(
            [
                [float(a.get(k, 0.0) if k == "z_m" else a[k]) for k in ("x_m", "y_m", "z_m")]
                for a in anchors
            ],
            dtype=np.float64,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SourceFormatError(f"{path}: anchor without numeric x_m/y_m/z_m: {exc}") from exc
    return [str(a.get("id", f"A{i}")) for i, a in enumerate(anchors)], xyz


def _headerless(path: Path) -> bool:
    """True when the first line's fields after the first are numbers or empty (no header)."""
    with path.open("rb") as fh:
        first = fh.readline().decode("utf-8", errors="replace").strip().split(",")
    rest = [f for f in first[1:] if f.strip()]
    return bool(rest) and all(pl.Series(rest).str.contains(_NUMERIC).to_list())


def _local_headerless(path: Path) -> bool:
    """No header when the first line has none of the column names (tag_id, ts, x, ...)."""
    with path.open("rb") as fh:
        first = fh.readline().decode("utf-8", errors="replace").strip().lower().split(",")
    return not {f.strip() for f in first} & {"tag_id", "ts", "x", "y", "x_m", "y_m", "site_id"}


def _summary_mask(ts: pl.Series) -> pl.Series:
    """Trailing rows whose time does not parse (totals, means, footers)."""
    ok = (
        pl.DataFrame({"t": ts})
        .select(parse_times(iso_text(pl.col("t")), "UTC").is_not_null())
        .to_series()
    )
    good = np.flatnonzero(ok.to_numpy())
    last = int(good[-1]) if good.size else -1
    return pl.Series(np.arange(len(ts)) > last) & ~ok


def _reject(rows: pl.DataFrame, rule: str, field: str | None, reason: pl.Expr) -> pl.DataFrame:
    return rows.select(
        "_row",
        pl.lit(rule).alias("rule"),
        pl.lit(field, pl.String).alias("field"),
        reason.alias("reason"),
        pl.col("raw"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def _raw(frame: pl.DataFrame) -> pl.Expr:
    return pl.concat_str(
        [pl.col(c).fill_null("") for c in frame.columns if c != "_row"], separator=","
    )


# -- local-frame positions ---------------------------------------------------------------
def read_local(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    names = None
    if _local_headerless(path):
        with path.open("rb") as fh:
            width = len(fh.readline().split(b","))
        layouts = {
            4: ["tag_id", "ts", "x_m", "y_m"],
            5: ["tag_id", "ts", "x_m", "y_m", "z_m"],
            6: ["site_id", "tag_id", "ts", "x_m", "y_m", "z_m"],
        }
        if width not in layouts:
            raise SourceFormatError(
                f"{path}: header-less UWB positions need 4-6 columns "
                "([site_id,]tag_id,ts,x,y[,z]); found {width}"
            )
        names = layouts[width]
    table = read_delimited(path, names=names, encoding=opts.encoding)
    frame = table.frame.rename({c: c + "_m" for c in ("x", "y", "z") if c in table.frame.columns})
    for canon, src in opts.columns.items():
        frame = frame.rename({src: canon})
    if "site_id" not in frame.columns:
        site = opts.extra.get("site_id") or (
            load_site(Path(opts.extra["site_file"])).get("site_id")
            if opts.extra.get("site_file")
            else None
        )
        if site is None:
            raise SourceFormatError(f"{path}: no site_id column; pass --site-file or extra site_id")
        frame = frame.with_columns(pl.lit(str(site)).alias("site_id"))
    frame = frame.with_columns(_raw(table.frame).alias("raw"))
    summary = frame.filter(_summary_mask(frame["ts"]))
    rejects = _reject(
        summary,
        "summary_row",
        "ts",
        pl.format(
            "{} row {}: {} is a summary/footer line, not a position",
            pl.lit(path.name),
            pl.col("_row"),
            pl.col("raw"),
        ),
    )
    frame = frame.filter(~pl.col("_row").is_in(summary["_row"].implode()))
    keep = [c for c in ("_row", *spec.columns) if c in frame.columns]
    frame = frame.select(keep).with_columns(
        iso_text(pl.col("ts")).alias("ts"), pl.lit(opts.source_name or "uwb-local").alias("source")
    )
    return ParsedBatch(frame, pl.concat([table.rejected, rejects]), table.rows_read, "local")


# -- raw ranges --------------------------------------------------------------------------
def read_ranges(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    if not opts.extra.get("site_file"):
        raise SourceFormatError(f"{path}: the ranges format needs --site-file (anchors, tags)")
    site_path = Path(opts.extra["site_file"])
    site = load_site(site_path)
    anchor_ids, anchors_xyz = _anchors(site, site_path)
    tags = [str(t) for t in site.get("tags") or ["T0"]]
    n_a, n_t = len(anchor_ids), len(tags)
    names = ["ts", *[f"r{i}" for i in range(n_a * n_t)]] if _headerless(path) else None
    table = read_delimited(path, names=names, encoding=opts.encoding)
    lines = table.frame
    if lines.width - 2 != n_a * n_t:
        raise SourceFormatError(
            f"{path}: {lines.width - 2} range columns, but the site file has "
            f"{n_a} anchors × {n_t} tags = {n_a * n_t}"
        )
    data_cols = [c for c in lines.columns if c != "_row"]
    range_cols = data_cols[1:]
    lines = lines.rename({data_cols[0]: "ts"}) if data_cols[0] != "ts" else lines
    lines = lines.with_columns(_raw(lines).alias("raw"), pl.col("_row").alias("_line"))
    values = (
        lines.select(
            [pl.col(c).str.strip_chars().cast(pl.Float64, strict=False) for c in range_cols]
        )
        .to_numpy()
        .astype(np.float64)
    )
    present = lines.select(
        [pl.col(c).str.strip_chars().fill_null("") != "" for c in range_cols]
    ).to_numpy()
    bad_value = (present & ~np.isfinite(values)) | (np.nan_to_num(values, nan=0.0) < 0)
    summary = _summary_mask(lines["ts"]).to_numpy()
    bad_line = bad_value.any(axis=1) & ~summary
    first_bad = [range_cols[int(np.argmax(r))] if r.any() else "" for r in bad_value]
    lines = lines.with_columns(
        pl.Series("_summary", summary),
        pl.Series("_badv", bad_line),
        pl.Series("_badcol", first_bad, dtype=pl.String),
    )
    ok = lines.filter(~pl.col("_summary") & ~pl.col("_badv"))
    ok_values = np.where(present, values, np.nan)[~summary & ~bad_line]
    order = str(site.get("range_order", "anchor_major"))
    parts, rejects = [], []
    for t, tag in enumerate(tags):

        def per_tag(rows: pl.DataFrame, line: str = "_line", t: int = t) -> pl.DataFrame:
            return rows.with_columns(((pl.col(line) - 1) * n_t + t + 1).alias("_row"))

        rejects.append(per_tag(table.rejected, "_row"))
        idx = [a * n_t + t if order == "anchor_major" else t * n_a + a for a in range(n_a)]
        tag_ranges = ok_values[:, idx]
        sol = multilaterate(
            tag_ranges,
            anchors_xyz,
            tag_height_m=site.get("tag_height_m"),
            range_bias_m=float(site.get("range_bias_m", 0.0)),
            min_anchors=min(4, n_a),
        ).to_frame()
        rows = per_tag(ok.select("_line", "ts", "raw")).with_columns(
            pl.lit(tag).alias("tag_id"),
            pl.Series("_n", np.isfinite(tag_ranges).sum(axis=1), dtype=pl.Int64),
        )
        solved = pl.concat([rows, sol], how="horizontal")
        fine = pl.col("reason").is_in([REASON_OK, REASON_HIGH_RESIDUAL])
        rejects.append(
            _reject(
                solved.filter(~fine),
                "uwb_solve",
                f"ranges:{tag}",
                pl.format(
                    "{} line {} tag {}: {} ({} of {} ranges present)",
                    pl.lit(path.name),
                    pl.col("_line"),
                    pl.lit(tag),
                    pl.col("reason"),
                    pl.col("_n"),
                    pl.lit(n_a),
                ),
            )
        )
        parts.append(solved.filter(fine))
        rejects.append(
            _reject(
                per_tag(lines.filter(pl.col("_summary"))),
                "summary_row",
                "ts",
                pl.format(
                    "{} line {}: {} is a summary/footer line, not ranges",
                    pl.lit(path.name),
                    pl.col("_line"),
                    pl.col("ts"),
                ),
            )
        )
        rejects.append(
            _reject(
                per_tag(lines.filter(pl.col("_badv"))),
                "range_value",
                tag,
                pl.format(
                    "{} line {} tag {}: {} is not a range >= 0 m",
                    pl.lit(path.name),
                    pl.col("_line"),
                    pl.lit(tag),
                    pl.col("_badcol"),
                ),
            )
        )
    site_id = str(site.get("site_id") or site.get("id") or site_path.stem)
    frame = (
        pl.concat(parts)
        .select(
            "_row",
            pl.lit(site_id).alias("site_id"),
            "tag_id",
            iso_text(pl.col("ts")).alias("ts"),
            "x_m",
            "y_m",
            "z_m",
            pl.col("rmse_residual_m").alias("error_m"),
            pl.col("n_used").alias("n_anchors"),
            pl.lit(opts.source_name or "uwb-ranges").alias("source"),
        )
        .sort("_row")
    )
    rej = pl.concat(rejects)
    return ParsedBatch(frame, rej, table.rows_read * n_t, "ranges")


register("uwb_sites", "site", read_site)
register("uwb_positions", "local", read_local)
register("uwb_positions", "ranges", read_ranges)
