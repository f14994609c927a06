"""Bulk ingest of many files: one batch (one transaction) per file, files spread over workers.

Only a DuckLake store takes writes from several processes; the embedded file is ingested
by this process alone (``engine="local"``). Each worker opens the lake once and ingests
the files it is given through the same ``ingest_file`` as the CLI: the same rules, the same
quarantine, the same already-ingested check (under the per-kind writer lock).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.batch.engine import BatchEngineError, Runner, shared_location, worker_store
from pipelines.ingest.contract import IngestOptions
from pipelines.ingest.machine import IngestResult, ingest_file
from pipelines.settings import Settings
from pipelines.store.gateway import Store


def ingest_one(
    path: Path, location: str, kind: str, settings: Settings, opts: IngestOptions
) -> IngestResult:
    """Ingest one file into the lake at ``location`` (runs on a worker)."""
    return ingest_file(worker_store(location, read_only=False), kind, path, settings, opts)


def ingest_many(
    store: Store,
    kind: str,
    paths: list[Path],
    settings: Settings,
    opts: IngestOptions,
    run: Runner,
) -> list[IngestResult]:
    """Ingest ``paths`` as one batch each; on Dask the workers write the lake directly."""
    if run.client is None:
        return [ingest_file(store, kind, p, settings, opts) for p in paths]
    location = shared_location(store)
    if location is None:
        raise BatchEngineError(
            f"--engine dask ingest needs a store several processes can write; {store.location} "
            "is an embedded DuckDB file. Use --engine local, or a ducklake:postgresql://... store"
        )
    return run.map(ingest_one, [p.resolve() for p in paths], str(location), kind, settings, opts)
