"""Ingest batches: list them, and delete one with its rows and its quarantine rows.

A batch's rows carry its ``batch_id`` in the kind's table, so deleting a batch removes exactly
what it wrote. Outages merged from snapshots carry the id of the last snapshot that touched
them; deleting that snapshot's batch removes those outages. Deleting is not a cascade: rows that
other batches or derived tables (events of deleted tickets, arrival checks, alerts) hold keep
pointing at what was deleted until those are re-ingested or re-run.
"""

from __future__ import annotations

import polars as pl

from pipelines.errors import NotFoundError
from pipelines.ingest.kinds import kind_spec
from pipelines.store.gateway import Store, Tx


def list_batches(store: Store, *, kind: str | None = None, limit: int = 50) -> pl.DataFrame:
    return store.query(
        "SELECT batch_id, kind, format, path, rows_read, rows_accepted, rows_quarantined, "
        "finished_at, options FROM ingest_batches WHERE ? IS NULL OR kind = ? "
        "ORDER BY finished_at DESC LIMIT ?",
        [kind, kind, limit],
    )


def delete_batch_rows(tx: Tx, kind: str, batch_id: str) -> dict[str, int]:
    """Inside a transaction: the batch's rows, its quarantine rows and its record."""
    table = kind_spec(kind).table
    counts = {
        "rows": int(tx.scalar(f"SELECT count(*) FROM {table} WHERE batch_id = ?", [batch_id])),
        "quarantined": int(
            tx.scalar("SELECT count(*) FROM quarantine WHERE batch_id = ?", [batch_id])
        ),
    }
    tx.execute(f"DELETE FROM {table} WHERE batch_id = ?", [batch_id])
    tx.execute("DELETE FROM quarantine WHERE batch_id = ?", [batch_id])
    tx.execute("DELETE FROM ingest_batches WHERE batch_id = ?", [batch_id])
    return counts


def delete_batch(store: Store, batch_id: str) -> dict[str, int]:
    """Delete one batch in one transaction; an unknown id is an error naming it."""
    kind = store.scalar("SELECT kind FROM ingest_batches WHERE batch_id = ?", [batch_id])
    if kind is None:
        raise NotFoundError(f"batch {batch_id!r} is not in the store (see `batches list`)")
    with store.transaction() as tx:
        return delete_batch_rows(tx, str(kind), batch_id)
