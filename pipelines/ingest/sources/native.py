"""FieldTrace's own formats (CSV, JSONL, Parquet) for every kind.

Columns are the kind's canonical names (``pipelines.ingest.kinds``); ``--columns canon=source``
renames others. CSV and JSONL are read as text so that every quarantined row keeps its raw
value; Parquet keeps its types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import IngestOptions, ParsedBatch, empty_rejects
from pipelines.ingest.kinds import KINDS, KindSpec
from pipelines.ingest.sources import register
from pipelines.ingest.sources.text import decode_file, read_delimited


def apply_column_map(frame: pl.DataFrame, mapping: Mapping[str, str], path: Path) -> pl.DataFrame:
    """Rename ``source`` columns to canonical names from a ``canon=source`` mapping."""
    if not mapping:
        return frame
    missing = [src for src in mapping.values() if src not in frame.columns]
    if missing:
        raise SourceFormatError(
            f"{path}: --columns names {', '.join(missing)}, but the file has "
            f"{', '.join(frame.columns)}"
        )
    return frame.rename({src: canon for canon, src in mapping.items()})


def _with_rows(frame: pl.DataFrame, spec: KindSpec) -> pl.DataFrame:
    keep = [c for c in frame.columns if c in spec.columns]
    return (
        frame.select(keep)
        .with_row_index("_row", offset=1)
        .with_columns(pl.col("_row").cast(pl.Int64))
    )


def read_native_csv(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    """A header row of canonical names; ragged rows are quarantined by ``read_delimited``."""
    table = read_delimited(
        path, delimiter=str(opts.extra.get("delimiter", ",")), encoding=opts.encoding
    )
    frame = apply_column_map(table.frame, opts.columns, path)
    # No canonical column at all (a wrong delimiter): keep what was read, so the error that
    # names the missing columns can show the header as it came out.
    keep = [c for c in frame.columns if c in spec.columns] or frame.columns[1:]
    return ParsedBatch(
        frame.select("_row", *keep), table.rejected, table.rows_read, "csv", table.notes
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def read_native_jsonl(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    records: list[dict[str, str | None]] = []
    rows: list[int] = []
    rejects: list[dict[str, object]] = []
    rows_read = 0
    text, notes = decode_file(path, opts.encoding)
    lines = text.splitlines()
    parsed_any = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        rows_read += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            rejects.append(
                {
                    "_row": number,
                    "rule": "parse",
                    "field": None,
                    "reason": f"line is not JSON: {exc.msg}",
                    "raw": line[:2000],
                }
            )
            continue
        if not isinstance(obj, dict):
            rejects.append(
                {
                    "_row": number,
                    "rule": "parse",
                    "field": None,
                    "reason": "line is not a JSON object",
                    "raw": line[:2000],
                }
            )
            continue
        parsed_any = True
        records.append({k: _text(v) for k, v in obj.items()})
        rows.append(number)
    if rows_read and not parsed_any:
        raise SourceFormatError(
            f"{path}: expected JSON Lines (one object per line); no line parsed"
        )
    frame = pl.DataFrame(records, infer_schema_length=None) if records else pl.DataFrame()
    frame = frame.cast(pl.String) if frame.width else frame
    frame = apply_column_map(frame, opts.columns, path)
    keep = [c for c in frame.columns if c in spec.columns]
    frame = frame.select(keep).with_columns(pl.Series("_row", rows, dtype=pl.Int64))
    rej = pl.DataFrame(
        rejects,
        schema={
            "_row": pl.Int64,
            "rule": pl.String,
            "field": pl.String,
            "reason": pl.String,
            "raw": pl.String,
        },
    )
    return ParsedBatch(frame, rej, rows_read, "jsonl", notes)


def read_native_parquet(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.ComputeError, OSError) as exc:
        raise SourceFormatError(f"{path}: cannot be parsed as Parquet: {exc}") from exc
    frame = apply_column_map(frame, opts.columns, path)
    return ParsedBatch(_with_rows(frame, spec), empty_rejects(), frame.height, "parquet")


for _kind in KINDS:
    register(_kind, "csv", read_native_csv)
    register(_kind, "jsonl", read_native_jsonl)
    register(_kind, "parquet", read_native_parquet)
