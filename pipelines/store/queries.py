"""Read-side queries shared by the CLI and the dashboard. Pure SQL through the gateway."""

from __future__ import annotations

import polars as pl

from pipelines.store.gateway import Store


def last_batches(store: Store, *, limit: int = 20) -> pl.DataFrame:
    return store.query(
        "SELECT batch_id, kind, format, path, rows_read, rows_accepted, rows_quarantined, "
        "round(parse_s + validate_s + write_s, 3) AS seconds, finished_at "
        "FROM ingest_batches ORDER BY finished_at DESC LIMIT ?",
        [limit],
    )


def quarantine_by_reason(store: Store) -> pl.DataFrame:
    return store.query(
        "SELECT kind, rule, count(*) AS rows FROM quarantine GROUP BY kind, rule "
        "ORDER BY rows DESC, kind, rule"
    )


def quarantine_sample(store: Store, *, limit: int = 50) -> pl.DataFrame:
    return store.query(
        "SELECT kind, source_path, row_number, rule, field, reason FROM quarantine "
        "ORDER BY quarantined_at DESC, row_number LIMIT ?",
        [limit],
    )


def ingest_totals(store: Store) -> pl.DataFrame:
    return store.query(
        "SELECT kind, count(*) AS batches, sum(rows_read) AS rows_read, "
        "sum(rows_accepted) AS rows_accepted, sum(rows_quarantined) AS rows_quarantined "
        "FROM ingest_batches GROUP BY kind ORDER BY kind"
    )
