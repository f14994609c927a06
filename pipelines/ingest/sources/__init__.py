"""Source registry: (kind, format) → parser.

Each module in this package registers its parsers at import; ``SOURCE_MODULES`` lists them so
the registry is complete whatever was imported first. A parser returns a ``ParsedBatch`` of the
kind's canonical columns (any types) plus a 1-based ``_row``; the machinery does the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import IngestOptions, ParsedBatch, Writer
from pipelines.ingest.kinds import KindSpec

Parser = Callable[[Path, KindSpec, IngestOptions], ParsedBatch]

_REGISTRY: dict[tuple[str, str], Parser] = {}
_WRITERS: dict[tuple[str, str], Writer] = {}
_EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".geojson": "geojson",
}

SOURCE_MODULES: tuple[str, ...] = (
    "pipelines.ingest.sources.native",
    "pipelines.ingest.sources.gps",
    "pipelines.ingest.sources.tickets",
    "pipelines.ingest.sources.uwb",
    "pipelines.ingest.sources.weather",
    "pipelines.ingest.sources.outages",
    "pipelines.ingest.sources.iot",
)


def register(kind: str, fmt: str, parser: Parser) -> None:
    _REGISTRY[(kind, fmt)] = parser


def register_writer(kind: str, mode: str, writer: Writer) -> None:
    """A write mode other than ``append`` for a kind (e.g. outages' ``snapshot`` upsert)."""
    _WRITERS[(kind, mode)] = writer


def writer_for(kind: str, mode: str) -> Writer:
    _load_all()
    writer = _WRITERS.get((kind, mode))
    if writer is None:
        modes = sorted(m for (k, m) in _WRITERS if k == kind)
        raise SourceFormatError(
            f"write mode {mode!r} is not available for kind {kind}; expected append"
            + "".join(f" or {m}" for m in modes)
        )
    return writer


def _load_all() -> None:
    for module in SOURCE_MODULES:
        importlib.import_module(module)


def formats_for(kind: str) -> list[str]:
    _load_all()
    return sorted(fmt for (k, fmt) in _REGISTRY if k == kind)


def registry() -> dict[tuple[str, str], Parser]:
    _load_all()
    return dict(_REGISTRY)


def detect_format(path: Path, kind: str) -> str:
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise SourceFormatError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; "
            f"pass --format, one of {', '.join(formats_for(kind))}"
        )
    return fmt


def parse_file(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    _load_all()
    fmt = opts.fmt or detect_format(path, spec.name)
    parser = _REGISTRY.get((spec.name, fmt))
    if parser is None:
        raise SourceFormatError(
            f"{path}: format {fmt!r} is not available for kind {spec.name}; "
            f"expected one of {', '.join(formats_for(spec.name))}"
        )
    return parser(path, spec, opts)
