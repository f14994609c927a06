"""Text helpers every file source shares: a row-tolerant delimited reader, time tidying, and
JSON loading that cannot smuggle invalid Unicode into the store.

``read_delimited`` does a fast strict polars read and falls back to the ``csv`` module when a
line has more fields than the header; such a line is rejected with rule ``parse`` (never
dropped), a shorter line is padded with nulls. Bytes that are not UTF-8 become U+FFFD.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import QUARANTINE_SCHEMA, empty_rejects

_SHORT_OFFSET = r"([+-]\d{2})$"  # GeoLife's "+00" → "+00:00"
_UNPADDED_HOUR = r"^(\d{4}-\d{2}-\d{2}[ T])(\d):"  # "2022-08-15 9:42" → "2022-08-15 09:42"


@dataclass
class TextTable:
    """Text columns plus a 1-based ``_row`` (data rows), the rows rejected while reading."""

    frame: pl.DataFrame
    rejected: pl.DataFrame
    rows_read: int


def with_row(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_row_index("_row", offset=1).with_columns(pl.col("_row").cast(pl.Int64))


def read_delimited(
    path: Path, *, delimiter: str = ",", skip_lines: int = 0, names: list[str] | None = None
) -> TextTable:
    """Read a delimited file as text; ``names`` given means the file has no header row."""
    try:
        frame = pl.read_csv(
            path,
            separator=delimiter,
            skip_rows=skip_lines,
            has_header=names is None,
            new_columns=names,
            infer_schema=False,
            encoding="utf8-lossy",
            truncate_ragged_lines=False,
        )
        if names is not None and frame.width != len(names):
            raise pl.exceptions.ComputeError("column count differs from the declared names")
        return TextTable(with_row(frame), empty_rejects(), frame.height)
    except pl.exceptions.NoDataError as exc:
        raise SourceFormatError(f"{path}: the file is empty; expected a header and rows") from exc
    except (
        pl.exceptions.ComputeError,
        pl.exceptions.ShapeError,
        pl.exceptions.SchemaError,
        pl.exceptions.DuplicateError,
    ):
        return _read_delimited_slow(path, delimiter, skip_lines, names)


def _read_delimited_slow(
    path: Path, delimiter: str, skip_lines: int, names: list[str] | None
) -> TextTable:
    text = path.read_bytes().decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    lines = [ln for ln in text.splitlines()[skip_lines:] if ln.strip()]
    rows = list(csv.reader(lines, delimiter=delimiter))
    if names is None:
        if not rows:
            raise SourceFormatError(f"{path}: the file is empty; expected a header and rows")
        header, rows, lines = _dedupe(rows[0]), rows[1:], lines[1:]
    else:
        header = names
    good: list[list[str | None]] = []
    numbers: list[int] = []
    rejects: list[dict[str, Any]] = []
    for number, (fields, line) in enumerate(zip(rows, lines, strict=False), start=1):
        if len(fields) > len(header):
            rejects.append(
                {
                    "_row": number,
                    "rule": "parse",
                    "field": None,
                    "raw": line[:2000],
                    "reason": f"{path.name} row {number}: {len(fields)} fields, expected "
                    f"{len(header)} ({','.join(header)[:200]})",
                }
            )
            continue
        good.append([*fields, *([None] * (len(header) - len(fields)))])
        numbers.append(number)
    frame = pl.DataFrame(good, schema=dict.fromkeys(header, pl.String), orient="row")
    frame = frame.with_columns(pl.Series("_row", numbers, dtype=pl.Int64))
    return TextTable(frame, pl.DataFrame(rejects, schema=QUARANTINE_SCHEMA), len(rows))


def _dedupe(header: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in header:
        seen[name] = seen.get(name, -1) + 1
        out.append(name if seen[name] == 0 else f"{name}_duplicated_{seen[name] - 1}")
    return out


def iso_text(col: pl.Expr) -> pl.Expr:
    """Tidy time text the machinery parses: pad a one-digit hour, expand a ``+hh`` offset."""
    return (
        col.str.strip_chars()
        .str.replace(_UNPADDED_HOUR, "${1}0${2}:")
        .str.replace(_SHORT_OFFSET, "${1}:00")
    )


def clean_json(value: Any) -> Any:
    """Replace lone surrogates (valid JSON escapes, not valid text) with "?"."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    if isinstance(value, dict):
        return {clean_json(k): clean_json(v) for k, v in value.items()}
    return value


def load_json(path: Path, what: str) -> Any:
    """Parse a JSON file (lossy UTF-8); anything unparseable is a SourceFormatError."""
    return loads_json(path.read_bytes().decode("utf-8", errors="replace"), str(path), what)


def loads_json(text: str, origin: str, what: str) -> Any:
    try:
        return clean_json(json.loads(text))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SourceFormatError(f"{origin}: expected {what}; not valid JSON ({exc})") from exc
