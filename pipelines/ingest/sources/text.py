"""Text helpers every file source shares: a row-tolerant delimited reader, time tidying, and
JSON loading that cannot smuggle invalid Unicode into the store.

``read_delimited`` does a fast strict polars read and falls back to the ``csv`` module when a
line has more fields than the header; such a line is rejected with rule ``parse`` naming the
file, the row and the first extra column (never dropped), a shorter line is padded with nulls.
Blank lines are not rows. A header that names a column twice is an error naming the column.

Encoding: the one named (``--encoding``) is used strictly; otherwise UTF-8 (with or without a
BOM), and when the bytes are not UTF-8 the encoding is detected (``charset_normalizer``) and
reported in the result's notes. Bytes never silently become U+FFFD.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import charset_normalizer
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
    notes: list[str] = field(default_factory=list)


def with_row(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_row_index("_row", offset=1).with_columns(pl.col("_row").cast(pl.Int64))


def _utf8(name: str) -> bool:
    return codecs.lookup(name).name == "utf-8"


def decode_bytes(data: bytes, origin: str, encoding: str | None) -> tuple[str, list[str]]:
    """Text of ``data`` and notes: the named encoding (strict), UTF-8, or a detected one."""
    if encoding is not None:
        try:
            return data.decode("utf-8-sig" if _utf8(encoding) else encoding), []
        except UnicodeDecodeError as exc:
            raise SourceFormatError(
                f"{origin}: byte {exc.start} (0x{data[exc.start]:02x}) is not valid "
                f"{encoding}; pass the file's --encoding"
            ) from exc
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        best = charset_normalizer.from_bytes(data).best()
        if best is None:
            raise SourceFormatError(
                f"{origin}: byte {exc.start} (0x{data[exc.start]:02x}) is not UTF-8 and the "
                f"encoding cannot be detected; pass --encoding (e.g. latin-1)"
            ) from exc
        return str(best), [
            f"{origin}: not UTF-8 (byte {exc.start} is 0x{data[exc.start]:02x}); decoded as "
            f"{best.encoding} (detected; pass --encoding to choose)"
        ]


def decode_file(path: Path, encoding: str | None = None) -> tuple[str, list[str]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(f"{path}: cannot be read: {exc}") from exc
    return decode_bytes(data, str(path), encoding)


def check_header(path: Path, header: list[str]) -> None:
    """A column named twice is an error naming it (which value would win is a guess)."""
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        key = name.strip()
        if key in seen:
            raise SourceFormatError(
                f"{path}: the header names column {key!r} twice (columns {seen[key]} and "
                f"{number}); rename one, or map the one to use with --columns"
            )
        seen[key] = number


def _first_record(source: Path | bytes, delimiter: str, skip_lines: int) -> list[str]:
    if isinstance(source, bytes):
        head = source[:65536]
    else:
        with source.open("rb") as fh:
            head = fh.read(65536)
    lines = head.decode("utf-8", errors="replace").splitlines()[skip_lines:]
    first = next((ln for ln in lines if ln.strip()), "")
    return next(csv.reader([first], delimiter=delimiter), [])


def read_delimited(
    path: Path,
    *,
    delimiter: str = ",",
    skip_lines: int = 0,
    names: list[str] | None = None,
    encoding: str | None = None,
) -> TextTable:
    """Read a delimited file as text; ``names`` given means the file has no header row."""
    notes: list[str] = []
    source: Path | bytes = path
    if encoding is not None and not _utf8(encoding):
        text, notes = decode_file(path, encoding)
        source = text.encode("utf-8")
    if names is None:
        check_header(path, _first_record(source, delimiter, skip_lines))
    try:
        frame = pl.read_csv(
            source if isinstance(source, Path) else io.BytesIO(source),
            separator=delimiter,
            skip_rows=skip_lines,
            has_header=names is None,
            new_columns=names,
            infer_schema=False,
            encoding="utf8",
            truncate_ragged_lines=False,
        )
        if names is not None and frame.width != len(names):
            raise pl.exceptions.ComputeError("column count differs from the declared names")
        if frame.width and frame.select(pl.all_horizontal(pl.all().is_null()).any()).item():
            raise pl.exceptions.ComputeError("blank lines (or rows of empty fields)")
        return TextTable(with_row(frame), empty_rejects(), frame.height, notes)
    except pl.exceptions.NoDataError as exc:
        raise SourceFormatError(f"{path}: the file is empty; expected a header and rows") from exc
    except (
        pl.exceptions.ComputeError,
        pl.exceptions.ShapeError,
        pl.exceptions.SchemaError,
        pl.exceptions.DuplicateError,
    ):
        return _read_delimited_slow(path, delimiter, skip_lines, names, encoding)


def _read_delimited_slow(
    path: Path, delimiter: str, skip_lines: int, names: list[str] | None, encoding: str | None
) -> TextTable:
    text, notes = decode_file(path, encoding)
    text = text.replace("\x00", "\ufffd")
    lines = [ln for ln in text.splitlines()[skip_lines:] if ln.strip()]
    rows = list(csv.reader(lines, delimiter=delimiter))
    if names is None:
        if not rows:
            raise SourceFormatError(f"{path}: the file is empty; expected a header and rows")
        check_header(path, rows[0])
        header, rows, lines = rows[0], rows[1:], lines[1:]
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
                    f"{len(header)} ({','.join(header)[:200]}); column {len(header) + 1} "
                    f"({fields[len(header)][:40]!r}) has no header",
                }
            )
            continue
        good.append([*fields, *([None] * (len(header) - len(fields)))])
        numbers.append(number)
    frame = pl.DataFrame(good, schema=dict.fromkeys(header, pl.String), orient="row")
    frame = frame.with_columns(pl.Series("_row", numbers, dtype=pl.Int64))
    return TextTable(frame, pl.DataFrame(rejects, schema=QUARANTINE_SCHEMA), len(rows), notes)


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


def load_json(path: Path, what: str, encoding: str | None = None) -> Any:
    """Parse a JSON file (UTF-8 or the named/detected encoding); unparseable is an error."""
    return loads_json(decode_file(path, encoding)[0], str(path), what)


def loads_json(text: str, origin: str, what: str) -> Any:
    try:
        return clean_json(json.loads(text))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SourceFormatError(f"{origin}: expected {what}; not valid JSON ({exc})") from exc
