"""The parser contract between the sources and the ingest machine.

A source turns a file into a ``ParsedBatch``: the kind's canonical columns (any types) plus a
1-based ``_row``, and the rows it could not parse. ``IngestOptions`` is what the user declared
about the file. Neither side imports the other: both import this module.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from pipelines.errors import OptionError
from pipelines.ingest.rules import DATUM_ALIASES, REJECT_SCHEMA

if TYPE_CHECKING:
    from pipelines.store.gateway import Tx

QUARANTINE_SCHEMA = {**REJECT_SCHEMA, "raw": pl.String}


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def check_zone(name: str, option: str = "--tz") -> str:
    """An IANA zone name, or OptionError naming the option and the value."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise OptionError(
            f"{option} {name!r} is not an IANA time zone name (e.g. Asia/Shanghai, UTC)"
        ) from exc
    return name


def check_positive_m(value: float, option: str) -> float:
    """A finite number of metres greater than 0, or OptionError naming the option."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise OptionError(f"{option} {value!r} must be a finite number of metres > 0")
    return float(value)


def check_positive(value: float, option: str) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise OptionError(f"{option} {value!r} must be a finite number > 0")
    return float(value)


def check_encoding(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError as exc:
        raise OptionError(f"--encoding {name!r} is not a known text encoding") from exc


_EXTRA_CHECKS: dict[str, Callable[[float], float]] = {
    "radius_m": lambda v: check_positive_m(v, "--radius-m"),
    "sample_rate_hz": lambda v: check_positive(v, "--sample-rate-hz"),
    "rpm": lambda v: check_positive(v, "--rpm"),
}


@dataclass(frozen=True)
class IngestOptions:
    """What the user declared about a file (everything optional).

    Every value is range-checked on construction, before any file is read: a bad one raises
    ``OptionError`` naming the option and the value.
    """

    fmt: str | None = None
    datum: str | None = None
    tz: str | None = None
    assume_accuracy_m: float | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    source_name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    encoding: str | None = None
    write: str = "append"
    """How accepted rows reach the table: ``append`` (keys must be new) or a mode a source
    registers with ``sources.register_writer`` (outages: ``snapshot``, an upsert)."""

    def __post_init__(self) -> None:
        if self.datum is not None and self.datum.upper() not in DATUM_ALIASES:
            raise OptionError(
                f"--datum {self.datum!r} is not a known datum; expected one of "
                f"{', '.join(sorted(set(DATUM_ALIASES.values())))}"
            )
        if self.tz is not None:
            check_zone(self.tz)
        if self.assume_accuracy_m is not None:
            check_positive_m(self.assume_accuracy_m, "--assume-accuracy-m")
        if self.encoding is not None:
            check_encoding(self.encoding)
        for name, check in _EXTRA_CHECKS.items():
            if self.extra.get(name) is not None:
                check(self.extra[name])
        delimiter = self.extra.get("delimiter")
        if delimiter is not None and (len(str(delimiter)) != 1 or str(delimiter) in "\r\n\"'"):
            raise OptionError(f"--delimiter {delimiter!r} must be one character (e.g. , ; | tab)")

    def to_json(self) -> str:
        """The declared options (defaults left out): the batch record and the ingest key."""
        chosen = {k: v for k, v in asdict(self).items() if v and (k, v) != ("write", "append")}
        return json.dumps(chosen, default=str, sort_keys=True)


@dataclass
class ParsedBatch:
    """What a source returns: canonical columns (any types) plus ``_row``, and parse rejects.

    ``rejected`` has the columns of ``QUARANTINE_SCHEMA``; ``rows_read`` counts every data row
    the file holds, so that ``rows_read == frame.height + rejected.height``.
    """

    frame: pl.DataFrame
    rejected: pl.DataFrame
    rows_read: int
    fmt: str
    notes: list[str] = field(default_factory=list)
    """What the reader decided that the user should know (e.g. a detected encoding)."""


@dataclass(frozen=True)
class WriteJob:
    """What the machine's write stage hands a registered writer, inside the batch's
    transaction: the accepted rows as the table stores them (without ``batch_id``)."""

    kind: str
    table: str
    rows: pl.DataFrame
    batch_id: str
    source: str | None
    started: datetime
    observed_at: datetime | None
    """When the file was observed (a snapshot's poll time), if the caller knows."""


Writer = Callable[["Tx", WriteJob], dict[str, Any]]
"""Writes ``job.rows`` and returns what it did (counts, times) for ``IngestResult.details``."""
