"""The parser contract between the sources and the ingest machine.

A source turns a file into a ``ParsedBatch``: the kind's canonical columns (any types) plus a
1-based ``_row``, and the rows it could not parse. ``IngestOptions`` is what the user declared
about the file. Neither side imports the other: both import this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from pipelines.ingest.rules import REJECT_SCHEMA

QUARANTINE_SCHEMA = {**REJECT_SCHEMA, "raw": pl.String}


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


@dataclass(frozen=True)
class IngestOptions:
    """What the user declared about a file (everything optional)."""

    fmt: str | None = None
    datum: str | None = None
    tz: str | None = None
    assume_accuracy_m: float | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    source_name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v}, default=str, sort_keys=True)


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
