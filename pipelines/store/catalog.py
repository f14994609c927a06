"""The PostgreSQL side of a DuckLake store: creating the catalog database and advisory locks.

DuckDB's own connection to the catalog (``postgres_scanner``) serves the lake; this module
holds the few things DuckDB cannot: ``CREATE DATABASE`` and session advisory locks that live
as long as one Python ``with`` block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from pipelines.errors import StoreError
from pipelines.store.location import LakeLocation


def _connect(
    lake: LakeLocation, dbname: str | None = None
) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(lake.libpq(dbname), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot reach the lake catalog {lake}: {exc}".strip()) from exc


def ensure_database(lake: LakeLocation) -> bool:
    """Create the catalog database when it does not exist; returns whether it was created."""
    with _connect(lake, "postgres") as con:
        found = con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (lake.dbname,))
        if found.fetchone() is not None:
            return False
        try:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(lake.dbname)))
        except psycopg.errors.DuplicateDatabase:
            return False  # another process created it meanwhile
        return True


def drop_database(lake: LakeLocation) -> None:
    """Drop the catalog database (tests and throwaway lakes), closing its sessions first."""
    with _connect(lake, "postgres") as con:
        con.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(lake.dbname))
        )


@contextmanager
def advisory_lock(lake: LakeLocation, key: int, *, wait: bool = True) -> Iterator[bool]:
    """Hold PostgreSQL session advisory lock ``key`` in the catalog database.

    With ``wait=False`` it yields False at once when another session holds it. The lock goes
    with the session: a killed holder frees it, so a crash never wedges the next run.
    """
    with _connect(lake) as con:
        if wait:
            con.execute("SELECT pg_advisory_lock(%s)", (key,))
            got = True
        else:
            row = con.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            got = bool(row and row[0])
        try:
            yield got
        finally:
            if got:
                con.execute("SELECT pg_advisory_unlock(%s)", (key,))
